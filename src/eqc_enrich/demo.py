"""`eqc-enrich demo`: the whole job on embedded defaults, in under a minute.

A time-scaled local EQC with the story's conditions (20-60 s latency, 10 requests per 60 s), a generated
month, then the same month twice: cold (the index is empty) and warm (zero EQC calls). Each run shows the
progress display a real run shows, then a few lines a person reads; the full summaries only on request.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from eqc_enrich._durations import RateLimit, format_duration
from eqc_enrich.config import EqcOptions
from eqc_enrich.enrich import EnrichResult, enrich_async
from eqc_enrich.model import Latency
from eqc_enrich.options import RunOptions
from eqc_enrich.output import unresolved_path
from eqc_enrich.progress import ProgressDisplay, RunProgress
from eqc_enrich.simulator import Simulator, SimulatorConfig, default_companies, write_month

__all__ = [
    "DEMO_TOKEN",
    "STORY_LATENCY_S",
    "STORY_RATE",
    "run_demo",
]

STORY_RATE = RateLimit(10, 60.0)
STORY_LATENCY_S = (20.0, 60.0)
DEMO_TOKEN = "demo-token"


def run_demo(
    out: Path, *, rows: int, time_scale: float, seed: int, as_json: bool = False, progress_interval_s: float = 1.0
) -> tuple[EnrichResult, EnrichResult]:
    """Cold run, then warm run, against an in-process simulator; `progress_interval_s` paces plain lines."""
    out.mkdir(parents=True, exist_ok=True)
    db = out / "demo-index.db"
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)
    month = write_month(out / "annuity_performance_demo.parquet", seed=seed, rows=rows)
    typer.echo(f"generated a month of {rows:,} rows ({default_companies(rows):,} customer companies): {month}")
    config = SimulatorConfig(
        seed=seed, latency=STORY_LATENCY_S, time_scale=time_scale, rate_limit=STORY_RATE, tokens=(DEMO_TOKEN,)
    )
    low, high = (seconds / time_scale for seconds in STORY_LATENCY_S)
    with Simulator(config) as sim:
        typer.echo(
            f"simulated EQC at {sim.url}: latency 20-60s, limit {STORY_RATE}, time scale 1/{time_scale:g} "
            f"(so {STORY_RATE.scaled(time_scale)}: {format_duration(low)}-{format_duration(high)} calls)"
        )
        options = RunOptions(
            db=db,
            eqc=EqcOptions(
                url=sim.url,
                token=DEMO_TOKEN,
                rate_limit=STORY_RATE.scaled(time_scale),
                # Twice the slowest call at the same scale, but never under a second: the simulator shares this
                # process, so its answers can lag by more than a scaled call lasts.
                timeout_s=max(1.0, 2 * high),
            ),
            salt="demo-salt",
            latency_hint=Latency((low + high) / 2, high),
        )
        runs = (
            ("cold run (empty index)", out / "enriched_cold.parquet", None),
            ("warm run (same month again)", out / "enriched_warm.parquet", unresolved_path(month)),
        )
        results = []
        for title, output, unresolved in runs:
            typer.echo(f"\n== {title} ==")
            result = _shown_run(month, options, output, unresolved, progress_interval_s, (low + high) / 2)
            _print(result, time_scale, as_json=as_json)
            results.append(result)
        stats = sim.stats()
    typer.echo(
        f"\nsimulator saw {stats.get('accepted', 0):,} accepted requests, {stats.get('rate_limited', 0)} answered "
        f"429, at most {stats.get('max_in_window', 0)} in any window; "
        f"search keys asked twice: {stats.get('search_keys_repeated', 0)}"
    )
    return results[0], results[1]


def _shown_run(
    month: Path, options: RunOptions, output: Path, unresolved: Path | None, interval_s: float, latency_s: float
) -> EnrichResult:
    """One run with the display the command line shows: a live panel on a terminal, plain lines elsewhere."""
    progress = RunProgress(latency_hint_s=latency_s)

    async def main() -> EnrichResult:
        display = ProgressDisplay(progress, mode=ProgressDisplay.choose_mode(quiet=False), interval_s=interval_s)
        display.start()
        result: EnrichResult | None = None
        try:
            result = await enrich_async(
                month, options=options, output=output, unresolved_output=unresolved, progress=progress
            )
            return result
        finally:
            await display.stop(final_line=result is not None)

    return asyncio.run(main())


def _print(result: EnrichResult, time_scale: float, *, as_json: bool) -> None:
    """The few figures that tell the story of a run; `as_json` adds the whole summary."""
    s = result.summary
    eqc = s.eqc
    calls = s.api_calls.get("total", 0)
    efficiency = f"{s.efficiency:.2f}" if s.efficiency is not None else "- (no EQC call)"
    eqc_s = s.phases_s.get("eqc", 0.0)
    typer.echo(
        f"rows {s.rows:,}   distinct names {s.distinct_names:,}   "
        f"names asked of EQC {eqc.names_asked:,} (found {eqc.found:,}, not found {eqc.not_found:,})"
    )
    typer.echo(f"EQC calls {calls:,}   elapsed {format_duration(s.elapsed_s)}   efficiency {efficiency}")
    if eqc.names_asked:
        typer.echo(
            f"the EQC stage took {format_duration(eqc_s)} at time scale 1/{time_scale:g}: "
            f"{format_duration(eqc_s * time_scale)} at the story's real speed"
        )
    if as_json:
        typer.echo(s.to_json())
