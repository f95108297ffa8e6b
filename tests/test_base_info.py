"""`base_info` fed as WorkDataHub's ETL feeds it: every company an EQC answer names, its raw bodies and parsed
fields, nulls never erasing, in the same commit as the answer's index rows; details filled by the worker.

Real parts: the simulator on loopback, SQLite files and (through `index_db`) PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
import sqlalchemy as sa
from tests.options import run_options, worker_options

from eqc_enrich import ConfidencePolicy, RateLimit, enrich
from eqc_enrich.cli import main
from eqc_enrich.eqc_stage import load_side_files, parse_capital
from eqc_enrich.keys import normalize_name
from eqc_enrich.simulator import Company
from eqc_enrich.store import CompanyRecord, IndexStore, WriteBatch, utcnow
from eqc_enrich.worker import run_worker, worker_status

if TYPE_CHECKING:
    from tests.conftest import IndexDb, SimFactory

    from eqc_enrich.simulator import Simulator

TOKEN = "test-token"
FAST = RateLimit(1000, 1.0)


def companies(sim: Simulator, count: int, *, former: bool = False) -> list[Company]:
    """The first `count` companies of the simulator's universe (with former names, if asked)."""
    return [c for c in sim.state.universe.companies if c.former_names or not former][:count]


def rows(store: IndexStore) -> dict[str, dict[str, Any]]:
    with store.reading() as conn:
        return {r["company_id"]: dict(r) for r in conn.execute(sa.select(store.tables.base_info)).mappings()}


def run(sim: Simulator, db: IndexDb | Path, data: pl.DataFrame, **changes: Any) -> Any:
    """A run (search only unless `details=True`); on an `IndexDb`, after the owner's `index init`."""
    if not isinstance(db, Path):
        db.open().close()
    where = {"db": db.url, "db_schema": db.schema} if not isinstance(db, Path) else {"db": db}
    return enrich(data, options=run_options(**where, eqc_url=sim.url, token=TOKEN, rate_limit=FAST, **changes))


# --- parsing ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("80000.00万元", 80000.0), ("1,234.5万", 1234.5), ("300元", 300.0), ("  50 万元 ", 50.0), (120, 120.0),
     ("", None), (None, None), ("未知", None), ("nan", None), ("inf万元", None), (True, None)],
)  # fmt: skip
def test_registered_capital_loses_its_unit_and_separators_and_nothing_else_passes(text: Any, value: Any) -> None:
    assert parse_capital(text) == value


# --- the upsert: their writer's rule ------------------------------------------------------------------------------


