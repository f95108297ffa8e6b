"""`eqc-enrich bench`: the command-line face of `run_bench`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eqc_enrich._cli_options import with_eqc_options
from eqc_enrich._durations import parse_range
from eqc_enrich.config import EqcOptions, resolve_access
from eqc_enrich.settings import load_settings

__all__ = ["bench", "register"]


def register(app: typer.Typer) -> None:
    """Add `bench` to the project's command line."""
    app.command("bench")(bench)


@with_eqc_options
def bench(
    names: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Distinct company names to resolve [1000; --local-match: companies a month, 2,500 as a real month].",
            show_default=False,
        ),
    ] = None,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Start a simulated EQC in its own process (default without --eqc-url).")
    ] = False,
    time_scale: Annotated[
        float | None, typer.Option(min=0.001, help="Divide latency and window by this [1000 simulated, 1 real].")
    ] = None,
    latency: Annotated[str, typer.Option(help="EQC latency range per call, story units.")] = "20-60s",
    cached_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of the names already in the index.")
    ] = 0.3,
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json and the charts.")] = Path("bench-report"),
    seed: Annotated[int, typer.Option(help="Seed of names, month and simulator.")] = 7,
    workers: Annotated[
        int, typer.Option(min=1, help="2 or more: also run this many `eqc-enrich run` processes at once, one quota.")
    ] = 1,
    jobs_time_scale: Annotated[
        float | None,
        typer.Option(min=0.001, help="Time scale of the several-jobs runs [the time scale, at most 100]."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL URL for the several-jobs index (a fresh schema, dropped after) [SQLite].",
            show_default=False,
        ),
    ] = None,
    months: Annotated[
        bool, typer.Option("--months", help="Instead: the three-month scenario with and without the standing worker.")
    ] = False,
    local: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="ROWS",
            help="Instead: a warm month of ROWS rows (all names in the index, --no-enrichment) against a bare "
            "polars read + join + write of the same file; whole processes, alternated, medians.",
            show_default=False,
        ),
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of each side for --local.")] = 3,
    local_match: Annotated[
        bool,
        typer.Option(
            "--local-match",
            help="Instead: the realistic month with the local matcher off, shadow and on (the threshold of `on` "
            "earned by shadow months first), against the simulator: names sent to EQC, wrong ids, the bands.",
        ),
    ] = False,
    *,
    eqc: EqcOptions,
) -> None:
    """Baseline (the old sequential flow) against ours, cold and warm: a performance report with charts.

    `--eqc-url` measures that REAL endpoint (time scale 1; keep --names small), with the token from
    WDH_EQC_TOKEN, `.wdh_env` or `--token-command`; `--rate-limit` is in story units (10/60s).
    """
    from eqc_enrich.bench._run import run_bench  # polars, httpx and the simulator load only when needed

    if local is not None:
        from eqc_enrich.bench._local import run_local

        try:
            run_local(local, out=out, rounds=rounds, seed=seed, echo=lambda line: typer.echo(line, err=True))
        except RuntimeError as exc:  # a measured run failed: its own error, on one line
            typer.echo(f"error: bench --local: {exc}", err=True)
            raise typer.Exit(1) from exc
        return
    if local_match:
        from eqc_enrich.bench._match import run_match_bench

        try:
            run_match_bench(out, companies=names, seed=seed, time_scale=time_scale or 1000.0,
                            echo=lambda line: typer.echo(line, err=True))  # fmt: skip
        except RuntimeError as exc:  # a measured run did not complete: its own error, on one line
            typer.echo(f"error: bench --local-match: {exc}", err=True)
            raise typer.Exit(1) from exc
        return
    names = names or 1000
    if months:
        from eqc_enrich.bench._months import run_months

        run_months(
            out, seed=seed, companies=names, rows=12 * names, budget=2 * names // 5, time_scale=time_scale or 1000.0,
            echo=lambda line: typer.echo(line, err=True),
        )  # fmt: skip
        return
    if simulate and eqc.url:
        typer.echo("error: --simulate and --eqc-url exclude each other", err=True)
        raise typer.Exit(2)
    access = resolve_access(eqc, load_settings())  # the real endpoint's token, rate limit, timeout and retries
    run_bench(
        names=names,
        eqc_url=eqc.url,
        time_scale=time_scale,
        rate_limit=access.rate_limit,
        latency=parse_range(latency),
        cached_share=cached_share,
        out=out,
        seed=seed,
        token=_token(access.token, access.token_command) if eqc.url else None,
        echo=lambda line: typer.echo(line, err=True),
        workers=workers,
        jobs_time_scale=jobs_time_scale,
        db=db,
        retries=access.retries,
        timeout_s=eqc.timeout_s,
        proxy=eqc.proxy,
        pac_url=eqc.pac_url,
        ca_bundle=eqc.ca_bundle,
    )


def _token(token: str | None, command: str | None) -> str | None:
    """The real endpoint's token: the setting, else what the token command prints."""
    if token or not command:
        return token
    from eqc_enrich.eqc_stage import run_token_command

    return run_token_command(command)
