"""One bulk index lookup: what a run asks the index, in chunked IN queries, against a million rows."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from eqc_enrich.keys import LookupType
from eqc_enrich.store import IndexEntry, IndexStore

INDEX_ROWS = 1_000_000
LOOKUP_KEYS = 100_000
HIT_SHARE = 0.9  # most keys a run asks are known; the rest miss, as in production
_T = TypeVar("_T")


@dataclass(frozen=True)
class BigIndex:
    path: Path
    wanted: list[str]
    expected_hits: int


def _key(number: int) -> str:
    return f"测试公司{number:07d}有限公司"


@pytest.fixture(scope="session")
def big_index(
    tmp_path_factory: pytest.TempPathFactory,
    fill_index: Callable[[Path, Iterable[tuple[str, str, str, float, str]]], None],
) -> BigIndex:
    """1,000,000 customer_name rows (built once, in a temporary folder); 100,000 keys to ask, 90% present."""
    path = tmp_path_factory.mktemp("big-index") / "index.db"
    kind = LookupType.CUSTOMER_NAME.value
    fill_index(path, ((_key(n), kind, str(600_000_000 + n), 1.0, "bench") for n in range(INDEX_ROWS)))
    hits = round(LOOKUP_KEYS * HIT_SHARE)
    present = [_key(n) for n in random.Random(11).sample(range(INDEX_ROWS), hits)]
    absent = [f"未收录公司{n:07d}有限公司" for n in range(LOOKUP_KEYS - hits)]
    return BigIndex(path, present + absent, hits)


def _pedantic(benchmark: BenchmarkFixture, target: Callable[..., _T], **options: Any) -> tuple[_T, float]:
    """pytest-benchmark leaves `pedantic` unannotated: this is its typed face; returns (result, median s)."""
    result: _T = benchmark.pedantic(target, **options)  # type: ignore[no-untyped-call]
    assert benchmark.stats is not None  # set once pedantic has run
    return result, float(benchmark.stats.stats.median)


def test_lookup_100k_keys_in_1m_row_index(benchmark: BenchmarkFixture, big_index: BigIndex) -> None:
    store = IndexStore(big_index.path)
    try:

        def lookup() -> dict[tuple[str, str], IndexEntry]:
            return store.lookup({LookupType.CUSTOMER_NAME: big_index.wanted})

        found, median = _pedantic(benchmark, lookup, rounds=5, warmup_rounds=1)
    finally:
        store.close()
    benchmark.extra_info.update(keys=len(big_index.wanted), keys_per_s=round(len(big_index.wanted) / median))
    assert len(found) == big_index.expected_hits
