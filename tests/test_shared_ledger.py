"""The shared quota as a run uses it (`DatabaseLedger`), on a real SQLite file and a real PostgreSQL: slots
reserved ahead of their time, several a transaction, and a slot whose time passed unused dropped, never
used late."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from eqc_enrich.eqc_stage import DatabaseLedger, next_send
from eqc_enrich.store import IndexStore

if TYPE_CHECKING:
    from tests.conftest import IndexDb

KEY = "eqc:ledger-test"


@pytest.fixture
def store(index_db: IndexDb) -> Iterator[IndexStore]:
    opened = index_db.open()
    yield opened
    opened.close()


def paced(requests: int, span_s: float) -> object:
    def rule(sends: list[float], paused_until: float, now: float) -> float:
        return next_send(sends, paused_until, now, requests=requests, span_s=span_s)

    return rule


async def reserve(ledger: DatabaseLedger, rule: object) -> float:
    return await ledger.reserve(rule, recent=10, keep_s=60.0)  # type: ignore[arg-type]


def test_slots_are_held_in_hand_a_round_trip_ahead_and_handed_out_in_order(store: IndexStore) -> None:
    """A spacing far shorter than any round trip: the ledger keeps the most slots it may (4) in hand,
    reserving more in the background while the ones in hand go out, so sends rarely wait for the database;
    every slot handed out is the next one in the table, one second after the one before."""

    async def main() -> tuple[list[float], DatabaseLedger]:
        ledger = DatabaseLedger(store, KEY, "run-a", spacing_s=1e-6, max_batch=4)
        rule = paced(1, 1.0)  # one slot a second: none will pass before it is handed out
        delays = [await reserve(ledger, rule) for _ in range(6)]
        await ledger.settle()
        return delays, ledger

    delays, ledger = asyncio.run(main())
    assert ledger.batch == 4
    slots = [at for _, at in store.quota.slots_of(KEY)]
    assert all(later - earlier == pytest.approx(1.0, abs=1e-6) for earlier, later in itertools.pairwise(slots))
    assert all(later - earlier == pytest.approx(1.0, abs=0.05) for earlier, later in itertools.pairwise(delays))
    assert len(slots) == 6 + len(ledger._slots) <= 6 + 4  # handed out, and at most a batch still in hand
    assert ledger.dropped == 0


def test_a_slot_whose_time_passed_unused_is_dropped_not_sent_late(store: IndexStore) -> None:
    """Slots 50 ms apart held in hand; the caller comes back after they all passed: none of them is handed
    out (the sends after them were planned from their times), a fresh one is; when the stage ends, every slot
    no request used is given back, so the account's quota counts only the two sent."""

    async def main() -> tuple[float, DatabaseLedger, int]:
        ledger = DatabaseLedger(store, KEY, "run-b", spacing_s=0.05, max_batch=4)
        ledger._rtts.append(0.2)  # a round trip long next to the spacing: four slots in hand
        rule = paced(1, 0.05)
        await reserve(ledger, rule)
        if ledger._refill is not None:
            await ledger._refill  # the slots reserved ahead are in hand
        await asyncio.sleep(0.5)  # every slot in hand lies 100 ms and more in the past now
        delay = await reserve(ledger, rule)
        if ledger._refill is not None:
            await ledger._refill
        held = len(store.quota.slots_of(KEY))
        await ledger.settle()
        return delay, ledger, held

    delay, ledger, held = asyncio.run(main())
    assert delay > 0.0  # the fresh slot lies a round trip ahead: never in the past
    assert ledger.dropped >= 3
    assert held > 2  # until the stage ended, the dropped slots and those in hand were held
    assert [owner for owner, _ in store.quota.slots_of(KEY)] == ["run-b", "run-b"]  # the two handed out


def test_a_stage_that_ends_gives_back_the_slots_it_reserved_ahead(store: IndexStore) -> None:
    """One request out of a batch reserved ahead, then the end: one slot stays, the rest are given back; a
    ledger that does not reserve ahead (the review page) never holds more than the slot it was asked for."""

    async def one_request(ledger: DatabaseLedger, owner: str) -> int:
        await reserve(ledger, paced(1, 0.05))
        if ledger._refill is not None:
            await ledger._refill  # what it reserved ahead is in hand
        held = [1 for holder, _ in store.quota.slots_of(KEY) if holder == owner]
        await ledger.settle()
        return len(held)

    ahead = DatabaseLedger(store, KEY, "run-ahead", spacing_s=0.05, max_batch=4)
    ahead._rtts.append(0.2)
    assert asyncio.run(one_request(ahead, "run-ahead")) == 1 + 4  # the one sent, a batch in hand
    single = DatabaseLedger(store, KEY, "review-page", spacing_s=0.05, max_batch=4, ahead=False)
    single._rtts.append(0.2)
    assert asyncio.run(one_request(single, "review-page")) == 1
    owners = [owner for owner, _ in store.quota.slots_of(KEY)]
    assert sorted(owners) == ["review-page", "run-ahead"]


def test_a_reservation_asks_for_its_first_slot_a_round_trip_ahead(store: IndexStore) -> None:
    """The pacing rule is asked for a slot no earlier than a typical recent round trip from now (the median,
    at most one spacing), so the reservation is usually back before its slot is due."""
    given: list[float] = []

    def rule(sends: list[float], paused_until: float, now: float) -> float:
        given.append(now)
        return now

    async def main() -> None:
        ledger = DatabaseLedger(store, KEY, "run-c", spacing_s=10.0)
        ledger._rtts.extend([0.05, 0.2, 0.3])  # a typical recent round trip (the median) of 200 ms
        await ledger.reserve(rule, recent=10, keep_s=60.0)
        await ledger.settle()

    before = store.quota.clock()
    asyncio.run(main())
    after = store.quota.clock()
    assert len(given) >= 2  # a round trip of 200 ms next to a spacing of 10 s: two slots in hand
    assert before + 0.2 <= given[0] <= after + 0.2


def test_a_slow_round_trip_widens_the_slots_in_hand_not_the_gap_before_the_next_slot(store: IndexStore) -> None:
    """One round trip of 900 ms among quick ones (a commit held the file's lock): the ledger holds as many
    slots in hand as it may, but still asks for the next slot at most one spacing ahead of now; asking a
    slow round trip ahead would open a gap of that length in the pace."""
    ledger = DatabaseLedger(store, KEY, "run-d", spacing_s=0.006)
    ledger._rtts.extend([0.004, 0.9, 0.005])
    assert ledger.lead_s == pytest.approx(0.005)  # the median, under one spacing
    assert ledger.batch == 16
    ledger._rtts.extend([0.02, 0.03])
    assert ledger.lead_s == pytest.approx(0.006)  # a typical round trip longer than a spacing: one spacing
