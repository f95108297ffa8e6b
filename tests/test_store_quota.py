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


# --- the standing worker's calls: a slot only while runs leave the quota idle, never far ahead -------------

WORKER = "worker-"


def fixed(offset: float, seen: list[tuple[list[float], float]] | None = None) -> Decide:
    """A rule that puts the slot at `now + offset`, noting what it was handed."""

    def decide(sends: list[float], paused_until: float, now: float) -> float:
        if seen is not None:
            seen.append((sends, paused_until))
        return now + offset

    return decide


def idle_slot(
    store: IndexStore,
    rule: Decide,
    *,
    idle_s: float = 1.0,
    ahead_s: float = 5.0,
    recent: int = 2,
    keep_s: float = 100.0,
) -> float | None:
    slot, _ = store.quota.reserve_if_idle(
        KEY, f"{WORKER}a", rule, background=WORKER, idle_s=idle_s, ahead_s=ahead_s, recent=recent, keep_s=keep_s
    )
    return slot


def test_only_a_foreground_slot_on_the_same_quota_keeps_the_worker_waiting(
    store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned_clock(store, monkeypatch)
    store.quota.reserve("other", "run-1", fixed(0.0), recent=0, keep_s=1e9)  # a run on another account
    assert idle_slot(store, fixed(0.0)) == NOW
    assert idle_slot(store, fixed(0.0)) == NOW  # the worker's own slots never make the quota busy
    assert store.quota.last_busy(KEY, WORKER) == (None, NOW)
    store.quota.reserve(KEY, "run-1", fixed(-1.0), recent=0, keep_s=1e9)  # a run, exactly idle_s ago
    assert idle_slot(store, fixed(0.0)) == NOW  # the quota counts as idle from that instant on
    store.quota.reserve(KEY, "run-1", fixed(-0.5), recent=0, keep_s=1e9)
    assert idle_slot(store, fixed(0.0)) is None  # a run used it within idle_s: the worker yields
    assert [owner for owner, _ in store.quota.slots_of(KEY)].count(f"{WORKER}a") == 3
    assert store.quota.last_busy(KEY, WORKER) == (NOW - 0.5, NOW)  # the run's, though the worker's are later
    assert store.quota.last_busy("other", WORKER) == (NOW, NOW)


def test_the_worker_takes_a_slot_up_to_exactly_ahead_s_away_and_never_further(
    store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned_clock(store, monkeypatch)
    assert idle_slot(store, fixed(5.0), ahead_s=5.0) == NOW + 5.0
    assert idle_slot(store, fixed(5.001), ahead_s=5.0) is None
    assert [at for _, at in store.quota.slots_of(KEY)] == [NOW + 5.0]  # a refused slot is not written


def test_the_worker_hands_its_rule_the_latest_slots_and_the_pause_of_a_fresh_quota(
    store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned_clock(store, monkeypatch)
    seen: list[tuple[list[float], float]] = []
    assert idle_slot(store, fixed(0.0, seen), recent=0, keep_s=0.5) == NOW  # recent 0 and a short keep: allowed
    assert seen == [([], 0.0)]  # a fresh quota is not paused
    for offset in (1.0, 2.0, 3.0):
        idle_slot(store, fixed(offset))
    seen.clear()
    idle_slot(store, fixed(4.0, seen), recent=2)
    assert seen == [([NOW + 2.0, NOW + 3.0], 0.0)]  # the 2 latest, oldest first


def test_the_worker_drops_only_its_own_quotas_slots_older_than_the_keep(
    store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned_clock(store, monkeypatch)
    store.quota.reserve("other", "run-1", fixed(-500.0), recent=0, keep_s=1e9)
    store.quota.reserve(KEY, "run-1", fixed(-500.0), recent=0, keep_s=1e9)
    store.quota.reserve(KEY, "run-1", fixed(-100.0), recent=0, keep_s=1e9)  # exactly keep_s old: kept
    assert idle_slot(store, fixed(0.0), keep_s=100.0) == NOW
    assert [at for _, at in store.quota.slots_of(KEY)] == [NOW - 100.0, NOW]
    assert [at for _, at in store.quota.slots_of("other")] == [NOW - 500.0]  # another quota's: not this call's
