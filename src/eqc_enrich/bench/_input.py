"""The benchmark's input: N distinct names from the simulator's universe, a month frame, a pre-filled index.

Both flows must see the same names and the same cache, or the comparison measures the data, not the flow.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from eqc_enrich._errors import ConfigError
from eqc_enrich.bench._config import BenchConfig
from eqc_enrich.keys import LookupType, normalize_name
from eqc_enrich.output import atomic_write
from eqc_enrich.simulator import build_universe, invent_absent_names
from eqc_enrich.store import IndexEntry, IndexStore, WriteBatch

NAME_COLUMN = "客户名称"
PLAN_COLUMN = "计划代码"
AMOUNT_COLUMN = "期末资产规模"
LEGACY_SOURCE = "legacy_migration"
_ROWS_PER_NAME = (1, 2, 2, 3, 3, 4, 5, 8)  # several rows per name, a few customers with many


@dataclass(frozen=True)
class BenchInput:
    """What every run reads; `known` maps the names EQC knows to their company id."""

    names: list[str]
    known: dict[str, str]
    cached: dict[str, str]
    rows: int
    month_path: Path
    index_path: Path

    @property
    def unknown(self) -> int:
        return len(self.names) - len(self.known)


def prepare_input(config: BenchConfig, work_dir: Path) -> BenchInput:
    """Names, the month file and the pre-filled index, all seeded: the same config gives the same input."""
    rng = random.Random(f"eqc-enrich-bench:{config.seed}")
    names, known = pick_names(rng, config.seed, config.names, config.unknown_share)
    cached = pick_cached(rng, names, known, config.cached_share)
    frame = month_frame(rng, names)
    month_path = atomic_write(work_dir / "bench-month.parquet", frame.write_parquet)
    index_path = work_dir / "prefilled-index.db"
    prefill_index(index_path, cached)
    return BenchInput(names, known, cached, frame.height, month_path, index_path)


def pick_names(rng: random.Random, seed: int, count: int, unknown_share: float) -> tuple[list[str], dict[str, str]]:
    """`count` distinct normalized names, `unknown_share` of them absent from the universe, shuffled."""
    universe = build_universe(seed)
    unknown = round(count * unknown_share)
    if count - unknown > len(universe.companies):
        raise ConfigError(f"--names {count} exceeds the simulator's {len(universe.companies):,} companies")
    known = {normalize_name(c.name): c.company_id for c in rng.sample(universe.companies, count - unknown)}
    absent = [normalize_name(name) for name in invent_absent_names(universe, rng, unknown)]
    names = list(dict.fromkeys([*known, *absent]))
    rng.shuffle(names)
    return names, known


def pick_cached(rng: random.Random, names: list[str], known: dict[str, str], share: float) -> dict[str, str]:
    """The legacy index's share of the names; only names EQC knows can have a real company id."""
    candidates = [name for name in names if name in known]
    count = min(len(candidates), round(len(names) * share))
    return {name: known[name] for name in rng.sample(candidates, count)}


def month_frame(rng: random.Random, names: list[str]) -> pl.DataFrame:
    """A small month: every name on several rows (one plan code each), rows shuffled."""
    rows: list[tuple[str, str, str]] = []
    for number, name in enumerate(names):
        plan = f"P{number:05d}"
        rows.extend((name, plan, f"{rng.lognormvariate(16.0, 1.8):.2f}") for _ in range(rng.choice(_ROWS_PER_NAME)))
    rng.shuffle(rows)
    return pl.DataFrame(rows, schema=[NAME_COLUMN, PLAN_COLUMN, AMOUNT_COLUMN], orient="row")


def prefill_index(path: Path | str, cached: dict[str, str], *, schema: str | None = None) -> None:
    """A fresh index (a SQLite file, or an initialized PostgreSQL schema) holding the cached names as
    `customer_name` entries from the legacy migration."""
    store = IndexStore(path, schema=schema)
    try:
        entries = [IndexEntry(name, LookupType.CUSTOMER_NAME, cid, 1.0, LEGACY_SOURCE) for name, cid in cached.items()]
        store.write(WriteBatch(entries=entries))
    finally:
        store.close()


def row_slices(month_path: Path, parts: int, folder: Path) -> list[Path]:
    """The month's rows cut into `parts` consecutive slices (rows are shuffled, so each slice holds most of the
    names with several rows): the files several jobs of different domains would bring in one month."""
    frame = pl.read_parquet(month_path)
    size, extra = divmod(frame.height, parts)
    folder.mkdir(parents=True, exist_ok=True)
    paths, start = [], 0
    for number in range(parts):
        length = size + (1 if number < extra else 0)
        part = frame.slice(start, length)
        paths.append(atomic_write(folder / f"slice-{number + 1}.parquet", part.write_parquet))
        start += length
    return paths


def slice_names(path: Path) -> tuple[int, set[str]]:
    """The rows and the distinct normalized names of one input file."""
    column = pl.read_parquet(path, columns=[NAME_COLUMN])[NAME_COLUMN]
    return column.len(), {normalize_name(name) for name in column.drop_nulls().to_list()} - {""}


def copy_index(source: Path, target: Path) -> Path:
    """A fresh copy for one run; SQLite's backup API, so pages still in the WAL are copied too."""
    target.unlink(missing_ok=True)
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
    return target
