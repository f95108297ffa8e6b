"""The shared quota ledger on a real SQLite file and a real PostgreSQL: reservations from many threads and
processes at once never break the pacing rule, because the database serialises them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from eqc_enrich.store import Decide, IndexStore

if TYPE_CHECKING:
    from tests.conftest import IndexDb

R = 3  # at most R sends ...
SPAN = 0.05  # ... in any SPAN seconds
KEY = "eqc:test-account"


@pytest.fixture
def store(index_db: IndexDb) -> Iterator[IndexStore]:
    opened = index_db.open()
    yield opened
    opened.close()


def at_most(r: int, span: float, *, think_s: float = 0.0) -> Decide:
    """The kind of rule the limiter passes: the earliest time that keeps any `span` to `r` sends.

    `think_s` lingers inside the rule: if two reservers could ever see the same slots, the pause makes them
    decide from the same view, and the check below finds two slots too close.
    """

    def decide(sends: list[float], paused_until: float, now: float) -> float:
        if think_s:
            time.sleep(think_s)
        slot = max(now, paused_until)
        if len(sends) >= r:
            slot = max(slot, sends[-r] + span)
        return slot

    return decide


def too_close(slots: list[float], r: int, span: float) -> list[tuple[float, float]]:
    """Pairs of slots r apart (in time order) that lie less than `span` apart: r + 1 sends in one span.

    1e-6 of slack: epoch seconds as doubles have a grain of 2.4e-7 s.
    """
    ordered = sorted(slots)
    return [(a, b) for a, b in zip(ordered, ordered[r:], strict=False) if b - a < span - 1e-6]


def test_threads_reserving_at_once_never_exceed_the_rate(store: IndexStore) -> None:
    threads, each = 6, 12
    decide = at_most(R, SPAN, think_s=0.002)
    failures: list[BaseException] = []

    def reserve(owner: str) -> None:
        try:
            for _ in range(each):
                store.quota.reserve(KEY, owner, decide, recent=R, keep_s=3600.0)
        except BaseException as exc:  # reported below: a thread's exception would vanish otherwise
            failures.append(exc)

    workers = [threading.Thread(target=reserve, args=(f"run-{i}",)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not failures
    slots = store.quota.slots_of(KEY)
    assert len(slots) == threads * each
    assert {owner for owner, _ in slots} == {f"run-{i}" for i in range(threads)}
    assert too_close([at for _, at in slots], R, SPAN) == []


def test_processes_reserving_at_once_never_exceed_the_rate(index_db: IndexDb, store: IndexStore) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from eqc_enrich.store import IndexStore

        def decide(sends, paused_until, now):
            time.sleep(0.002)
            slot = max(now, paused_until)
            return max(slot, sends[-{R}] + {SPAN}) if len(sends) >= {R} else slot

        store = IndexStore(sys.argv[1], schema=sys.argv[2] or None)
        for _ in range(10):
            store.quota.reserve({KEY!r}, sys.argv[3], decide, recent={R}, keep_s=3600.0)
        store.close()
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, index_db.url, index_db.schema or "", f"proc-{i}"])
        for i in range(3)
    ]
    assert [process.wait(timeout=120) for process in processes] == [0, 0, 0]
    slots = store.quota.slots_of(KEY)
    assert len(slots) == 30
    assert too_close([at for _, at in slots], R, SPAN) == []


def test_reserve_hands_the_rule_the_latest_slots_the_pause_and_the_shared_clock(store: IndexStore) -> None:
    seen: list[tuple[list[float], float, float]] = []

    def later(step: float) -> Decide:
        def decide(sends: list[float], paused_until: float, now: float) -> float:
            seen.append((sends, paused_until, now))
            return (sends[-1] if sends else now) + step

        return decide

    before = store.quota.clock()
    first, now = store.quota.reserve(KEY, "a", later(1.0), recent=2, keep_s=3600.0)
    after = store.quota.clock()
    assert before <= now <= after
    assert first == now + 1.0
    store.quota.reserve(KEY, "a", later(1.0), recent=2, keep_s=3600.0)
    store.quota.pause(KEY, now + 100.0)
    store.quota.pause(KEY, now + 50.0)  # an earlier pause never shortens a later one
    store.quota.reserve(KEY, "b", later(1.0), recent=2, keep_s=3600.0)
    assert seen[0][0:2] == ([], 0.0)
    assert seen[1][0] == [first]
    assert seen[2][0] == [first, first + 1.0]  # the 2 latest, oldest first
    assert seen[2][1] == now + 100.0
    assert store.quota.paused_until(KEY) == now + 100.0
    assert store.quota.paused_until("other") == 0.0
    seen.clear()
    store.quota.reserve_many(KEY, "c", later(1.0), count=3, recent=0, keep_s=3600.0)
    assert [sends for sends, _, _ in seen] == [[], [], []]  # recent=0: no slot, not even this call's own


def test_a_rule_that_fails_reserves_nothing(store: IndexStore) -> None:
    def broken(sends: list[float], paused_until: float, now: float) -> float:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        store.quota.reserve(KEY, "a", broken, recent=R, keep_s=60.0)
    assert store.quota.slots_of(KEY) == []


def test_old_slots_are_dropped_by_reserve_per_key_and_by_prune_for_all(store: IndexStore) -> None:
    def at(offset: float) -> Decide:
        return lambda sends, paused_until, now: now + offset

    for _ in range(3):
        store.quota.reserve(KEY, "a", at(-1000.0), recent=R, keep_s=10_000.0)
        store.quota.reserve("other", "a", at(-1000.0), recent=R, keep_s=10_000.0)
    store.quota.reserve(KEY, "a", at(0.0), recent=R, keep_s=100.0)  # keeps 100 s: the old three go
    assert len(store.quota.slots_of(KEY)) == 1
    assert len(store.quota.slots_of("other")) == 3  # another quota's slots are not this reserve's business
    assert store.quota.prune(500.0) == 3
    assert store.quota.slots_of("other") == []
    assert [row["quota_key"] for row in store.quota.tallies()] == [KEY, "other"]
    message = r"^reserve needs count >= 1, recent >= 0 and keep_s > 0$"  # the whole message, as a caller reads it
    with pytest.raises(ValueError, match=message):
        store.quota.reserve(KEY, "a", at(0.0), recent=R, keep_s=0.0)
    with pytest.raises(ValueError, match=message):
        store.quota.reserve(KEY, "a", at(0.0), recent=-1, keep_s=10.0)
    with pytest.raises(ValueError, match=message):
        store.quota.reserve_many(KEY, "a", at(0.0), count=0, recent=R, keep_s=10.0)


# --- found untested by mutation testing: slot order, the keep boundary, the stats view ---------------------

NOW = 1_750_000_000.0


def pinned_clock(store: IndexStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one thing a real clock cannot do is read the same instant twice: pin the store's dialect clock."""
    monkeypatch.setattr(store._db.dialect, "clock", lambda conn: NOW)


