"""What a run would cost, answered from the index alone: `plan()` makes no EQC call.

The index stage of a run, then the performance model: names for EQC, calls needed, and the lower bound on
the run's time at the quota (and what the old sequential flow would take), for a latency the caller gives.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa

from eqc_enrich.index_stage import read_input, run_index_stage
from eqc_enrich.model import Latency, Workload, lower_bound, sequential_time
from eqc_enrich.options import RunOptions, resolve_config
from eqc_enrich.resolve import Overrides
from eqc_enrich.settings import Settings, load_settings
from eqc_enrich.store import IndexStore, database_url

__all__ = ["STORY_LATENCY", "PlanReport", "plan", "plan_async"]


STORY_LATENCY = Latency(mean_s=40.0, max_s=60.0)  # 20-60 s per call, as the story measured it


@dataclass(frozen=True)
class PlanReport:
    """What a run would cost, answered from the index alone: no EQC call is made."""

    rows: int
    distinct_names: int
    answered_before_eqc: int  # by the index, ids in the input, overrides or a known not-found
    index_names: int  # of those, answered by the index as it is now (an entry, or a known not-found)
    negative_cache_hits: int
    too_long: int
    names_for_eqc: int
    calls_per_name: int
    calls_needed: int
    rate_limit: str
    latency_mean_s: float
    latency_max_s: float
    lower_bound_s: float
    old_flow_s: float

    @property
    def index_hit_rate(self) -> float:
        return self.index_names / self.distinct_names if self.distinct_names else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "index_hit_rate": round(self.index_hit_rate, 4)}


def plan(
    source: pl.DataFrame | Any | str | Path,
    *,
    options: RunOptions | None = None,
    latency: Latency = STORY_LATENCY,
    settings: Settings | None = None,
    **overrides: Any,
) -> PlanReport:
    """Rows, distinct names, index hits, names for EQC, calls needed and the lower bound on time."""
    opts = replace(options or RunOptions(), **overrides)
    return asyncio.run(plan_async(source, options=opts, latency=latency, settings=settings))


async def plan_async(
    source: pl.DataFrame | Any | str | Path,
    *,
    options: RunOptions | None = None,
    latency: Latency = STORY_LATENCY,
    settings: Settings | None = None,
) -> PlanReport:
    """`plan` for callers that already run an event loop."""
    opts = options or RunOptions()
    config = resolve_config(opts, settings or load_settings())
    table, columns, _ = read_input(source, opts)
    overrides = Overrides.load(config.overrides)
    store = await asyncio.to_thread(IndexStore, _existing_or_empty(opts.db), schema=opts.db_schema)
    try:
        index = await asyncio.to_thread(run_index_stage, store, table, columns, overrides, opts)
    finally:
        store.close()
    counts = index.counts
    k = config.stage.calls_per_name
    work = Workload(len(index.eqc_names), k)
    old_work = Workload(len(index.pending) - counts.negative_cache_hits, 3)
    limit = config.access.rate_limit
    return PlanReport(
        rows=counts.rows,
        distinct_names=counts.distinct_names,
        answered_before_eqc=counts.answered_before_eqc,
        index_names=counts.index_names,
        negative_cache_hits=counts.negative_cache_hits,
        too_long=counts.too_long,
        names_for_eqc=len(index.eqc_names),
        calls_per_name=k,
        calls_needed=round(work.requests),
        rate_limit=str(limit),
        latency_mean_s=latency.mean_s,
        latency_max_s=latency.max_s,
        lower_bound_s=round(lower_bound(work, limit, latency), 3),
        old_flow_s=round(sequential_time(old_work, limit, latency), 3),
    )


def _existing_or_empty(db: str | Path | None) -> str:
    """A plan only reads: for a SQLite file that does not exist yet it reads an empty index in memory
    rather than leave a new file behind."""
    url = database_url(db)
    parsed = sa.make_url(url)
    on_disk = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    if on_disk and not Path(str(parsed.database)).exists():
        return "sqlite://"
    return url
