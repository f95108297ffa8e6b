"""The names an EQC stage works through, handed to its workers: with claims in a real SQLite index."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from eqc_enrich.eqc_stage import DatabaseClaims, NameSource
from eqc_enrich.store import IndexStore, utcnow


def claims_on(store: IndexStore, owner: str = "run-a") -> DatabaseClaims:
    return DatabaseClaims(store, owner, lease_s=60.0, entries_since=None, negatives_since=utcnow() - timedelta(days=30))


def test_workers_asking_while_the_last_chunk_is_claimed_wait_for_it_instead_of_leaving(tmp_path: Path) -> None:
    """Every worker asks at once, while the only chunk is being claimed (it has left the to-do list by
    then): each must get a name, or the stage would run with fewer workers than names (one, for a small
    month), and a 429's pause could not be seen to hold the other requests."""
    store = IndexStore(tmp_path / "index.db")

    async def main() -> list[str | None]:
        source = NameSource(["甲公司", "乙公司", "丙公司"], claims_on(store), chunk=10)
        taken = await asyncio.gather(*(source.next(None) for _ in range(4)))
        return [item if isinstance(item, str) or item is None else item.name for item in taken]

    try:
        taken = asyncio.run(main())
    finally:
        store.close()
    assert sorted(name for name in taken if name is not None) == ["丙公司", "乙公司", "甲公司"]
    assert taken.count(None) == 1  # the fourth worker: nothing left


def test_without_claims_names_come_in_order_and_then_none() -> None:
    async def main() -> list[object]:
        source = NameSource(["a", "b", "c"], chunk=2)
        return [await source.next(None) for _ in range(4)]

    assert asyncio.run(main()) == ["a", "b", "c", None]


def test_a_name_another_process_holds_is_put_aside_and_settled_once_answered(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    other = claims_on(store, "run-b")

    async def main() -> list[object]:
        await other.claim(["甲公司"])
        source = NameSource(["甲公司", "乙公司"], claims_on(store), chunk=10, recheck_s=0.05)
        first = await source.next(None)
        # the other process answers its name: not found by EQC, committed with its claim released
        store.negatives.add(["甲公司"])
        store.claims.release(["甲公司"], "run-b")
        second = await source.next(None)
        return [first, second, await source.next(None), source.waits]

    try:
        first, second, last, waits = asyncio.run(main())
    finally:
        store.close()
    assert first == "乙公司"
    assert getattr(second, "name", None) == "甲公司"
    assert getattr(second, "company_id", "?") is None  # settled: EQC does not know it, not asked here
    assert last is None
    assert waits == 1
