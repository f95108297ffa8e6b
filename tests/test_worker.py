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
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from tests.conftest import IndexDb

from eqc_enrich import RateLimit
from eqc_enrich.enrich import RunOptions, enrich
from eqc_enrich.keys import normalize_name
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_months
from eqc_enrich.store import IndexStore
from eqc_enrich.worker import WORKER_PREFIX, WorkerOptions, build_queue, run_worker

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
    settings: dict[str, Any] = {"rate_limit": LIMIT, "timeout_s": 5.0, "claim_lease_s": 2.0, **extra}
    return RunOptions(db=url, db_schema=schema, eqc_url=sim.url, token=TOKEN, **settings)


def worker_options(sim: Simulator, db: IndexDb | str, **extra: Any) -> WorkerOptions:
    url, schema = (db, None) if isinstance(db, str) else (db.url, db.schema)
    settings: dict[str, Any] = {"rate_limit": LIMIT, "timeout_s": 5.0, "claim_lease_s": 2.0, **extra}
    return WorkerOptions(db=url, db_schema=schema, eqc_url=sim.url, token=TOKEN, **settings)


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
        assert first.summary.eqc.names_asked == budget
        assert first.summary.eqc.over_budget > 0
        for month in (1, 2):
            if label == "with":
                report = run_worker(worker_options(sim, db), once=True)
                assert report.status == "completed"
                assert report.yielded == 0
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


# --- the worker beside runs: one quota, no name twice, runs not slowed -----------------------------------------

PROC_LIMIT = "10/300ms"  # time scale 200 for the process tests: three processes on two shared cores


