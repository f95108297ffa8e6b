"""The standing worker: it settles what runs leave open, with the quota runs leave idle, and never in their way.

Real parts throughout: the simulator on loopback (time scale 1000: 10 requests per 60 ms, 20-60 ms a call),
real SQLite files and the real PostgreSQL (`index_db`), worker and runs as separate processes where the
test is about processes.
"""

from __future__ import annotations

import json
import os
import random
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
from tests.conftest import IndexDb
from tests.options import run_options as flat_run_options
from tests.options import worker_options as flat_worker_options

from eqc_enrich import ConfidencePolicy, RateLimit
from eqc_enrich.cli import worker_exit_code
from eqc_enrich.enrich import enrich
from eqc_enrich.eqc_stage import next_send
from eqc_enrich.keys import normalize_name
from eqc_enrich.options import RunOptions
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_months
from eqc_enrich.simulator._universe import invent_absent_names
from eqc_enrich.store import IndexEntry, IndexStore, UnsettledName, WriteBatch, utcnow
from eqc_enrich.worker import WORKER_PREFIX, WorkerControl, WorkerOptions, build_queue, quota_busy, run_worker

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
    return flat_run_options(db=url, db_schema=schema, eqc_url=sim.url, token=TOKEN, **settings)


def worker_options(sim: Simulator, db: IndexDb | str, **extra: Any) -> WorkerOptions:
    """These tests are about names: base_info's details, the worker's last kind of work, are left out
    (tests/test_base_info.py has them)."""
    url, schema = (db, None) if isinstance(db, str) else (db.url, db.schema)
    settings: dict[str, Any] = {"rate_limit": LIMIT, "timeout_s": 5.0, "claim_lease_s": 2.0, "fill_details": False}
    settings.update(extra)
    return flat_worker_options(db=url, db_schema=schema, eqc_url=sim.url, token=TOKEN, **settings)


def keys_of(data: pl.DataFrame) -> set[str]:
    return {normalize_name(n) for n in data["客户名称"].drop_nulls().to_list()} - {""}


def asked_names(sim: Simulator) -> set[str]:
    return set(sim.state.stats.search_keys)


# --- three months, with and without the worker ----------------------------------------------------------------


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.serial
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


@pytest.mark.slow
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


# --- the queue, the yielding quota, the old queue table, remap, status ---------------------------------------


