"""The sandbox commands: `simulate` (a local EQC) and `make-data` (a month of input with its ground truth)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import polars as pl
import typer

from eqc_enrich._durations import format_duration, format_range, parse_duration, parse_range, parse_rate_limit
from eqc_enrich._errors import EqcEnrichError

if TYPE_CHECKING:  # the simulator (starlette, uvicorn, polars) loads only when a command needs it
    from eqc_enrich.simulator import SimulatorConfig


SIM_TOKEN = "sim-token"  # the simulator's test token: no secret, it opens nothing but the local simulator
SIM_INDEX = "eqc_enrich_sim.db"
TRY_MONTH = "month.xlsx"


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
    time_scale: Annotated[
        float, typer.Option(help="Divide latency and rate-limit window by this (1000: 20-60 ms, 10/60ms).")
    ] = 1.0,
    rate_limit: Annotated[str, typer.Option(help="Requests per window per token, e.g. 10/60s.")] = "10/60s",
    token: Annotated[
        str, typer.Option(envvar="EQC_SIM_TOKEN", help="Token the simulator accepts (its own, not an EQC one).")
    ] = SIM_TOKEN,
    token_idle: Annotated[str, typer.Option(help="A token expires after this long unused (wall clock).")] = "30m",
    token_ttl: Annotated[
        str | None, typer.Option("--token-ttl", "--token-max-age", help="A token expires this long after issue.")
    ] = None,
    scale_token_ttl: Annotated[
        bool, typer.Option("--scale-token-ttl", help="Divide the token lifetimes by the time scale too.")
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM; with --tls-key).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).")] = None,
    fail_rate: Annotated[float, typer.Option(help="Share of answers that are 500/502/503.")] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="Share of requests held without an answer.")] = 0.0,
    malformed_rate: Annotated[float, typer.Option(help="Share of answers with a broken JSON body.")] = 0.0,
) -> None:
    """Serve a local EQC on loopback until Ctrl-C, and print the `run` command that talks to it."""
    from eqc_enrich.simulator import Simulator, SimulatorConfig

    try:
        config = SimulatorConfig(
            seed=seed, latency=parse_range(latency), time_scale=time_scale, rate_limit=parse_rate_limit(rate_limit),
            tokens=(token,), token_ttl=parse_duration(token_idle),
            token_max_age=None if token_ttl is None else parse_duration(token_ttl),
            scale_token_lifetimes=scale_token_ttl,
            fail_rate=fail_rate, timeout_rate=timeout_rate, malformed_rate=malformed_rate,
        )  # fmt: skip
        if (tls_cert is None) != (tls_key is None):
            raise _fail("--tls-cert and --tls-key go together")
        sim = Simulator(
            config, host=host, port=port, tls_cert=str(tls_cert) if tls_cert else None,
            tls_key=str(tls_key) if tls_key else None,
        ).start()  # fmt: skip
    except (EqcEnrichError, OSError, RuntimeError) as exc:
        raise _fail(str(exc)) from exc
    stop = threading.Event()
    # Ctrl-C and SIGTERM stop it cleanly, also when it was started with SIGINT ignored (a shell's
    # background job): Python then raises no KeyboardInterrupt, and the simulator would never stop.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        typer.echo(_describe(sim.url, config))
        typer.echo(f"make a month it knows:  eqc-enrich make-data {TRY_MONTH} --seed {config.seed}")
        typer.echo(f"estimate the run:       {plan_command(config)}")
        typer.echo(f"then run against it:    {run_command(sim.url, config, token)}")
        typer.echo(
            f"or log in as on EQC:    eqc-enrich token login --eqc-url {sim.url}  (scan: POST {sim.url}/__sim/scan)"
        )
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()


def run_command(url: str, config: SimulatorConfig, token: str, month: str = TRY_MONTH) -> str:
    """The `eqc-enrich run` line that talks to this simulator at its own speed, ready to paste.

    The token is the simulator's own (never read from WDH_EQC_TOKEN, so a real EQC token cannot end up
    here). The index is a file of its own: simulated companies must not land in a real index.
    """
    slowest = config.latency[1] / config.time_scale
    timeout = max(1.0, 2 * slowest)  # twice the slowest call, never under a second
    args = [
        "eqc-enrich", "run", month, "--eqc-url", url, "--rate-limit", str(config.rate_limit.scaled(config.time_scale)),
        "--timeout", f"{timeout:g}s", "--db", SIM_INDEX,
    ]  # fmt: skip
    if os.name == "nt":
        return f'$env:WDH_EQC_TOKEN="{token}"; ' + subprocess.list2cmdline(args)
    return f"WDH_EQC_TOKEN={shlex.quote(token)} " + shlex.join(args)


def plan_command(config: SimulatorConfig, month: str = TRY_MONTH) -> str:
    """The `eqc-enrich plan` line whose lower bound holds for this simulator: its rate limit and its latency at
    its time scale, and the index `run_command` uses (no token: a plan asks EQC nothing)."""
    low, high = (seconds / config.time_scale for seconds in config.latency)
    args = [
        "eqc-enrich", "plan", month, "--rate-limit", str(config.rate_limit.scaled(config.time_scale)),
        "--latency", format_range(low, high), "--db", SIM_INDEX,
    ]  # fmt: skip
    return subprocess.list2cmdline(args) if os.name == "nt" else shlex.join(args)


def _describe(url: str, config: SimulatorConfig) -> str:
    """One line: where it listens and how it behaves (never the token)."""
    low, high = config.latency
    scale = config.time_scale
    faults = f"5xx {config.fail_rate:.0%}, timeout {config.timeout_rate:.0%}, malformed {config.malformed_rate:.0%}"
    ttl = format_duration(config.token_seconds(config.token_ttl))
    age = config.token_max_age
    max_age = "" if age is None else f", at most {format_duration(config.token_seconds(age))} after issue"
    speed = ""
    if scale != 1:
        scaled_latency = f"{format_duration(low / scale)}-{format_duration(high / scale)}"
        speed = f" (at time scale {scale:g}: {scaled_latency}, {config.rate_limit.scaled(scale)})"
    return (
        f"EQC simulator on {url}  seed {config.seed}, {config.universe_size:,} companies, "
        f"latency {format_duration(low)}-{format_duration(high)}, rate limit {config.rate_limit} per token{speed}, "
        f"token idle {ttl}{max_age} wall clock, faults: {faults}  (Ctrl-C stops)"
    )


def make_data(
    out: Annotated[Path, typer.Argument(help="File to write: .xlsx (sheet 规模明细), .csv or .parquet.")],
    rows: Annotated[int, typer.Option(help="Rows to generate.")] = 30_986,
    seed: Annotated[int, typer.Option(help="Seed (the simulator must run with the same one).")] = 7,
    companies: Annotated[
        int | None,
        typer.Option(min=1, help="Distinct customer companies [rows / 12.4, as in a real month].", show_default=False),
    ] = None,
    unknown_share: Annotated[float, typer.Option(help="Share of customers EQC does not know.")] = 0.05,
    variants: Annotated[
        str,
        typer.Option(
            help="plain: one month; realistic: also last month (<stem>.previous.<ext>), this month writing some of "
            "its customers another way and adding look-alikes, the truth saying which is which."
        ),
    ] = "plain",
) -> None:
    """Write a synthetic annuity_performance month and its ground truth (<stem>.truth.parquet)."""
    from eqc_enrich.read import table_format
    from eqc_enrich.simulator import make_month, make_realistic, previous_path, summarize, truth_path, write_frames

    if variants not in ("plain", "realistic"):
        raise _fail(f"--variants must be plain or realistic, not {variants!r}")
    try:
        table_format(out)  # a wrong extension fails before a month is generated, not after
        if variants == "realistic":
            (last, last_truth), (data, truth) = make_realistic(
                seed, rows=rows, companies=companies, unknown_share=unknown_share
            )
            write_frames(previous_path(out), last, last_truth)
        else:
            data, truth = make_month(seed, rows=rows, companies=companies, unknown_share=unknown_share)
        path = write_frames(out, data, truth)
    except (EqcEnrichError, OSError) as exc:
        raise _fail(str(exc)) from exc
    made = summarize(data, truth)
    typer.echo(
        f"wrote {path}: {made['rows']:,} rows ({made['collective_rows']:,} collective-plan rows without a name), "
        f"{made['companies']:,} distinct companies, {made['raw_names']:,} distinct raw names, "
        f"{made['unknown_names']:,} unknown to EQC; truth: {truth_path(path)}"
    )
    if variants == "realistic":
        kinds = truth.filter(pl.col("variant").is_not_null()).group_by("variant").agg(pl.col("name").n_unique())
        said = ", ".join(f"{kind} {n:,}" for kind, n in sorted(kinds.iter_rows()))
        typer.echo(f"last month: {previous_path(path)} (run it first, to fill the index); this month's names: {said}")
