"""How much an input may take once read, checked before any reader expands it.

A 3 MB `.xlsx` can inflate to gigabytes, a 2 KB one can name a cell at XFD1048576 (the Excel reader then
asks for half a terabyte for the rectangle of cells and aborts the process; a forged `.xls` does the
same), and a Parquet file of 90 KB can hold fifty million rows. Every input is measured against one limit
(`--max-input-size`, env `EQC_ENRICH_MAX_INPUT_SIZE`, default 2 GiB) before it is handed to its reader:

- CSV: the file's size (it is read whole).
- `.xlsx`: the parts' uncompressed sizes as the archive declares them, then as they really inflate (an
  archive can lie; each part is inflated in bounded pieces and counted, nothing kept), and the chosen
  sheet's rectangle of cells, at `EXCEL_CELL_BYTES` each, from the cell references of its XML.
- `.xls`: the file's size, and the rectangles of all its sheets (its reader builds every one of them when
  it opens the file), from the rows and columns of the cell records.
- Parquet: the column data uncompressed as the file's footer declares it, and at least
  `PARQUET_CELL_BYTES` per cell (a column of one repeated value compresses to nothing).

An input over the limit is a one-line `InputError` (exit 2) that says how big it is and how to raise the
limit; a genuine month is far below the default.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final
from xml.etree import ElementTree

from eqc_enrich._errors import ConfigError, InputError

__all__ = [
    "DEFAULT_MAX_INPUT_SIZE",
    "EXCEL_CELL_BYTES",
    "MAX_INPUT_SIZE_ENV",
    "PARQUET_CELL_BYTES",
    "check_input_size",
    "check_sheet_extent",
    "format_size",
    "input_size_limit",
    "parse_size",
]

GIB: Final[int] = 1 << 30
DEFAULT_MAX_INPUT_SIZE: Final[int] = 2 * GIB
"""Far more than a month (30,986 rows are 35 MB of workbook XML) and still less than a laptop's memory."""
MAX_INPUT_SIZE_ENV: Final[str] = "EQC_ENRICH_MAX_INPUT_SIZE"
EXCEL_CELL_BYTES: Final[int] = 32
"""What the Excel reader (calamine) holds for every cell of a sheet's rectangle, empty or not."""
PARQUET_CELL_BYTES: Final[int] = 16
"""What polars holds at least for a text cell (its view), however well the file compressed it."""

_SIZE: Final = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?b|b|)\s*$", re.IGNORECASE)
_SIZE_UNITS: Final[dict[str, int]] = {
    "": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}  # fmt: skip
_MAX_LIMIT: Final[int] = 1 << 50  # a petabyte: past any machine, and still an exact float


def parse_size(text: str) -> int:
    """Bytes from `2GiB`, `500MB`, `1.5gib` or a bare number of bytes."""
    match = _SIZE.match(text)
    if match is None:
        shown = text if len(text) <= 40 else text[:35] + "..."
        raise ConfigError(f"not a size: {shown!r} (use e.g. 500MB, 2GiB or a number of bytes)")
    size = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if not 1 <= size <= _MAX_LIMIT:
        raise ConfigError(f"a size limit must be at least 1 byte and at most 1PiB, got {text.strip()!r}")
    return int(size)


