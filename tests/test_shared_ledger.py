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


def test_a_reservation_takes_enough_slots_to_cover_its_round_trip_and_hands_them_out_in_order(
    store: IndexStore,
) -> None:
    """A spacing far shorter than any round trip: each transaction takes the most slots it may (4), and the
    next three sends come from them without a round trip; every slot is in the table."""

    async def main() -> tuple[list[float], int]:
        ledger = DatabaseLedger(store, KEY, "run-a", spacing_s=1e-6, max_batch=4)
        rule = paced(1, 1.0)  # one slot a second: none will be stale before it is handed out
        await reserve(ledger, rule)  # the first reservation, before any round trip was measured: one slot
        delays = [await reserve(ledger, rule) for _ in range(4)]
        return delays, ledger.batch

    delays, batch = asyncio.run(main())
    assert batch == 4
    slots = [at for _, at in store.quota.slots_of(KEY)]
    assert len(slots) == 5
    assert all(later - earlier == pytest.approx(1.0, abs=1e-6) for earlier, later in itertools.pairwise(slots))
    assert delays == sorted(delays)  # handed out in time order


def test_a_slot_whose_time_passed_unused_is_dropped_not_sent_late(store: IndexStore) -> None:
    """Four slots reserved at once, 50 ms apart; the caller comes back after they all passed: none of the
    three left is handed out (the sends after them were planned from their times), a fresh one is."""

    async def main() -> tuple[float, DatabaseLedger]:
        ledger = DatabaseLedger(store, KEY, "run-b", spacing_s=0.05, max_batch=4)
        ledger._rtts.append(0.2)  # a round trip long next to the spacing: four slots a reservation
        rule = paced(1, 0.05)
        await reserve(ledger, rule)
        await asyncio.sleep(0.5)  # the other three slots lie 150 ms and more in the past now
        return await reserve(ledger, rule), ledger

    delay, ledger = asyncio.run(main())
    assert ledger.dropped == 3
    assert delay > 0.0  # the fresh slot lies a round trip ahead: never in the past
    assert len(store.quota.slots_of(KEY)) == 4 + 4  # the dropped ones stay in the table: holes, not sends


def test_a_reservation_asks_for_its_first_slot_a_round_trip_ahead(store: IndexStore) -> None:
    """The pacing rule is asked for a slot no earlier than the slowest recent round trip from now, so the
    reservation is back before its slot is due: the database never sits between a slot and its send."""
    given: list[float] = []

    def rule(sends: list[float], paused_until: float, now: float) -> float:
        given.append(now)
        return now

    async def main() -> None:
        ledger = DatabaseLedger(store, KEY, "run-c", spacing_s=10.0)
        ledger._rtts.extend([0.05, 0.2, 0.1])  # as if the slowest recent round trip had taken 200 ms
        await ledger.reserve(rule, recent=10, keep_s=60.0)

    before = store.quota.clock()
    asyncio.run(main())
    after = store.quota.clock()
    assert len(given) == 2  # a round trip of 200 ms next to a spacing of 10 s: two slots a reservation
    assert before + 0.2 <= given[0] <= after + 0.2
