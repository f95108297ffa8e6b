"""The run's inputs under hostile and careless use (issue 18, items 7-10 and 12): archives that inflate past
any memory, cells far apart, YAML aliases, a name of megabytes, an output naming the input, a NUL in a name,
a token pasted with its newline, a rate window too short to mean anything.

Every refusal is one line and exit 2, checked before anything is expanded, asked or written. The bombs are
real files made here: small on disk, large only once expanded, and measured against a lowered limit or
refused before they are opened, so each test stays bounded in time and memory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.budget import examples
from tests.conftest import IndexDb
from tests.options import run_options

from eqc_enrich import ConfigError, InputError, RateLimit, enrich
from eqc_enrich._input_size import DEFAULT_MAX_INPUT_SIZE, check_input_size, check_sheet_extent, parse_size
from eqc_enrich._text import MAX_SHOWN_CHARS, shown, shown_text
from eqc_enrich.cli import main
from eqc_enrich.config import EqcOptions
from eqc_enrich.eqc_stage import run_token_command
from eqc_enrich.keys import is_shortened_key, normalize_name, temp_company_id
from eqc_enrich.model import Latency
from eqc_enrich.read import read_table
from eqc_enrich.simulator import Simulator, SimulatorConfig
from eqc_enrich.store import IndexStore

DATA = Path(__file__).parent / "data"
TOKEN = "hostile-inputs-token-0123456789"
SALT = "hostile"


def run_cli(args: Sequence[str | Path], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The console entry point in this process; the exit code and stderr."""
    try:
        main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    else:
        code = 0
    return code, capfd.readouterr().err


def offline(tmp_path: Path) -> list[str | Path]:
    return ["--no-enrichment", "--quiet", "--db", tmp_path / "index.db"]


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


_MEASURED = """
import atexit, runpy, sys

def peak():  # VmHWM, not ru_maxrss: Linux carries the peak of the process before exec into ru_maxrss
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\npeak-kib {kib}\\n")

atexit.register(peak)
sys.argv = ["eqc-enrich", *sys.argv[1:]]
runpy.run_module("eqc_enrich.cli", run_name="__main__")
"""


def cli_process(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, int]:
    """`eqc-enrich` in its own process: exit code, stderr, and its peak resident memory in KiB."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    err, _, peak = done.stderr.rstrip("\n").rpartition("\npeak-kib ")
    return done.returncode, err.strip("\n") + "\n", int(peak)


# --- item 7: inputs that expand past any memory ----------------------------------------------------------

_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'
    ),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'officeDocument" Target="xl/workbook.xml"/></Relationships>'
    ),
    "xl/workbook.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        '<sheets><sheet name="规模明细" sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xl/_rels/workbook.xml.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
    ),
}
_SHEET_START = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
)
_SHEET_END = b"</sheetData></worksheet>"


def _cell(reference: str, text: str) -> bytes:
    return f'<c r="{reference}" t="inlineStr"><is><t>{text}</t></is></c>'.encode()


def write_xlsx(path: Path, rows: bytes, *, filler: bytes = b"", repeat: int = 0) -> Path:
    """A workbook of one sheet, `规模明细`: `rows`, then `filler` `repeat` times (streamed, never held whole)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in _PARTS.items():
            archive.writestr(name, text)
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(_SHEET_START + rows)
            for _ in range(repeat):
                sheet.write(filler)
            sheet.write(_SHEET_END)
    return path


def a_month_row(row: int, name: str) -> bytes:
    return b'<row r="%d">' % row + _cell(f"A{row}", name) + b"</row>"


HEADER = a_month_row(1, "客户名称")


def lie_about_the_sheet(path: Path, declared: int) -> None:
    """Rewrite the sheet's uncompressed size, in its local header and in the central directory, as `declared`
    (a zip64 size lives in the extra field: the bomb is written without one)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("xl/worksheets/sheet1.xml")
    assert info.file_size < 1 << 32
    struct.pack_into("<L", data, info.header_offset + 22, declared)
    name = info.filename.encode()
    central = data.index(b"PK\x01\x02", info.header_offset + 30)
    while data[central + 46 : central + 46 + len(name)] != name:
        central = data.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<L", data, central + 24, declared)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def xlsx_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Half a GiB of sheet XML in a file of about half a MiB (the reader would hold every cell of it)."""
    row = a_month_row(2, "甲公司")
    return write_xlsx(tmp_path_factory.mktemp("bomb") / "bomb.xlsx", HEADER, filler=row * 20_000, repeat=380)


