"""WorkDataHub's files and meanings: its mapping folder (three override files, their order, their key matching,
`__EMPTY__`), `--budget 0`, the income sheet's customer taken from the plan name, the unknown-names export.

Real parts: files on disk, SQLite indexes, the simulator on loopback, the command line in-process.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
from tests.options import run_options

from eqc_enrich import enrich, temp_company_id
from eqc_enrich.cli import main
from eqc_enrich.resolve_stage import LEFT_EMPTY, NO_NAME_NO_ID
from eqc_enrich.store import IndexEntry, IndexStore, WriteBatch

if TYPE_CHECKING:
    from tests.conftest import SimFactory

TOKEN = "test-token"
SALT = "test_salt"

PLAN = 'ZZ9001: "900000001"\nZZ9003: "__EMPTY__"\nZZ9004: 900000004\n'
HARDCODE = (
    '# their hardcode file holds no entry at HEAD; these are invented\nZZ9002: "900000002"\nZZ9004: "900000044"\n'
)
NAME = 'abc有限公司: "900000005"\n示例测试有限公司: "900000003"\n示例保留账户: "__EMPTY__"\n'

ROWS = [
    # 客户名称, 计划代码, 公司代码 -> company_id, company_id_source (what their resolver gives, row by row)
    ("某公司", "ZZ9001", None, "900000001", "override"),  # plan level, before the index's answer for 某公司
    ("示例测试有限公司", "ZZ9002", None, "900000002", "override"),  # hardcode level, before the name level
    ("示例测试有限公司", "P0001", None, "900000003", "override"),  # name level
    ("示例测试有限公司", "ZZ9003", "600000009", None, "override:empty"),  # __EMPTY__ stops: no name, no own id
    ("示例保留账户", "P0002", None, None, "override:empty"),  # __EMPTY__ by name: no EQC, no temporary id
    ("abc有限公司", "P0003", None, "TEMP", "temp"),  # the key is matched exactly: our key is ABC有限公司
    ("某公司", "ZZ9004", None, "900000004", "override"),  # plan beats hardcode; an unquoted id is text
    ("某公司", " ZZ9001 ", None, "900000001", "override"),  # the plan code as cleaned (trimmed)
    ("某公司", "P0004", None, "600000111", "index:customer_name"),  # no override: the index
]


def mapping_folder(root: Path, **files: str) -> Path:
    """Their layout: `<root>/company_id/company_id_overrides_<level>.yml`; returns `<root>`."""
    folder = root / "company_id"
    folder.mkdir(parents=True)
    for level, text in files.items():
        (folder / f"company_id_overrides_{level}.yml").write_text(text, encoding="utf-8")
    return root


def seeded_index(path: Path) -> Path:
    store = IndexStore(path)
    try:
        store.write(WriteBatch(entries=[IndexEntry("某公司", "customer_name", "600000111", 1.0, "yaml")]))
    finally:
        store.close()
    return path


def month() -> pl.DataFrame:
    return pl.DataFrame(
        {"客户名称": [r[0] for r in ROWS], "计划代码": [r[1] for r in ROWS], "公司代码": [r[2] for r in ROWS]},
        schema={"客户名称": pl.String, "计划代码": pl.String, "公司代码": pl.String},
    )


def expected_ids() -> list[str | None]:
    return [temp_company_id("ABC有限公司", SALT) if r[3] == "TEMP" else r[3] for r in ROWS]


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(argv)
    return int(done.value.code or 0), capsys.readouterr().err


# --- their mapping folder ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["mappings folder", "company_id folder"])
def test_their_override_folder_resolves_each_row_as_their_resolver_would(
    sim_factory: SimFactory, tmp_path: Path, layout: str
) -> None:
    sim = sim_factory()
    root = mapping_folder(tmp_path / "config" / "mappings", plan=PLAN, hardcode=HARDCODE, name=NAME)
    given = root if layout == "mappings folder" else root / "company_id"
    options = run_options(db=seeded_index(tmp_path / "i.db"), eqc_url=sim.url, token=TOKEN, salt=SALT, overrides=given)
    result = enrich(month(), options=options)
    assert result.summary.status == "completed"
    assert result.frame["company_id"].to_list() == expected_ids()
    assert result.frame["company_id_source"].to_list() == [r[4] for r in ROWS]
    assert result.frame["公司代码"].to_list() == [r[2] for r in ROWS]  # the input's columns untouched
    assert result.summary.rows_without_id == {LEFT_EMPTY: 2}
    asked = set(sim.state.stats.search_keys)
    assert asked == {"ABC有限公司"}  # an __EMPTY__ name is never sent, nor any overridden one
    assert "示例保留账户" not in result.unresolved["name"].to_list()  # no temporary id for it


def test_our_single_file_keeps_working_and_knows_empty_too(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("plan_code:\n  ZZ9001: '900000001'\ncustomer_name:\n  示例保留账户: __EMPTY__\n", "utf-8")
    data = pl.DataFrame({"客户名称": ["某公司", "示例保留账户-已转出"], "计划代码": ["ZZ9001", "P1"]})
    result = enrich(data, options=run_options(db=tmp_path / "i.db", enrichment=False, overrides=overrides))
    assert result.frame["company_id"].to_list() == ["900000001", None]
    assert result.frame["company_id_source"].to_list() == ["override", "override:empty"]  # our names normalized


def test_wdh_mappings_dir_is_used_when_no_overrides_are_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = mapping_folder(tmp_path / "mappings", plan='ZZ9001: "900000001"\n')
    monkeypatch.setenv("WDH_MAPPINGS_DIR", str(root))
    data = pl.DataFrame({"客户名称": ["某公司"], "计划代码": ["ZZ9001"]})
    assert enrich(data, options=run_options(db=tmp_path / "i.db", enrichment=False)).frame["company_id"][0] == (
        "900000001"
    )
    ours = tmp_path / "ours.yaml"
    ours.write_text("plan_code:\n  ZZ9001: '900000009'\n", encoding="utf-8")
    options = run_options(db=tmp_path / "i.db", enrichment=False, overrides=ours)
    assert enrich(data, options=options).frame["company_id"][0] == "900000009"  # --overrides beats the setting


NOT_AN_ID = "is not a company id or __EMPTY__"
BROKEN = [
    ("plan", "ZZ9001: [1, 2]\n", rf"company_id_overrides_plan.yml: entry 'ZZ9001': \[1, 2\] {NOT_AN_ID}"),
    ("plan", "ZZ9001: true\n", "entry 'ZZ9001': True is not a company id or __EMPTY__"),
    ("name", "示例公司:\n", "entry '示例公司': None is not a company id or __EMPTY__"),
    ("name", "示例公司: ''\n", "entry '示例公司': '' is not a company id or __EMPTY__"),
    ("name", "- 示例公司\n- 900000001\n", "overrides_name.yml: expected a flat map of key: company_id, got a list"),
    ("hardcode", "ZZ: [unclosed\n", "company_id_overrides_hardcode.yml: not valid YAML"),
    ("hardcode", "ZZ9001: 12.5\n", "entry 'ZZ9001': 12.5 is not a company id or __EMPTY__"),
]  # fmt: skip


@pytest.mark.parametrize(("level", "text", "message"), BROKEN)
def test_a_broken_file_of_their_folder_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], level: str, text: str, message: str
) -> None:
    files = {"plan": PLAN, "hardcode": HARDCODE, "name": NAME, level: text}
    root = mapping_folder(tmp_path / "mappings", **files)
    data = tmp_path / "month.csv"
    month().write_csv(data)
    code, err = cli(["run", str(data), "--db", str(tmp_path / "i.db"), "--overrides", str(root), "--no-enrichment"],
                    capsys)  # fmt: skip
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "month.enriched.csv").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('ZZ9001: "900000001"\n', "unknown section(s) 'ZZ9001': an overrides file has plan_code: and customer_name:"),
        ("", "expected a mapping with plan_code and customer_name"),
        ("# only a comment\n", "expected a mapping with plan_code and customer_name"),
        ("plan_code:\n  ZZ9001: '1'\nnotes: x\n", "unknown section(s) 'notes'"),
    ],
)
def test_a_file_that_is_neither_form_is_one_line_and_exit_2_never_an_empty_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    overrides = tmp_path / "company_id_overrides_plan.yml"
    overrides.write_text(content, encoding="utf-8")
    data = tmp_path / "month.csv"
    month().write_csv(data)
    code, err = cli(["run", str(data), "--db", str(tmp_path / "i.db"), "--overrides", str(overrides),
                     "--no-enrichment"], capsys)  # fmt: skip
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_a_folder_without_their_files_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    data = tmp_path / "month.csv"
    month().write_csv(data)
    code, err = cli(["run", str(data), "--db", str(tmp_path / "i.db"), "--overrides", str(tmp_path / "empty"),
                     "--no-enrichment"], capsys)  # fmt: skip
    assert code == 2
    assert "holds any of company_id_overrides_plan.yml" in err


# --- --budget 0 ---------------------------------------------------------------------------------------------------


def test_budget_0_asks_eqc_nothing_and_no_budget_has_no_cap(
    sim_factory: SimFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory()
    names = [c.name for c in sim.state.universe.companies[:3]]
    data = tmp_path / "month.csv"
    pl.DataFrame({"客户名称": names}).write_csv(data)
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    base = ["run", str(data), "--eqc-url", sim.url, "--rate-limit", "1000/1s", "--quiet"]
    code, _ = cli([*base, "--db", str(tmp_path / "a.db"), "--budget", "0", "--summary", str(tmp_path / "a.json")],
                  capsys)  # fmt: skip
    assert code == 0
    assert sim.stats()["requests"]["search"] == 0
    summary = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    assert (summary["eqc"]["names_planned"], summary["eqc"]["over_budget"]) == (0, 3)
    code, _ = cli([*base, "--db", str(tmp_path / "b.db")], capsys)
    assert code == 0
    assert sim.stats()["requests"]["search"] == 3  # unset: no cap


def test_the_dagster_resource_follows_budget_0() -> None:
    dagster = pytest.importorskip("eqc_enrich.dagster")
    assert dagster.EqcEnrichResource(budget=0).run_options().budget == 0
    assert dagster.EqcEnrichResource().run_options().budget is None


# --- the income sheet: the customer from the plan name ---------------------------------------------------------------

INCOME = [
    # 客户名称, 计划类型, 计划名称 -> the name keyed (None: no name)
    (None, "单一计划", "示例科技有限公司企业年金计划", "示例科技有限公司"),
    ("", "单一计划", "示例科技有限公司企业年金计划", "示例科技有限公司"),
    ("0", "单一计划", " 乙方贸易有限公司 企业年金计划", "乙方贸易有限公司"),  # the remainder trimmed
    (None, "单一计划", "丙方集团年金计划", None),  # no 企业年金计划 suffix: no name, never the plan name itself
    (None, "单一计划", "企业年金计划", None),  # nothing before the suffix
    (None, "集合计划", "丁方有限公司企业年金计划", None),  # 集合计划 rows keep theirs
    (None, "单一计划", "", None),
    ("戊方有限公司", "单一计划", "己方有限公司企业年金计划", "戊方有限公司"),  # a name of its own is kept
]


def income_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "客户名称": [r[0] for r in INCOME],
            "计划类型": [r[1] for r in INCOME],
            "计划名称": [r[2] for r in INCOME],
            "计划代码": [f"P{n}" for n in range(len(INCOME))],
        },
        schema={"客户名称": pl.String, "计划类型": pl.String, "计划名称": pl.String, "计划代码": pl.String},
    )


def income_index(path: Path) -> Path:
    store = IndexStore(path)
    try:
        known = [("示例科技有限公司", "600000201"), ("戊方有限公司", "600000202")]
        store.write(WriteBatch(entries=[IndexEntry(key, "customer_name", cid, 1.0, "yaml") for key, cid in known]))
    finally:
        store.close()
    return path


def expected_income() -> tuple[list[str | None], list[str | None]]:
    ids: list[str | None] = []
    sources: list[str | None] = []
    for name, _, _, keyed in INCOME:
        if keyed == "示例科技有限公司":
            ids.append("600000201")
        elif keyed == "戊方有限公司":
            ids.append("600000202")
        else:
            ids.append(temp_company_id(keyed, SALT) if keyed else None)
        from_plan = keyed is not None and name in (None, "", "0")
        sources.append("plan_name" if from_plan else ("index:customer_name" if keyed else None))
    return ids, sources


def test_the_income_sheet_takes_a_single_plans_customer_from_its_plan_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WDH_ALIAS_SALT", SALT)
    book = tmp_path / "202501收入数据.xlsx"
    income_frame().write_excel(book, worksheet="收入明细")
    db = income_index(tmp_path / "i.db")
    code, err = cli(["run", str(book), "--db", str(db), "--no-enrichment", "--summary", str(tmp_path / "s.json"),
                     "--unknown-names", str(tmp_path / "unknown.csv"), "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    out = pl.read_excel(tmp_path / "202501收入数据.enriched.xlsx", sheet_name="收入明细")
    ids, sources = expected_income()
    assert out["company_id"].to_list() == ids
    assert out["company_id_source"].to_list() == sources
    assert out["客户名称"].to_list() == pl.read_excel(book, sheet_name="收入明细")["客户名称"].to_list()  # untouched
    summary = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert summary["resolved_by"]["plan_name"] == 3
    assert summary["rows_without_id"] == {NO_NAME_NO_ID: 4}
    unresolved = pl.read_csv(tmp_path / "202501收入数据.unresolved.csv")
    assert unresolved["example_name"].to_list() == ["乙方贸易有限公司"]  # the name as taken from the plan


def test_name_from_plan_is_off_for_other_inputs_unless_asked(tmp_path: Path) -> None:
    db = income_index(tmp_path / "i.db")
    plain = enrich(income_frame(), options=run_options(db=db, enrichment=False, salt=SALT))
    assert plain.frame["company_id"].to_list()[:3] == [None, None, None]
    asked = enrich(income_frame(), options=run_options(db=db, enrichment=False, salt=SALT, name_from_plan=True))
    assert asked.frame["company_id"].to_list() == expected_income()[0]


def test_name_from_plan_needs_the_plan_type_and_name_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "month.csv"
    pl.DataFrame({"客户名称": ["甲"], "计划代码": ["P1"]}).write_csv(data)
    code, err = cli(["run", str(data), "--db", str(tmp_path / "i.db"), "--no-enrichment", "--name-from-plan"], capsys)
    assert code == 2
    assert "计划类型" in err


# --- the unknown-names export -----------------------------------------------------------------------------------------


def test_the_unknown_names_export_has_their_layout_a_line_per_row_with_a_temporary_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "month.csv"
    names = ["未知甲公司", "已知公司", "未知乙公司-已转出", "未知甲公司", "", "=HYPERLINK(1)"]
    pl.DataFrame({"客户名称": names, "公司代码": ["", "", "", "", "", ""]}).write_csv(data)
    store = IndexStore(tmp_path / "i.db")
    try:
        store.write(WriteBatch(entries=[IndexEntry("已知公司", "customer_name", "600000301", 1.0, "yaml")]))
    finally:
        store.close()
    code, err = cli(["run", str(data), "--db", str(tmp_path / "i.db"), "--no-enrichment", "--unknown-names",
                     str(tmp_path / "logs" / "unknown_companies.csv"), "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    lines = (tmp_path / "logs" / "unknown_companies.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# Validation Errors Export"
    assert lines[1].startswith("# Date: 20")
    assert lines[2] == "# Total Failed Rows: 4"
    parsed = list(csv.reader(lines[3:]))
    assert parsed == [["", "unknown_company_name"], ["0", "未知甲公司"], ["1", "未知乙公司"], ["2", "未知甲公司"],
                      ["3", "'=HYPERLINK"]]  # fmt: skip  # the key of =HYPERLINK(1), neutralized
    frame: Any = pytest.importorskip("pandas").read_csv(tmp_path / "logs" / "unknown_companies.csv", comment="#",
                                                        index_col=0)  # fmt: skip
    assert frame["unknown_company_name"].tolist()[:3] == ["未知甲公司", "未知乙公司", "未知甲公司"]


def test_an_unknown_names_target_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "month.csv"
    pl.DataFrame({"客户名称": ["甲"]}).write_csv(data)
    (tmp_path / "taken.csv").mkdir()
    code, err = cli(["run", str(data), "--db", str(tmp_path / "i.db"), "--no-enrichment", "--unknown-names",
                     str(tmp_path / "taken.csv")], capsys)  # fmt: skip
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "month.enriched.csv").exists()
