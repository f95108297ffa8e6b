"""Stage 6: write the enriched table and the list of names that only got a temporary id.

Three promises hold for every output:

- *Checked first*: `ensure_writable` finds a target that cannot be written (wrong extension, a directory in
  the way, a parent that is a file, a read-only or closed directory) before any EQC work is spent on a run.
- *All or nothing*: `write_tables` writes every file to a temporary sibling and renames them into place only
  when all were written; on any failure no target is created or replaced and no temporary file is left.
- *Text stays text*: a text cell of a CSV output that starts with `=`, `+`, `-`, `@`, a tab or a carriage
  return gets a leading `'`, so that a spreadsheet opening the file shows it instead of running it as a
  formula (a name like `=HYPERLINK(...)` or `=cmd|'...'!A0`). A cell that is a plain decimal number
  (`is_number_text`: `-1234.56`, `+1`, `-0.5e3`, `.5`) is never touched, even when the input was read as
  all text. XLSX outputs keep such strings as they are but store them as text cells, never as formulas or
  links. Parquet is a data format and is written as it is.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import polars as pl

from eqc_enrich._errors import InputError, OutputError
from eqc_enrich.read import DEFAULT_SHEET, READABLE_FORMATS, WRITABLE_FORMATS, Table, TableFormat, table_format

__all__ = [
    "UNKNOWN_NAMES_COLUMN",
    "FileItem",
    "WriteItem",
    "atomic_write",
    "default_output_path",
    "ensure_writable",
    "estimate_write_s",
    "is_number_text",
    "neutralize_formulas",
    "neutralize_text",
    "unknown_names_writer",
    "unresolved_path",
    "write_table",
    "write_tables",
    "write_text",
]

_SUFFIXES: Final[dict[TableFormat, str]] = {"csv": ".csv", "xlsx": ".xlsx", "parquet": ".parquet"}
_XLSX_OPTIONS: Final[dict[str, Any]] = {
    "strings_to_formulas": False,  # `=...` is text the input had, not a formula to run
    "strings_to_urls": False,  # nor is `http://...` a link to click
    "strings_to_numbers": False,
    "nan_inf_to_errors": True,
    "default_date_format": "yyyy-mm-dd",
}
"""xlsxwriter workbook options: every string cell is written as a string, whatever it looks like."""


def default_output_path(input_path: Path, fmt: TableFormat | None = None) -> Path:
    """`<stem>.enriched.<ext>`: the input's own extension when it can be written, `.xlsx` for `.xls` input."""
    if fmt is not None:
        suffix = _SUFFIXES[fmt]
    elif input_path.suffix.lower() in WRITABLE_FORMATS or input_path.suffix.lower() not in READABLE_FORMATS:
        suffix = input_path.suffix  # an unknown one is left for read_table to refuse with the input's name
    else:
        suffix = ".xlsx"  # read-only Excel (.xls) is written as the Excel format of today
    return input_path.with_name(f"{input_path.stem}.enriched{suffix}")


def unresolved_path(input_path: Path) -> Path:
    return input_path.with_name(f"{input_path.stem}.unresolved.csv")


# --- formula neutralization ---------------------------------------------------------------------------

FORMULA_TRIGGERS: Final[str] = "=+-@\t\r"
"""First characters that make a spreadsheet treat a cell as a formula (or a DDE call)."""

_NUMBER_PATTERN: Final[str] = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER: Final = re.compile(_NUMBER_PATTERN)
_TRIGGER_REGEX: Final[str] = r"^[=+\-@\t\r]"  # FORMULA_TRIGGERS as a (Rust) regex class
_NUMBER_REGEX: Final[str] = f"^{_NUMBER_PATTERN}$"  # Rust regex: `$` is the end of the text, no newline before it
_TEXT_DTYPES: Final = (pl.String, pl.Categorical, pl.Enum)


def is_number_text(text: str) -> bool:
    """A plain decimal number, nothing around it: optional sign, ASCII digits with an optional decimal point
    (digits on at least one side), optional exponent. `-1234.56`, `+1`, `-0.5e3`, `.5`, `5.` are numbers;
    `-1,234`, `-5%`, `-inf`, ` -1`, `-1 ` and `1+1` are not."""
    return _NUMBER.fullmatch(text) is not None


