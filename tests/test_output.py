"""Outputs: targets checked before the run, all-or-nothing writes, formula neutralization (real files only)."""

from __future__ import annotations

import locale
import os
import re
import shutil
import subprocess
import sys
import zipfile
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.budget import examples

from eqc_enrich import InputError, OutputError
from eqc_enrich.output import (
    FORMULA_TRIGGERS,
    WriteItem,
    _commit,
    atomic_write,
    default_output_path,
    ensure_writable,
    is_number_text,
    neutralize_formulas,
    neutralize_text,
    unresolved_path,
    write_table,
    write_tables,
    write_text,
)
from eqc_enrich.read import Table, TableFormat, read_table, table_format

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def tree(root: Path) -> list[str]:
    """Every path under root, relative, sorted: what a check or a failed write must leave unchanged."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


# --- ensure_writable ------------------------------------------------------------------------------------


def test_writable_targets_pass_and_nothing_is_created(tmp_path: Path) -> None:
    (tmp_path / "old.csv").write_text("previous\n")
    before = tree(tmp_path)
    ensure_writable([tmp_path / "out.xlsx", tmp_path / "old.csv", tmp_path / "a" / "b" / "out.parquet"])
    assert tree(tmp_path) == before  # no probe left, no parent directory made
    assert (tmp_path / "old.csv").read_text() == "previous\n"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("file.txt/out.csv", r"file\.txt is not a directory"),
        ("file.txt/deeper/out.csv", r"file\.txt is not a directory"),
        ("adir.csv", "it is a directory"),
        ("out.txt", "unsupported file type '.txt'"),
        ("out", r"unsupported file type '\(none\)'"),
        ("y.xls", "'.xls' can be read but not written"),
    ],
)
def test_unwritable_targets_are_one_line_errors(tmp_path: Path, target: str, message: str) -> None:
    (tmp_path / "file.txt").write_text("a file where a directory should be")
    (tmp_path / "adir.csv").mkdir()
    before = tree(tmp_path)
    with pytest.raises(InputError, match=message) as info:
        ensure_writable([tmp_path / "ok.csv", tmp_path / target])
    one_line(info.value)
    assert tree(tmp_path) == before


def test_two_outputs_naming_one_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="names the same file"):
        ensure_writable([tmp_path / "a.csv", tmp_path / "sub" / ".." / "a.csv"])


def test_a_device_is_never_a_target() -> None:
    with pytest.raises(InputError, match="not a regular file"):
        ensure_writable([Path("/dev/null")], check_format=False)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
@pytest.mark.parametrize("target", ["/sys/eqc-enrich-probe.csv", "/sys/no/such/dir/out.csv"])
def test_a_directory_nobody_may_create_files_in_is_refused(target: str) -> None:
    """sysfs refuses new files even to root (tests run as root, where chmod does not stop a write)."""
    with pytest.raises(InputError, match=r"cannot create a file in /sys: Permission denied") as info:
        ensure_writable([Path(target)])
    one_line(info.value)


@pytest.mark.skipif(IS_ROOT, reason="root writes into a 0555 directory anyway; sysfs and the ro mount cover root")
def test_a_closed_directory_is_refused(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir()
    closed.chmod(0o555)
    try:
        with pytest.raises(InputError, match="Permission denied"):
            ensure_writable([closed / "out.csv"])
    finally:
        closed.chmod(0o755)


_RO_SCRIPT = """
import sys
from pathlib import Path
from eqc_enrich import InputError
from eqc_enrich.output import ensure_writable
try:
    ensure_writable([Path(sys.argv[1]) / "out.csv"])
except InputError as exc:
    print(exc)
else:
    print("no error")
