"""Resolution order, overrides, learned ids and the file formats a month arrives in (no EQC needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from tests.options import run_options

from eqc_enrich import ConfigError, InputError, RunOptions, enrich, temp_company_id
from eqc_enrich.output import write_table
from eqc_enrich.read import read_table
from eqc_enrich.resolve import MANUAL_ENTRY_SOURCE, Overrides
from eqc_enrich.review import MANUAL_SOURCE, manual_entry
from eqc_enrich.store import IndexEntry, IndexStore, WriteBatch

SALT = "test_salt"


def offline(db: Path, **changes: object) -> RunOptions:
    return run_options(RunOptions(db=db, enrichment=False, salt=SALT), **changes)


def seed_index(db: Path, *entries: IndexEntry) -> None:
    store = IndexStore(db)
    try:
        store.write(WriteBatch(entries=list(entries)))
    finally:
        store.close()


def test_first_hit_wins_in_the_documented_order(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    seed_index(
        db,
        IndexEntry("P1", "plan_code", "plan-id", 1.0, "yaml"),
        IndexEntry("甲公司", "customer_name", "name-id", 1.0, "eqc_api"),
        IndexEntry("P2|乙公司", "plan_customer", "pc-id", 1.0, "domain_learning"),
        IndexEntry("丙旧名", "former_name", "former-id", 0.9, "eqc_api"),
    )
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("plan_code:\n  P9: '999'\ncustomer_name:\n  丁公司-已转出: 888\n", encoding="utf-8")
    frame = pl.DataFrame(
        {
            "客户名称": ["甲公司", "甲公司", "乙公司", "丙旧名", "丁公司", "戊公司", "己公司", None, "甲公司", "0"],
            "计划代码": ["P1", "P5", "P2", "P3", "P4", "P6", "P7", "AN001", "P9", "P8"],
            "公司代码": [None, None, None, None, "777", "600000001", "NULL", None, None, None],
        }
    )
    result = enrich(frame, options=offline(db, overrides=overrides))
    got = result.frame.select("company_id", "company_id_source").rows()
    assert got == [
        ("plan-id", "index:plan_code"),
        ("name-id", "index:customer_name"),
        ("pc-id", "index:plan_customer"),
        ("former-id", "index:former_name"),
        ("888", "override"),
        ("600000001", "existing"),
        (temp_company_id("己公司", SALT), "temp"),  # 'NULL' is not an id
        (None, None),  # no name, a plan code nobody knows
        ("999", "override"),  # an override beats the index
        (None, None),  # '0' is not a name and gets no temporary id
    ]
    assert result.summary.resolved_by["none"] == 2


def test_rows_a_person_decided_say_so_at_their_lookup_types_rank(tmp_path: Path) -> None:
    """A name settled on the review page (and an old tool's manual edit) answers its rows as `index:manual`,
    in the output and the summary's `resolved_by`, where its lookup type ranks (a plan code still beats it);
    each entry used counts one use, as any index entry does."""
    assert MANUAL_ENTRY_SOURCE == MANUAL_SOURCE  # what the review page writes is what resolution looks for
    db = tmp_path / "index.db"
    seed_index(
        db,
        manual_entry("甲公司", "600000001"),  # accepted or typed on the review page
        IndexEntry("乙公司", "customer_name", "600000002", 0.9, "eqc_api"),
        IndexEntry("P1", "plan_code", "600000009", 1.0, "yaml"),
        IndexEntry("丙旧名", "former_name", "600000003", 1.0, "manual", source_domain="eqc_gui_manual"),
    )
    frame = pl.DataFrame(
        {"客户名称": ["甲公司", "乙公司", "甲公司", "丙旧名", "甲公司"], "计划代码": [None, None, "P1", None, None]}
    )
    result = enrich(frame, options=offline(db))
    assert result.frame.select("company_id", "company_id_source").rows() == [
        ("600000001", "index:manual"),
        ("600000002", "index:customer_name"),
        ("600000009", "index:plan_code"),
        ("600000003", "index:manual"),
        ("600000001", "index:manual"),
    ]
    assert result.summary.resolved_by == {"index:customer_name": 1, "index:manual": 3, "index:plan_code": 1}
    store = IndexStore(db)
    try:
        hits = {(row["lookup_key"], row["lookup_type"]): row["hit_count"] for row in store.entries.all_rows()}
    finally:
        store.close()
    assert hits == {("甲公司", "customer_name"): 1, ("乙公司", "customer_name"): 1, ("P1", "plan_code"): 1,
                    ("丙旧名", "former_name"): 1}  # fmt: skip


def test_existing_ids_are_learned_and_answer_other_rows_of_the_same_name(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    frame = pl.DataFrame(
        {"客户名称": ["庚公司", "庚公司（已转出）", "庚公司"], "公司代码": ["612345678", None, "612345678"]}
    )
    first = enrich(frame, options=offline(db))
    assert first.frame["company_id"].to_list() == ["612345678"] * 3
    assert first.frame["company_id_source"].to_list() == ["existing", "backflow", "existing"]
    again = enrich(frame.drop("公司代码"), options=offline(db))
    assert again.frame["company_id_source"].to_list() == ["index:customer_name"] * 3
    store = IndexStore(db)
    try:
        (learned,) = store.lookup({"customer_name": ["庚公司"]}).values()
    finally:
        store.close()
    assert (learned.company_id, learned.source) == ("612345678", "backflow")


def test_refresh_ignores_entries_older_than_asked(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    seed_index(db, IndexEntry("辛公司", "customer_name", "old-id", 1.0, "eqc_api"))
    frame = pl.DataFrame({"客户名称": ["辛公司"]})
    assert enrich(frame, options=offline(db)).frame["company_id"][0] == "old-id"
    refreshed = enrich(frame, options=offline(db, refresh_s=0.0))
    assert refreshed.frame["company_id_source"][0] == "temp"


def test_bad_overrides_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "o.yaml"
    bad.write_text("customer_name: [not, a, map]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="overrides"):
        enrich(pl.DataFrame({"客户名称": ["x"]}), options=offline(tmp_path / "i.db", overrides=bad))


@pytest.mark.parametrize(
    ("entry", "shown"),
    [
        ("甲公司: {nested: 1}", "'甲公司': {'nested': 1}"),
        ("甲公司: [C1, C2]", "'甲公司': ['C1', 'C2']"),
        ("甲公司: ''", "'甲公司': ''"),
        ("甲公司: null", "'甲公司': None"),
        ("'  ': C1", "'  ': 'C1'"),
    ],
)
def test_an_override_that_is_not_a_key_and_an_id_is_named(tmp_path: Path, entry: str, shown: str) -> None:
    bad = tmp_path / "o.yaml"
    bad.write_text(f"customer_name:\n  乙公司: C9\n  {entry}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        Overrides.load(bad)
    assert str(caught.value) == f"overrides {bad}: entry {shown} is not a key and a company id"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_csv_in_any_of_its_encodings_round_trips_untouched(tmp_path: Path, encoding: str) -> None:
    source = tmp_path / "month.csv"
    source.write_bytes("客户名称,计划代码,期末资产规模\n中国平安-已转出,P0001,0012.50\n,AN001,3\n".encode(encoding))
    table = read_table(source)
    assert table.frame["期末资产规模"].to_list() == ["0012.50", "3"]  # text stays text
    result = enrich(source, options=offline(tmp_path / "i.db"), output=tmp_path / "out.csv")
    out_bytes = (tmp_path / "out.csv").read_bytes()
    assert out_bytes.startswith(b"\xef\xbb\xbf") == (encoding != "utf-8")  # Excel needs the BOM for non-ASCII
    out = pl.read_csv(tmp_path / "out.csv", infer_schema=False)
    assert out.columns == ["客户名称", "计划代码", "期末资产规模", "company_id", "company_id_source"]
    assert out["期末资产规模"].to_list() == ["0012.50", "3"]
    assert result.frame["company_id"][0] == temp_company_id("中国平安", SALT)


def test_excel_sheet_choice_and_xlsx_output(tmp_path: Path) -> None:
    import xlsxwriter

    path = tmp_path / "book.xlsx"
    book = xlsxwriter.Workbook(path)
    for sheet, name in (("汇总", "不该读这里"), ("规模明细", "壬公司")):
        ws = book.add_worksheet(sheet)
        ws.write_row(0, 0, ["客户名称", "计划代码"])
        ws.write_row(1, 0, [name, "P1"])
    book.close()
    result = enrich(path, options=offline(tmp_path / "i.db"), output=tmp_path / "out.xlsx")
    assert result.frame["客户名称"].to_list() == ["壬公司"]
    back = pl.read_excel(tmp_path / "out.xlsx", sheet_name="规模明细")
    assert back["company_id"].to_list() == [temp_company_id("壬公司", SALT)]
    other = enrich(path, options=offline(tmp_path / "i.db", sheet="汇总"))
    assert other.frame["客户名称"].to_list() == ["不该读这里"]


def test_pandas_frames_are_accepted(tmp_path: Path) -> None:
    frame = pd.DataFrame({"客户名称": ["癸公司", "癸公司 "], "计划代码": ["P1", "P1"]})
    result = enrich(frame, options=offline(tmp_path / "i.db"))
    assert isinstance(result.frame, pl.DataFrame)
    assert result.frame["company_id"].n_unique() == 1


def test_an_existing_company_id_column_is_filled_in_place(tmp_path: Path) -> None:
    sample = pl.read_parquet(Path(__file__).parent / "data" / "annuity_performance_sample.parquet")  # from shared/
    result = enrich(sample, options=offline(tmp_path / "i.db"))
    assert result.frame.columns == [*sample.columns, "company_id_source"]
    assert result.frame["company_id"].null_count() == 0
    assert result.summary.warnings  # 公司代码 is absent from this sheet: said, not failed


def test_missing_required_column_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing column"):
        enrich(pl.DataFrame({"名称": ["x"]}), options=offline(tmp_path / "i.db"))


def test_writes_are_atomic(tmp_path: Path) -> None:
    """The writer dies half-way through the file it was given: written straight to the target, the previous
    file would be half overwritten; written to a temporary file, it is untouched and nothing is left."""
    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous good file")

    class Boom(Exception):
        pass

    class Exploding(pl.DataFrame):
        def write_parquet(self, file: object, *args: object, **kwargs: object) -> None:
            assert isinstance(file, Path)
            file.write_bytes(b"half a fi")
            raise Boom

    with pytest.raises(Boom):
        write_table(Exploding({"a": [1]}), target)
    assert target.read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