def neutralize_text(text: str) -> str:
    """One cell as a CSV output holds it: a leading `'` when a spreadsheet would run it as a formula."""
    if text[:1] and text[0] in FORMULA_TRIGGERS and not is_number_text(text):
        return "'" + text
    return text


def neutralize_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """`neutralize_text` over every text cell and every column name; other columns are left alone."""
    columns = [name for name, dtype in frame.schema.items() if isinstance(dtype, _TEXT_DTYPES)]
    if columns:
        # One cheap anchored scan first: most columns (names, codes) have no such cell and are left as they are.
        flags = frame.select(pl.col(name).cast(pl.String).str.contains(_TRIGGER_REGEX).any() for name in columns)
        risky = [name for name in columns if flags[name][0]]
        frame = frame.with_columns(_neutralized(pl.col(name).cast(pl.String)).alias(name) for name in risky)
    renames = {name: neutralize_text(name) for name in frame.columns if neutralize_text(name) != name}
    clashes = sorted(new for new in renames.values() if new in frame.columns)
    if clashes:
        raise InputError(
            f"column name(s) {', '.join(map(repr, clashes))} exist twice once a leading ' neutralizes the other; "
            "rename a column or write with --keep-formulas"
        )
    return frame.rename(renames) if renames else frame


def _neutralized(text: pl.Expr) -> pl.Expr:
    risky = text.str.contains(_TRIGGER_REGEX) & ~text.str.contains(_NUMBER_REGEX)
    return pl.when(risky).then(pl.lit("'") + text).otherwise(text)


# --- checking targets before the run ------------------------------------------------------------------


def ensure_writable(paths: Sequence[Path], *, check_format: bool = True, input_path: Path | None = None) -> None:
    """Raise a one-line InputError for the first path that cannot be written, before a run spends anything.

    Checks the extension (with `check_format`; `.xls` is read-only), that the target is not the input file
    (`input_path`, however spelt or linked), that it is not a directory or other non-file, that the nearest
    existing parent is a directory, that no two paths name one file, and that a file can be created where
    the target goes: a temporary probe, created and removed at once, so that closed permissions and
    read-only filesystems are found too. Missing parent directories are not created here (the writer does
    that); nothing is left behind.
    """
    seen: dict[Path, Path] = {}
    for path in paths:
        if check_format:
            table_format(path)
        if input_path is not None:
            refuse_the_input(path, input_path)
        _refuse_twice(path, seen)
        _refuse_non_file(path)
        directory = _nearest_existing(path.parent)
        if not directory.is_dir():
            raise InputError(f"cannot write {path}: {directory} is not a directory")
        try:
            _probe(directory, path)
        except OSError as exc:
            raise InputError(f"cannot write {path}: cannot create a file in {directory}: {_reason(exc)}") from exc


def refuse_the_input(path: Path, input_path: Path) -> None:
    """Writing over the input would lose what the output does not carry (its other sheets, its encoding)
    and the month itself should the run go wrong: an output naming it, through any spelling, a symbolic
    or a hard link, is refused."""
    try:
        same = os.path.samefile(path, input_path)
    except OSError:  # one of them does not exist (yet): then they are not one file
        same = path.resolve() == input_path.resolve()
    if same:
        raise InputError(f"cannot write {path}: it is the input file {input_path}; write the output elsewhere")


def _refuse_twice(path: Path, seen: dict[Path, Path]) -> None:
    identity = path.resolve()
    if identity in seen:
        raise InputError(f"cannot write {path}: {seen[identity]} names the same file; each output needs its own")
    seen[identity] = path


def _refuse_non_file(path: Path) -> None:
    """Renaming onto a directory fails, and onto a device (`/dev/null`) would replace the device itself."""
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory")
    if path.exists() and not path.is_file():
        raise InputError(f"cannot write {path}: it exists and is not a regular file")


def _nearest_existing(directory: Path) -> Path:
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return directory


def _probe(directory: Path, path: Path) -> None:
    probe = directory / _temp_name(path, "probe")
    descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(descriptor)
    probe.unlink()


# --- writing ------------------------------------------------------------------------------------------

