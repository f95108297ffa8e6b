"""Stage 6: write the enriched table and the list of names that only got a temporary id."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from eqc_enrich._errors import InputError
from eqc_enrich.read import DEFAULT_SHEET, Table, TableFormat, table_format


def default_output_path(input_path: Path, fmt: TableFormat | None = None) -> Path:
    suffix = {"csv": ".csv", "xlsx": ".xlsx", "parquet": ".parquet"}[fmt] if fmt else input_path.suffix
    return input_path.with_name(f"{input_path.stem}.enriched{suffix}")


def unresolved_path(input_path: Path) -> Path:
    return input_path.with_name(f"{input_path.stem}.unresolved.csv")


def write_table(frame: pl.DataFrame, path: Path, *, like: Table | None = None) -> Path:
    """Write in the format the path names; CSV keeps a BOM when the input was not plain UTF-8 (Excel needs it)."""
    fmt = table_format(path)
    encoding = like.encoding if like is not None and like.format == "csv" else "utf-8"
    sheet = (like.sheet if like is not None and like.sheet else None) or DEFAULT_SHEET
    if fmt == "csv":
        bom = encoding != "utf-8"
        return atomic_write(path, lambda tmp: frame.write_csv(tmp, include_bom=bom))
    if fmt == "xlsx":
        return atomic_write(path, lambda tmp: frame.write_excel(tmp, worksheet=sheet, autofit=False))
    return atomic_write(path, lambda tmp: frame.write_parquet(tmp))


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Write to a temporary file beside the target, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh unique name the writer creates itself, so the file gets the user's umask (mkstemp would make
    # every output owner-only).
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def ensure_writable(paths: Sequence[Path]) -> None:
    """TEMPORARY (replaced by the output-checks branch)."""
    for path in paths:
        table_format(path)


def write_tables(items: Sequence[tuple[pl.DataFrame, Path, Table | None]], *, neutralize: bool = True) -> list[Path]:
    """TEMPORARY (replaced by the output-checks branch)."""
    return [write_table(frame, path, like=like) for frame, path, like in items]
