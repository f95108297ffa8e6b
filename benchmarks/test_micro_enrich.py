"""An all-cached `enrich` of 1,000,000 rows end to end, against a bare polars read + join + write of the same data.

Every name is in the index, so no EQC call is made: this is the run's local overhead (normalize, keys, the
bulk index lookup, resolution, hit counts, journal), measured against the least any tool could do.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from eqc_enrich.enrich import enrich
from eqc_enrich.keys import LookupType, normalize_name
from eqc_enrich.summary import RunSummary

MONTH_ROWS = 1_000_000
MONTH_NAMES = (2_500, 20_000)  # a story-sized client base (400 rows a name) and a big one (50 rows a name)
TARGET_RATIO = 3.0
ROUNDS = 5
NAME, PLAN, AMOUNT = "客户名称", "计划代码", "期末资产规模"
_T = TypeVar("_T")


@dataclass(frozen=True)
class CachedMonth:
    """The month, an index knowing every name in it, and the same name -> id mapping as a parquet file."""

    month: Path
    index: Path
    mapping: Path
    work: Path


@pytest.fixture(scope="session", params=MONTH_NAMES, ids=lambda count: f"{count}-names")
def cached_month(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    raw_names: list[str],
    fill_index: Callable[[Path, Iterable[tuple[str, str, str, float, str]]], None],
) -> CachedMonth:
    """The local overhead grows with distinct names (index keys, hit counts), the reference's hardly: two sizes."""
    count: int = request.param
    work = tmp_path_factory.mktemp("cached-month")
    names = raw_names[:count]
    ids = [str(700_000_000 + number) for number in range(count)]
    picks = random.Random(13).choices(range(count), k=MONTH_ROWS)
    month = pl.DataFrame(
        {NAME: [names[i] for i in picks], PLAN: [f"P{i:05d}" for i in picks], AMOUNT: [f"{i}.00" for i in picks]}
    )
    month.write_parquet(work / "month.parquet")
    pl.DataFrame({NAME: names, "company_id": ids}).write_parquet(work / "mapping.parquet")
    kind = LookupType.CUSTOMER_NAME.value
    keys = {normalize_name(name): cid for name, cid in zip(names, ids, strict=True)}
    fill_index(work / "index.db", ((key, kind, cid, 1.0, "bench") for key, cid in keys.items()))
    return CachedMonth(work / "month.parquet", work / "index.db", work / "mapping.parquet", work)


def _enrich(data: CachedMonth) -> RunSummary:
    result = enrich(
        data.month, db=data.index, output=data.work / "enriched.parquet", salt="bench", eqc_url="http://127.0.0.1:9"
    )
    return result.summary


def _polars_reference(data: CachedMonth) -> int:
    """Read, join the mapping on the raw name, write: no normalization, no index, no bookkeeping."""
    mapping = pl.read_parquet(data.mapping)
    joined = pl.read_parquet(data.month).join(mapping, on=NAME, how="left")
    joined.write_parquet(data.work / "reference.parquet")
    return joined.height


def _median_s(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _pedantic(benchmark: BenchmarkFixture, target: Callable[..., _T], **options: Any) -> tuple[_T, float]:
    """pytest-benchmark leaves `pedantic` unannotated: this is its typed face; returns (result, median s)."""
    result: _T = benchmark.pedantic(target, **options)  # type: ignore[no-untyped-call]
    assert benchmark.stats is not None  # set once pedantic has run
    return result, float(benchmark.stats.stats.median)


def test_polars_reference_1m_rows(benchmark: BenchmarkFixture, cached_month: CachedMonth) -> None:
    rows, _ = _pedantic(benchmark, _polars_reference, args=(cached_month,), rounds=ROUNDS, warmup_rounds=1)
    assert rows == MONTH_ROWS


def test_enrich_all_cached_1m_rows(benchmark: BenchmarkFixture, cached_month: CachedMonth) -> None:
    summary, median = _pedantic(benchmark, _enrich, args=(cached_month,), rounds=ROUNDS, warmup_rounds=1)
    assert summary.rows == MONTH_ROWS
    assert summary.eqc.names_asked == 0
    assert summary.index_hit_rate == 1.0
    reference = _median_s(lambda: _polars_reference(cached_month), ROUNDS)
    ratio = median / reference
    benchmark.extra_info.update(
        reference_median_s=round(reference, 4),
        ratio=round(ratio, 2),
        target_ratio=TARGET_RATIO,
        distinct_names=summary.distinct_names,
        phases_s=summary.phases_s,
    )
    print(f"\nall-cached enrich of {MONTH_ROWS:,} rows, {summary.distinct_names:,} names: {median:.3f}s; "
          f"bare polars read+join+write: {reference:.3f}s; ratio {ratio:.2f} (target <= {TARGET_RATIO:g}); "
          f"phases {summary.phases_s}")  # fmt: skip
