"""Stage 5 directly: what each EQC answer teaches the index, and the writer that commits it (real SQLite)."""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from eqc_enrich._policies import IndexWaitPolicy
from eqc_enrich.eqc import BusinessInfo, LabelSet, SearchHit
from eqc_enrich.eqc_stage import (
    FIRST_COMMIT_STALL_S,
    FORMER_NAME_DOMAIN,
    LOOKUP_DOMAIN,
    IndexWriter,
    LookupOutcome,
    PendingFile,
    Stopped,
    batch_for,
    load_pending,
    pending_dirs,
)
from eqc_enrich.eqc_stage._writeback import _observed  # the done-callback itself, tested directly
from eqc_enrich.keys import LookupType
from eqc_enrich.store import IndexEntry, IndexStore, Payload, WriteBatch

NAME = "示例科技"


def hit(confidence: float = 0.9, *, full_name: str = "示例科技有限公司", former: tuple[str, ...] = ()) -> SearchHit:
    raw = {"companyId": "C1", "companyFullName": full_name}
    return SearchHit("C1", full_name, "全称精确匹配", confidence, "91X", former, raw)


def found(confidence: float = 0.9, **changes: Any) -> LookupOutcome:
    return LookupOutcome(NAME, "found", hit=hit(confidence, **changes))


def entry(key: str, kind: str, confidence: float, domain: str) -> IndexEntry:
    return IndexEntry(key, kind, "C1", confidence, "eqc_api", source_domain=domain)


def test_a_found_name_teaches_its_key_the_registered_name_and_the_former_names() -> None:
    batch = batch_for(found(0.9, former=("旧名科技有限公司（已转出）", "示例科技")))
    assert batch.entries == [
        entry(NAME, LookupType.CUSTOMER_NAME, 0.9, LOOKUP_DOMAIN),
        entry("示例科技有限公司", LookupType.CUSTOMER_NAME, 1.0, LOOKUP_DOMAIN),  # asking it would be exact
        entry("旧名科技有限公司", LookupType.FORMER_NAME, 0.81, FORMER_NAME_DOMAIN),  # normalized, 0.9 x 0.9
        entry(NAME, LookupType.FORMER_NAME, 0.81, FORMER_NAME_DOMAIN),
    ]
    assert batch.cleared_negatives == [NAME]  # found now: an old "not found" must go
    assert batch.negatives == []
    assert batch.payloads == [Payload("C1", NAME, hit().raw, None, None)]


def test_the_registered_name_is_not_repeated_when_it_is_the_key_asked() -> None:
    batch = batch_for(LookupOutcome("示例科技有限公司", "found", hit=hit()))
    assert [e.lookup_key for e in batch.entries] == ["示例科技有限公司"]


def test_a_weak_hit_is_not_learned_but_its_payload_is_kept() -> None:
    batch = batch_for(found(0.59))
    assert batch.entries == []
    assert batch.cleared_negatives == [NAME]
    assert len(batch.payloads) == 1


def test_a_hit_at_exactly_the_minimum_confidence_is_learned() -> None:
    assert [e.confidence for e in batch_for(found(0.60)).entries][:1] == [0.60]


def test_former_names_below_the_minimum_once_discounted_are_not_learned() -> None:
    batch = batch_for(found(0.65, former=("旧名有限公司",)))  # 0.65 x 0.9 = 0.585 < 0.60
    assert [e.lookup_type for e in batch.entries] == [LookupType.CUSTOMER_NAME, LookupType.CUSTOMER_NAME]
    exactly = batch_for(found(2 / 3, former=("旧名有限公司",)))  # 0.6667 x 0.9 = 0.60
    assert [e.confidence for e in exactly.entries if e.lookup_type == LookupType.FORMER_NAME] == [0.6]


def test_a_former_names_confidence_is_kept_to_two_places() -> None:
    batch = batch_for(found(0.87, former=("旧名有限公司",)))  # 0.87 x 0.9 = 0.783
    assert [e.confidence for e in batch.entries if e.lookup_type == LookupType.FORMER_NAME] == [0.78]


