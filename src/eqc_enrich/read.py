"""Stage 1: read the input sheet into a polars frame, whatever form the month arrived in."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import polars as pl

from eqc_enrich._errors import InputError
from eqc_enrich._input_size import check_input_size, check_sheet_extent, input_size_limit
from eqc_enrich._text import listed

__all__ = [
    "DEFAULT_SHEET",
    "ReadFormat",
    "Table",
    "TableFormat",
    "detect_encoding",
    "file_digest",
    "read_format",
    "read_table",
    "require_columns",
    "table_format",
]

DEFAULT_SHEET = "规模明细"
TableFormat = Literal["csv", "xlsx", "parquet"]
"""The formats a table can be written in (and read)."""
ReadFormat = Literal["csv", "xlsx", "xls", "parquet"]
"""The formats a table can be read from: `.xls` (Excel 97-2003) is read, never written."""

WRITABLE_FORMATS: Final[dict[str, TableFormat]] = {".csv": "csv", ".xlsx": "xlsx", ".parquet": "parquet"}
READABLE_FORMATS: Final[dict[str, ReadFormat]] = {**WRITABLE_FORMATS, ".xls": "xls"}
_EXCEL: Final[frozenset[ReadFormat]] = frozenset({"xlsx", "xls"})


@dataclass(frozen=True, slots=True)
class Table:
    """A frame plus what is needed to write it back the way it came."""

    frame: pl.DataFrame
    path: Path | None
    format: ReadFormat
    encoding: str = "utf-8"
    sheet: str | None = None


def table_format(path: Path) -> TableFormat:
    """The format an output path names; `.xls` and anything unknown are one-line errors."""
    try:
        return WRITABLE_FORMATS[path.suffix.lower()]
    except KeyError as exc:
        known = ", ".join(sorted(WRITABLE_FORMATS))
        if path.suffix.lower() in READABLE_FORMATS:
            raise InputError(f"{path}: {path.suffix!r} can be read but not written; write one of {known}") from exc
        raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use one of {known}") from exc


def read_format(path: Path) -> ReadFormat:
    """The format an input path names."""
    try:
        return READABLE_FORMATS[path.suffix.lower()]
    except KeyError as exc:
        known = ", ".join(sorted(READABLE_FORMATS))
        raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use one of {known}") from exc


def read_table(path: Path | str, *, sheet: str | None = None, max_size: int | None = None) -> Table:
    """CSV (UTF-8, UTF-8 with BOM or GBK), Excel .xlsx/.xls (sheet by name) or Parquet; one-line errors otherwise.

    `max_size` bounds what the input may take once read (`_input_size`; default `EQC_ENRICH_MAX_INPUT_SIZE`,
    else 2 GiB): it is checked before a reader expands anything.
    """
    path = Path(path)
    fmt = read_format(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a {fmt} file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if sheet is not None and fmt not in _EXCEL:
        raise InputError(f"{path}: --sheet applies to Excel input only")
    limit = input_size_limit(max_size)
    try:
        check_input_size(path, fmt, limit)
        if fmt == "csv":
            return _read_csv(path)
        if fmt in _EXCEL:
            return _read_excel(path, fmt, sheet, limit)
        return Table(pl.read_parquet(path), path, "parquet")
    except InputError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as {fmt}: {_one_line(exc)}") from exc


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
    data = text.encode("utf-8")
    # Every column as text: ids and codes keep their leading zeros, amounts keep their exact digits.
    frame = pl.read_csv(data, infer_schema=False)
    if _renamed_by_reader(frame.columns, _CSV_RENAMED):
        header = pl.read_csv(data, has_header=False, n_rows=1, infer_schema=False).row(0)
        _refuse_duplicate_columns(path, header)
    return Table(frame, path, "csv", encoding=encoding)


_CSV_RENAMED: Final = re.compile(r"(.*)_duplicated_[0-9]+", re.DOTALL)
_EXCEL_RENAMED: Final = re.compile(r"(.*)_[0-9]+", re.DOTALL)


def _renamed_by_reader(columns: list[str], renamed: re.Pattern[str]) -> bool:
    """Whether a column may be a repeated header the reader renamed (`客户名称_duplicated_0` beside
    `客户名称` for polars, `客户名称_1` for fastexcel); only then is the raw header row read to be sure."""
    present = set(columns)
    return any((match := renamed.fullmatch(name)) is not None and match.group(1) in present for name in columns)


def _refuse_duplicate_columns(path: Path, header: Iterable[object]) -> None:
    """Readers quietly rename a repeated header: a name would then be read from one column and the other
    ignored, so a repeated name is an error. Blank header cells may repeat: they name no column anyone
    asks for."""
    counts = Counter(str(cell) for cell in header if cell is not None and str(cell).strip())
    repeated = [name for name, count in counts.items() if count > 1]
    if repeated:
        raise InputError(f"{path}: duplicate column name(s) {listed(repeated)}; every column needs its own name")


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
    except UnicodeDecodeError as exc:
        raise InputError("CSV is neither UTF-8 nor GBK text") from exc
    return "gb18030"


def _read_excel(path: Path, fmt: ReadFormat, sheet: str | None, limit: int) -> Table:
    import fastexcel

    try:
        reader = fastexcel.read_excel(path)
    except Exception as exc:  # fastexcel raises its own exception types, one per failure kind
        raise InputError(f"{path}: not a readable Excel workbook: {_one_line(exc)}") from exc
    chosen = _choose_sheet(path, reader.sheet_names, sheet)
    if fmt == "xlsx":  # an .xls was measured whole before it was opened: its reader builds every sheet at once
        check_sheet_extent(path, chosen, limit)
    with _quiet_dtype_fallback():
        frame = pl.read_excel(path, sheet_name=chosen, engine="calamine", infer_schema_length=None)
    if _renamed_by_reader(frame.columns, _EXCEL_RENAMED):
        try:
            header = reader.load_sheet(chosen, header_row=None, n_rows=1, dtypes="string").to_polars()
        except Exception as exc:  # as above: fastexcel's own exception types
            raise InputError(f"{path}: cannot read the header row: {_one_line(exc)}") from exc
        _refuse_duplicate_columns(path, header.row(0) if header.height else ())
    return Table(frame, path, fmt, sheet=chosen)


_FASTEXCEL_DTYPE_LOGGER: Final = "fastexcel.types.dtype"


class _DtypeFallbackFilter(logging.Filter):
    """Drops fastexcel's note that an empty column is read as text: that is the reading we want, and the
    note reached users as a stray stderr line (Python's last-resort log handler) in the middle of a run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Could not determine dtype for column")


_DTYPE_FALLBACK_FILTER: Final = _DtypeFallbackFilter()
_filter_users = 0
_filter_lock = threading.Lock()


@contextlib.contextmanager
def _quiet_dtype_fallback() -> Iterator[None]:
    """Only while reading (counted, so reads in several threads overlap safely), and only that message."""
    global _filter_users
    logger = logging.getLogger(_FASTEXCEL_DTYPE_LOGGER)
    with _filter_lock:
        _filter_users += 1
        logger.addFilter(_DTYPE_FALLBACK_FILTER)
    try:
        yield
    finally:
        with _filter_lock:
            _filter_users -= 1
            if not _filter_users:
                logger.removeFilter(_DTYPE_FALLBACK_FILTER)


def _choose_sheet(path: Path, names: list[str], sheet: str | None) -> str:
    if sheet is not None:
        if sheet not in names:
            raise InputError(f"{path}: no sheet {sheet!r}; sheets are {listed(names)}")
        return sheet
    if DEFAULT_SHEET in names:
        return DEFAULT_SHEET
    if len(names) == 1:
        return names[0]
    raise InputError(f"{path}: no sheet {DEFAULT_SHEET!r} and several others ({listed(names)}); choose with --sheet")


def require_columns(frame: pl.DataFrame, *columns: str | None) -> None:
    """Every named column present; the refusal lists what the input has (a few names, each cut short)."""
    missing = [c for c in columns if c is not None and c not in frame.columns]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}; the input has: {listed(frame.columns)}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
