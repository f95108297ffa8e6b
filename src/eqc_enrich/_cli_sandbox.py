"""The sandbox commands: `simulate` (a local EQC) and `make-data` (a month of input with its ground truth)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from eqc_enrich._durations import format_duration, parse_duration, parse_range, parse_rate_limit
from eqc_enrich._errors import EqcEnrichError

if TYPE_CHECKING:  # the simulator (starlette, uvicorn, polars) loads only when a command needs it
    from eqc_enrich.simulator import SimulatorConfig


def register(app: typer.Typer) -> None:
    """Add `simulate` and `make-data` to the project's command line."""
    app.command("simulate")(simulate)
    app.command("make-data")(make_data)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def simulate(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the company universe (match make-data's).")] = 7,
    latency: Annotated[str, typer.Option(help="Latency range per request, e.g. 20-60s.")] = "20-60s",
    time_scale: Annotated[float, typer.Option(help="Divide every duration by this (1000: 20-60 ms).")] = 1.0,
    rate_limit: Annotated[str, typer.Option(help="Requests per window per token, e.g. 10/60s.")] = "10/60s",
    token: Annotated[str, typer.Option(envvar="WDH_EQC_TOKEN", help="Token the server accepts.")] = "sim-token",
    token_ttl: Annotated[str, typer.Option(help="A token expires after this long unused.")] = "30m",
    token_max_age: Annotated[str | None, typer.Option(help="A token expires this long after issue.")] = None,
    fail_rate: Annotated[float, typer.Option(help="Share of answers that are 500/502/503.")] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="Share of requests held without an answer.")] = 0.0,
    malformed_rate: Annotated[float, typer.Option(help="Share of answers with a broken JSON body.")] = 0.0,
) -> None:
    """Serve a local EQC on loopback until Ctrl-C."""
    from eqc_enrich.simulator import Simulator, SimulatorConfig

    try:
        config = SimulatorConfig(
            seed=seed, latency=parse_range(latency), time_scale=time_scale, rate_limit=parse_rate_limit(rate_limit),
            tokens=(token,), token_ttl=parse_duration(token_ttl),
            token_max_age=None if token_max_age is None else parse_duration(token_max_age),
            fail_rate=fail_rate, timeout_rate=timeout_rate, malformed_rate=malformed_rate,
        )  # fmt: skip
        sim = Simulator(config, host=host, port=port).start()
    except (EqcEnrichError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(_describe(sim.url, config))
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


def _describe(url: str, config: SimulatorConfig) -> str:
    """One line: where it listens and how it behaves (never the token)."""
    low, high = config.latency
    faults = f"5xx {config.fail_rate:.0%}, timeout {config.timeout_rate:.0%}, malformed {config.malformed_rate:.0%}"
    max_age = "" if config.token_max_age is None else f", max age {format_duration(config.token_max_age)}"
    return (
        f"EQC simulator on {url}  seed {config.seed}, {config.universe_size:,} companies, "
        f"latency {format_duration(low)}-{format_duration(high)}, time scale {config.time_scale:g}, "
        f"rate limit {config.rate_limit} per token, token ttl {format_duration(config.token_ttl)}{max_age}, "
        f"faults: {faults}  (Ctrl-C stops)"
    )


def make_data(
    out: Annotated[Path, typer.Argument(help="File to write: .xlsx (sheet 规模明细), .csv or .parquet.")],
    rows: Annotated[int, typer.Option(help="Rows to generate.")] = 30_986,
    seed: Annotated[int, typer.Option(help="Seed (the simulator must run with the same one).")] = 7,
    companies: Annotated[int, typer.Option(help="Distinct customer companies.")] = 2_500,
    unknown_share: Annotated[float, typer.Option(help="Share of customers EQC does not know.")] = 0.05,
) -> None:
    """Write a synthetic annuity_performance month and its ground truth (<stem>.truth.parquet)."""
    from eqc_enrich.read import table_format
    from eqc_enrich.simulator._datagen import make_month, summarize, truth_path, write_frames

    try:
        table_format(out)  # a wrong extension fails before a month is generated, not after
        data, truth = make_month(seed, rows=rows, companies=companies, unknown_share=unknown_share)
        path = write_frames(out, data, truth)
    except (EqcEnrichError, OSError) as exc:
        raise _fail(str(exc)) from None
    made = summarize(data, truth)
    typer.echo(
        f"wrote {path}: {made['rows']:,} rows ({made['collective_rows']:,} collective-plan rows without a name), "
        f"{made['companies']:,} distinct companies, {made['raw_names']:,} distinct raw names, "
        f"{made['unknown_names']:,} unknown to EQC; truth: {truth_path(path)}"
    )