WriteItem = tuple[pl.DataFrame, Path, Table | None]
"""A frame, its target, and the input it came from (for the CSV encoding and the Excel sheet name), if any."""
FileItem = tuple[Path, Callable[[Path], None]]
"""A target in a layout of its own, and the function that writes it to the temporary path it is given."""


def write_tables(items: Sequence[WriteItem], *, neutralize: bool = True, files: Sequence[FileItem] = ()) -> list[Path]:
    """Write every table (and file) or none: all to temporary siblings first, then renamed into place together.

    The format follows each target's extension. `neutralize` puts the leading `'` on formula-like text in
    CSV outputs (see the module doc); XLSX outputs store such strings as text either way. `files` are written
    by their own functions, in the same all-or-nothing set.
    """
    targets = [path for _, path, _ in items]
    seen: dict[Path, Path] = {}
    for path in targets:
        table_format(path)
    for path in [*targets, *(path for path, _ in files)]:
        _refuse_twice(path, seen)
        _refuse_non_file(path)
    written: list[tuple[Path, Path]] = []
    created: list[Path] = []
    current = targets[0] if targets else Path()
    try:
        for frame, path, like in items:
            current = path
            created += _make_parents(path)
            tmp = path.with_name(_temp_name(path, "tmp"))
            written.append((tmp, path))
            _write_one(frame, tmp, table_format(path), like, neutralize=neutralize)
        for path, write in files:
            current = path
            created += _make_parents(path)
            tmp = path.with_name(_temp_name(path, "tmp"))
            written.append((tmp, path))
            write(tmp)
        _commit(written)
    except BaseException as exc:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        _remove_empty(created)
        failure = _write_failure(current, exc)
        if failure is None or failure is exc:
            raise
        raise failure from exc
    return [*targets, *(path for path, _ in files)]


UNKNOWN_NAMES_COLUMN = "unknown_company_name"


def unknown_names_writer(names: Sequence[str], *, neutralize: bool = True) -> Callable[[Path], None]:
    """WorkDataHub's unknown-names export, laid out as the scripts that read it expect: UTF-8, three `#` lines
    (title, date, count), then a CSV with an unnamed index column and `unknown_company_name`, one line per
    row that got a temporary id. Cells are neutralized as in every CSV output (see the module doc)."""

    def write(path: Path) -> None:
        with path.open("w", encoding="utf-8", newline="") as handle:
            handle.write("# Validation Errors Export\n")
            handle.write(f"# Date: {datetime.now().isoformat()}\n")  # local time, as theirs
            handle.write(f"# Total Failed Rows: {len(names)}\n")
            out = csv.writer(handle, lineterminator="\n")
            out.writerow(["", UNKNOWN_NAMES_COLUMN])
            out.writerows((number, neutralize_text(name) if neutralize else name) for number, name in enumerate(names))

    return write


def estimate_write_s(frame: pl.DataFrame, path: Path, *, like: Table | None = None, sample_rows: int = 1_000) -> float:
    """How long writing this frame (plus the two id columns) to `path`'s format will take, measured: a sample
    of its rows is written to a temporary folder and the time scaled to all rows. Writers differ a hundredfold
    (a big XLSX takes many seconds, Parquet a fraction of one), so a progress ETA needs the measurement."""
    if frame.height == 0:
        return 0.0
    sample = frame.head(sample_rows).with_columns(
        pl.lit("IN" + "X" * 16).alias("__id_estimate"), pl.lit("index:customer_name").alias("__source_estimate")
    )
    with tempfile.TemporaryDirectory(prefix="eqc-enrich-estimate-") as folder:
        target = Path(folder) / f"sample{path.suffix.lower()}"
        started = time.perf_counter()
        try:
            _write_one(sample, target, table_format(path), like, neutralize=False)
        except (OSError, InputError, pl.exceptions.PolarsError):
            return 0.0  # an estimate is not worth a failure; the real write reports its own
        seconds = time.perf_counter() - started
    return seconds * frame.height / sample.height


def write_table(frame: pl.DataFrame, path: Path, *, like: Table | None = None, neutralize: bool = False) -> Path:
    """One table, atomically; CSV keeps a BOM when the input was not plain UTF-8 (Excel needs it).

    Neutralization is off by default: this is also how generated data files are written, as they are.
    """
    return write_tables([(frame, path, like)], neutralize=neutralize)[0]