def test_a_not_found_name_becomes_a_negative_and_nothing_else() -> None:
    batch = batch_for(LookupOutcome(NAME, "not_found"))
    assert (batch.negatives, batch.entries, batch.payloads, batch.cleared_negatives) == ([NAME], [], [], [])


@pytest.mark.parametrize("status", ["failed", "skipped", "elsewhere"])
def test_failures_and_skips_teach_nothing(status: str) -> None:
    assert len(batch_for(LookupOutcome(NAME, status, hit=hit()))) == 0  # type: ignore[arg-type]


def test_found_without_a_hit_teaches_nothing() -> None:
    assert len(batch_for(LookupOutcome(NAME, "found"))) == 0


def test_details_go_into_the_payload_and_payloads_can_be_left_out() -> None:
    business = BusinessInfo("C1", "示例科技有限公司", "91X", "存续", (), {"businessInfodto": {"a": 1}})
    labels = LabelSet("C1", (), {"labels": []})
    outcome = LookupOutcome(NAME, "found", hit=hit(), business=business, labels=labels)
    assert batch_for(outcome).payloads == [Payload("C1", NAME, hit().raw, business.raw, labels.raw)]
    assert batch_for(outcome, keep_payloads=False).payloads == []


# --- payloads: a later answer never erases a field with nothing ------------------------------------------------


def payload_rows(store: IndexStore) -> list[dict[str, Any]]:
    with store._engine.connect() as conn:
        return [dict(row) for row in conn.execute(sa.select(store.payloads.table)).mappings()]