def test_an_xlsx_that_declares_gigabytes_is_refused_before_it_is_opened(xlsx_bomb: Path, tmp_path: Path) -> None:
    assert xlsx_bomb.stat().st_size < 4 << 20
    code, err, peak_kib = cli_process("run", xlsx_bomb, *offline(tmp_path), env={"EQC_ENRICH_MAX_INPUT_SIZE": "64MiB"})
    assert code == 2, err
    line = one_error_line(err)
    assert re.search(r"its parts expand to 5\d\d MiB .*over the input size limit of 64 MiB", line), line
    assert "--max-input-size or EQC_ENRICH_MAX_INPUT_SIZE" in line
    assert peak_kib < 400 << 10  # the process never held the sheet (it would take well over a GiB)
    assert not (tmp_path / "index.db").exists()  # refused before the index was opened


def test_an_xlsx_that_lies_about_its_size_is_refused_by_what_it_inflates_to(xlsx_bomb: Path, tmp_path: Path) -> None:
    liar = tmp_path / "liar.xlsx"
    shutil.copy(xlsx_bomb, liar)
    lie_about_the_sheet(liar, 1000)
    with zipfile.ZipFile(liar) as archive:
        assert sum(part.file_size for part in archive.infolist()) < 64 << 20
    code, err, peak_kib = cli_process("run", liar, *offline(tmp_path), "--max-input-size", "64MiB")
    assert code == 2, err
    assert "its parts expand to more than they declare (xl/worksheets/sheet1.xml among them)" in one_error_line(err)
    assert peak_kib < 400 << 10