def _write_one(frame: pl.DataFrame, tmp: Path, fmt: TableFormat, like: Table | None, *, neutralize: bool) -> None:
    if fmt == "csv":
        encoding = like.encoding if like is not None and like.format == "csv" else "utf-8"
        data = neutralize_formulas(frame) if neutralize else frame
        data.write_csv(tmp, include_bom=encoding != "utf-8")
    elif fmt == "xlsx":
        _write_xlsx(frame, tmp, (like.sheet if like is not None else None) or DEFAULT_SHEET)
    else:
        frame.write_parquet(tmp)


def _write_xlsx(frame: pl.DataFrame, tmp: Path, sheet: str) -> None:
    """The workbook is assembled in memory and then written as one file: a disk that fills up fails one plain
    write, instead of leaving xlsxwriter's zip archive half-closed (it complains on stderr when collected)."""
    from xlsxwriter import Workbook

    buffer = io.BytesIO()
    workbook = Workbook(buffer, _XLSX_OPTIONS)
    frame.write_excel(workbook=workbook, worksheet=sheet, autofit=False)
    workbook.close()
    with tmp.open("xb") as handle:
        handle.write(buffer.getbuffer())


def _write_failure(path: Path, exc: BaseException) -> InputError | OutputError | None:
    """The one-line error a failed write becomes; None for what is not a write failure (Ctrl-C, a bug)."""
    if isinstance(exc, InputError | OutputError):
        return exc
    if isinstance(exc, OSError):
        return OutputError(f"cannot write {path}: {_reason(exc)}")
    if isinstance(exc, pl.exceptions.PolarsError):
        return OutputError(f"cannot write {path}: {_first_line(exc)}")
    return None


@dataclass(frozen=True, slots=True)
class _Replaced:
    target: Path
    backup: Path | None  # the previous content, or None when there was no previous file


def _commit(written: Sequence[tuple[Path, Path]]) -> None:
    """Rename every temporary file onto its target; if one rename fails, put back what the others replaced.

    The previous content is kept as a hard link (the target never disappears for a reader) or, where the
    filesystem has no hard links, renamed aside for the moment of the swap.
    """
    done: list[_Replaced] = []
    try:
        for tmp, target in written:
            step = _Replaced(target, _keep_previous(target))
            done.append(step)
            os.replace(tmp, target)
    except BaseException:
        for step in reversed(done):
            _undo(step)
        raise
    for step in done:
        if step.backup is not None:
            step.backup.unlink(missing_ok=True)


def _keep_previous(target: Path) -> Path | None:
    if not target.exists():
        return None
    if not target.is_file():
        raise IsADirectoryError(f"{target} is not a regular file")
    backup = target.with_name(_temp_name(target, "previous"))
    try:
        os.link(target, backup)
    except OSError:
        os.replace(target, backup)
    return backup


def _undo(step: _Replaced) -> None:
    if step.backup is None:
        step.target.unlink(missing_ok=True)
    else:
        os.replace(step.backup, step.target)


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Write to a temporary file beside the target, then rename: a reader never sees half a file."""
    created = _make_parents(path)
    # A fresh unique name the writer creates itself, so the file gets the user's umask (mkstemp would make
    # every output owner-only).
    tmp = path.with_name(_temp_name(path, "tmp"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _remove_empty(created)
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_empty(created)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _temp_name(path: Path, kind: str) -> str:
    """A hidden, unique sibling name that keeps the extension (writers look at it) and stays under the
    255-byte limit of a file name however long the target's is: the stem is cut at 100 bytes, not characters
    (a Chinese character takes three)."""
    stem = path.stem.encode("utf-8", "surrogateescape")[:100].decode("utf-8", "ignore")
    return f".{stem}.{uuid.uuid4().hex}.{kind}{path.suffix[:16]}"


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parent directories; returns them, outermost first, so a failure can remove them."""
    missing: list[Path] = []
    directory = path.parent
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _remove_empty(directories: Iterable[Path]) -> None:
    for directory in reversed(list(directories)):
        try:
            directory.rmdir()
        except OSError:
            return


def _reason(exc: OSError) -> str:
    return exc.strerror or _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
