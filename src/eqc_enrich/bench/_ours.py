"""Our flow under measurement: `enrich_async` as a pipeline would call it, with its progress sampled.

The sampler reads `RunProgress.eqc.names_done` on a timer; it only reads, so it cannot change the run
beyond the few microseconds a wake-up costs the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from eqc_enrich.bench._config import BenchConfig
from eqc_enrich.config import EqcOptions
from eqc_enrich.enrich import enrich_async
from eqc_enrich.options import RunOptions
from eqc_enrich.progress import RunProgress
from eqc_enrich.settings import load_settings
from eqc_enrich.summary import RunSummary

BENCH_SALT = "eqc-enrich-bench"


@dataclass
class OursResult:
    summary: RunSummary
    progress: RunProgress
    wall_s: float
    curve: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, names done)


def our_options(config: BenchConfig, *, db: Path, url: str, token: str) -> RunOptions:
    """Search only (k = 1), paced to the scaled limit, latency hint = the configured range, scaled."""
    return RunOptions(
        db=db,
        eqc=EqcOptions(
            url=url,
            token=token,
            rate_limit=config.scaled_rate,
            timeout_s=config.timeout_s,
            retries=config.retries,
            proxy=config.proxy,
            pac_url=config.pac_url,
            ca_bundle=config.ca_bundle,
        ),
        salt=BENCH_SALT,
        latency_hint=config.scaled_latency,
    )


async def run_ours(config: BenchConfig, month: Path, output: Path, *, db: Path, url: str, token: str) -> OursResult:
    """One run, end to end (read, resolve, write), with names resolved over time sampled in the background."""
    progress = RunProgress()
    curve: list[tuple[float, int]] = [(0.0, 0)]
    started = time.monotonic()
    sampler = asyncio.create_task(_sample(progress, curve, started, config.sample_interval_s))
    try:
        result = await enrich_async(
            month,
            options=our_options(config, db=db, url=url, token=token),
            output=output,
            settings=load_settings(),  # every knob that matters is in the options; this only validates
            progress=progress,
        )
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    wall = time.monotonic() - started
    curve.append((wall, progress.eqc.names_done))
    return OursResult(result.summary, progress, wall, curve)


async def _sample(progress: RunProgress, curve: list[tuple[float, int]], started: float, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        curve.append((time.monotonic() - started, progress.eqc.names_done))
