"""Stage 1: read the input sheet into a polars frame, whatever form the month arrived in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from eqc_enrich._errors import InputError

DEFAULT_SHEET = "规模明细"
TableFormat = Literal["csv", "xlsx", "parquet"]
_FORMATS: dict[str, TableFormat] = {".csv": "csv", ".xlsx": "xlsx", ".xls": "xlsx", ".parquet": "parquet"}


@dataclass(frozen=True, slots=True)
class Table:
    """A frame plus what is needed to write it back the way it came."""

    frame: pl.DataFrame
    path: Path | None
    format: TableFormat
    encoding: str = "utf-8"
    sheet: str | None = None


def table_format(path: Path) -> TableFormat:
    try:
        return _FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(_FORMATS))
        raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use one of {known}") from None


def read_table(path: Path | str, *, sheet: str | None = None) -> Table:
    """CSV (UTF-8, UTF-8 with BOM or GBK), Excel (sheet by name) or Parquet; one-line errors otherwise."""
    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if sheet is not None and fmt != "xlsx":
        raise InputError(f"{path}: --sheet applies to Excel input only")
    try:
        if fmt == "csv":
            return _read_csv(path)
        if fmt == "xlsx":
            return _read_excel(path, sheet)
        return Table(pl.read_parquet(path), path, "parquet")
    except InputError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as {fmt}: {_one_line(exc)}") from None


def file_digest(path: Path) -> str:
    """SHA-256 of the input, so the run journal can tell a rerun of the same month from a new one."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_csv(path: Path) -> Table:
    raw = path.read_bytes()
    encoding = detect_encoding(raw)
    text = raw.decode(encoding)
    # Every column as text: ids and codes keep their leading zeros, amounts keep their exact digits.
    frame = pl.read_csv(text.encode("utf-8"), infer_schema=False)
    return Table(frame, path, "csv", encoding=encoding)


def detect_encoding(raw: bytes) -> str:
    """`utf-8-sig` when there is a BOM, `utf-8` when it decodes, else GB18030 (a superset of GBK)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    try:
        raw.decode("gb18030")
    except UnicodeDecodeError:
        raise InputError("CSV is neither UTF-8 nor GBK text") from None
    return "gb18030"


def _read_excel(path: Path, sheet: str | None) -> Table:
    import fastexcel

    try:
        names = fastexcel.read_excel(path).sheet_names
    except Exception as exc:  # fastexcel raises its own exception types, one per failure kind
        raise InputError(f"{path}: not a readable Excel workbook: {_one_line(exc)}") from None
    chosen = _choose_sheet(path, names, sheet)
    frame = pl.read_excel(path, sheet_name=chosen, engine="calamine", infer_schema_length=None)
    return Table(frame, path, "xlsx", sheet=chosen)


def _choose_sheet(path: Path, names: list[str], sheet: str | None) -> str:
    if sheet is not None:
        if sheet not in names:
            raise InputError(f"{path}: no sheet {sheet!r}; sheets are {', '.join(names)}")
        return sheet
    if DEFAULT_SHEET in names:
        return DEFAULT_SHEET
    if len(names) == 1:
        return names[0]
    raise InputError(f"{path}: no sheet {DEFAULT_SHEET!r} and several others ({', '.join(names)}); choose with --sheet")


def require_columns(frame: pl.DataFrame, *columns: str | None) -> None:
    missing = [c for c in columns if c is not None and c not in frame.columns]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}; the input has: {', '.join(frame.columns)}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
