"""Rows the old tools wrote under old key forms are found (never written), existing ids flow back under the
writers' conventions, and a run counts one use per index entry (no EQC needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from eqc_enrich import RunOptions, enrich, normalize_name, temp_company_id
from eqc_enrich._legacy_keys import legacy_name_keys
from eqc_enrich.store import IndexEntry, IndexStore, WriteBatch

SALT = "test_salt"


@pytest.mark.parametrize(
    ("name", "old_key"),
    [
        ("原平市鑫源煤业有限公司", "平市鑫源煤业有限公司"),  # a start marker without a separator was cut
        ("集合鑫源煤业有限公司", "鑫源煤业有限公司"),
        ("（北京）科技有限公司", "科技有限公司"),  # a leading bracketed group was cut, whatever it held
        ("中国平安-已转出（集团）", "中国平安-已转出"),  # one pass left the inner marker
        ("中国平安-已转出", "中国平安-已转出"),  # the queue worker's raw stripped name
        ("  中国 平安-已转出 ", "中国 平安-已转出"),
        ("abc公司（已转出）", "abc公司（已转出）"),  # stored un-normalized
    ],
)
def test_the_old_key_forms_of_a_name(name: str, old_key: str) -> None:
    forms = legacy_name_keys(name)
    assert old_key in forms
    assert normalize_name(name) not in forms
    assert len(forms) == len(set(forms))


@pytest.mark.parametrize("name", ["中国平安", " 中国平安 ", "", "原平市", "（北京）"])
def test_names_whose_old_forms_are_the_canonical_key_have_none_or_no_empty_ones(name: str) -> None:
    forms = legacy_name_keys(name)
    assert "" not in forms
    assert normalize_name(name) not in forms


def seed(db: Path, *entries: IndexEntry) -> None:
    store = IndexStore(db)
    try:
        store.write(WriteBatch(entries=list(entries)))
    finally:
        store.close()


def rows(db: Path) -> dict[tuple[str, str], dict[str, Any]]:
    store = IndexStore(db)
    try:
        return {(r["lookup_key"], r["lookup_type"]): r for r in store.entries.all_rows()}
    finally:
        store.close()


def offline(db: Path) -> RunOptions:
    return RunOptions(db=db, enrichment=False, salt=SALT)


def test_old_form_rows_answer_after_every_canonical_source_and_count_one_use_per_run(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    seed(
        db,
        IndexEntry("平市鑫源煤业有限公司", "customer_name", "old-1", 0.8, "eqc_api"),
        IndexEntry("中国平安-已转出", "customer_name", "old-2", 0.8, "EQC"),
        IndexEntry("旧名公司-已转出", "former_name", "old-3", 0.7, "eqc_api"),
        IndexEntry("科技有限公司", "customer_name", "old-4", 0.8, "eqc_api"),
        IndexEntry("北方有限公司", "customer_name", "canonical", 1.0, "yaml"),  # canonical key of the name below
        IndexEntry("P1", "plan_code", "by-plan", 1.0, "yaml"),
    )
    names = ["原平市鑫源煤业有限公司", "原平市鑫源煤业有限公司", "中国平安-已转出", "旧名公司-已转出"]
    names += ["（北京）科技有限公司", "（北京）科技有限公司", "北方有限公司", "中国平安-已转出"]
    frame = pl.DataFrame(
        {
            "客户名称": names,
            "计划代码": ["P9", "P9", "P8", "P7", "P6", "P1", "P5", "P4"],
            "公司代码": [None, None, None, None, "612345678", None, None, None],
        }
    )
    result = enrich(frame, options=offline(db))
    got = result.frame.select("company_id", "company_id_source").rows()
    assert got == [
        ("old-1", "index:legacy"),
        ("old-1", "index:legacy"),
        ("old-2", "index:legacy"),
        ("old-3", "index:legacy"),  # an old former_name form
        ("612345678", "existing"),  # the row's own id beats an old form
        ("by-plan", "index:plan_code"),  # and so does every canonical index type
        ("canonical", "index:customer_name"),
        ("old-2", "index:legacy"),
    ]
    hits = result.summary.index_hits_by_type
    assert hits["customer_name_legacy"] == {"asked": 4, "found": 3}
    assert hits["former_name_legacy"] == {"asked": 4, "found": 1}
    assert result.summary.resolved_by["index:legacy"] == 5
    after = rows(db)
    assert after[("平市鑫源煤业有限公司", "customer_name")]["hit_count"] == 1  # two rows, one use
    assert after[("旧名公司-已转出", "former_name")]["hit_count"] == 1
    assert after[("科技有限公司", "customer_name")]["hit_count"] == 0  # its name's rows had better answers
    old_forms = {"平市鑫源煤业有限公司", "中国平安-已转出", "旧名公司-已转出", "科技有限公司"}
    assert len([key for key, _ in after if key in old_forms]) == 4  # nothing new under an old form
    assert after[("（北京）科技有限公司", "customer_name")]["source"] == "backflow"  # the canonical key learns
    again = enrich(frame, options=offline(db))
    assert again.summary.resolved_by["index:legacy"] == 5
    assert again.summary.resolved_by["index:plan_code"] == 2  # P6 was learned from its one row's id
    assert rows(db)[("平市鑫源煤业有限公司", "customer_name")]["hit_count"] == 2


def test_backflow_writes_names_and_unanimous_plan_codes_at_full_confidence_and_never_temp_ids(
    tmp_path: Path,
) -> None:
    db = tmp_path / "index.db"
    temp = temp_company_id("某公司", SALT)
    assert temp is not None
    frame = pl.DataFrame(
        {
            "客户名称": ["甲公司", "甲公司-已转出", None, "乙公司", "丙公司", "丁公司", "戊公司", None],
            "计划代码": ["P1", "P1", "P1", "P2", "P2", "P3", "P4", "P4"],
            "公司代码": ["600000001", None, "600000001", "600000002", "600000003", temp, "600000005", "600000005"],
        }
    )
    enrich(frame, options=offline(db))
    index = rows(db)
    learned = {(key, kind): (r["company_id"], float(r["confidence"]), r["source"]) for (key, kind), r in index.items()}
    assert learned == {
        ("甲公司", "customer_name"): ("600000001", 1.0, "backflow"),
        ("乙公司", "customer_name"): ("600000002", 1.0, "backflow"),
        ("丙公司", "customer_name"): ("600000003", 1.0, "backflow"),
        ("戊公司", "customer_name"): ("600000005", 1.0, "backflow"),
        ("P4", "plan_code"): ("600000005", 1.0, "backflow"),  # every row of P4 carries the same id
    }  # P1: a row without an id; P2: two ids (a shared 集合计划 code); P3 and 丁公司: a temporary id
    assert all(r["source_domain"] is None for r in index.values())


def test_a_known_name_with_another_existing_id_is_corrected_only_by_a_stronger_answer(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    seed(
        db,
        IndexEntry("甲公司", "customer_name", "eqc-id", 0.8, "eqc_api"),
        IndexEntry("乙公司", "customer_name", "manual-id", 1.0, "manual"),
    )
    frame = pl.DataFrame({"客户名称": ["甲公司", "乙公司"], "公司代码": ["600000001", "600000002"]})
    enrich(frame, options=offline(db))
    index = rows(db)
    assert (index[("甲公司", "customer_name")]["company_id"], index[("甲公司", "customer_name")]["source"]) == (
        "600000001",
        "backflow",
    )
    assert index[("乙公司", "customer_name")]["company_id"] == "manual-id"  # equal confidence: the old id stays


def test_plan_and_run_agree_on_old_form_hits(tmp_path: Path) -> None:
    from eqc_enrich import plan

    db = tmp_path / "index.db"
    seed(db, IndexEntry("平市鑫源煤业有限公司", "customer_name", "old-1", 0.8, "eqc_api"))
    frame = pl.DataFrame({"客户名称": ["原平市鑫源煤业有限公司", "新公司"]})
    report = plan(frame, options=RunOptions(db=db, salt=SALT))
    assert (report.answered_before_eqc, report.names_for_eqc) == (1, 1)
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            hits = conn.execute(sa.text("SELECT hit_count FROM enrichment_index")).scalar_one()
    finally:
        engine.dispose()
    assert hits == 0  # plan only reads