def start(args: list[str], index_db: IndexDb, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args, *index_db.cli(), *extra],
        env={**os.environ, "WDH_EQC_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_run(path: Path, sim: Simulator, index_db: IndexDb) -> subprocess.Popen[str]:
    args = ["run", str(path), "--eqc-url", sim.url, "--rate-limit", PROC_LIMIT, "--timeout", "5s",
            "--claim-lease", "2s", "--quiet", "--summary", str(path.with_suffix(".summary.json"))]  # fmt: skip
    return start(args, index_db)


def start_worker(sim: Simulator, index_db: IndexDb, *extra: str) -> subprocess.Popen[str]:
    args = ["worker", "--eqc-url", sim.url, "--rate-limit", PROC_LIMIT, "--timeout", "5s", "--quiet", *extra]
    return start(args, index_db)


def halves(data: pl.DataFrame, folder: Path, tag: str) -> list[Path]:
    shuffled = data.sample(fraction=1.0, shuffle=True, seed=4)
    paths = []
    for i in range(2):
        path = folder / f"{tag}{i}.parquet"
        shuffled.slice(i * shuffled.height // 2, shuffled.height // 2).write_parquet(path)
        paths.append(path)
    return paths


def run_pair(paths: list[Path], sim: Simulator, index_db: IndexDb, *, worker: bool) -> list[dict[str, Any]]:
    procs = [start_worker(sim, index_db, "--once", "--claim-lease", "2s")] if worker else []
    procs += [start_run(path, sim, index_db) for path in paths]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    return [json.loads(path.with_suffix(".summary.json").read_text()) for path in paths]


def test_a_worker_and_two_runs_share_the_quota_ask_no_name_twice_and_the_runs_are_not_slowed(
    months: list[tuple[pl.DataFrame, pl.DataFrame]], sim: Simulator, index_db: IndexDb, tmp_path: Path
) -> None:
    """Month 1 was cut short, so the worker's queue is mostly names month 2's two runs also need: all three
    start together. Compared with the same two runs alone on the same index state, the runs finish no later
    (their time per name asked stays within the margin one quota window gives), the quota is never exceeded
    and no name goes to EQC twice."""
    figures = {}
    for label, with_worker in (("alone", False), ("with the worker", True)):
        folder = tmp_path / label.replace(" ", "_")
        folder.mkdir()
        db = IndexDb(f"sqlite:///{folder / 'index.db'}", None, "sqlite") if index_db.dialect == "sqlite" else index_db
        if with_worker and index_db.dialect != "sqlite":
            _clear(index_db)
        db.open().close()
        enrich(months[0][0], options=run_options(sim, db, budget=60, rate_limit=RateLimit(10, 0.3)))
        sim.reset_stats()
        summaries = run_pair(halves(months[1][0], folder, "m2-"), sim, db, worker=with_worker)
        stats = sim.stats()
        assert stats["max_in_window"] <= 10, stats
        assert stats["rate_limited"] == 0, stats
        assert stats["search_keys_repeated"] == 0  # no name asked twice, by the runs or the worker
        elapsed = max(s["elapsed_s"] for s in summaries)
        asked = sum(s["eqc"]["names_asked"] for s in summaries)
        figures[label] = (elapsed, asked, stats["search_keys_distinct"])
        print(f"{label}: the runs asked {asked} names, {stats['search_keys_distinct']} names in all, "
              f"the slower run took {elapsed:.2f}s")  # fmt: skip
    (alone_s, alone_asked, _), (with_s, with_asked, total) = figures["alone"], figures["with the worker"]
    assert with_asked <= alone_asked
    assert total >= alone_asked
    window = 0.3
    # the runs alone asked at least as much; with the worker they may lose a window at their start
    assert with_s <= alone_s * 1.25 + 4 * window


def _clear(index_db: IndexDb) -> None:
    """The PostgreSQL case reuses one schema for the second scenario: empty the tables between."""
    store = index_db.open()
    try:
        with store.transaction() as conn:
            for table in reversed(store.tables.all):
                conn.execute(sa.delete(table))
    finally:
        store.close()


def test_a_worker_killed_with_sigkill_loses_nothing_and_another_takes_over_its_claims_after_the_lease(
    months: list[tuple[pl.DataFrame, pl.DataFrame]], sim: Simulator, index_db: IndexDb, tmp_path: Path
) -> None:
    index_db.open().close()
    enrich(months[0][0], options=run_options(sim, index_db, budget=20))
    store = index_db.open()
    queue = {item.key for item in build_queue(store, WorkerOptions()).items}
    store.close()
    assert len(queue) > 100
    sim.reset_stats()
    first = start_worker(sim, index_db, "--claim-lease", "1s", "--batch", "500", "--concurrency", "4")
    deadline = time.monotonic() + 60
    while sim.stats()["requests"]["search"] < 30:
        assert time.monotonic() < deadline
        assert first.poll() is None
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    sent_before = sim.stats()["requests"]["search"]
    store = index_db.open()
    try:
        held = {row[0] for row in _claims(store) if row[1].startswith(WORKER_PREFIX)}
        assert held  # the dead worker's claims are still there, until their lease runs out
        second = start_worker(sim, index_db, "--once", "--claim-lease", "1s", "--log-json", str(tmp_path / "w.jsonl"))
        _, err = second.communicate(timeout=240)
        assert second.returncode == 0, err
        logged = {row["lookup_key"]: row["owner"] for row in store.worker_log.history(limit=10_000)}
        answered = {e["lookup_key"] for e in store.entries.all_rows()} | _negatives(store)
    finally:
        store.close()
    assert queue <= answered  # every name of the queue has its answer in the index
    second_owner = set(logged.values())
    assert len(second_owner) == 1  # the dead worker's log of its pass died with it; its answers did not
    assert held <= set(logged)  # the names it held: taken over by the second once the lease ran out
    stats = sim.stats()
    repeated = stats["search_keys_repeated"]
    print(f"{sent_before} requests before the kill, {repeated} names asked twice (in flight at the kill)")
    assert repeated <= 4 + 2  # the requests in flight (--concurrency 4) and an answer not yet committed
    events = [json.loads(line)["event"] for line in (tmp_path / "w.jsonl").read_text().splitlines()]
    assert (events[0], events[-1]) == ("start", "finish")
    assert "worker_pass" in events


def _claims(store: IndexStore) -> list[tuple[str, str]]:
    with store.transaction() as conn:
        return [(str(k), str(o)) for k, o in conn.execute(sa.select(store.tables.claims.c.lookup_key,
                                                                          store.tables.claims.c.owner))]  # fmt: skip


def _negatives(store: IndexStore) -> set[str]:
    with store.transaction() as conn:
        return {str(k) for (k,) in conn.execute(sa.select(store.tables.negatives.c.lookup_key))}