def test_slots_come_back_in_time_order_then_reservation_order(store: IndexStore) -> None:
    def countdown(sends: list[float], paused_until: float, now: float) -> float:
        return NOW + 100.0 - len(sends)  # 100, 99, 98: reserved latest first

    store.quota.reserve_many(KEY, "a", countdown, count=3, recent=10, keep_s=1e9)
    store.quota.reserve(KEY, "z", lambda sends, paused_until, now: NOW + 97.0, recent=0, keep_s=1e9)
    store.quota.reserve(KEY, "b", lambda sends, paused_until, now: NOW + 97.0, recent=0, keep_s=1e9)
    assert store.quota.slots_of(KEY) == [
        ("z", NOW + 97.0), ("b", NOW + 97.0), ("a", NOW + 98.0), ("a", NOW + 99.0), ("a", NOW + 100.0)
    ]  # fmt: skip


def test_a_slot_exactly_as_old_as_the_keep_is_kept(store: IndexStore, monkeypatch: pytest.MonkeyPatch) -> None:
    pinned_clock(store, monkeypatch)
    store.quota.reserve("other", "a", lambda sends, paused_until, now: now - 100.0, recent=0, keep_s=1e9)
    store.quota.reserve(KEY, "a", lambda sends, paused_until, now: now - 100.0, recent=0, keep_s=1e9)
    store.quota.reserve(KEY, "a", lambda sends, paused_until, now: now, recent=0, keep_s=100.0)
    assert len(store.quota.slots_of(KEY)) == 2  # the slot at now - keep_s stays
    assert store.quota.prune(100.0) == 0
    assert store.quota.prune(99.0) == 2


def test_tallies_count_each_quota_apart_in_key_order_with_paused_only_quotas(
    store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned_clock(store, monkeypatch)
    store.quota.pause("z-paused-only", NOW + 5.0)

    def at(offset: float) -> Decide:
        return lambda sends, paused_until, now: now + offset

    for offset in (1.0, 3.0, 2.0):
        store.quota.reserve("a-busy", "run", at(offset), recent=0, keep_s=1e9)
    store.quota.reserve("m-once", "run", lambda sends, paused_until, now: now, recent=0, keep_s=1e9)
    assert store.quota.tallies() == [
        {"quota_key": "a-busy", "slots": 3, "last_slot_at": NOW + 3.0, "paused_until": 0.0},
        {"quota_key": "m-once", "slots": 1, "last_slot_at": NOW, "paused_until": 0.0},
        {"quota_key": "z-paused-only", "slots": 0, "last_slot_at": None, "paused_until": NOW + 5.0},
    ]