def test_payloads_of_one_company_merge_field_by_field(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        first = Payload("C1", "甲", {"s": 1}, {"d": 1}, None)
        second = Payload("C1", None, {"s": 2}, None, {"l": 2})
        store.write(WriteBatch(payloads=[first, second]))  # both in one batch
        (row,) = payload_rows(store)
        assert (row["search_key"], row["search_json"], row["depart_json"], row["labels_json"]) == (
            "甲",
            {"s": 2},
            {"d": 1},
            {"l": 2},
        )
        store.write(WriteBatch(payloads=[Payload("C1", "乙")]))  # a later batch with less: nothing erased
        (row,) = payload_rows(store)
        assert (row["search_key"], row["search_json"], row["depart_json"], row["labels_json"]) == (
            "乙",
            {"s": 2},
            {"d": 1},
            {"l": 2},
        )
        store.write(WriteBatch(payloads=[Payload("C2", "丙", {"s": 3})]))
        assert store.payloads.count() == 2
    finally:
        store.close()


# --- the writer --------------------------------------------------------------------------------------------------


def test_a_new_writer_has_done_nothing_yet(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        writer = IndexWriter(store)
        assert (writer.commits, writer.rows_written, writer.outages, writer.write_s) == (0, 0, 0, 0.0)
        assert (writer.error, writer.gave_up, writer.spill_error, writer.side_file) == (None, None, None, None)
        assert writer.writable
    finally:
        store.close()


def test_close_commits_what_is_left_and_counts_it(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    elapsed = 0.0

    async def main() -> IndexWriter:
        nonlocal elapsed
        started = time.perf_counter()
        writer = IndexWriter(store, interval_s=3_600.0)  # the timer never fires: only close commits
        writer.start()
        writer.add(LookupOutcome("甲公司", "not_found"))
        writer.add(found(0.9))
        writer.add(LookupOutcome("乙公司", "failed", error="x"))
        assert writer.uncommitted == 6  # a negative; two entries, a cleared negative, a payload, a company
        await writer.close()
        elapsed = time.perf_counter() - started
        return writer

    try:
        writer = asyncio.run(main())
        assert (writer.commits, writer.rows_written, writer.uncommitted) == (1, 6, 0)
        assert store.negatives.count() == 1
        assert store.count_entries() == 2
        assert store.payloads.count() == 1  # payloads are kept unless the writer is told otherwise
        assert 0.0 < writer.write_s <= elapsed  # the commit's own time, inside the writer's life
        assert writer.gave_up is None
        assert writer.error is None
        assert writer.writable
        assert writer.ready()
        assert writer.side_file is None
    finally:
        store.close()


def test_an_owner_releases_the_claim_with_the_answer(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")

    async def main() -> None:
        store.claims.claim(["甲公司", "乙公司", "丙公司"], "run-a", 60.0)
        writer = IndexWriter(store, interval_s=3_600.0, owner="run-a")
        writer.start()
        writer.add(LookupOutcome("甲公司", "not_found"))
        writer.add(LookupOutcome("乙公司", "failed", error="x"))  # failed: let another process try it
        writer.add(LookupOutcome("丙公司", "skipped"))  # not asked: the stage gives it back itself
        await writer.close()

    try:
        asyncio.run(main())
        assert store.claims.held_by_others(["甲公司", "乙公司", "丙公司"], "run-b") == {"丙公司"}
    finally:
        store.close()


def test_an_empty_writer_closes_without_a_commit(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")

    async def main() -> IndexWriter:
        writer = IndexWriter(store, interval_s=0.01)
        writer.start()
        await asyncio.sleep(0.05)
        await writer.close()
        return writer

    try:
        writer = asyncio.run(main())
        assert (writer.commits, writer.rows_written) == (0, 0)
    finally:
        store.close()


def test_requests_wait_while_the_index_is_in_trouble_until_it_is_back_or_a_stop(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    events: list[tuple[str, dict[str, Any]]] = []
    elapsed = 0.0

    async def main() -> None:
        nonlocal elapsed
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        policy = IndexWaitPolicy(wait_s=60.0, stall_s=5.0, retry_s=0.01)
        writer = IndexWriter(
            store, interval_s=3_600.0, policy=policy, events=lambda kind, fields: events.append((kind, fields))
        )
        await writer.wait(None)  # writable: no wait at all
        writer.report_trouble("the shared quota could not be reserved")
        assert not writer.ready()
        assert writer.error == "the shared quota could not be reserved"
        stop: asyncio.Future[None] = loop.create_future()
        loop.call_later(0.05, stop.set_result, None)
        with pytest.raises(Stopped):
            await writer.wait(stop)
        assert await writer.flush()  # nothing to commit: a probe finds the index writable again
        assert writer.ready()
        assert writer.error is None
        await writer.wait(None)
        await writer.close()
        elapsed = time.monotonic() - started
        assert writer.outages == 1

    try:
        asyncio.run(main())
    finally:
        store.close()
    assert [kind for kind, _ in events] == ["index_unwritable", "index_back"]
    assert events[0][1] == {"error": "the shared quota could not be reserved", "wait_s": 60.0}
    down = events[1][1]["down_s"]
    assert 0.05 <= down <= elapsed + 0.001  # from the trouble to the probe that found it back (rounded to ms)
    assert down == round(down, 3)


def test_a_request_released_by_the_index_coming_back_leaves_the_runs_stop_untouched(tmp_path: Path) -> None:
    """The stop future is the run's, shared by every waiter: a wait that ends because the index is back
    cancels only its own helper, so a later Ctrl-C still stops the run."""
    store = IndexStore(tmp_path / "index.db")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        writer = IndexWriter(store, interval_s=3_600.0, policy=IndexWaitPolicy(wait_s=60.0, stall_s=5.0, retry_s=0.01))
        writer.report_trouble("the shared quota could not be reserved")
        stop: asyncio.Future[None] = loop.create_future()
        waiting = asyncio.ensure_future(writer.wait(stop))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        assert await writer.flush()  # the index is back: the request goes on
        await asyncio.wait_for(waiting, timeout=5.0)
        assert not stop.done()
        writer.report_trouble("the shared quota could not be reserved")
        stop.set_result(None)
        with pytest.raises(Stopped):
            await writer.wait(stop)
        await writer.close()

    try:
        asyncio.run(main())
    finally:
        store.close()


# --- an index that cannot be written: the side file, the stall bound, the wait bound ---------------------------


class Lock:
    """The SQLite write lock of the index, held by another connection (`BEGIN EXCLUSIVE`) until released."""

    def __init__(self, db: Path) -> None:
        self._con = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self._con.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self._con.execute("ROLLBACK")
        self._con.close()


def side_lines(side: PendingFile) -> list[dict[str, Any]]:
    return [json.loads(line) for line in side.path.read_text(encoding="utf-8").splitlines() if line.strip()]


async def until(condition: Callable[[], bool], *, limit_s: float = 20.0) -> None:
    """Poll (bounded); fails the test when the condition never holds."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("busy_timeout_s", [0.05, 5.0])  # the write fails as busy / hangs past the stall bound
def test_a_locked_index_sends_answers_to_the_side_file_until_it_takes_them(
    tmp_path: Path, busy_timeout_s: float
) -> None:
    db = tmp_path / "index.db"
    IndexStore(db).close()
    store = IndexStore(f"sqlite:///{db}?timeout={busy_timeout_s}")
    side = PendingFile([tmp_path / "pending"], "run-1")
    events: list[tuple[str, dict[str, Any]]] = []
    policy = IndexWaitPolicy(wait_s=60.0, stall_s=0.2, retry_s=0.02)

    async def main() -> IndexWriter:
        writer = IndexWriter(store, interval_s=0.02, side_file=side, policy=policy,
                             events=lambda kind, fields: events.append((kind, fields)))  # fmt: skip
        lock = Lock(db)
        writer.start()
        writer.add(LookupOutcome("甲公司", "not_found"))
        await until(lambda: not writer.writable)
        assert not writer.ready()
        writer.add(LookupOutcome("乙公司", "not_found"))  # arrives while the index is away: straight to disk
        assert [line["negatives"] for line in side_lines(side)] == [["甲公司"], ["乙公司"]]
        assert writer.side_file is side
        lock.release()
        await until(lambda: writer.writable)
        await writer.close()
        return writer

    try:
        writer = asyncio.run(main())
        assert store.negatives.count() == 2
    finally:
        store.close()
    assert not side.path.exists()  # everything in it is committed: discarded
    assert writer.side_file is None
    assert (writer.outages, writer.gave_up, writer.error) == (1, None, None)
    assert [kind for kind, _ in events] == ["index_unwritable", "index_back"]
    if busy_timeout_s > policy.stall_s:
        assert events[0][1]["error"] == "an index write has not returned for 0.2s (locked?)"
    else:
        assert "locked" in events[0][1]["error"]


def test_the_first_commit_of_answers_may_take_longer_than_the_stall_bound_the_next_ones_may_not(
    tmp_path: Path,
) -> None:
    """The first commit of index rows and base_info compiles their statements (seconds on a busy machine): it
    is held to FIRST_COMMIT_STALL_S, not to the stall bound meant to notice a lock; the commits after it are."""
    db = tmp_path / "index.db"
    IndexStore(db).close()
    store = IndexStore(f"sqlite:///{db}?timeout=5")
    policy = IndexWaitPolicy(wait_s=60.0, stall_s=0.1, retry_s=0.02)
    held_s = 0.4  # over the stall bound, under FIRST_COMMIT_STALL_S
    assert policy.stall_s < held_s < FIRST_COMMIT_STALL_S

    async def commit_under_a_lock(writer: IndexWriter, name: str) -> None:
        lock = Lock(db)
        writer.add(LookupOutcome(name, "found", hit=hit()))
        flushing = asyncio.ensure_future(writer.flush())
        await asyncio.sleep(held_s)
        lock.release()
        await flushing
        await until(lambda: writer.writable)

    async def main() -> IndexWriter:
        writer = IndexWriter(store, interval_s=3_600.0, side_file=PendingFile([tmp_path / "p"], "r"), policy=policy)
        await commit_under_a_lock(writer, "甲公司")
        assert writer.outages == 0
        await commit_under_a_lock(writer, "乙公司")
        await writer.close()
        return writer

    try:
        writer = asyncio.run(main())
        assert store.count_entries() == 3  # both names and the registered name
    finally:
        store.close()
    assert writer.outages == 1


def test_an_index_locked_past_the_wait_gives_up_and_keeps_the_answers_on_disk(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    IndexStore(db).close()
    store = IndexStore(f"sqlite:///{db}?timeout=0.05")
    side = PendingFile([tmp_path / "pending"], "run-1")
    gave_up: list[str] = []
    events: list[str] = []
    policy = IndexWaitPolicy(wait_s=0.3, stall_s=1.0, retry_s=0.02)

    async def main() -> IndexWriter:
        writer = IndexWriter(store, interval_s=0.02, side_file=side, policy=policy, on_give_up=gave_up.append,
                             events=lambda kind, fields: events.append(kind))  # fmt: skip
        lock = Lock(db)
        try:
            writer.start()
            writer.add(LookupOutcome("甲公司", "not_found"))
            await until(lambda: writer.gave_up is not None)
            await writer.close()  # gives up at once: nothing more can be committed
        finally:
            lock.release()
        return writer

    try:
        writer = asyncio.run(main())
        assert store.negatives.count() == 0
    finally:
        store.close()
    assert writer.gave_up is not None
    assert "locked" in writer.gave_up
    assert gave_up == [writer.gave_up]
    assert events == ["index_unwritable", "index_gave_up"]
    assert writer.uncommitted == 1
    assert [line["negatives"] for line in side_lines(side)] == [["甲公司"]]  # kept for the next run


def test_a_writer_without_a_side_file_still_reports_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    IndexStore(db).close()
    store = IndexStore(f"sqlite:///{db}?timeout=0.05")

    async def main() -> IndexWriter:
        writer = IndexWriter(store, interval_s=0.02, policy=IndexWaitPolicy(wait_s=60.0, stall_s=1.0, retry_s=0.02))
        lock = Lock(db)
        writer.start()
        writer.add(LookupOutcome("甲公司", "not_found"))
        await until(lambda: not writer.writable)
        assert writer.side_file is None
        lock.release()
        await until(lambda: writer.writable)
        await writer.close()
        return writer

    try:
        writer = asyncio.run(main())
        assert store.negatives.count() == 1
    finally:
        store.close()
    assert (writer.commits, writer.rows_written) == (1, 1)


def test_a_writer_that_gave_up_on_a_stalled_write_lets_the_next_run_load_its_side_file(tmp_path: Path) -> None:
    """The stalled batch went to the side file and nothing is pending: close must still release the file."""
    db = tmp_path / "index.db"
    store = IndexStore(db)
    folders = pending_dirs(store.url)
    lock = Lock(db)

    async def main() -> IndexWriter:
        policy = IndexWaitPolicy(wait_s=0.0, stall_s=0.05, retry_s=0.01)
        writer = IndexWriter(store, interval_s=3_600.0, policy=policy, side_file=PendingFile(folders, "run-a"))
        writer.add(LookupOutcome("甲公司", "not_found"))
        assert not await writer.flush()  # stalls on the lock, spills the batch, gives up at once
        assert writer.gave_up is not None
        assert writer.uncommitted == 0
        await writer.close()
        return writer

    try:
        writer = asyncio.run(main())
        assert writer.side_file is not None
        with load_pending(folders) as (batch, files):
            assert [f.name for f in files] == ["run-a.answers.jsonl"]
            assert list(batch.negatives) == ["甲公司"]
    finally:
        lock.release()
        store.close()


def test_a_probe_of_a_locked_index_fails_at_the_stall_bound_and_says_why(tmp_path: Path) -> None:
    """Nothing pending, the index reported in trouble by another use (the quota, claims): a flush probes the
    write lock. Held elsewhere past the stall bound, the probe fails, with a reason rather than an empty
    message; once the lock is free the next probe brings the writer back."""
    db = tmp_path / "index.db"
    IndexStore(db).close()
    store = IndexStore(f"sqlite:///{db}?timeout=5.0")  # the busy wait would outlast the stall bound many times
    events: list[tuple[str, dict[str, Any]]] = []

    async def main() -> tuple[bool, str | None, bool]:
        writer = IndexWriter(store, policy=IndexWaitPolicy(wait_s=60.0, stall_s=0.2, retry_s=0.02),
                             events=lambda kind, fields: events.append((kind, fields)))  # fmt: skip
        writer.report_trouble("the shared quota could not be read")
        lock = Lock(db)
        try:
            probed = await writer.flush()
            error = writer.error
        finally:
            lock.release()
        back = await writer.flush()
        writer.report_trouble("the claims could not be written")  # a second outage, counted as one more
        return probed, error, back and writer.outages == 2

    try:
        probed, error, back_then_down_again = asyncio.run(main())
    finally:
        store.close()
    assert (probed, error, back_then_down_again) == (False, "index write lock not granted", True)
    assert [kind for kind, _ in events] == ["index_unwritable", "index_back", "index_unwritable"]
    assert events[0][1]["error"] == "the shared quota could not be read"


def test_a_side_file_that_cannot_be_written_gives_up_once_and_is_not_tried_again(tmp_path: Path) -> None:
    """The index is in trouble and the side file's folder is a plain file: the writer gives up, naming both,
    and keeps later answers in memory rather than start a side file that lacks the earlier ones."""
    db = tmp_path / "index.db"
    store = IndexStore(db)
    blocker = tmp_path / "pending"
    blocker.write_text("a file where the folder should be", encoding="utf-8")
    side = PendingFile([blocker], "run-1")
    events: list[tuple[str, dict[str, Any]]] = []
    try:
        writer = IndexWriter(store, side_file=side, events=lambda kind, fields: events.append((kind, fields)))
        writer.add(LookupOutcome("甲公司", "not_found"))
        writer.report_trouble("index locked")
        blocker.unlink()
        blocker.mkdir()  # writable again, too late: the run has given up
        writer.add(LookupOutcome("乙公司", "not_found"))
    finally:
        store.close()
    assert writer.gave_up == f"index locked; cannot write the side file {side.path}: File exists"
    assert writer.spill_error == f"cannot write the side file {side.path}: File exists"
    assert not side.exists
    assert list(blocker.iterdir()) == []
    assert writer.uncommitted == 2
    assert events[-1] == ("index_gave_up", {"error": writer.gave_up, "side_file": str(side.path)})


def test_the_first_report_of_trouble_never_gives_up_by_itself(tmp_path: Path) -> None:
    """The wait bound counts from the first failure: with a bound of 0 s the first report starts the clock,
    and only a later one, any time after, gives up."""
    store = IndexStore(tmp_path / "index.db")
    try:
        writer = IndexWriter(store, policy=IndexWaitPolicy(wait_s=0.0, stall_s=1.0, retry_s=0.01))
        writer.report_trouble("index locked")
        first = writer.gave_up
        time.sleep(0.01)
        writer.report_trouble("index still locked")
    finally:
        store.close()
    assert (first, writer.gave_up) == (None, "index still locked")


def test_a_write_left_behind_has_its_outcome_taken_whether_it_failed_or_was_cancelled() -> None:
    """A write the writer stopped waiting for must not end as asyncio's "exception was never retrieved"
    (a stray error line long after the run reported the stall), and a cancelled one must not raise."""
    reported: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        failed: asyncio.Future[None] = loop.create_future()
        failed.set_exception(OSError("database is locked"))
        _observed(failed)
        del failed
        gc.collect()  # an unretrieved error is reported when its future is collected
        assert reported == []
        cancelled: asyncio.Future[None] = loop.create_future()
        cancelled.cancel()
        _observed(cancelled)  # no CancelledError out of a done callback
    finally:
        loop.close()