def test_a_raised_limit_reads_what_the_default_would_refuse(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    month = write_xlsx(tmp_path / "m.xlsx", HEADER, filler=a_month_row(2, "甲公司"), repeat=1)
    size = sum(part.file_size for part in zipfile.ZipFile(month).infolist())
    code, err = run_cli(["run", month, "--max-input-size", str(size - 1), *offline(tmp_path)], capfd)
    assert code == 2
    assert "over the input size limit" in one_error_line(err)
    code, err = run_cli(["run", month, "--max-input-size", str(size + 1), *offline(tmp_path)], capfd)
    assert code == 0, err
    assert read_table(tmp_path / "m.enriched.xlsx").frame["客户名称"].to_list() == ["甲公司"]


def test_cells_far_apart_are_refused_instead_of_aborting_the_process(tmp_path: Path) -> None:
    """A1 and XFD1048576 in a file of 1.6 KB: the reader would ask for 512 GiB and abort (exit 134)."""
    far = write_xlsx(tmp_path / "far.xlsx", HEADER + b'<row r="1048576">' + _cell("XFD1048576", "x") + b"</row>")
    code, err, _ = cli_process("plan", far, "--db", tmp_path / "index.db")
    assert code == 2, err
    line = one_error_line(err)
    assert "sheet '规模明细' spans 17,179,869,184 cells (about 512 GiB to read)" in line, line


_FAR = '<row r="1"><c r="A1"><v>1</v></c></row>'
_COLUMN_RUN = "<c><v>1</v></c>"


@pytest.mark.parametrize(
    ("tags", "limit"),
    [
        ('<row><c r="A1"><v>1</v></c></row><row><c x="1" r="XFD1048576"><v>1</v></c></row>', 100 << 20),
        ("<x:row r='1'><x:c r='A1'><v>1</v></x:c></x:row><x:row><x:c r='XFD1048576'><v>1</v></x:c></x:row>", 100 << 20),
        ('<row r="1048576">' + _COLUMN_RUN * 16_384 + "</row>" + _FAR, 100 << 20),
        ('<row r="1"><c foo="a>b" r="A1"><v>1</v></c><c r="XFD1048576" t="n"><v>1</v></c></row>', 100 << 20),
        # a fake row start in a comment must not restart the count of a row's cells (16,384 columns, not 8,192)
        ('<row r="1048576">' + _COLUMN_RUN * 8_192 + "<!--<row>-->" + _COLUMN_RUN * 8_192 + "</row>" + _FAR, 400 << 30),
    ],
    ids=["r-not-first", "prefixed-single-quoted", "counted-columns", "quoted-gt", "comment"],
)
def test_every_way_of_placing_a_far_cell_is_seen(tmp_path: Path, tags: str, limit: int) -> None:
    path = write_xlsx(tmp_path / "odd.xlsx", tags.encode())
    check_input_size(path, "xlsx", limit)  # the archive is small: only the rectangle is too big
    with pytest.raises(InputError, match=r"spans .* over the input size limit"):
        check_sheet_extent(path, "规模明细", limit)  # (the reader itself is not asked: it would abort the process)


def test_a_forged_xls_cell_is_refused_before_the_reader_opens_the_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A cell record moved to row 65535, column 65535 (Excel writes 256 columns at most)."""
    data = bytearray((DATA / "month.xls").read_bytes())
    label = data.rindex(b"\xfd\x00\x0a\x00")  # the last LABELSST record: row, column, format, string index
    struct.pack_into("<HH", data, label + 4, 0xFFFF, 0xFFFF)
    forged = tmp_path / "forged.xls"
    forged.write_bytes(bytes(data))
    code, err = run_cli(["plan", forged, "--db", tmp_path / "index.db"], capfd)
    assert code == 2
    assert "its sheets span 4,294,967,29" in one_error_line(err)
    assert read_table(DATA / "month.xls").frame.height == 4  # the genuine one still reads


def test_a_parquet_of_millions_of_rows_in_a_few_kilobytes_is_refused_from_its_footer(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rle.parquet"
    pl.DataFrame({"客户名称": pl.repeat("甲公司", 2_000_000, eager=True)}).write_parquet(path)
    assert path.stat().st_size < 100_000
    code, err = run_cli(["run", path, "--max-input-size", "16MiB", *offline(tmp_path)], capfd)
    assert code == 2
    assert "2,000,000 rows of 1 columns, about 30.5 MiB once read" in one_error_line(err)


def test_a_parquet_cell_of_megabytes_is_counted_uncompressed(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "wide.parquet"
    pl.DataFrame({"客户名称": ["x" * 40_000_000]}).write_parquet(path)
    assert path.stat().st_size < 100_000
    code, err = run_cli(["run", path, "--max-input-size", "32MiB", *offline(tmp_path)], capfd)
    assert code == 2
    assert "about 38.1 MiB once read" in one_error_line(err)


def test_a_csv_over_the_limit_and_a_bad_limit_are_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    month = tmp_path / "m.csv"
    month.write_text("客户名称\n甲公司\n", encoding="utf-8")
    code, err = run_cli(["run", month, "--max-input-size", "10B", *offline(tmp_path)], capfd)
    assert code == 2
    assert "m.csv: 23 B to read, over the input size limit of 10 B" in one_error_line(err)
    code, err = run_cli(["run", month, "--max-input-size", "lots", *offline(tmp_path)], capfd)
    assert code == 2
    assert "not a size: 'lots'" in one_error_line(err)
    monkeypatch.setenv("EQC_ENRICH_MAX_INPUT_SIZE", "0")
    code, err = run_cli(["plan", month, "--db", tmp_path / "index.db"], capfd)
    assert code == 2
    assert "EQC_ENRICH_MAX_INPUT_SIZE: a size limit must be at least 1 byte" in one_error_line(err)


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GiB", 2 << 30), ("500MB", 500_000_000), ("1.5 kib", 1536), ("123", 123), ("1TB", 10**12)],
)
def test_sizes_take_decimal_and_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size("2GiB") == DEFAULT_MAX_INPUT_SIZE


_LAUGHS = (
    "a: &a ["
    + ", ".join(['"甲公司甲公司甲公司"'] * 10)
    + "]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
)


def test_an_overrides_file_with_nested_aliases_is_one_short_line(tmp_path: Path) -> None:
    month = tmp_path / "m.csv"
    month.write_text("客户名称\n甲公司\n", encoding="utf-8")
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(_LAUGHS + "customer_name:\n  甲公司: *i\n", encoding="utf-8")
    started = time.monotonic()
    code, err, peak_kib = cli_process("run", month, "--overrides", laughs, *offline(tmp_path))
    assert code == 2, err
    line = one_error_line(err)
    assert "not valid YAML: aliases (*a) are not allowed in an overrides file" in line
    assert len(line) < 300
    assert peak_kib < 400 << 10
    assert time.monotonic() - started < 60  # 10^9 strings once expanded; refused as it is parsed


def test_an_overrides_file_over_16_mib_or_endless_is_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    month = tmp_path / "m.csv"
    month.write_text("客户名称\n甲公司\n", encoding="utf-8")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"customer_name:\n" + b"  x: '1'\n" * (2 << 20))
    for overrides in (big, Path("/dev/zero")):
        code, err = run_cli(["run", month, "--overrides", overrides, *offline(tmp_path)], capfd)
        assert code == 2
        assert "more than 16 MiB" in one_error_line(err)


def test_an_entry_that_is_not_an_id_is_quoted_short(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    month = tmp_path / "m.csv"
    month.write_text("客户名称\n甲公司\n", encoding="utf-8")
    overrides = tmp_path / "o.yaml"
    overrides.write_text("customer_name:\n  甲公司: [" + ", ".join(["'12345678'"] * 20_000) + "]\n", encoding="utf-8")
    code, err = run_cli(["run", month, "--overrides", overrides, *offline(tmp_path)], capfd)
    assert code == 2
    line = one_error_line(err)
    assert "is not a key and a company id" in line
    assert len(line) < 400


# --- item 8: a name of megabytes ---------------------------------------------------------------------------


def test_a_name_of_megabytes_is_kept_whole_in_the_rows_and_bounded_everywhere_else(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    huge = "某" * 3_000_000 + "有限公司"  # 9 MB of UTF-8
    month = tmp_path / "m.csv"
    month.write_text(f"客户名称,备注\n{huge},{'注' * 1_000_000}\n短名称公司,b\n{huge},c\n", encoding="utf-8")
    db = tmp_path / "index.db"
    code, err = run_cli(["run", month, "--no-enrichment", "--quiet", "--db", db], capfd)
    assert code == 0, err
    key = normalize_name(huge)
    assert is_shortened_key(key)
    assert len(key) == 217
    out = pl.read_csv(tmp_path / "m.enriched.csv", infer_schema=False)
    assert out["客户名称"].str.len_chars().to_list() == [len(huge), 5, len(huge)]  # the rows keep every character
    assert out["company_id"][0] == out["company_id"][2] == temp_company_id(huge, "")
    assert (tmp_path / "m.unresolved.csv").stat().st_size < 4_000
    unresolved = pl.read_csv(tmp_path / "m.unresolved.csv")
    example = unresolved.filter(pl.col("status") == "too_long")["example_name"].item()
    assert example == "某" * MAX_SHOWN_CHARS + f"…({len(huge)} characters)"
    assert db.stat().st_size < 1 << 20  # the index keeps a few hundred characters of the name, not 9 MB
    store = IndexStore(db)
    try:
        (recorded,) = [n for n in store.unsettled.open_names() if n.lookup_key == key]
    finally:
        store.close()
    assert recorded.display_name == example
    assert {len(str(cell)) for row in recorded.sample for cell in row.values()} <= {1, 5, len(example)}
    assert recorded.sample[0]["备注"] == "注" * MAX_SHOWN_CHARS + "…(1000000 characters)"


# --- item 9: an output naming the input ------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink", "unresolved", "summary"])
def test_an_output_naming_the_input_is_refused_and_the_input_untouched(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], spelling: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    month = folder / "month.csv"
    raw = "客户名称,计划代码\n甲公司,P1\n".encode("gb18030")
    month.write_bytes(raw)
    target: Path = {"same": month, "dotted": folder / ".." / "in" / "month.csv", "unresolved": month,
                    "summary": month}.get(spelling, tmp_path / f"{spelling}.csv")  # fmt: skip
    if spelling == "symlink":
        target.symlink_to(month)
    elif spelling == "hardlink":
        target.hardlink_to(month)
    option = {"unresolved": "--unresolved", "summary": "--summary"}.get(spelling, "-o")
    code, err = run_cli(["run", month, option, target, *offline(tmp_path)], capfd)
    assert code == 2
    assert f"cannot write {target}: it is the input file {month}" in one_error_line(err)
    assert month.read_bytes() == raw
    assert not (tmp_path / "index.db").exists()  # refused before anything else


def test_an_input_with_its_own_company_id_column_is_told_it_is_replaced(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    month = tmp_path / "m.csv"
    month.write_text("客户名称,company_id,金额\n甲公司,C1,1\n乙公司,,2\n", encoding="utf-8")
    code, err = run_cli(["run", month, "--no-enrichment", "--db", tmp_path / "index.db", "--summary",
                         tmp_path / "s.json"], capfd)  # fmt: skip
    assert code == 0, err
    note = ("the input already has 'company_id': the output replaces it with this run's (1 rows had a company_id); "
            "rename it in the input to keep both")  # fmt: skip
    assert f"note: {note}" in err.splitlines()
    assert note in json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["warnings"]
    out = pl.read_csv(tmp_path / "m.enriched.csv", infer_schema=False)
    assert out.columns == ["客户名称", "company_id", "金额", "company_id_source"]  # replaced where it was
    assert out["company_id"][0] != "C1"
    assert month.read_text(encoding="utf-8").count("C1") == 1  # the input keeps its own


# --- item 10: a NUL in a name ------------------------------------------------------------------------------


def test_a_nul_in_a_name_gives_the_same_result_on_sqlite_and_postgresql(index_db: IndexDb, tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"客户名称": ["甲公司\x00有限公司", "乙公司", "甲公司有限公司", "\x00"], "x": ["a\x00", "b", "c", "d"]}
    )
    index_db.open().close()
    config = SimulatorConfig(seed=3, latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(TOKEN,))
    with Simulator(config) as sim:
        result = enrich(
            frame,
            options=run_options(
                db=index_db.url,
                db_schema=index_db.schema,
                eqc_url=sim.url,
                token=TOKEN,
                salt=SALT,
                rate_limit=RateLimit(1000, 1.0),
                timeout_s=2.0,
                latency_hint=Latency(0.0, 0.0),
            ),
            unresolved_output=tmp_path / "u.csv",
        )
        asked = sim.state.stats.search_keys
    assert result.summary.status == "completed", result.summary.message
    assert all("\x00" not in key for key in asked)
    ids = result.frame["company_id"].to_list()
    assert ids[0] == ids[2] == temp_company_id("甲公司有限公司", SALT)  # one key with or without the NUL
    assert ids[3] is None  # a NUL alone is no name
    assert result.frame["客户名称"][0] == "甲公司\x00有限公司"  # the row itself is untouched
    store = IndexStore(index_db.url, schema=index_db.schema)
    try:
        recorded = {n.lookup_key: n for n in store.unsettled.open_names()}
    finally:
        store.close()
    assert recorded["甲公司有限公司"].display_name in {"甲公司␀有限公司", "甲公司有限公司"}
    samples = [row for name in recorded.values() for row in name.sample]
    assert "a␀" in [row["x"] for row in samples] or "c" in [row["x"] for row in samples]
    assert all("\x00" not in json.dumps(row) for row in samples)


def test_a_nul_in_a_name_through_the_command_line_on_postgresql_completes(
    index_db: IndexDb, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    month = tmp_path / "m.csv"
    month.write_bytes("客户名称,计划代码\n甲公司\x00X,P1\n乙公司,P2\n".encode())
    index_db.open().close()
    code, err = run_cli(["run", month, "--no-enrichment", "--quiet", *index_db.cli()], capfd)
    assert code == 0, err
    out = pl.read_csv(tmp_path / "m.enriched.csv", infer_schema=False)
    assert out["company_id"].to_list() == [temp_company_id("甲公司X", ""), temp_company_id("乙公司", "")]


# --- item 12: a token pasted with its newline, windows too short to mean anything ------------------------


def _sim_month(tmp_path: Path) -> Path:
    month = tmp_path / "m.csv"
    month.write_text("客户名称\n甲公司\n乙公司\n", encoding="utf-8")
    return month


def test_a_token_with_a_trailing_newline_works(tmp_path: Path) -> None:
    config = SimulatorConfig(seed=3, latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(TOKEN,))
    with Simulator(config) as sim:
        code, err, _ = cli_process(
            "run", _sim_month(tmp_path), "--db", tmp_path / "i.db", "--eqc-url", sim.url, "--rate-limit", "1000/1s",
            "--quiet", env={"WDH_EQC_TOKEN": f"  {TOKEN}\r\n"},
        )  # fmt: skip
        asked = len(sim.state.stats.search_keys)
    assert code == 0, err
    assert asked == 2


@pytest.mark.parametrize(
    ("token", "what"),
    [(f"{TOKEN[:10]}\n{TOKEN[10:]}", "a line break"), (f"{TOKEN[:10]} {TOKEN[10:]}", "whitespace"),
     (f"{TOKEN[:10]}\x00{TOKEN[10:]}", "a control character"), (f"{TOKEN[:10]}令牌", "a non-ASCII character")],
)  # fmt: skip
def test_a_token_with_something_inside_is_a_bad_setting_that_never_shows_it(
    tmp_path: Path, token: str, what: str
) -> None:
    if "\x00" in token:  # an environment variable cannot hold a NUL: the .wdh_env file can
        env_file = tmp_path / "t.wdh_env"
        env_file.write_bytes(b"WDH_EQC_TOKEN=" + token.encode() + b"\n")
        env = {"WDH_ENV_FILE": str(env_file)}
    else:
        env = {"WDH_EQC_TOKEN": token}
    code, err, _ = cli_process("run", _sim_month(tmp_path), "--db", tmp_path / "i.db", env=env)
    assert code == 2, err
    line = one_error_line(err)
    assert f"WDH_EQC_TOKEN: the EQC token has {what} inside it" in line
    assert TOKEN[:10] not in err
    assert TOKEN[10:] not in err
    assert not (tmp_path / "m.enriched.csv").exists()


def test_a_token_option_from_python_is_checked_the_same_way(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="token: the EQC token has a line break inside it") as info:
        enrich(pl.DataFrame({"客户名称": ["甲公司"]}), db=tmp_path / "i.db", eqc=EqcOptions(token=f"{TOKEN}\nX"))
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--rate-limit", "10/0s"], {}),
        (["--rate-limit", "10/0.000001ms"], {}),
        (["--rate-limit", "10/0.9ms"], {}),
        ([], {"WDH_EQC_RATE_LIMIT": "10/0.5ms"}),
        ([], {"WDH_EQC_RATE_LIMIT": "10", "WDH_EQC_RATE_LIMIT_WINDOW": "0.0000001"}),
        ([], {"WDH_EQC_RATE_LIMIT": "10", "WDH_EQC_RATE_LIMIT_WINDOW": "0"}),
    ],
)
def test_a_rate_window_under_a_millisecond_is_refused_by_one_rule(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str],
    env: dict[str, str],
) -> None:  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, err = run_cli(["run", _sim_month(tmp_path), *args, *offline(tmp_path)], capfd)
    assert code == 2
    assert re.search(r"rate limit window must be at least 1ms and at most 365000d, got \S+s\b", one_error_line(err))


def test_a_rate_window_of_one_millisecond_is_accepted(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["run", _sim_month(tmp_path), "--rate-limit", "10/1ms", *offline(tmp_path)], capfd)
    assert code == 0, err


# --- what is kept of a text for showing --------------------------------------------------------------------


@settings(max_examples=examples(300), deadline=None)
@given(st.text(alphabet=st.sampled_from(["a", "某", "\x00", "\n", "…"]), max_size=500), st.integers(1, 120))
def test_shown_text_is_bounded_idempotent_and_the_same_in_polars(text: str, limit: int) -> None:
    once = shown_text(text, limit)
    assert len(once) <= limit + 40
    assert "\x00" not in once
    assert shown_text(once, limit) == once
    assert once == text.replace("\x00", "␀") or once.endswith(f"…({len(text)} characters)")
    in_polars = pl.select(shown(pl.lit(text, dtype=pl.String), limit)).item()
    assert in_polars == once


def test_a_token_command_printing_a_token_with_a_space_inside_fails_without_showing_it() -> None:
    assert run_token_command(f"printf '  {TOKEN}\\r\\n\\n'") == TOKEN  # around it: stripped
    with pytest.raises(ConfigError, match="token command failed: the EQC token has whitespace inside it") as info:
        run_token_command(f"printf '{TOKEN[:10]} {TOKEN[10:]}\\n'")
    assert TOKEN[:10] not in str(info.value)
