"""Reading input and refusing bad input: .xls, duplicate columns, a directory, a noisy Excel reader, binary
overrides and absurd option values. Every refusal is one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import fastexcel
import polars as pl
import pytest
import xlsxwriter

from eqc_enrich import ConfigError, InputError
from eqc_enrich._durations import MAX_DURATION_S, MAX_RATE_REQUESTS, RateLimit, parse_duration, parse_rate_limit
from eqc_enrich.cli import main
from eqc_enrich.read import read_table
from eqc_enrich.resolve import Overrides

DATA = Path(__file__).parent / "data"
MONTH_XLS = DATA / "month.xls"  # BIFF8 from xlwt 1.3.0; how it was made: tests/data/README.md


def run_cli(args: list[str | Path], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The console entry point in this process; returns the exit code and stderr (file-descriptor level)."""
    try:
        main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    else:
        code = 0
    return code, capfd.readouterr().err


def offline(tmp_path: Path) -> list[str | Path]:
    return ["--no-enrichment", "--quiet", "--db", tmp_path / "index.db"]


# --- .xls --------------------------------------------------------------------------------------------------


def test_xls_input_is_read_with_its_sheets_and_types() -> None:
    table = read_table(MONTH_XLS)
    assert table.format == "xls"
    assert table.sheet == "规模明细"  # chosen by name over the notes sheet that comes first
    frame = table.frame
    assert frame.columns == ["客户名称", "计划代码", "公司代码", "期末资产规模", "备注"]
    assert frame["客户名称"].to_list() == ["中国平安-已转出", "公司Ａ", "（已转出）华润(北京)医药有限公司", "无"]
    assert frame["计划代码"].to_list() == ["P0190", "P0001", "000123", None]  # text cells keep leading zeros
    assert frame["期末资产规模"].to_list() == [1234.56, 10.0, -0.5, 0.0]
    assert read_table(MONTH_XLS, sheet="说明").frame.height == 0  # --sheet works for .xls as for .xlsx