def format_size(size: float) -> str:
    """`512 B`, `3.4 MiB`, `2 GiB`: binary units, as the limit is usually given."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} B"


def input_size_limit(limit: int | None = None) -> int:
    """The limit in force: the one given, else `EQC_ENRICH_MAX_INPUT_SIZE`, else the default."""
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"the input size limit must be at least 1 byte, got {limit}")
        return limit
    text = os.environ.get(MAX_INPUT_SIZE_ENV)
    if text is None or not text.strip():
        return DEFAULT_MAX_INPUT_SIZE
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise ConfigError(f"{MAX_INPUT_SIZE_ENV}: {exc}") from exc


def _over(path: Path, what: str, limit: int) -> InputError:
    return InputError(
        f"{path}: {what}, over the input size limit of {format_size(limit)}; if the file is what you meant, "
        f"raise the limit with --max-input-size or {MAX_INPUT_SIZE_ENV}"
    )


def check_input_size(path: Path, fmt: str, limit: int) -> None:
    """Refuse an input that would take more than `limit` bytes once read, without expanding it."""
    if fmt == "xlsx":
        _check_archive(path, limit)
    elif fmt == "parquet":
        _check_parquet(path, limit)
    else:
        size = path.stat().st_size
        if size > limit:
            raise _over(path, f"{format_size(size)} to read", limit)
        if fmt == "xls":
            _check_xls_sheets(path, limit)


# --- .xlsx: the archive ------------------------------------------------------------------------------------

_INFLATE_BLOCK: Final[int] = 1 << 16
_INFLATE_OUT: Final[int] = 1 << 18


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable Excel workbook: {exc}") from exc


def _check_archive(path: Path, limit: int) -> None:
    """The declared sizes first (instant), then what the parts really inflate to (bounded by the limit)."""
    with _open_zip(path) as archive, path.open("rb") as handle:
        parts = archive.infolist()
        declared = sum(part.file_size for part in parts)
        if declared > limit:
            biggest = max(parts, key=lambda part: part.file_size)
            raise _over(path, f"its parts expand to {format_size(declared)} ({biggest.filename} alone to "
                              f"{format_size(biggest.file_size)})", limit)  # fmt: skip
        budget = limit
        for part in parts:
            budget -= _inflated_size(path, handle, part, budget)
            if budget < 0:
                raise _over(path, f"its parts expand to more than they declare ({part.filename} among them)", limit)


def _inflated_size(path: Path, handle: BinaryIO, part: zipfile.ZipInfo, budget: int) -> int:
    """How many bytes the part really inflates to, counted until its deflate stream ends whatever the
    directory declares, and given up a little past `budget`."""
    produced = 0
    for piece in _inflated(path, handle, part):
        produced += len(piece)
        if produced > budget:
            break
    return produced


def _inflated(path: Path, handle: BinaryIO, part: zipfile.ZipInfo) -> Iterator[bytes]:
    """The part's data inflated in pieces of at most 256 KiB: what a reader that trusts the deflate stream,
    not the sizes the archive states, gets out of it."""
    if part.flag_bits & 0x1:
        raise InputError(f"{path}: {part.filename} is encrypted; save the workbook without a password")
    if part.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InputError(f"{path}: {part.filename} uses compression method {part.compress_type}, which Excel "
                         "never writes; save the workbook again")  # fmt: skip
    _seek_to_data(path, handle, part)
    if part.compress_type == zipfile.ZIP_STORED:
        left = part.compress_size
        while left > 0 and (piece := handle.read(min(left, _INFLATE_OUT))):
            left -= len(piece)
            yield piece
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    while not inflater.eof:
        pending = inflater.unconsumed_tail or handle.read(_INFLATE_BLOCK)
        if not pending:
            return  # the file ends mid-stream: the reader will say it is damaged
        try:
            piece = inflater.decompress(pending, _INFLATE_OUT)
        except zlib.error as exc:
            raise InputError(f"{path}: {part.filename} is damaged ({exc})") from exc
        if piece:
            yield piece


_LOCAL_HEADER: Final = struct.Struct("<4s2B4HL2L2H")  # a part's local file header (the ZIP format's APPNOTE 4.3.7)
_LOCAL_SIGNATURE: Final[bytes] = b"PK\x03\x04"


def _seek_to_data(path: Path, handle: BinaryIO, part: zipfile.ZipInfo) -> None:
    """To the first byte of the part's data: past its local header, whose name and extra field lengths
    may differ from the central directory's."""
    handle.seek(part.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or not header.startswith(_LOCAL_SIGNATURE):
        raise InputError(f"{path}: {part.filename} is damaged (no local header where the directory points)")
    *_, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    handle.seek(name_length + extra_length, os.SEEK_CUR)


# --- .xlsx: the chosen sheet's rectangle --------------------------------------------------------------------

_TAG: Final = re.compile(rb"""<(?:[A-Za-z_][\w.\-]*:)?(row|c)(?=[\s/>])((?:[^>"']++|"[^"]*+"|'[^']*+')*+)>""")
"""A row or cell start tag, attributes kept whole (a quoted value may hold `>`)."""
_ANY_TAG: Final = re.compile(rb"""<[^>"']*+(?:(?:"[^"]*+"|'[^']*+')[^>"']*+)*+>""")
_ATTRIBUTE: Final = re.compile(rb"""\s*+([^\s=]++)\s*+=\s*+(?:"([^"]*+)"|'([^']*+)')""")
_REFERENCE: Final = re.compile(rb"\s*+([A-Za-z]*+)([0-9]*+)")
_LONGEST_TAG: Final[int] = 1 << 16
_MAX_DIGITS: Final[int] = 12
_HUGE: Final[int] = 1_000_000_000_000  # what a reference of more than _MAX_DIGITS digits or letters counts as


@dataclass
class _Extent:
    """The rows and columns a sheet's cells can occupy, as the reader places them: a cell's `r` reference,
    or (without one) the cell after the previous one in its row, in the row after the previous one."""

    rows: set[bytes] = field(default_factory=set)  # row numbers as written (digits)
    columns: set[bytes] = field(default_factory=set)  # column letters as written
    unnumbered_rows: int = 0
    widest_unnumbered_run: int = 0  # cells without `r` in one row
    unnumbered_cells: int = 0
    hidden_markup: bool = False  # comments or CDATA, which could hide tags from the per-row count
    _run: int = 0

    def tag(self, name: bytes, attributes: bytes) -> None:
        references = _references(attributes)
        if name == b"row":
            self._run = 0
            if references:
                self.rows.update(digits for _, digits in references)
            else:
                self.unnumbered_rows += 1
            return
        if references:
            for letters, digits in references:
                self.columns.add(letters)
                self.rows.add(digits)
        else:
            self._run += 1
            self.unnumbered_cells += 1
            self.widest_unnumbered_run = max(self.widest_unnumbered_run, self._run)

    def cells(self) -> int:
        """An upper bound on the rectangle the reader allocates (rows x columns)."""
        row_numbers = [_number(digits) for digits in self.rows if digits]
        column_numbers = [_column(letters) for letters in self.columns if letters]
        unnumbered = self.unnumbered_cells if self.hidden_markup else self.widest_unnumbered_run
        last_row = max(row_numbers, default=0) + self.unnumbered_rows + (1 if self.unnumbered_cells else 0)
        last_column = max(column_numbers, default=0) + unnumbered
        first_row = min(row_numbers, default=1) if not (self.unnumbered_rows or self.unnumbered_cells) else 1
        first_column = min(column_numbers, default=1) if not self.unnumbered_cells else 1
        if not (row_numbers or self.unnumbered_rows or self.unnumbered_cells):
            return 0
        return max(0, last_row - first_row + 1) * max(0, last_column - first_column + 1)


def _references(attributes: bytes) -> list[tuple[bytes, bytes]]:
    """The (letters, digits) of every `r` attribute: the usual first `r="A1"` at once, anything else parsed."""
    if attributes.startswith(b' r="'):
        end = attributes.find(b'"', 4)
        if end > 0 and re.search(rb"\sr\s*=", attributes[end:]) is None:
            return [_split_reference(attributes[4:end])]
    found = []
    for name, double, single in _ATTRIBUTE.findall(attributes):
        if name == b"r":
            found.append(_split_reference(double or single))
    return found


def _split_reference(value: bytes) -> tuple[bytes, bytes]:
    match = _REFERENCE.match(value)
    assert match is not None  # every part of the pattern may be empty
    return match.group(1).upper(), match.group(2).lstrip(b"0") or (b"0" if match.group(2) else b"")


def _number(digits: bytes) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE


def _column(letters: bytes) -> int:
    if len(letters) > _MAX_DIGITS:
        return _HUGE
    number = 0
    for letter in letters:
        number = number * 26 + letter - ord("A") + 1
    return number


def _scan(stream: Iterator[bytes]) -> _Extent:
    """Every row and cell start tag of a sheet's XML from its first mention of `sheetData` on (the reader
    takes no cell before it), read in pieces; a piece is cut after its last complete tag, so that no tag is
    split between two."""
    extent = _Extent()
    carry = b""
    before_data = True
    for piece in stream:
        text = carry + piece
        if before_data:
            start = text.find(b"sheetData")
            if start < 0:
                carry = text[-16:]
                continue
            text, before_data = text[start:], False
        start = text.rfind(b"<")
        tail = text[start:] if start >= 0 else b""
        if tail and _ANY_TAG.match(tail) is None:  # an unfinished tag: it waits for the next piece
            if len(tail) > _LONGEST_TAG:
                raise ValueError("a tag longer than 64 KiB")
            text, carry = text[:start], tail
        else:
            carry = b""
        _scan_text(text, extent)
    _scan_text(carry, extent)
    return extent


_CELL_LETTERS: Final = re.compile(rb'<c r="([A-Z]{1,3})[1-9]')
_CELL_DIGITS: Final = re.compile(rb'<c r="[A-Z]{1,3}([1-9][0-9]{0,6})"')
_ROW_DIGITS: Final = re.compile(rb'<row r="([1-9][0-9]{0,6})"')


def _scan_text(text: bytes, extent: _Extent) -> None:
    """Tags as Excel writes them (`<row r="7" ...>`, `<c r="B7" ...>`, the reference first) in bulk, when
    every tag of the piece starting `<c` or `<row` is one of them; any other piece (another form of tag, a
    namespace prefix, other elements, comments or CDATA) tag by tag. A second `r` in a tag is no way around
    this: the reader refuses a repeated attribute."""
    if b"<!--" in text or b"<![CDATA[" in text:
        extent.hidden_markup = True
    elif _plain(text, extent):
        return
    for name, attributes in _TAG.findall(text):
        extent.tag(name, attributes)


def _plain(text: bytes, extent: _Extent) -> bool:
    """Take the piece in bulk if every `<c...` and `<row...` in it is a plain cell or row tag."""
    cells, rows = text.count(b"<c"), text.count(b"<row")
    if b":c" in text or b":row" in text or text.count(b'<c r="') != cells or text.count(b'<row r="') != rows:
        return False
    letters, digits, row_digits = (pattern.findall(text) for pattern in (_CELL_LETTERS, _CELL_DIGITS, _ROW_DIGITS))
    if not len(letters) == len(digits) == cells or len(row_digits) != rows:
        return False
    extent.columns.update(letters)
    extent.rows.update(digits)
    extent.rows.update(row_digits)
    return True


def check_sheet_extent(path: Path, sheet: str, limit: int) -> None:
    """Refuse a sheet whose rectangle of cells would take more than `limit` to read (a cell at XFD1048576
    beside one at A1 is seventeen billion cells): after `check_input_size`, before the sheet is loaded."""
    with _open_zip(path) as archive, path.open("rb") as handle:
        for part in _sheet_parts(archive, sheet):
            try:
                extent = _scan(_inflated(path, handle, archive.getinfo(part)))
            except ValueError as exc:
                raise InputError(f"{path}: sheet {sheet!r} cannot be read: {exc}") from exc
            cells = extent.cells()
            if cells * EXCEL_CELL_BYTES > limit:
                raise _over(path, f"sheet {sheet!r} spans {cells:,} cells (about "
                                  f"{format_size(cells * EXCEL_CELL_BYTES)} to read)", limit)  # fmt: skip


_RELATIONSHIPS: Final[str] = "_rels/.rels"


def _sheet_parts(archive: zipfile.ZipFile, sheet: str) -> list[str]:
    """The part that holds `sheet` (workbook -> relationship -> target), or, when the package does not say
    it plainly, every worksheet part: then the largest of them is what counts."""
    names = set(archive.namelist())
    try:
        workbook = _target(archive, _RELATIONSHIPS, "", "/officeDocument")
        folder, file = posixpath.split(workbook)
        targets = _relationships(archive, posixpath.join(folder, "_rels", file + ".rels"), folder)
        for element in ElementTree.fromstring(archive.read(workbook)).iter():
            if _local(element.tag) == "sheet" and element.get("name") == sheet:
                ids = [value for key, value in element.attrib.items() if _local(key) == "id"]
                found = [targets[i] for i in ids if targets.get(i) in names]
                if found:
                    return found[:1]
    except (KeyError, ElementTree.ParseError, zipfile.BadZipFile, ValueError):
        pass
    return sorted(name for name in names if name.lower().endswith(".xml") and "worksheets/" in name.lower())


def _target(archive: zipfile.ZipFile, rels: str, folder: str, kind: str) -> str:
    for element in ElementTree.fromstring(archive.read(rels)).iter():
        if _local(element.tag) == "Relationship" and element.get("Type", "").endswith(kind):
            return _resolve(folder, element.get("Target", ""))
    raise KeyError(kind)


def _relationships(archive: zipfile.ZipFile, rels: str, folder: str) -> dict[str, str]:
    return {
        element.get("Id", ""): _resolve(folder, element.get("Target", ""))
        for element in ElementTree.fromstring(archive.read(rels)).iter()
        if _local(element.tag) == "Relationship"
    }


def _resolve(folder: str, target: str) -> str:
    joined = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
    return posixpath.normpath(joined)


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


# --- .xls: every sheet's rectangle ---------------------------------------------------------------------------

_BIFF_RECORD: Final = struct.Struct("<HH")
_BIFF_BOF: Final[int] = 0x0809
_BIFF_EOF: Final[int] = 0x000A
_BIFF_BOUNDSHEET: Final[int] = 0x0085
_BIFF_CELLS: Final[frozenset[int]] = frozenset(
    {0x0006, 0x00D6, 0x00FD, 0x0201, 0x0203, 0x0204, 0x0205, 0x0206, 0x027E, 0x0406}
)  # FORMULA, RSTRING, LABELSST, BLANK, NUMBER, LABEL, BOOLERR, older FORMULAs, RK: row and column first
_BIFF_CELL_RUNS: Final[frozenset[int]] = frozenset({0x00BD, 0x00BE})  # MULRK, MULBLANK: row, first column, last


def _check_xls_sheets(path: Path, limit: int) -> None:
    """The reader builds every sheet's rectangle when it opens an .xls: all of them together must fit. A
    BIFF cell's row and column take 16 bits each, so a forged one can reach 65,536 x 65,536 cells where
    Excel writes at most 256 columns."""
    import olefile

    try:
        with olefile.OleFileIO(str(path)) as container:
            name = "Workbook" if container.exists("Workbook") else "Book"
            stream: bytes = container.openstream(name).read()
    except (OSError, ValueError, struct.error, IndexError, KeyError) as exc:  # olefile's own errors are OSErrors
        raise InputError(f"{path}: not a readable Excel 97-2003 workbook: {exc}") from exc
    sheets = _xls_sheets(stream)
    cells = sum(_xls_rectangle(stream, offset) for offset in sheets.values())
    if cells * EXCEL_CELL_BYTES > limit:
        raise _over(path, f"its sheets span {cells:,} cells (about {format_size(cells * EXCEL_CELL_BYTES)} to read)",
                    limit)  # fmt: skip


def _biff_records(stream: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    position = offset
    while position + _BIFF_RECORD.size <= len(stream):
        kind, size = _BIFF_RECORD.unpack_from(stream, position)
        position += _BIFF_RECORD.size
        yield kind, stream[position : position + size]
        position += size


def _xls_sheets(stream: bytes) -> dict[str, int]:
    """Sheet name -> offset of its substream, from the BOUNDSHEET records of the workbook globals."""
    sheets: dict[str, int] = {}
    for kind, data in _biff_records(stream, 0):
        if kind == _BIFF_EOF:
            break
        if kind == _BIFF_BOUNDSHEET and len(data) >= 8:
            (offset,), length, flags = struct.unpack_from("<L", data), data[6], data[7]
            text = data[8 : 8 + 2 * length].decode("utf-16-le", "replace") if flags & 1 else ""
            if not flags & 1:
                text = data[8 : 8 + length].decode("latin-1")
            sheets[text] = offset
    return sheets


def _xls_rectangle(stream: bytes, offset: int) -> int:
    rows: list[int] = []
    columns: list[int] = []
    depth = 0
    for kind, data in _biff_records(stream, offset):
        if kind == _BIFF_BOF:
            depth += 1
        elif kind == _BIFF_EOF:
            depth -= 1
            if depth <= 0:
                break
        elif kind in _BIFF_CELLS and len(data) >= 4:
            row, column = struct.unpack_from("<HH", data)
            rows.append(row)
            columns.append(column)
        elif kind in _BIFF_CELL_RUNS and len(data) >= 6:
            row, first = struct.unpack_from("<HH", data)
            (last,) = struct.unpack_from("<H", data, len(data) - 2)
            rows.append(row)
            columns += [first, last]
    if not rows:
        return 0
    return (max(rows) - min(rows) + 1) * (max(columns) - min(columns) + 1)


# --- Parquet ------------------------------------------------------------------------------------------------


def _check_parquet(path: Path, limit: int) -> None:
    """From the footer alone: the column data uncompressed, and the cells at their least."""
    import pyarrow
    import pyarrow.parquet

    try:
        meta = pyarrow.parquet.read_metadata(path)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as parquet: {str(exc).strip().splitlines()[0]}") from exc
    data = sum(max(0, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups))
    cells = meta.num_rows * meta.num_columns
    size = max(data, cells * PARQUET_CELL_BYTES)
    if size > limit or not math.isfinite(size):
        raise _over(path, f"{meta.num_rows:,} rows of {meta.num_columns:,} columns, about {format_size(size)} "
                          "once read", limit)  # fmt: skip