"""


@pytest.mark.skipif(shutil.which("unshare") is None or not IS_ROOT, reason="needs root and unshare to mount")
def test_a_read_only_filesystem_is_refused(tmp_path: Path) -> None:
    """A real read-only mount, private to one child process (its own mount namespace): nothing outlives it."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    command = 'mount -t tmpfs -o ro tmpfs "$1" && exec "$2" -c "$3" "$1"'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command, "sh",
         str(mount_point), sys.executable, _RO_SCRIPT],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0 and ("Operation not permitted" in done.stderr or "permission denied" in done.stderr):
        pytest.skip(f"no mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert "cannot create a file in" in done.stdout
    assert "Read-only file system" in done.stdout


# --- all-or-nothing writes ------------------------------------------------------------------------------


def test_every_table_is_written_in_its_format(tmp_path: Path) -> None:
    frame = pl.DataFrame({"客户名称": ["甲公司", "乙公司"], "规模": [1.5, 2.0]})
    paths = write_tables(
        [(frame, tmp_path / "o.csv", None), (frame, tmp_path / "o.xlsx", None), (frame, tmp_path / "o.parquet", None)]
    )
    assert paths == [tmp_path / "o.csv", tmp_path / "o.xlsx", tmp_path / "o.parquet"]
    assert tree(tmp_path) == ["o.csv", "o.parquet", "o.xlsx"]
    assert read_table(tmp_path / "o.parquet").frame.equals(frame)
    assert read_table(tmp_path / "o.xlsx").frame.equals(frame)
    assert read_table(tmp_path / "o.csv").frame["客户名称"].to_list() == ["甲公司", "乙公司"]


def test_csv_keeps_a_bom_when_the_input_had_one(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes("客户名称\n甲\n".encode("gbk"))
    table = read_table(source)
    write_tables([(table.frame, tmp_path / "out.csv", table), (table.frame, tmp_path / "plain.csv", None)])
    assert (tmp_path / "out.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert not (tmp_path / "plain.csv").read_bytes().startswith(b"\xef\xbb\xbf")


def test_a_failing_second_table_leaves_the_first_target_untouched(tmp_path: Path) -> None:
    first = tmp_path / "enriched.csv"
    first.write_bytes(b"previous,good\n1,2\n")
    good = pl.DataFrame({"a": ["x"]})
    nested = pl.DataFrame({"a": [[1, 2]]})  # CSV cannot hold a list column: the writer fails
    with pytest.raises(OutputError, match=r"cannot write .*unresolved\.csv") as info:
        write_tables([(good, first, None), (nested, tmp_path / "unresolved.csv", None)])
    one_line(info.value)
    assert first.read_bytes() == b"previous,good\n1,2\n"
    assert tree(tmp_path) == ["enriched.csv"]  # the second target not created, no temporary file left


def test_a_failed_write_removes_the_directories_it_made(tmp_path: Path) -> None:
    nested = pl.DataFrame({"a": [[1, 2]]})
    items: list[WriteItem] = [(pl.DataFrame({"a": [1]}), tmp_path / "x" / "ok.csv", None)]
    items.append((nested, tmp_path / "y" / "z.csv", None))
    with pytest.raises(OutputError):
        write_tables(items)
    assert tree(tmp_path) == []


_FULL_DISK_SCRIPT = """
import resource, signal, sys
from pathlib import Path
import polars as pl
from eqc_enrich import OutputError
from eqc_enrich.output import write_tables

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
frame = pl.DataFrame({"name": [f"company {i:07d}" for i in range(200_000)]})  # about 4 MB of CSV
target = Path(sys.argv[1])
try:
    write_tables([(frame, target, None)])
except OutputError as exc:
    print(exc)
"""


def test_a_write_that_fails_midway_leaves_the_previous_file_byte_identical(tmp_path: Path) -> None:
    """The writer really fails part-way (a file-size limit: 256 KiB of 4 MB written). Writing straight to
    the target would leave it truncated; a temporary file keeps the previous month intact."""
    target = tmp_path / "out.csv"
    previous = b"name\nprevious month\n" * 100
    target.write_bytes(previous)
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_SCRIPT, str(target)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f"cannot write {target}: File too large" in done.stdout
    assert target.read_bytes() == previous
    assert tree(tmp_path) == ["out.csv"]


def test_a_failed_rename_puts_back_every_file_already_replaced(tmp_path: Path) -> None:
    """The commit step alone: the third target is a directory, so its rename fails after two succeeded."""
    replaced, created, blocked = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    replaced.write_bytes(b"old a\n")
    blocked.mkdir()
    temps = [tmp_path / f".t{i}" for i in range(3)]
    for index, tmp in enumerate(temps):
        tmp.write_bytes(f"new {index}\n".encode())
    with pytest.raises(OSError):  # noqa: PT011 - which OSError depends on the platform
        _commit(list(zip(temps, [replaced, created, blocked], strict=True)))
    assert replaced.read_bytes() == b"old a\n"
    assert not created.exists()
    assert blocked.is_dir()
    assert tree(tmp_path) == sorted(["a.csv", "c.csv", ".t2"])  # backups gone; the caller removes its temps


def test_an_interrupt_while_writing_leaves_nothing(tmp_path: Path) -> None:
    class Interrupting(pl.DataFrame):
        def write_parquet(self, *args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        write_tables([(pl.DataFrame({"a": [1]}), tmp_path / "ok.csv", None), (Interrupting({"a": [1]}), target, None)])
    assert target.read_bytes() == b"previous"
    assert tree(tmp_path) == ["out.parquet"]


def test_targets_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "d.csv").mkdir()
    frame = pl.DataFrame({"a": [1]})
    for bad, message in [("d.csv", "it is a directory"), ("y.xls", "can be read but not written"), ("o.csv", "same")]:
        with pytest.raises(InputError, match=message):
            write_tables([(frame, tmp_path / "o.csv", None), (frame, tmp_path / bad, None)])
        assert tree(tmp_path) == ["d.csv"]


def test_write_table_still_writes_one_file_as_it_is(tmp_path: Path) -> None:
    frame = pl.DataFrame({"name": ["=1+1", "-"]})
    write_table(frame, tmp_path / "raw.csv")
    assert (tmp_path / "raw.csv").read_text() == "name\n=1+1\n-\n"
    write_table(frame, tmp_path / "safe.csv", neutralize=True)
    assert (tmp_path / "safe.csv").read_text() == "name\n'=1+1\n'-\n"


# --- formula neutralization -----------------------------------------------------------------------------

ATTACKS = [
    '=HYPERLINK("http://evil.example/x","点我")',
    "=cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "@x",
    "-2+3+cmd|' /C calc'!A0",
    "+A1",
    "\t=1+1",
    "\r=1+1",
    "=",
    "-",
]
NUMBERS = ["-1234.56", "+1", "-0.5e3", "-1", "+0.0", "-.5", "+5.", "-1E+10", "1234.56", "0"]
PLAIN = ["中国平安", "", " =1+1", "A=1", "http://evil.example/x", "'=already", "１２"]


def test_csv_outputs_quote_formulas_and_keep_numbers_byte_for_byte(tmp_path: Path) -> None:
    source = tmp_path / "month.csv"
    cells = ATTACKS + NUMBERS + PLAIN
    amounts = (NUMBERS * 3)[: len(cells)]
    pl.DataFrame({"客户名称": cells, "规模": amounts}).write_csv(source)
    table = read_table(source)  # all text: the amounts are strings here
    unresolved = pl.DataFrame({"name": ATTACKS, "rows": list(range(len(ATTACKS)))})
    write_tables([(table.frame, tmp_path / "out.csv", table), (unresolved, tmp_path / "un.csv", None)])
    out = pl.read_csv(tmp_path / "out.csv", infer_schema=False)
    expected = ["'" + c for c in ATTACKS] + NUMBERS + PLAIN
    assert out["客户名称"].to_list() == expected
    assert out["规模"].to_list() == table.frame["规模"].to_list()  # numbers read as text: untouched
    assert pl.read_csv(tmp_path / "un.csv", infer_schema=False)["name"].to_list() == ["'" + c for c in ATTACKS]
    raw = (tmp_path / "out.csv").read_text(encoding="utf-8")
    for number in NUMBERS:
        assert f",{number}\n" in raw


def test_keep_formulas_writes_text_as_it_is(tmp_path: Path) -> None:
    frame = pl.DataFrame({"name": ATTACKS})
    write_tables([(frame, tmp_path / "out.csv", None)], neutralize=False)
    assert pl.read_csv(tmp_path / "out.csv", infer_schema=False)["name"].to_list() == [c or None for c in ATTACKS]


def test_formula_like_column_names_are_quoted_too(tmp_path: Path) -> None:
    frame = pl.DataFrame({"=cmd|' /C calc'!A0": ["x"], "规模": ["-1"]})
    write_tables([(frame, tmp_path / "out.csv", None)])
    assert (tmp_path / "out.csv").read_text().splitlines()[0] == "'=cmd|' /C calc'!A0,规模"
    with pytest.raises(InputError, match="keep-formulas"):
        neutralize_formulas(pl.DataFrame({"=a": [1], "'=a": [2]}))


def test_numbers_and_other_types_are_left_alone() -> None:
    frame = pl.DataFrame(
        {"i": [-1, 2], "f": [-0.5, 1.0], "cat": pl.Series(["=x", "-1"], dtype=pl.Categorical), "n": [None, "@a"]}
    )
    out = neutralize_formulas(frame)
    assert out["i"].to_list() == [-1, 2]
    assert out["f"].to_list() == [-0.5, 1.0]
    assert out["cat"].to_list() == ["'=x", "-1"]
    assert out["n"].to_list() == [None, "'@a"]


def test_xlsx_stores_formula_like_strings_as_text(tmp_path: Path) -> None:
    cells = [*ATTACKS, "http://evil.example/x", *NUMBERS]
    frame = pl.DataFrame({"客户名称": cells, "n": list(range(len(cells)))})
    like = Table(frame, None, "xlsx", sheet="规模明细")
    write_tables([(frame, tmp_path / "out.xlsx", like)])
    with zipfile.ZipFile(tmp_path / "out.xlsx") as book:
        sheets = [name for name in book.namelist() if name.startswith("xl/worksheets/sheet")]
        assert sheets
        for name in sheets:
            xml = book.read(name).decode("utf-8")
            assert "<f>" not in xml  # no formula element anywhere
            assert "<f " not in xml
            assert "<hyperlink" not in xml  # and no link made from a URL-looking string
    back = read_table(tmp_path / "out.xlsx")
    assert back.sheet == "规模明细"
    assert back.frame["客户名称"].to_list() == [c or None for c in cells]  # text as it was, no leading '


def test_is_number_text_examples() -> None:
    for number in NUMBERS:
        assert is_number_text(number), number
    for text in ["-1,234", "-5%", "-inf", "-nan", " -1", "-1 ", "-1\n", "1+1", "+", "-", ".", "-e5", "1e", "-١٢"]:
        assert not is_number_text(text), text


_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_NUMBER_TEXTS = st.one_of(
    st.integers().map(str),
    st.integers().map(lambda n: f"{n:+d}"),
    _FLOATS.map(repr),
    _FLOATS.map(lambda x: f"{x:+.6e}"),
    _FLOATS.map(lambda x: f"{x:+f}"),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: f"{d:f}"),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: f"{Decimal(d):E}"),
)


@settings(max_examples=examples(500), deadline=None)
@given(_NUMBER_TEXTS)
def test_numbers_are_never_touched(text: str) -> None:
    assert is_number_text(text)
    assert neutralize_text(text) == text
    assert neutralize_formulas(pl.DataFrame({"v": [text]}))["v"].to_list() == [text]


_CELLS = st.one_of(
    st.text(max_size=12),
    st.builds(lambda c, rest: c + rest, st.sampled_from(list(FORMULA_TRIGGERS)), st.text(max_size=10)),
    _NUMBER_TEXTS,
)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(_CELLS, min_size=1, max_size=20))
def test_frame_and_single_cell_neutralization_agree(cells: list[str]) -> None:
    out = neutralize_formulas(pl.DataFrame({"v": cells}))["v"].to_list()
    assert out == [neutralize_text(cell) for cell in cells]
    for before, after in zip(cells, out, strict=True):
        assert after in (before, "'" + before)
        assert not after[:1] or after[0] not in FORMULA_TRIGGERS or is_number_text(after)


