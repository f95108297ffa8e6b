"""The local match stage at scale: 20,000 unknown names against an index of 200,000 names (SQLite).

The index holds the names of a 200,000-company universe; the unknown names are a third variant spellings
of indexed companies (other form, region in brackets, traditional characters, a typo, 集团 dropped) and two
thirds names no company has. Measured: reading the candidates, blocking and parsing them, and finding each
name's best candidate (`Matcher`), as `run_match_stage` does before it writes. Run with
`.venv/bin/pytest benchmarks/test_micro_match.py --benchmark-only`; the figure is in the README.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from eqc_enrich.keys import LookupType, normalize_name
from eqc_enrich.match_stage import IndexNames, Matcher
from eqc_enrich.simulator import build_universe, invent_absent_names
from eqc_enrich.store import IndexEntry, IndexStore, WriteBatch

INDEX_NAMES = 200_000
UNKNOWN_NAMES = 20_000


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    universe = build_universe(7, INDEX_NAMES)
    db = tmp_path_factory.mktemp("match") / "index.db"
    store = IndexStore(db)
    try:
        entries = [
            IndexEntry(normalize_name(c.name), LookupType.CUSTOMER_NAME, c.company_id, 1.0, "eqc_api")
            for c in universe.companies
        ]
        for start in range(0, len(entries), 20_000):
            store.write(WriteBatch(entries=entries[start : start + 20_000]))
    finally:
        store.close()
    rng = random.Random(7)
    variants = [spelling for spellings in universe.variants.values() for spelling in spellings.values()]
    names = rng.sample(variants, UNKNOWN_NAMES // 3)
    names += invent_absent_names(universe, rng, UNKNOWN_NAMES - len(names))
    return db, [normalize_name(name) for name in names]


def test_twenty_thousand_unknown_names_against_two_hundred_thousand(
    benchmark: BenchmarkFixture, indexed: tuple[Path, list[str]]
) -> None:
    db, names = indexed

    def match() -> int:
        store = IndexStore(db)
        try:
            matcher = Matcher(IndexNames(store).candidates(), names)
            return sum(1 for name in names if matcher.best(name) is not None)
        finally:
            store.close()

    found: int = benchmark.pedantic(match, rounds=3, iterations=1)  # type: ignore[no-untyped-call]
    assert found >= UNKNOWN_NAMES // 3 * 0.9  # the variants find their company (a typo in a trade name may not)