def test_an_xls_month_runs_and_is_written_as_xlsx(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    month = tmp_path / "month.xls"
    shutil.copy(MONTH_XLS, month)
    code, err = run_cli(["run", month, *offline(tmp_path)], capfd)
    assert code == 0, err
    out = read_table(tmp_path / "month.enriched.xlsx")
    assert out.sheet == "规模明细"
    assert out.frame.drop("company_id", "company_id_source").equals(read_table(month).frame)
    assert not (tmp_path / "month.enriched.xls").exists()


def test_writing_xls_is_a_one_line_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    month = tmp_path / "month.xls"
    shutil.copy(MONTH_XLS, month)
    code, err = run_cli(["run", month, "-o", tmp_path / "y.xls", *offline(tmp_path)], capfd)
    assert code == 2
    assert err.splitlines() == [f"error: {tmp_path / 'y.xls'}: '.xls' can be read but not written; "
                                "write one of .csv, .parquet, .xlsx"]  # fmt: skip
    assert not (tmp_path / "y.xls").exists()


# --- duplicate columns, directories ------------------------------------------------------------------------


def test_duplicate_csv_columns_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("客户名称,计划代码,客户名称,,,规模,规模\n甲,P1,乙,,,1,2\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_table(path)
    assert str(info.value) == f"{path}: duplicate column name(s) '客户名称', '规模'; every column needs its own name"


def test_blank_header_cells_may_repeat(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("客户名称,,\n甲,1,2\n", encoding="utf-8")
    assert read_table(path).frame.height == 1


def test_a_quoted_header_is_parsed_before_counting(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_text('"a,b",a,"b\nc"\n1,2,3\n', encoding="utf-8")
    assert read_table(path).frame.columns == ["a,b", "a", "b\nc"]


def test_duplicate_excel_columns_are_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "dup.xlsx"
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("规模明细")
    sheet.write_row(1, 1, ["客户名称", "规模", "客户名称"])  # not at A1: the header row is found as the reader finds it
    sheet.write_row(2, 1, ["甲", 1, "乙"])
    book.close()
    with pytest.raises(InputError, match=r"duplicate column name.*'客户名称'"):
        read_table(path)


def test_names_that_only_look_renamed_are_kept(tmp_path: Path) -> None:
    csv = tmp_path / "look.csv"
    csv.write_text("客户名称,客户名称_duplicated_0\n甲,乙\n", encoding="utf-8")
    assert read_table(csv).frame.columns == ["客户名称", "客户名称_duplicated_0"]
    xlsx = tmp_path / "look.xlsx"
    pl.DataFrame({"客户名称": ["甲"], "客户名称_1": ["乙"]}).write_excel(xlsx, worksheet="规模明细")
    assert read_table(xlsx).frame.columns == ["客户名称", "客户名称_1"]


def test_a_directory_named_like_a_table_says_so(tmp_path: Path) -> None:
    (tmp_path / "x.csv").mkdir()
    with pytest.raises(InputError, match=r"x\.csv: is a directory, not a csv file"):
        read_table(tmp_path / "x.csv")


# --- Excel without reader noise ----------------------------------------------------------------------------


def _ten_rows_with_an_empty_column(path: Path) -> Path:
    """Like the sheet in the issue: 10 rows, and column 21 (0-based) has a header but no value."""
    frame = pl.DataFrame({f"c{i}": [None if i == 21 else f"{i}-{row}" for row in range(10)] for i in range(25)})
    frame = frame.with_columns(pl.col("c21").cast(pl.String), pl.col("c0").alias("客户名称"))
    frame.write_excel(path, worksheet="规模明细")
    return path


def test_reading_excel_prints_no_dtype_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    path = _ten_rows_with_an_empty_column(tmp_path / "ten.xlsx")
    # the control: fastexcel does log the note when asked directly, so this test can tell
    with caplog.at_level(logging.WARNING):
        fastexcel.read_excel(path).load_sheet(0).to_polars()
    assert any("Could not determine dtype for column 21" in r.getMessage() for r in caplog.records)
    caplog.clear()
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        table = read_table(path)
    assert caught == []
    assert not [r for r in caplog.records if r.name.startswith("fastexcel")]
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""
    assert table.frame.height == 10
    assert table.frame["c21"].null_count() == 10
    # the filter is gone once the read is over: other code still hears fastexcel
    assert not logging.getLogger("fastexcel.types.dtype").filters


def test_a_run_on_that_sheet_has_a_clean_stderr(tmp_path: Path) -> None:
    """In its own process: there, unlike under pytest (which puts handlers on the root logger), Python's
    last-resort handler is what printed the note to the user's terminal."""
    path = _ten_rows_with_an_empty_column(tmp_path / "ten.xlsx")
    done = subprocess.run(
        [sys.executable, "-m", "eqc_enrich.cli", "run", str(path), *map(str, offline(tmp_path))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Could not determine" not in done.stderr
    assert "output: " in done.stderr  # the final report is there: stderr was really captured


# --- overrides ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)), r"not UTF-8 text \(byte 128\)"),
        (b"\x00\x01binary", "not valid YAML: unacceptable character"),
        (b"customer_name:\n  a: 2024-13-45\n", "not valid YAML: month must be in 1..12"),
        (b"[" * 20_000, "not valid YAML"),
        ("customer_name:\n  甲公司: {nested: 1}\n".encode(), "is not a key and a company id"),
    ],
)
def test_unreadable_overrides_are_config_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "overrides.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        Overrides.load(path)
    assert "\n" not in str(info.value)


def test_a_folder_without_their_mapping_files_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"a folder, but neither it nor .* holds any of company_id_overrides_plan"):
        Overrides.load(tmp_path)


# --- durations and rate limits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["9" * 400, "9" * 400 + "d", "365001d", "1e400s", "inf", "nan", math.inf, math.nan, 10**400, MAX_DURATION_S + 1],
)
def test_durations_refuse_infinity_nan_and_overflow(value: str | float) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 120  # 400 digits are cut short in the message


def test_the_longest_duration_is_accepted() -> None:
    assert parse_duration("365000d") == MAX_DURATION_S


@pytest.mark.parametrize(
    "text", ["99999999999999999999/1s", "9" * 5000 + "/1s", "1000001/60s", "10/0s", "10/1e400s", "10/365001d"]
)
def test_absurd_rate_limits_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rate_limit(text)
    assert "\n" not in str(info.value)


def test_rate_limit_bounds_and_round_trip() -> None:
    biggest = parse_rate_limit(f"{MAX_RATE_REQUESTS}/365000d")
    assert biggest == RateLimit(MAX_RATE_REQUESTS, MAX_DURATION_S)
    assert parse_rate_limit(str(biggest)) == biggest  # no exponent in the display form
    assert parse_rate_limit("0000010/60s") == RateLimit(10, 60.0)
    with pytest.raises(ConfigError):
        RateLimit(10, math.inf)


# --- the CLI: one line, exit 2 -----------------------------------------------------------------------------


@pytest.fixture
def month_csv(tmp_path: Path) -> Path:
    path = tmp_path / "month.csv"
    path.write_text("客户名称,计划代码\n甲公司,P1\n乙公司,P2\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--overrides", "{binary}"], "overrides .*: not UTF-8 text"),
        (["--rate-limit", "99999999999999999999/1s"], "rate limit must allow 1 to 1,000,000 requests"),
        (["--rate-limit", "10/0s"], "rate limit window must be at least 1ms and at most 365000d, got 0s"),
        (["--rate-limit", "10/0.000001ms"], "rate limit window must be at least 1ms and at most 365000d, got 1e-09s"),
        (["--rate-limit", "10/1e400s"], "not a duration: '1e400s'"),
        (["--rate-limit", "10/" + "9" * 400 + "s"], "duration too long"),
        (["--timeout", "9" * 400], "duration too long"),
        (["--negative-ttl", "365001d"], "duration too long"),
        (["-o", "{dir}"], "it is a directory"),
        (["-o", "{file}/out.csv"], "cannot write"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    tmp_path: Path, month_csv: Path, capfd: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    (tmp_path / "adir.csv").mkdir()
    filled = [a.format(binary=binary, dir=tmp_path / "adir.csv", file=month_csv) for a in args]
    code, err = run_cli(["run", month_csv, *filled, *offline(tmp_path)], capfd)
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_text("客户名称,客户名称\n甲,乙\n", encoding="utf-8"), "duplicate column name.*'客户名称'"),
    ],
)
def test_bad_input_files_are_one_line_and_exit_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    path = tmp_path / "x.csv"
    make(path)  # type: ignore[operator]
    code, err = run_cli(["run", path, *offline(tmp_path)], capfd)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_keep_formulas_reaches_the_run_options(
    tmp_path: Path, month_csv: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    code, err = run_cli(["run", month_csv, "--keep-formulas", "--log-json", events, *offline(tmp_path)], capfd)
    assert code == 0, err
    start = json.loads(events.read_text(encoding="utf-8").splitlines()[0])
    assert start["options"]["keep_formulas"] is True  # a real JSON bool