def test_a_later_answer_never_erases_a_stored_value_and_always_stamps_the_fetch(index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        first = CompanyRecord(
            "600000001", search_key_word="甲公司", company_full_name="甲公司", type="全称精确匹配", score=12.5,
            data_source="search", raw_data={"list": [{"companyId": "600000001"}]}, le_rep="张三",
        )  # fmt: skip
        store.write(WriteBatch(companies=[first]))
        before = rows(store)["600000001"]
        later = CompanyRecord("600000001", company_full_name="甲公司（新）", raw_biz_label={"labels": []})
        store.write(WriteBatch(companies=[later]))
        after = rows(store)["600000001"]
    finally:
        store.close()
    assert after["company_full_name"] == "甲公司（新）"  # a new value replaces
    assert (after["le_rep"], after["type"], after["_score"], after["search_key_word"]) == ("张三", "全称精确匹配",
                                                                                           12.5, "甲公司")  # fmt: skip
    assert after["raw_data"] == {"list": [{"companyId": "600000001"}]}  # kept: the later answer had none
    assert after["raw_biz_label"] == {"labels": []}
    assert after["raw_business_info"] is None
    assert after["api_fetched_at"] > before["api_fetched_at"]
    assert after["updated_at"] == after["api_fetched_at"]
    columns_never_written = ("name_display", "symbol", "is_hk", "cocode", "is_normal", "company_short_name")
    assert all(after[name] is None for name in columns_never_written)


def test_text_too_wide_for_a_column_or_holding_nul_is_fitted_not_refused(index_db: IndexDb) -> None:
    """A long list of former names must not fail the commit that carries an answer (the raw body keeps it)."""
    store = index_db.open()
    long = ",".join(f"旧名{n:03d}有限公司" for n in range(60))  # 600 characters
    try:
        store.write(WriteBatch(companies=[CompanyRecord("600000002", company_former_name=long, le_rep="王\x00五")]))
        row = rows(store)["600000002"]
    finally:
        store.close()
    assert row["company_former_name"] == long[:255]
    assert row["le_rep"] == "王五"


def test_two_answers_about_one_company_in_one_commit_are_merged(index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        store.write(
            WriteBatch(companies=[CompanyRecord("600000003", le_rep="甲"), CompanyRecord("600000003", type="拼音")])
        )
        row = rows(store)["600000003"]
    finally:
        store.close()
    assert (row["le_rep"], row["type"]) == ("甲", "拼音")


# --- a run ----------------------------------------------------------------------------------------------------------


def test_a_run_writes_every_company_it_answered_a_weak_answer_too_and_what_it_maps(
    sim_factory: SimFactory, index_db: IndexDb
) -> None:
    sim = sim_factory()
    known = companies(sim, 4)
    fuzzy = companies(sim, 2, former=True)[1]  # asked by a former name: a 模糊匹配 answer (0.80)
    data = pl.DataFrame({"客户名称": [*(c.name for c in known), fuzzy.former_names[0], "全然不存在的测试有限公司"]})
    # a policy that learns only exact answers: the fuzzy one is kept in base_info, not learned
    result = run(sim, index_db, data, confidence=ConfidencePolicy(min_learned=0.9))
    assert result.summary.status == "completed"
    store = IndexStore(index_db.url, schema=index_db.schema)
    try:
        stored = rows(store)
        learned = store.lookup({"customer_name": [normalize_name(fuzzy.former_names[0])]})
    finally:
        store.close()
    assert set(stored) == {c.company_id for c in (*known, fuzzy)}  # not the name EQC did not know
    assert learned == {}  # too weak to learn, yet its company is in base_info
    for company in known:
        row = stored[company.company_id]
        assert row["company_full_name"] == company.name
        assert row["unite_code"] == company.unite_code
        assert row["type"] == "全称精确匹配"
        assert isinstance(row["_score"], float)
        assert isinstance(row["rank_score"], float)
        assert row["search_key_word"] == normalize_name(company.name)
        assert row["data_source"] == "search"
        assert row["raw_data"]["list"][0]["companyFullName"] == company.name  # the whole search body
        assert row["raw_data"]["total"] == len(row["raw_data"]["list"])
        assert row["raw_business_info"] is None
        assert row["raw_biz_label"] is None
        assert row["le_rep"] is None
        assert row["api_fetched_at"] is not None
    assert stored[fuzzy.company_id]["type"] == "模糊匹配"


def test_details_fill_the_fields_findDepart_maps_and_teach_its_former_names(
    sim_factory: SimFactory, tmp_path: Path
) -> None:
    sim = sim_factory()
    company = companies(sim, 1, former=True)[0]
    result = run(sim, tmp_path / "index.db", pl.DataFrame({"客户名称": [company.name]}), details=True)
    assert result.summary.status == "completed"
    store = IndexStore(tmp_path / "index.db")
    try:
        row = rows(store)[company.company_id]
        formers = store.lookup({"former_name": [normalize_name(f) for f in company.former_names]})
    finally:
        store.close()
    expected = {
        "name": company.name, "le_rep": company.le_rep, "reg_cap": company.reg_cap, "est_date": company.est_date,
        "province": company.province, "registered_status": company.registered_status,
        "organization_code": company.unite_code[8:17], "company_former_name": ",".join(company.former_names),
    }  # fmt: skip
    assert {name: row[name] for name in expected} == expected
    assert row["raw_business_info"]["businessInfodto"]["company_id"] == company.company_id
    assert row["raw_biz_label"]["labels"][0]["type"] == "行业分类"
    assert len(formers) == len(company.former_names)


def test_a_failed_base_info_write_is_an_index_write_failure_and_the_answer_waits_in_the_side_file(
    sim_factory: SimFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """base_info and the answer's index rows go in one commit: when base_info refuses, neither is written,
    the run ends `index_unavailable` after --index-wait, and the next run commits both from the side file."""
    monkeypatch.setenv("EQC_ENRICH_STATE_DIR", str(tmp_path / "state"))
    sim = sim_factory()
    company = companies(sim, 1)[0]
    db = tmp_path / "index.db"
    IndexStore(db).close()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON base_info BEGIN SELECT RAISE(ABORT, 'base_info refused'); END"
        )
        conn.commit()
    failed = run(sim, db, pl.DataFrame({"客户名称": [company.name]}), index_wait_s=0.3)
    assert failed.summary.status == "index_unavailable"
    assert "base_info refused" in (failed.summary.message or "")
    store = IndexStore(db)
    try:
        assert store.count_entries() == 0  # the index rows were in the refused commit
        assert rows(store) == {}
    finally:
        store.close()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TRIGGER refuse")
        conn.commit()
    store = IndexStore(db)
    try:
        loaded = load_side_files(store, None)  # what the next run does first
        assert loaded is not None
        assert "1 EQC answers" in loaded
        assert rows(store)[company.company_id]["company_full_name"] == company.name
        assert store.lookup({"customer_name": [normalize_name(company.name)]})
    finally:
        store.close()


# --- the worker fills the details, after everything more valuable ---------------------------------------------------


def test_the_worker_fills_missing_details_only_after_the_names_and_status_counts_them(
    sim_factory: SimFactory, index_db: IndexDb
) -> None:
    sim = sim_factory()
    chosen = companies(sim, 6)
    data = pl.DataFrame({"客户名称": [c.name for c in chosen]})
    first = run(sim, index_db, data, budget=4)  # two names left for the worker
    assert first.summary.eqc.over_budget == 2
    options = worker_options(db=index_db.url, db_schema=index_db.schema, eqc_url=sim.url, token=TOKEN,
                             rate_limit=FAST, idle_s=0.0, batch=50)  # fmt: skip
    store = IndexStore(index_db.url, schema=index_db.schema)
    try:
        before = worker_status(store, options, FAST, sim.url)
    finally:
        store.close()
    assert before.details_missing == 4
    assert before.due["temporary"] == 2
    passes: list[dict[str, Any]] = []
    report = run_worker(options, once=True, events=lambda kind, f: passes.append(f) if kind == "worker_pass" else None)
    assert report.status == "completed"
    kinds = [set(p["by_kind"]) for p in passes]
    assert kinds[0] == {"temporary"}
    assert kinds[-1] == {"details"}
    # `--once` is one round over what was due when it started: the two companies its first pass found wait
    assert sim.stats()["requests"]["findDepart"] == 4
    second = run_worker(options, once=True)
    assert (second.status, second.asked) == ("completed", 2)
    assert sim.stats()["requests"]["findDepart"] == 6
    store = IndexStore(index_db.url, schema=index_db.schema)
    try:
        stored = rows(store)
        after = worker_status(store, options, FAST, sim.url)
    finally:
        store.close()
    assert set(stored) == {c.company_id for c in chosen}
    for company in chosen:
        row = stored[company.company_id]
        assert (row["le_rep"], row["est_date"], row["reg_cap"]) == (company.le_rep, company.est_date, company.reg_cap)
        assert row["raw_data"] is not None  # the search fields stay
        assert row["company_full_name"] == company.name
    assert after.details_missing == 0
    assert "base_info without details (findDepart, findLabels): 0" in "\n".join(after.lines())
    again = run_worker(options, once=True)
    assert again.asked == 0  # nothing missing: nothing asked


def test_once_fills_every_company_due_at_its_start_even_beyond_one_batch(
    sim_factory: SimFactory, index_db: IndexDb
) -> None:
    """`worker --once` with more companies lacking details than a pass takes: one round, several passes, every
    company due at its start filled (a first batch alone had ended the round with the rest still due)."""
    sim = sim_factory()
    chosen = companies(sim, 7)
    first = run(sim, index_db, pl.DataFrame({"客户名称": [c.name for c in chosen]}))
    assert first.summary.eqc.found == 7
    options = worker_options(db=index_db.url, db_schema=index_db.schema, eqc_url=sim.url, token=TOKEN,
                             rate_limit=FAST, idle_s=0.0, batch=3)  # fmt: skip
    passes: list[dict[str, Any]] = []
    report = run_worker(options, once=True, events=lambda kind, f: passes.append(f) if kind == "worker_pass" else None)
    assert (report.status, report.asked) == ("completed", 7)
    assert [sum(p["by_kind"].values()) for p in passes] == [3, 3, 1]  # a pass never takes more than the batch
    assert sim.stats()["requests"]["findDepart"] == 7
    store = IndexStore(index_db.url, schema=index_db.schema)
    try:
        after = worker_status(store, options, FAST, sim.url)
    finally:
        store.close()
    assert after.details_missing == 0


def test_a_company_whose_details_eqc_does_not_have_waits_the_negative_ttl(
    sim_factory: SimFactory, tmp_path: Path
) -> None:
    sim = sim_factory()
    db = tmp_path / "index.db"
    store = IndexStore(db)
    try:  # a company their ETL wrote that the simulated EQC does not know
        store.write(WriteBatch(companies=[CompanyRecord("1", company_full_name="旧公司", data_source="search")]))
    finally:
        store.close()
    options = worker_options(db=db, eqc_url=sim.url, token=TOKEN, rate_limit=FAST, idle_s=0.0)
    assert run_worker(options, once=True).outcomes["found"] == 1  # findLabels answered (no labels), findDepart empty
    assert run_worker(options, once=True).asked == 0  # still missing, but asked lately: it waits the TTL
    store = IndexStore(db)
    try:
        row = rows(store)["1"]
        status = worker_status(store, options, FAST, sim.url)
        later = worker_status(store, replace(options, negative_ttl_s=0.001), FAST, sim.url)
    finally:
        store.close()
    assert row["raw_business_info"] is None
    assert row["raw_biz_label"] == {"labels": []}
    assert row["company_full_name"] == "旧公司"
    assert (status.details_missing, status.due["details"], status.waiting["details"]) == (1, 0, 1)
    assert later.due["details"] == 1


# --- index stats ------------------------------------------------------------------------------------------------------


def test_index_stats_reports_base_info_rows_without_details_and_the_oldest_fetch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "index.db"
    store = IndexStore(db)
    old = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    try:
        store.base_info.upsert([CompanyRecord("1", raw_business_info={"a": 1}, raw_biz_label={"labels": []})], now=old)
        store.base_info.upsert([CompanyRecord("2"), CompanyRecord("3", raw_business_info={"a": 1})],
                               now=utcnow() - timedelta(days=1))  # fmt: skip
    finally:
        store.close()
    with pytest.raises(SystemExit) as done:
        main(["index", "stats", "--db", str(db)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "base_info: 3 companies, 2 without details (findDepart, findLabels), oldest fetch 2025-01-02T03:04:05" in out


def test_a_sqlite_base_info_has_the_migrations_columns_in_their_order(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    IndexStore(db).close()
    with closing(sqlite3.connect(db)) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(base_info)")]
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(base_info)")}
    assert len(columns) == 39
    assert columns[:4] == ["id", "company_id", "search_key_word", "name"]
    assert columns[-5:] == ["raw_data", "raw_business_info", "raw_biz_label", "api_fetched_at", "updated_at"]
    assert {"idx_base_info_unite_code", "idx_base_info_search_key", "idx_base_info_api_fetched"} <= indexes