# --- formats and names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "fmt", "expected"),
    [
        ("m.csv", None, "m.enriched.csv"),
        ("m.xlsx", None, "m.enriched.xlsx"),
        ("m.xls", None, "m.enriched.xlsx"),
        ("m.XLS", None, "m.enriched.xlsx"),
        ("m.parquet", None, "m.enriched.parquet"),
        ("m.xls", "csv", "m.enriched.csv"),
    ],
)
def test_default_output_path(source: str, fmt: TableFormat | None, expected: str) -> None:
    assert default_output_path(Path(source), fmt).name == expected
    table_format(default_output_path(Path(source), fmt))  # always a format we can write


def test_xls_is_readable_but_not_writable() -> None:
    with pytest.raises(InputError, match="can be read but not written"):
        table_format(Path("y.xls"))
    assert table_format(Path("y.XLSX")) == "xlsx"


# --- what mutation testing found untested ---------------------------------------------------------------------


def test_a_long_chinese_file_name_can_be_written(tmp_path: Path) -> None:
    """A 244-byte target name (80 Chinese characters): its temporary sibling must stay under 255 bytes too."""
    target = tmp_path / ("年金计划规模明细" * 10 + ".csv")
    assert len(target.name.encode("utf-8")) == 244
    ensure_writable([target])
    write_tables([(pl.DataFrame({"a": [1]}), target, None)])
    assert tree(tmp_path) == [target.name]


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_an_xlsx_that_cannot_be_created_is_a_one_line_error() -> None:
    with pytest.raises(OutputError) as info:
        write_tables([(pl.DataFrame({"a": [1]}), Path("/sys/kernel/eqc-enrich.xlsx"), None)])
    assert str(info.value) == "cannot write /sys/kernel/eqc-enrich.xlsx: Permission denied"


