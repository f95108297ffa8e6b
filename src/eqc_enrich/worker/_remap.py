"""`index remap`: the temporary ids runs handed out that have since become company ids, for a downstream join."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from eqc_enrich._errors import InputError
from eqc_enrich.output import atomic_write
from eqc_enrich.store import IndexStore, aware

__all__ = ["REMAP_SCHEMA", "remap_frame", "write_remap"]

REMAP_SCHEMA: dict[str, pl.DataType] = {
    "temp_id": pl.String(),
    "company_id": pl.String(),
    "name": pl.String(),
    "settled_at": pl.Datetime("us", "UTC"),
    "source": pl.String(),
}


def remap_frame(store: IndexStore, *, since: datetime | None = None) -> pl.DataFrame:
    pairs = store.unsettled.remapped(since=since)
    rows = [(p.temp_id, p.company_id, p.name, aware(p.settled_at), p.source) for p in pairs]
    return pl.DataFrame(rows, schema=REMAP_SCHEMA, orient="row")


def write_remap(store: IndexStore, path: Path, *, since: datetime | None = None) -> int:
    """Write the pairs to `path` (.csv or .parquet, written to a temporary file, then renamed); returns how many."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use .csv or .parquet")
    frame = remap_frame(store, since=since)
    if suffix == ".csv":
        atomic_write(path, lambda tmp: frame.write_csv(tmp, include_bom=True))
    else:
        atomic_write(path, lambda tmp: frame.write_parquet(tmp))
    return frame.height
