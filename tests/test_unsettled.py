"""`eqc_unsettled`: what runs leave open, what settles it, and what a run does with a person's decision."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from tests.conftest import IndexDb
from tests.options import run_options

from eqc_enrich import EnrichResult, RateLimit, enrich
from eqc_enrich.model import Latency
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_month
from eqc_enrich.store import NOT_A_COMPANY, IndexEntry, IndexStore, UnsettledName, WriteBatch, utcnow

TOKEN = "unsettled-token"


def name(key: str, rows: int, **changes: object) -> UnsettledName:
    base: dict[str, object] = {"kind": "temporary", "status": "not_found", "temp_id": f"IN_{key}"}
    return UnsettledName(lookup_key=key, rows=rows, **{**base, **changes})  # type: ignore[arg-type]


def manual(key: str, company_id: str) -> IndexEntry:
    return IndexEntry(key, "customer_name", company_id, 1.0, "manual", source_domain="eqc_review")


def test_open_names_come_most_rows_first_and_a_write_settles_them(index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        assert store.unsettled.record([name("乙", 3), name("甲", 9), name("丙", 3, assets=5.0)], "run-1") == 3
        assert [n.lookup_key for n in store.unsettled.open_names()] == ["甲", "丙", "乙"]  # rows, assets, key
        before = utcnow()
        store.write(WriteBatch(entries=[manual("甲", "C9"), IndexEntry("乙", "plan_code", "C2", 1.0, "manual")]))
        assert [n.lookup_key for n in store.unsettled.open_names()] == ["丙", "乙"]  # a plan-code key settles nothing
        settled = store.unsettled.get("甲")
        assert settled is not None
        assert (settled.settled_company_id, settled.settled_source) == ("C9", "manual")
        remapped = store.unsettled.remapped()
        assert [(r.temp_id, r.company_id, r.source) for r in remapped] == [("IN_甲", "C9", "manual")]
        assert store.unsettled.remapped(since=before + timedelta(days=1)) == []
        assert store.unsettled.counts() == {"kind:temporary": 2, "status:not_found": 2, "settled": 1}
    finally:
        store.close()


def test_a_name_the_index_answers_is_not_recorded_and_a_decided_one_stays_decided(index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        store.write(WriteBatch(entries=[manual("甲", "C1")]))
        store.unsettled.record([name("乙", 2)], "run-1")
        store.unsettled.mark_not_a_company("乙")
        assert store.unsettled.record([name("甲", 4), name("乙", 2), name("丙", 1)], "run-2") == 1
        assert [n.lookup_key for n in store.unsettled.open_names()] == ["丙"]
        assert store.unsettled.not_companies(["甲", "乙", "丙"]) == {"乙"}
        store.unsettled.reopen("乙")
        assert store.unsettled.not_companies(["乙"]) == set()
        assert {n.lookup_key for n in store.unsettled.open_names()} == {"乙", "丙"}
    finally:
        store.close()


def test_a_low_confidence_name_is_settled_only_by_a_sure_answer(index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        fuzzy = IndexEntry("模糊公司", "customer_name", "C8", 0.8, "eqc_api")
        store.write(WriteBatch(entries=[fuzzy]))  # the run's own answer, written before it records
        weak = name("模糊公司", 4, kind="low_confidence", status="weak_match", temp_id=None, candidate_id="C8")
        assert store.unsettled.record([weak, name("未知公司", 2)], "run-1") == 2
        store.write(WriteBatch(entries=[fuzzy, IndexEntry("未知公司", "customer_name", "C5", 0.8, "eqc_api")]))
        assert [n.lookup_key for n in store.unsettled.open_names()] == ["模糊公司"]  # any answer settles a temporary id
        store.write(WriteBatch(entries=[manual("模糊公司", "C8")]))
        assert store.unsettled.open_names() == []
        assert store.unsettled.remapped()[0].temp_id == "IN_未知公司"  # the weak one had no temporary id to remap
        assert len(store.unsettled.remapped()) == 1
    finally:
        store.close()


def test_filters_and_a_search_with_like_characters(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record(
            [
                name("百分之50_公司", 1, display_name="百分之50_公司"),
                name("百分之50x公司", 2),
                name("弱匹配公司", 3, kind="low_confidence", status="weak_match", candidate_id="C3", confidence=0.5),
            ],
            "run-1",
        )
        assert [n.lookup_key for n in store.unsettled.open_names(search="50_")] == ["百分之50_公司"]
        assert [n.lookup_key for n in store.unsettled.open_names(kinds=["low_confidence"])] == ["弱匹配公司"]
        assert [n.lookup_key for n in store.unsettled.open_names(statuses=["not_found"], limit=1)] == ["百分之50x公司"]
        assert [n.lookup_key for n in store.unsettled.open_names(limit=1, offset=1)] == ["百分之50x公司"]
        weak = store.unsettled.get("弱匹配公司")
        assert weak is not None
        assert (weak.candidate_id, weak.confidence, weak.settled) == ("C3", 0.5, False)
    finally:
        store.close()


# --- a run records what it left open, and uses a person's decisions ----------------------------------------


@pytest.fixture(scope="module")
def month() -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_month(seed=11, rows=600, companies=80, unknown_share=0.15, existing_id_share=0.0)


def run(data: pl.DataFrame, url: str, db: Path) -> EnrichResult:
    options = run_options(
        db=db, eqc_url=url, token=TOKEN, rate_limit=RateLimit(10, 0.06), timeout_s=2.0, salt="s",
        latency_hint=Latency(0.0, 0.0),
    )  # fmt: skip
    return enrich(data, options=options)


def test_a_run_records_its_open_names_with_samples_and_the_next_run_honours_decisions(
    month: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    data, _ = month
    db = tmp_path / "index.db"
    config = SimulatorConfig(seed=11, latency=(0.0, 0.0), time_scale=1000.0, rate_limit=RateLimit(10, 0.06),
                             tokens=(TOKEN,), token_ttl=86_400.0)  # fmt: skip
    with Simulator(config) as sim:
        first = run(data, sim.url, db)
    summary = first.summary
    unresolved = first.unresolved
    assert summary.status == "completed"
    assert unresolved.height > 2
    store = IndexStore(db)
    try:
        queue = store.unsettled.open_names(kinds=["temporary"])
        low = store.unsettled.open_names(kinds=["low_confidence"])
        assert summary.unsettled_recorded == unresolved.height + len(low)
        assert [n.lookup_key for n in queue] == unresolved["name"].to_list()  # the same order: most rows first
        top = queue[0]
        assert top.rows == unresolved["rows"][0]
        assert top.temp_id == unresolved["temporary_id"][0]
        assert top.run_id == summary.run_id
        assert 1 <= len(top.sample) <= 5
        assert all(row["客户名称"] for row in top.sample)  # input rows, every column as text
        assert set(top.sample[0]) == set(data.columns)
        decided, typed = queue[0].lookup_key, queue[1].lookup_key
        store.unsettled.mark_not_a_company(decided)
        store.write(WriteBatch(entries=[manual(typed, "C-TYPED")]))
    finally:
        store.close()
    with Simulator(config) as sim:
        second = run(data, sim.url, db)
        asked = set(sim.state.stats.search_keys)
    assert decided not in asked
    assert typed not in asked
    s2 = second.summary
    assert s2.eqc.not_a_company == 1
    reasons = dict(zip(second.unresolved["name"], second.unresolved["status"], strict=True))
    assert reasons[decided] == NOT_A_COMPANY
    assert typed not in reasons
    assert low  # the simulator answers some variants with 模糊匹配: open, with the candidate the rows got
    assert all(n.candidate_id and n.confidence is not None and n.confidence < 1.0 for n in low)
    assert all(n.temp_id is None and n.status == "weak_match" for n in low)
    frame = second.frame
    rows = frame.filter(pl.col("company_id") == "C-TYPED")
    assert rows.height == top.rows if typed == top.lookup_key else rows.height > 0
    assert set(rows["company_id_source"]) == {"index:manual"}  # typed on the review page: a person decided