def test_the_queue_puts_the_most_valuable_first_and_waits_out_ttl_backoff_and_refresh(index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        names = [
            UnsettledName("小公司", "temporary", "not_asked", rows=2, temp_id="IN_A"),
            UnsettledName("大公司", "temporary", "not_asked", rows=50, assets=1.0, temp_id="IN_B"),
            UnsettledName("富公司", "temporary", "not_asked", rows=2, assets=9e9, temp_id="IN_C"),
            UnsettledName("失败公司", "temporary", "failed", rows=90, temp_id="IN_D"),
            UnsettledName("不知公司", "temporary", "not_found", rows=70, temp_id="IN_E"),
            UnsettledName("旧不知公司", "temporary", "not_found", rows=60, temp_id="IN_F"),
            UnsettledName("弱公司", "low_confidence", "weak_match", rows=80, candidate_id="C1", confidence=0.5),
            UnsettledName("非公司", "temporary", "not_asked", rows=99, temp_id="IN_G"),
        ]
        store.unsettled.record(names, "run-1")
        store.unsettled.mark_not_a_company("非公司")
        store.negatives.add(["不知公司"])  # asked just now: within the TTL
        store.negatives.add(["旧不知公司", "孤儿不知"], now=utcnow() - timedelta(days=40))
        old = utcnow() - timedelta(days=100)
        store.entries.upsert([IndexEntry("模糊公司", "customer_name", "C2", 0.7, "eqc_api"),
                              IndexEntry("清楚公司", "customer_name", "C3", 0.95, "eqc_api")], now=old)  # fmt: skip
        queue = build_queue(store, WorkerOptions())
        order = [(item.key, item.kind) for item in queue.items]
        assert order == [
            ("大公司", "temporary"), ("富公司", "temporary"), ("小公司", "temporary"), ("失败公司", "failed"),
            ("旧不知公司", "negative_expired"), ("孤儿不知", "negative_expired"), ("模糊公司", "low_confidence"),
        ]  # fmt: skip
        # the policy draws the line: asking again below 0.99 takes in the old 0.95 answer too
        stricter = build_queue(store, WorkerOptions(confidence=ConfidencePolicy(refresh_below=0.99)))
        assert {item.key for item in stricter.items if item.kind == "low_confidence"} == {"模糊公司", "清楚公司"}
        assert queue.waiting["negative_expired"] == 1  # 不知公司 waits for its TTL
        assert queue.waiting["low_confidence"] == 1  # the weak answer was seen just now
        assert queue.next_due is not None
        assert queue.next_due > utcnow() + timedelta(days=29)
        # a failure backs off; a not-found just answered waits for the TTL; an answer settles
        store.worker_log.record([{"owner": "worker-x", "lookup_key": "失败公司", "kind": "failed", "outcome": "failed",
                                  "company_id": None}])  # fmt: skip
        store.negatives.add(["旧不知公司"])
        store.write(WriteBatch(entries=[IndexEntry("大公司", "customer_name", "C9", 1.0, "eqc_api")]))
        again = [(item.key, item.kind) for item in build_queue(store, WorkerOptions()).items]
        assert again[:2] == [("富公司", "temporary"), ("小公司", "temporary")]
        assert "失败公司" not in dict(again)
        assert "旧不知公司" not in dict(again)
        no_backoff = build_queue(store, WorkerOptions(retry_failed_s=0.0)).items
        assert "失败公司" in {item.key for item in no_backoff}
        # EQC answered 富公司 too weakly to settle it: it waits the refresh age, not asked in a loop
        store.worker_log.record([{"owner": "worker-x", "lookup_key": "富公司", "kind": "temporary", "outcome": "found",
                                  "company_id": "C5"}])  # fmt: skip
        weakly = build_queue(store, WorkerOptions())
        assert "富公司" not in {item.key for item in weakly.items}
        assert weakly.waiting["low_confidence"] == 2
    finally:
        store.close()


def test_the_worker_gets_a_slot_only_while_runs_leave_the_quota_idle(index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        quota = store.quota

        def rule(sends: list[float], paused: float, now: float) -> float:
            return next_send(sends, paused, now, requests=10, span_s=1.0)

        args: dict[str, Any] = {"background": WORKER_PREFIX, "idle_s": 1.0, "ahead_s": 0.11, "recent": 10,
                                "keep_s": 10.0}  # fmt: skip
        slot, now = quota.reserve_if_idle("q", "worker-a", rule, **args)
        assert slot is not None  # an idle quota: the worker may send now
        assert abs(slot - now) < 0.01
        quota.reserve_many("q", "worker-b", rule, count=9, recent=10, keep_s=10.0)  # the window is full now
        third, _ = quota.reserve_if_idle("q", "worker-a", rule, **args)
        assert third is None  # the next slot is a window away: a worker takes none that far ahead
        quota.reserve("q", "run-1", rule, recent=10, keep_s=10.0)  # a run takes a slot
        busy, _ = quota.reserve_if_idle("q", "worker-a", rule, **{**args, "ahead_s": 5.0})
        assert busy is None  # a run used the quota within idle_s: the worker yields
        assert quota_busy(store, "q", 1.0) > 0
        assert quota_busy(store, "other", 1.0) == 0.0
        for bad in ({"recent": -1}, {"keep_s": 0.0}):
            with pytest.raises(ValueError, match=r"^reserve needs recent >= 0 and keep_s > 0$"):
                quota.reserve_if_idle("q", "worker-a", rule, **{**args, **bad})
    finally:
        store.close()


LEGACY_DDL = """CREATE TABLE {table} (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, raw_name varchar(255) NOT NULL,
    normalized_name varchar(255) NOT NULL, temp_id varchar(50), status varchar(20) NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0, last_error text, resolved_company_id varchar(100),
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
    next_retry_at timestamptz DEFAULT now())"""


def _legacy_table(store: IndexStore, index_db: IndexDb) -> sa.Table:
    """`enrichment_requests` as the old tools created it (the production DDL on PostgreSQL)."""
    with store.transaction() as conn:
        if index_db.dialect == "postgresql":
            conn.execute(sa.text(LEGACY_DDL.format(table=f'"{index_db.schema}".enrichment_requests')))
        else:
            sa.Table(
                "enrichment_requests", sa.MetaData(),
                sa.Column("id", sa.Integer, primary_key=True), sa.Column("raw_name", sa.String(255), nullable=False),
                sa.Column("normalized_name", sa.String(255), nullable=False), sa.Column("temp_id", sa.String(50)),
                sa.Column("status", sa.String(20), nullable=False), sa.Column("attempts", sa.Integer, nullable=False),
                sa.Column("last_error", sa.Text), sa.Column("resolved_company_id", sa.String(100)),
                sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
                sa.Column("next_retry_at", sa.DateTime(timezone=True)),
            ).create(conn)  # fmt: skip
    table = store.legacy_requests.table
    assert table is not None
    return table


def test_the_old_queue_table_is_drained_by_its_own_rules(sim: Simulator, index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        table = _legacy_table(store, index_db)
        known = sim.state.universe.companies[0]
        now = utcnow()
        rows = [
            (f" {known.name} ", 0, "pending", now - timedelta(hours=2), now - timedelta(minutes=1)),
            ("某某不存在的公司甲", 0, "pending", now - timedelta(hours=1), now - timedelta(minutes=1)),
            ("某某不存在的公司乙", 2, "pending", now - timedelta(hours=1), now - timedelta(minutes=1)),
            ("某某不存在的公司丙", 0, "pending", now, now + timedelta(hours=1)),  # not due yet
            ("某某不存在的公司丁", 0, "processing", now - timedelta(minutes=20), None),  # stuck: goes back
        ]
        with store.transaction() as conn:
            for raw, attempts, status, at, retry in rows:
                conn.execute(sa.insert(table).values(raw_name=raw, normalized_name=raw.strip(), status=status,
                                                     attempts=attempts, created_at=at, updated_at=at,
                                                     next_retry_at=retry))  # fmt: skip

        def the_old_job_queues_a_name(kind: str, fields: dict[str, Any]) -> None:
            if kind == "worker_pass" and fields["number"] == 1:  # due now, but not when the --once began
                late = "某某不存在的公司戊"
                with store.transaction() as conn:
                    conn.execute(sa.insert(table).values(raw_name=late, normalized_name=late, status="pending",
                                                         attempts=0, created_at=utcnow(), updated_at=utcnow(),
                                                         next_retry_at=None))  # fmt: skip

        report = run_worker(worker_options(sim, index_db), once=True, events=the_old_job_queues_a_name)
        assert report.status == "completed"
        with store.transaction() as conn:
            got = {r.raw_name.strip(): r for r in conn.execute(sa.select(table))}
    finally:
        store.close()
    assert (got[known.name].status, got[known.name].resolved_company_id) == ("done", known.company_id)
    first = got["某某不存在的公司甲"]
    assert (first.status, first.attempts, first.last_error) == ("pending", 1, "no result")
    assert first.next_retry_at is not None  # 1 minute on, by the old worker's backoff
    assert (got["某某不存在的公司乙"].status, got["某某不存在的公司乙"].attempts) == ("failed", 3)
    assert (got["某某不存在的公司丙"].status, got["某某不存在的公司丙"].attempts) == ("pending", 0)
    assert (got["某某不存在的公司丁"].status, got["某某不存在的公司丁"].attempts) == ("pending", 1)
    late = got["某某不存在的公司戊"]
    assert (late.status, late.attempts) == ("pending", 0)  # queued during the --once: the next session's
    assert report.legacy["done"] == 1


@pytest.mark.slow
def test_remap_pairs_are_exactly_the_temporary_ids_later_settled(
    months: list[tuple[pl.DataFrame, pl.DataFrame]], sim: Simulator, index_db: IndexDb, tmp_path: Path
) -> None:
    index_db.open().close()
    first = enrich(months[0][0], options=run_options(sim, index_db, budget=40))
    handed_out = {row["name"]: row["temporary_id"] for row in first.unresolved.iter_rows(named=True)}
    settled_at = utcnow()
    run_worker(worker_options(sim, index_db), once=True)
    store = index_db.open()
    try:
        found = {e["lookup_key"]: e["company_id"] for e in store.entries.all_rows()
                 if e["lookup_type"] == "customer_name"}  # fmt: skip
        expected = {(temp, found[name]) for name, temp in handed_out.items() if name in found}
        assert len(expected) > 50
        for suffix in ("csv", "parquet"):
            out = tmp_path / f"remap.{suffix}"
            args = [*CLI, "index", "remap", "-o", str(out), *index_db.cli(), "--since", settled_at.date().isoformat()]
            cli = subprocess.run(args, capture_output=True, text=True, timeout=120)
            assert cli.returncode == 0, cli.stderr
            frame = pl.read_csv(out, infer_schema=False) if suffix == "csv" else pl.read_parquet(out)
            assert set(zip(frame["temp_id"], frame["company_id"], strict=True)) == expected
            assert set(frame["source"]) == {"eqc_api"}
            assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
        later = subprocess.run([*CLI, "index", "remap", "-o", str(tmp_path / "none.csv"), *index_db.cli(),
                                "--since", "2999-01-01"], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert later.returncode == 0
        assert pl.read_csv(tmp_path / "none.csv").height == 0
        bad = subprocess.run([*CLI, "index", "remap", "-o", str(tmp_path / "x.txt"), *index_db.cli()],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert bad.returncode == 2
        assert bad.stderr.count("\n") == 1
    finally:
        store.close()


@pytest.mark.slow
def test_worker_status_and_a_standing_worker_stopped_by_sigterm(
    months: list[tuple[pl.DataFrame, pl.DataFrame]], sim: Simulator, index_db: IndexDb, tmp_path: Path
) -> None:
    index_db.open().close()
    enrich(months[0][0], options=run_options(sim, index_db, budget=40))
    status = [*CLI, "worker", "status", *index_db.cli(), "--eqc-url", sim.url, "--rate-limit", "10/60ms"]

    def state() -> dict[str, Any]:
        shown = subprocess.run([*status, "--json"], capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        loaded: dict[str, Any] = json.loads(shown.stdout)
        return loaded

    before = state()
    assert before["due"]["temporary"] > 50
    assert before["done_today"] == {}
    standing = start_worker(sim, index_db, "--rate-limit", "10/60ms", "--poll", "50ms")
    deadline = time.monotonic() + 120
    while state()["due"]["temporary"]:
        assert time.monotonic() < deadline
        assert standing.poll() is None  # standing: it does not exit when the queue is empty
        time.sleep(0.2)
    standing.send_signal(signal.SIGTERM)
    _, err = standing.communicate(timeout=60)
    assert standing.returncode == 0, err
    after = state()
    assert after["done_today"]["found"] >= before["due"]["temporary"] - 10
    assert after["quota_share_today"] > 0
    assert after["workers"] == []  # its journal row says it finished
    text = subprocess.run(status, capture_output=True, text=True, timeout=120).stdout
    assert "due now: temporary 0" in text
    assert "done today:" in text


@pytest.mark.slow
def test_bench_months_scenario_writes_its_report_and_chart(tmp_path: Path) -> None:
    from eqc_enrich.bench._months import run_months, weekly_requests

    result = run_months(tmp_path, seed=3, rows=600, companies=100, budget=40, echo=lambda line: None)
    without, with_worker = result.runs["without the worker"], result.runs["with the worker"]
    assert with_worker[0]["worker_names"] > 0
    assert with_worker[1]["names_asked"] < without[1]["names_asked"]
    assert {p.name for p in tmp_path.iterdir()} == {"months.json", "months.md", "months.png"}
    runs, workers = weekly_requests(with_worker, RateLimit(10, 60.0))
    assert sum(runs) == sum(r["names_asked"] for r in with_worker)
    assert sum(workers) == with_worker[0]["worker_names"]
    assert min(runs[0], runs[4], workers[0]) > 0  # month 2 starts in story week 5


@pytest.mark.serial  # a bound on how far past --max-time the pass ends
def test_max_time_ends_a_pass_and_gives_back_the_claims_of_names_not_asked(
    months: list[tuple[pl.DataFrame, pl.DataFrame]], sim: Simulator, index_db: IndexDb
) -> None:
    index_db.open().close()
    enrich(months[0][0], options=run_options(sim, index_db, budget=20))
    slow = RateLimit(10, 0.6)  # 60 ms a slot: 150 names would take 9 s
    time.sleep(slow.window_s)  # the run's last slots are a window old: the worker need not wait for them
    # 3 s: room for the queue and claims on a busy machine, and still far from the 9 s all names would take
    report = run_worker(worker_options(sim, index_db, rate_limit=slow, max_time_s=3.0, batch=500), once=True)
    assert report.status == "completed"
    assert worker_exit_code(report.status) == 0
    assert 0 < report.asked < 100
    assert report.outcomes["skipped"] > 50
    store = index_db.open()
    try:
        assert [row for row in _claims(store) if row[1] == report.owner] == []
        assert len(build_queue(store, WorkerOptions()).items) > 50  # still due for the next slot
        journal = {row["run_id"]: row for row in store.recent_runs(10)}[report.owner]
        assert (journal["input_path"], journal["status"]) == ("worker", "completed")
    finally:
        store.close()


# --- TTLs shorter than a pass: no loop, no name twice, nothing starved --------------------------------------

SHORT_TTLS: dict[str, Any] = {
    "negative_ttl_s": 0.05,  # `--negative-ttl 1s --refresh 1s` at the time scale of these tests: less than a pass
    "refresh_s": 0.05,
    "confidence": ConfidencePolicy(refresh_below=0.9),  # EQC's fuzzy matches (0.80) count as weak: asked again
    "batch": 20,
    "max_time_s": 60.0,  # the bound of this test's loop: a worker asking in circles stops here, and fails below
}


def _short_ttl_names(sim: Simulator, seed: int) -> tuple[list[str], list[str]]:
    """Keys of names EQC does not know and of names it matches only weakly (a company's stem)."""
    universe = sim.state.universe
    absent = [normalize_name(name) for name in invent_absent_names(universe, random.Random(seed), 30)]
    weak = [normalize_name(company.stem) for company in universe.companies[:30]]
    return absent, weak


def test_once_drains_what_was_due_at_its_start_and_asks_no_name_twice_whatever_the_ttls(
    sim: Simulator, index_db: IndexDb
) -> None:
    """Names EQC does not know and answers too weak to settle fall due again while the worker still drains
    (TTLs shorter than a pass): `--once` asks each name due at its start once, then exits; a name a run
    leaves open meanwhile waits for the next session."""
    absent, weak = _short_ttl_names(sim, seed=3)
    exact = [normalize_name(company.name) for company in sim.state.universe.companies[30:50]]
    names = absent + weak + exact
    late = normalize_name(sim.state.universe.companies[50].name)
    store = index_db.open()
    try:
        store.unsettled.record([UnsettledName(key, "temporary", "not_asked", rows=1, temp_id=f"IN{i:04d}")
                                for i, key in enumerate(names)], "run-1")  # fmt: skip

        def a_run_leaves_a_name_open(kind: str, fields: dict[str, Any]) -> None:
            if kind == "worker_pass" and fields["number"] == 1:  # the most rows: first, were it due
                store.unsettled.record([UnsettledName(late, "temporary", "not_asked", rows=99, temp_id="IN_LATE")],
                                       "run-2")  # fmt: skip

        sim.reset_stats()
        options = worker_options(sim, index_db, **SHORT_TTLS)
        report = run_worker(options, once=True, events=a_run_leaves_a_name_open)
        asked = sim.state.stats.search_keys
        assert report.status == "completed"
        assert sorted(asked.elements()) == sorted(names)  # each once; the name left open meanwhile not at all
        assert report.passes == len(names) // SHORT_TTLS["batch"]
        assert report.asked == len(names)
        assert late in {item.key for item in build_queue(store, options).items}  # due for the next session
    finally:
        store.close()


def test_a_standing_worker_gives_every_due_name_its_turn_before_asking_any_again(
    sim: Simulator, index_db: IndexDb
) -> None:
    """With TTLs shorter than a pass, the names asked first are due again at the top of the queue at once;
    the worker still asks every due name (a round) before it asks any name a second time, and no name twice
    in one pass."""
    absent, weak = _short_ttl_names(sim, seed=4)
    store = index_db.open()
    try:
        # the unknown names rank above the weak answers (failed and not-found before low confidence)
        store.unsettled.record([UnsettledName(key, "temporary", "not_found", rows=5, temp_id=f"IN{i:04d}")
                                for i, key in enumerate(absent)], "run-1")  # fmt: skip
        companies = sim.state.universe.companies
        store.entries.upsert([IndexEntry(key, "customer_name", company.company_id, 0.8, "eqc_api")
                              for key, company in zip(weak, companies, strict=False)],
                             now=utcnow() - timedelta(days=1))  # fmt: skip
        control = WorkerControl()

        def stop_after_four_passes(kind: str, fields: dict[str, Any]) -> None:
            if kind == "worker_pass_done" and fields["number"] >= 4:
                control.stop()

        sim.reset_stats()
        report = run_worker(worker_options(sim, index_db, **SHORT_TTLS), stop=control, events=stop_after_four_passes)
        log = sorted(store.worker_log.history(limit=1_000), key=lambda row: row["id"])
    finally:
        store.close()
    assert report.status == "interrupted"
    assert report.passes == 4
    keys = [row["lookup_key"] for row in log]
    assert len(keys) == 4 * SHORT_TTLS["batch"]
    everything = absent + weak
    assert sorted(keys[: len(everything)]) == sorted(everything)  # each due name once before any again
    assert set(keys[len(everything) :]) <= set(absent)  # the second round starts with the most valuable
    by_pass: dict[Any, list[str]] = {}
    for row in log:
        by_pass.setdefault(row["asked_at"], []).append(row["lookup_key"])
    assert len(by_pass) == 4
    assert all(len(set(pass_keys)) == len(pass_keys) for pass_keys in by_pass.values())
    assert max(sim.state.stats.search_keys.values()) == 2


# --- worker status: the share of the quota the runs actually use ----------------------------------------------


def _status(index_db: IndexDb, sim: Simulator, *extra: str) -> tuple[dict[str, Any], str]:
    args = [*CLI, "worker", "status", *index_db.cli(), "--eqc-url", sim.url, *extra]
    shown = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    text = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    state: dict[str, Any] = json.loads(shown.stdout)
    (line,) = [line for line in text.stdout.splitlines() if line.startswith("quota share today:")]
    return state, line


@pytest.mark.slow
def test_worker_status_measures_the_share_against_the_rate_limit_the_runs_recorded(
    months: list[tuple[pl.DataFrame, pl.DataFrame]], sim: Simulator, index_db: IndexDb
) -> None:
    """Before any run there is no share to give (no default stands in); once a run and the worker have used
    the quota at 10/60ms, `worker status` without `--rate-limit` measures against that, and a different
    limit given on its command line does not replace what the runs recorded."""
    index_db.open().close()
    before, line = _status(index_db, sim)
    assert (before["quota_share_today"], before["rate_limit"], before["rate_limit_from"]) == (None, None, None)
    assert line.startswith("quota share today: unknown (no run or worker has recorded the rate limit of quota ")
    assert line.endswith("; or give --rate-limit)")
    given, line = _status(index_db, sim, "--rate-limit", "10/60s")
    assert (given["quota_share_today"], given["rate_limit"], given["rate_limit_from"]) == (0.0, "10/60s", "given")
    enrich(months[0][0], options=run_options(sim, index_db, budget=40))
    run_worker(worker_options(sim, index_db), once=True)
    for extra in ([], ["--rate-limit", "10/60s"]):
        after, line = _status(index_db, sim, *extra)
        assert (after["rate_limit"], after["rate_limit_from"]) == ("10/60ms", "recorded")
        seconds = (utcnow() - utcnow().replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
        asked = sum(n for outcome, n in after["done_today"].items() if outcome != "elsewhere")
        assert asked > 50
        # the share of 10 requests per 60 ms since midnight: never the 1000-fold of 10/60s
        share = asked / (seconds * 10 / 0.06)
        assert after["quota_share_today"] == pytest.approx(share, rel=0.01, abs=1e-6)  # kept to 6 decimals
        assert line == f"quota share today: {after['quota_share_today']:.1%} of 10/60ms (the rate limit the runs " \
                       "recorded) since midnight (UTC)"  # fmt: skip
    store = index_db.open()
    try:
        recorded = store.quota.rate_of(sim.url)
        assert recorded is not None
        assert (recorded.requests, recorded.window_s) == (10, 0.06)
        assert recorded.owner.startswith(WORKER_PREFIX)  # the latest to pace the quota says it
    finally:
        store.close()


@pytest.mark.postgres
def test_an_index_without_the_rate_table_still_runs_and_worker_status_says_it_does_not_know(
    months: list[tuple[pl.DataFrame, pl.DataFrame]], sim: Simulator, pg_schema: tuple[str, str]
) -> None:
    """A PostgreSQL index set up before `eqc_quota_rate` existed (the owner has not run `index init` since; a
    SQLite file gains it when opened): runs and the worker work as before, recording nothing, and
    `worker status` names the command that adds it."""
    index_db = IndexDb(*pg_schema, "postgresql")
    store = index_db.open()
    try:
        with store.transaction() as conn:
            conn.execute(sa.text(f'DROP TABLE "{index_db.schema}".eqc_quota_rate'))
    finally:
        store.close()
    result = enrich(months[0][0], options=run_options(sim, index_db, budget=20))
    assert result.summary.status == "completed"
    assert run_worker(worker_options(sim, index_db), once=True).status == "completed"
    state, line = _status(index_db, sim)
    assert state["quota_share_today"] is None
    assert state["done_today"]["found"] > 0
    assert "no eqc_quota_rate table" in line
    assert "run `index init`" in line
    store = index_db.open()  # index init adds it, and it starts empty
    try:
        assert store.quota.has_rates
        assert store.quota.rate_of(sim.url) is None
    finally:
        store.close()