def test_an_xlsx_output_keeps_the_sheet_of_its_input(tmp_path: Path) -> None:
    import fastexcel

    frame = pl.DataFrame({"a": ["x"]})
    like = Table(frame, tmp_path / "in.xlsx", "xlsx", sheet="二月明细")
    write_tables([(frame, tmp_path / "with.xlsx", like), (frame, tmp_path / "without.xlsx", None)])
    assert fastexcel.read_excel(tmp_path / "with.xlsx").sheet_names == ["二月明细"]
    assert fastexcel.read_excel(tmp_path / "without.xlsx").sheet_names == ["规模明细"]


def test_the_same_file_twice_names_both_spellings(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "sub" / ".." / "a.csv"
    with pytest.raises(InputError) as info:
        ensure_writable([first, second])
    assert str(info.value) == f"cannot write {second}: {first} names the same file; each output needs its own"


def test_missing_parent_directories_are_made_and_removed_again_on_failure(tmp_path: Path) -> None:
    good, nested = pl.DataFrame({"a": [1]}), pl.DataFrame({"a": [[1, 2]]})
    p = tmp_path / "p"
    write_tables([(good, tmp_path / "x" / "y" / "z" / "ok.csv", None)])
    assert (tmp_path / "x" / "y" / "z" / "ok.csv").exists()
    with pytest.raises(OutputError):
        write_tables([(good, p / "q" / "ok.csv", None), (nested, p / "q" / "r" / "x.csv", None)])
    assert not p.exists()  # every directory the failed write made, innermost first


def test_a_table_polars_cannot_write_says_what_polars_said(tmp_path: Path) -> None:
    nested = pl.DataFrame({"a": [[1, 2]]})
    with pytest.raises(pl.exceptions.PolarsError) as direct:
        nested.write_csv(tmp_path / "direct.csv")
    with pytest.raises(OutputError) as info:
        write_tables([(nested, tmp_path / "out.csv", None)])
    assert str(info.value) == f"cannot write {tmp_path / 'out.csv'}: {str(direct.value).strip().splitlines()[0]}"


def test_a_write_failure_without_a_message_names_its_kind(tmp_path: Path) -> None:
    from eqc_enrich.output import _write_failure

    assert str(_write_failure(tmp_path / "o.csv", OSError())) == f"cannot write {tmp_path / 'o.csv'}: OSError"
    assert str(_write_failure(tmp_path / "o.csv", OSError(28, "No space left on device"))) == (
        f"cannot write {tmp_path / 'o.csv'}: No space left on device"
    )
    assert _write_failure(tmp_path / "o.csv", KeyboardInterrupt()) is None


def test_a_rename_that_fails_on_a_new_target_raises_its_own_error(tmp_path: Path) -> None:
    """Undoing a step whose target never came into being must not replace the real error with another."""
    missing_tmp = tmp_path / ".never-written"
    with pytest.raises(FileNotFoundError) as info:
        _commit([(missing_tmp, tmp_path / "new.csv")])
    assert info.value.filename == str(missing_tmp)
    assert tree(tmp_path) == []


def test_a_directory_in_the_way_of_a_commit_is_named() -> None:
    from eqc_enrich.output import _keep_previous

    with pytest.raises(IsADirectoryError, match=r"^/tmp is not a regular file$"):
        _keep_previous(Path("/tmp"))


# --- found untested by mutation testing: temporary names, atomic_write and write_text on their own ----------


def test_the_temporary_file_is_a_hidden_unique_sibling_that_keeps_the_extension(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"x")

    target = tmp_path / "月报.xlsx"
    assert atomic_write(target, write) == target
    atomic_write(target, write)
    first, second = seen
    assert first.parent == second.parent == tmp_path
    assert re.fullmatch(r"\.月报\.[0-9a-f]{32}\.tmp\.xlsx", first.name)
    assert first != second
    assert tree(tmp_path) == ["月报.xlsx"]


def test_a_temporary_name_cuts_a_long_stem_at_100_bytes_and_a_long_suffix_at_16_characters(tmp_path: Path) -> None:
    seen: list[str] = []

    def write(tmp: Path) -> None:
        seen.append(tmp.name)
        tmp.write_bytes(b"x")

    atomic_write(tmp_path / ("a" * 150 + "." + "b" * 30), write)
    assert re.fullmatch(r"\." + "a" * 100 + r"\.[0-9a-f]{32}\.tmp\." + "b" * 15, seen[0])


def test_a_file_name_with_undecodable_bytes_still_gets_a_temporary_sibling(tmp_path: Path) -> None:
    target = tmp_path / "\udcff数据.csv"  # the byte 0xff, as Python spells a file-name byte that is not UTF-8
    atomic_write(target, lambda tmp: tmp.write_bytes(b"x"))
    assert target.read_bytes() == b"x"
    assert os.listdir(os.fsencode(tmp_path)) == [b"\xff" + "数据.csv".encode()]


def test_atomic_write_makes_a_failed_write_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new" / "out.txt"

    def refused(tmp: Path) -> None:
        raise PermissionError(13, "Permission denied")  # before the temporary file exists

    with pytest.raises(OutputError) as caught:
        atomic_write(target, refused)
    assert one_line(caught.value) == f"cannot write {target}: Permission denied"
    assert tree(tmp_path) == []


def test_atomic_write_lets_any_other_error_through_and_leaves_nothing(tmp_path: Path) -> None:
    def bug(tmp: Path) -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        atomic_write(tmp_path / "new" / "out.txt", bug)
    assert tree(tmp_path) == []


def test_write_text_writes_utf8_through_a_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "说明.txt"
    assert write_text(target, "第一行\n") == target
    assert target.read_bytes() == "第一行\n".encode()
    assert tree(tmp_path) == ["sub", "sub/说明.txt"]


def test_write_text_writes_utf8_whatever_the_locale_says(tmp_path: Path) -> None:
    """A host whose locale is not UTF-8 (here C, plain ASCII) still gets a UTF-8 file, not an encoding error."""
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        write_text(tmp_path / "说明.txt", "第一行\n")
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
    assert (tmp_path / "说明.txt").read_bytes() == "第一行\n".encode()


def test_the_unresolved_list_sits_beside_the_input() -> None:
    assert unresolved_path(Path("/data/2024-11/月报.xlsx")) == Path("/data/2024-11/月报.unresolved.csv")


def test_xlsx_columns_are_not_fitted(tmp_path: Path) -> None:
    """No autofit: fitting measures every cell of every column; the file then carries no column widths."""
    target = write_table(pl.DataFrame({"客户名称": ["一个很长很长的公司名称有限公司"] * 3}), tmp_path / "o.xlsx")
    sheet = zipfile.ZipFile(target).read("xl/worksheets/sheet1.xml").decode()
    assert "<sheetData>" in sheet
    assert "<cols>" not in sheet


def test_column_names_that_neutralize_into_others_are_named_in_the_refusal() -> None:
    frame = pl.DataFrame({"=a": ["1"], "'=a": ["2"], "+b": ["3"], "'+b": ["4"], "c": ["5"]})
    with pytest.raises(InputError) as caught:
        neutralize_formulas(frame)
    assert one_line(caught.value) == (
        'column name(s) "\'+b", "\'=a" exist twice once a leading \' neutralizes the other; '
        "rename a column or write with --keep-formulas"
    )
