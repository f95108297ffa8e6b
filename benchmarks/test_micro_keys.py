"""Normalizing names: the only per-name Python work of a run, so its cost per name bounds the local time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pytest_benchmark.fixture import BenchmarkFixture

from eqc_enrich.keys import _normalize, normalize_name

_T = TypeVar("_T")


def _normalize_all(names: list[str]) -> int:
    return len({normalize_name(name) for name in names})


def _pedantic(benchmark: BenchmarkFixture, target: Callable[..., _T], **options: Any) -> tuple[_T, float]:
    """pytest-benchmark leaves `pedantic` unannotated: this is its typed face; returns (result, median s)."""
    result: _T = benchmark.pedantic(target, **options)  # type: ignore[no-untyped-call]
    assert benchmark.stats is not None  # set once pedantic has run
    return result, float(benchmark.stats.stats.median)


def test_normalize_100k_distinct_names(benchmark: BenchmarkFixture, raw_names: list[str]) -> None:
    """Cache cleared before every round: each name is normalized from scratch, as in a run's first sight of it."""
    keys, median = _pedantic(benchmark, _normalize_all, args=(raw_names,), setup=_normalize.cache_clear, rounds=5)
    benchmark.extra_info.update(names=len(raw_names), keys=keys, names_per_s=round(len(raw_names) / median))
    assert 0 < keys <= len(raw_names)
