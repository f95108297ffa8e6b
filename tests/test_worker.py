"""The standing worker: it settles what runs leave open, with the quota runs leave idle, and never in their way.

Real parts throughout: the simulator on loopback (time scale 1000: 10 requests per 60 ms, 20-60 ms a call),
real SQLite files and the real PostgreSQL (`index_db`), worker and runs as separate processes where the
test is about processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from eqc_enrich import RateLimit
from eqc_enrich._pacing import next_send
from eqc_enrich.enrich import RunOptions, enrich
from eqc_enrich.keys import normalize_name
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_months
from eqc_enrich.store import IndexEntry, IndexStore, UnsettledName, utcnow
from eqc_enrich.worker import WORKER_PREFIX, WorkerOptions, build_queue, run_worker
from tests.conftest import IndexDb

SCALE = 1000.0
LIMIT = RateLimit(10, 0.06)  # the story's 10 / 60 s at time scale 1000
SLOT_S = LIMIT.window_s / LIMIT.requests
TOKEN = "worker-token"
CLI = [sys.executable, "-m", "eqc_enrich"]


@pytest.fixture(scope="module")
def months() -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """Three months of 1,200 rows and 200 customers; each shares 85% of its customers with the one before."""
    return [(data.with_row_index("row"), truth) for data, truth in make_months(12, rows=1_200, companies=200,
                                                                                existing_id_share=0.0)]  # fmt: skip


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        seed=12, latency=(20.0, 60.0), time_scale=SCALE, rate_limit=RateLimit(10, 60.0), tokens=(TOKEN,),
        token_ttl=86_400.0,
    )  # fmt: skip
    with Simulator(config) as simulator:
        yield simulator


def run_options(sim: Simulator, db: IndexDb | str, **extra: Any) -> RunOptions:
    url, schema = (db, None) if isinstance(db, str) else (db.url, db.schema)
    return RunOptions(db=url, db_schema=schema, eqc_url=sim.url, token=TOKEN, rate_limit=LIMIT, timeout_s=5.0,
                      claim_lease_s=2.0, **extra)  # fmt: skip


def worker_options(sim: Simulator, db: IndexDb | str, **extra: Any) -> WorkerOptions:
    url, schema = (db, None) if isinstance(db, str) else (db.url, db.schema)
    return WorkerOptions(db=url, db_schema=schema, eqc_url=sim.url, token=TOKEN, rate_limit=LIMIT, timeout_s=5.0,
                         claim_lease_s=2.0, **extra)  # fmt: skip


def keys_of(data: pl.DataFrame) -> set[str]:
    return {normalize_name(n) for n in data["客户名称"].drop_nulls().to_list()} - {""}


def asked_names(sim: Simulator) -> set[str]:
    return set(sim.state.stats.search_keys)


# --- three months, with and without the worker ----------------------------------------------------------------


def test_with_the_worker_between_months_each_run_asks_only_its_new_names(
    months: list[tuple[pl.DataFrame, pl.DataFrame]], sim: Simulator, index_db: IndexDb, tmp_path: Path
) -> None:
    """Month 1's run is cut short by --budget (as a run stopped at the end of a working day is): the names it
    did not ask keep temporary ids. Without the worker, month 2's run asks them all again beside its new
    names; with the worker between the months (a few simulated minutes of the 29 idle days' quota), month 2
    asks only names month 1 never saw."""
    index_db.open().close()
    alone = str(tmp_path / "alone.db")
    figures: dict[str, list[tuple[int, float]]] = {"without": [], "with": []}
    budget = 80
    for label, db in (("without", alone), ("with", index_db)):
        first = enrich(months[0][0], options=run_options(sim, db, budget=budget))
        assert first.summary.eqc.names_asked == budget and first.summary.eqc.over_budget > 0
        for month in (1, 2):
            if label == "with":
                report = run_worker(worker_options(sim, db), once=True)
                assert report.status == "completed" and report.yielded == 0
                assert (report.asked > 0) == (month == 1)  # month 2's run left nothing the TTL allows to ask
            sim.reset_stats()
            started = time.perf_counter()
            result = enrich(months[month][0], options=run_options(sim, db))
            seconds = time.perf_counter() - started
            assert result.summary.status == "completed"
            before = set().union(*(keys_of(months[m][0]) for m in range(month)))
            asked = asked_names(sim)
            if label == "with":
                assert asked <= keys_of(months[month][0]) - before  # only names no earlier month had
            figures[label].append((result.summary.eqc.names_asked, seconds))
    for month in (0, 1):
        (n_without, t_without), (n_with, t_with) = figures["without"][month], figures["with"][month]
        print(f"month {month + 2}: without the worker {n_without} names asked in {t_without:.2f}s; "
              f"with the worker {n_with} names in {t_with:.2f}s")  # fmt: skip
        assert n_with <= n_without
    # month 2 without the worker asked again every name month 1 left unasked that month 2 has
    assert figures["without"][0][0] - figures["with"][0][0] >= 30
