"""`eqc-enrich demo`: the whole job on embedded defaults, in under a minute.

A time-scaled local EQC with the story's conditions (20-60 s latency, 10 requests per 60 s), a generated
month, then the same month twice: cold (the index is empty) and warm (zero EQC calls).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eqc_enrich._durations import RateLimit, format_duration
from eqc_enrich.enrich import EnrichResult, RunOptions, enrich
from eqc_enrich.model import Latency
from eqc_enrich.output import unresolved_path
from eqc_enrich.simulator import Simulator, SimulatorConfig, write_month

STORY_RATE = RateLimit(10, 60.0)
STORY_LATENCY_S = (20.0, 60.0)
DEMO_TOKEN = "demo-token"


def run_demo(out: Path, *, rows: int, time_scale: float, seed: int) -> tuple[EnrichResult, EnrichResult]:
    out.mkdir(parents=True, exist_ok=True)
    db = out / "demo-index.db"
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)
    month = write_month(out / "annuity_performance_demo.parquet", seed=seed, rows=rows)
    typer.echo(f"generated {rows:,} rows: {month}")
    config = SimulatorConfig(
        seed=seed, latency=STORY_LATENCY_S, time_scale=time_scale, rate_limit=STORY_RATE, tokens=(DEMO_TOKEN,)
    )
    with Simulator(config) as sim:
        typer.echo(
            f"simulated EQC at {sim.url}: latency 20-60s, limit {STORY_RATE}, time scale 1/{time_scale:g} "
            f"(so {format_duration(STORY_RATE.window_s / time_scale)} windows, 20-60 ms calls)"
        )
        options = RunOptions(
            db=db,
            eqc_url=sim.url,
            token=DEMO_TOKEN,
            rate_limit=STORY_RATE.scaled(time_scale),
            # Twice the slowest call at the same scale, but never under a second: the simulator shares this
            # process, so its answers can lag by more than a scaled call lasts.
            timeout_s=max(1.0, 120.0 / time_scale),
            salt="demo-salt",
            latency_hint=Latency(40.0 / time_scale, 60.0 / time_scale),
        )
        cold = enrich(month, options=options, output=out / "enriched_cold.parquet")
        _print("cold run (empty index)", cold, time_scale)
        warm = enrich(
            month,
            options=options,
            output=out / "enriched_warm.parquet",
            unresolved_output=unresolved_path(month),
        )
        _print("warm run (same month again)", warm, time_scale)
        stats = sim.stats()
    typer.echo(
        f"simulator saw {stats.get('accepted', 0):,} accepted requests, {stats.get('rate_limited', 0)} answered 429, "
        f"at most {stats.get('max_in_window', 0)} in any window; "
        f"search keys asked twice: {stats.get('search_keys_repeated', 0)}"
    )
    return cold, warm


def _print(title: str, result: EnrichResult, time_scale: float) -> None:
    summary = result.summary.as_dict()
    summary.pop("timing", None)
    typer.echo(f"\n== {title} ==")
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2, default=str))
    eqc_s = result.summary.phases_s.get("eqc", 0.0)
    typer.echo(
        f"{title}: {format_duration(result.summary.elapsed_s)} in all; the EQC stage took {format_duration(eqc_s)} "
        f"at time scale 1/{time_scale:g}, which is {format_duration(eqc_s * time_scale)} at the story's real speed"
    )
