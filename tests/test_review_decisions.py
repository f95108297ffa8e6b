"""Decisions that hold: undo puts back what a decision replaced and never deletes, two reviewers deciding one
name at once, undo limited to the page that decided, typed ids of the form of an EQC id and checked with one
EQC call before saving.

On a SQLite file and on PostgreSQL as a role with exactly the grants `eqc-enrich index init --print-sql`
prints (no DELETE on `enrichment_index`, no DDL), the page served by uvicorn on loopback; the simulator
where EQC answers.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import sqlalchemy as sa
from tests.options import run_options
from tests.review_pages import (
    FAST,
    TOKEN,
    access,
    decide,
    entry_of,
    name,
    notice_of,
    notice_text,
    page_of,
    paragraph_text,
    seen_of,
    with_candidates,
)

from eqc_enrich import enrich
from eqc_enrich.keys import normalize_name
from eqc_enrich.model import Latency
from eqc_enrich.review import COMPANY_ID_DIGITS, eqc_company_id
from eqc_enrich.simulator import Simulator, SimulatorConfig
from eqc_enrich.store import WITHDRAWN, IndexEntry, IndexStore, WriteBatch, init_index

KEPT = ("company_id", "confidence", "source", "source_domain", "source_table", "updated_at")
"""What undo puts back of the row a decision replaced (hit_count and last_hit_at go on counting uses)."""


# --- the index: a SQLite file, or PostgreSQL as a role with exactly the printed grants ---------------------


@dataclass(frozen=True)
class ReviewDb:
    url: str
    schema: str | None
    dialect: str

    def open(self) -> IndexStore:
        return IndexStore(self.url, schema=self.schema)


def printed_grants(schema: str, role: str) -> list[str]:
    """The GRANT lines `eqc-enrich index init --print-sql` prints for this schema, for `role`, uncommented."""
    done = subprocess.run(
        [sys.executable, "-m", "eqc_enrich.cli", "index", "init", "--print-sql", "--db-schema", schema],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    grants = [line.removeprefix("-- ") for line in done.stdout.splitlines() if line.startswith("-- GRANT ")]
    assert len(grants) == 4  # the schema, enrichment_index, base_info, the tool's own tables
    return [line.replace(" TO etl_role;", f" TO {role};") for line in grants]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def review_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReviewDb]:
    """The page's index: a SQLite file, or a PostgreSQL schema that its owner initialised once and that the
    page then uses as a role with only the printed grants."""
    if request.param == "sqlite":
        yield ReviewDb(f"sqlite:///{tmp_path / 'index.db'}", None, "sqlite")
        return
    url, schema = request.getfixturevalue("pg_schema")
    init_index(url, schema=schema)  # the owner, once
    role = f"eqc_review_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            for grant in printed_grants(schema, role):
                conn.exec_driver_sql(grant)
            index = f"{schema}.enrichment_index"
            assert not conn.execute(sa.text(f"SELECT has_table_privilege('{role}', '{index}', 'DELETE')")).scalar()
            assert not conn.execute(sa.text(f"SELECT has_schema_privilege('{role}', '{schema}', 'CREATE')")).scalar()
        as_role = sa.make_url(url).set(username=role, password=None).render_as_string(hide_password=False)
        yield ReviewDb(as_role, schema, "postgresql")
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")
        admin.dispose()


def index_row(store: IndexStore, key: str) -> dict[str, Any] | None:
    index = store.tables.index
    query = sa.select(index).where(index.c.lookup_key == key, index.c.lookup_type == "customer_name")
    with store.reading() as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def eqc_answer(key: str, company_id: str, confidence: float) -> IndexEntry:
    """An entry as a run writes EQC's answer."""
    return IndexEntry(
        key, "customer_name", company_id, confidence, "eqc_api", source_domain="eqc_sync_lookup",
        source_table="company_search",
    )  # fmt: skip


# --- 1. undo puts back what was there, by UPDATE -------------------------------------------------------------


def test_undo_puts_back_exactly_the_entry_the_decision_replaced_and_deletes_nothing(review_db: ReviewDb) -> None:
    """A weak EQC answer (0.80) replaced by a person's choice: undo brings the 0.80 entry back, values and
    updated_at as they were, and the name into the queue. On PostgreSQL the page has no DELETE grant at all."""
    store = review_db.open()
    key = "弱匹配测试有限公司"
    try:
        store.entries.upsert([eqc_answer(key, "600300001", 0.8)], now=datetime(2024, 1, 1, tzinfo=UTC))
        weak = name(key, 6, kind="low_confidence", status="weak_match", candidate_id="600300001", confidence=0.8)
        store.unsettled.record([weak], "run-1")
        with_candidates(store, key, "600300001", "600300002")
        before, rows = index_row(store, key), store.entries.count()
        assert before is not None
        with page_of(store) as (_, page):
            assert "saved to the index" in notice_of(
                page, decide(page, key=key, decision="accept", company_id="600300002")
            )
            assert entry_of(store, key) == ("600300002", "manual", "eqc_review", 1.0)
            assert store.unsettled.get(key).settled  # type: ignore[union-attr]
            shown = notice_of(page, page.post("/undo", data={}))
        assert "the index entry it had replaced is back" in shown
        after = index_row(store, key)
        assert after is not None
        assert {k: after[k] for k in KEPT} == {k: before[k] for k in KEPT}
        assert after["id"] == before["id"]  # the same row, updated back
        assert store.entries.count() == rows
        found = store.lookup({"customer_name": [key]})[(key, "customer_name")]
        assert (found.company_id, found.confidence, found.source) == ("600300001", 0.8, "eqc_api")
        assert not store.unsettled.get(key).settled  # type: ignore[union-attr]
        journal = store.decisions.latest(key=key)
        assert journal[0].undo is not None
        assert journal[0].undo.before is not None
        assert journal[0].undo.before.company_id == "600300001"  # what was there, kept with the decision
    finally:
        store.close()


def test_undo_of_a_name_that_had_no_entry_withdraws_it_and_any_later_answer_replaces_it(review_db: ReviewDb) -> None:
    store = review_db.open()
    key = "无条目测试有限公司"
    try:
        store.unsettled.record([name(key, 3)], "run-1")
        with page_of(store) as (_, page):
            decide(page, key=key, decision="typed", company_id="600400001")
            rows = store.entries.count()
            shown = notice_of(page, page.post("/undo", data={}))
        assert "its entry is withdrawn (no company id) and runs ask EQC again" in shown
        assert entry_of(store, key) == ("", WITHDRAWN, "eqc_review", 0.0)  # kept: the role cannot delete it
        assert store.entries.count() == rows
        assert store.lookup({"customer_name": [key]}) == {}  # a run finds nothing for it
        assert not store.unsettled.get(key).settled  # type: ignore[union-attr]
        # a run that again cannot settle it lists it again (a withdrawn row answers nothing)
        assert store.unsettled.record([name(key, 4)], "run-2") == 1
        # EQC's answer, at any confidence, replaces the withdrawn row under the writers' rule
        store.write(WriteBatch(entries=[eqc_answer(key, "600400009", 0.6)]))
        assert entry_of(store, key) == ("600400009", "eqc_api", "eqc_sync_lookup", 0.6)
    finally:
        store.close()


def test_after_an_undo_the_next_run_asks_eqc_as_if_the_decision_never_happened(tmp_path: Path) -> None:
    config = SimulatorConfig(seed=11, latency=(0.0, 0.0), time_scale=1000.0, rate_limit=FAST, tokens=(TOKEN,),
                             token_ttl=86_400.0)  # fmt: skip
    db = tmp_path / "index.db"
    with Simulator(config) as sim:
        company = sim.state.universe.companies[9]
        key = normalize_name(company.name)
        store = IndexStore(db)
        try:
            store.unsettled.record([name(key, 2, status="not_asked")], "run-1")
            with page_of(store) as (_, page):
                decide(page, key=key, decision="typed", company_id="600000000")  # a wrong id, then undone
                page.post("/undo", data={})
        finally:
            store.close()
        options = run_options(db=db, eqc_url=sim.url, token=TOKEN, rate_limit=FAST, timeout_s=2.0, salt="s",
                              latency_hint=Latency(0.0, 0.0))  # fmt: skip
        result = enrich(pl.DataFrame({"客户名称": [company.name, company.name]}), options=options)
        assert sim.state.stats.search_keys[key] == 1  # asked, as before the decision
    assert result.frame["company_id"].to_list() == [company.company_id] * 2
    store = IndexStore(db)
    try:
        assert entry_of(store, key) == (company.company_id, "eqc_api", "eqc_sync_lookup", 1.0)
        assert store.unsettled.get(key).settled  # type: ignore[union-attr]
    finally:
        store.close()


# --- 2. two reviewers on one index ----------------------------------------------------------------------------


def test_two_reviewers_deciding_one_name_at_once_one_is_saved_the_other_told_what_it_became(
    review_db: ReviewDb,
) -> None:
    """Two pages (two `review` servers, two people) on one index, each try both deciding the same name with the
    page as it was: exactly one is saved, the other is told what the name became and saves nothing."""
    tries = 12
    first, second = review_db.open(), review_db.open()
    keys = [f"同时决定测试{i:02d}有限公司" for i in range(tries)]
    try:
        first.unsettled.record([name(k, 5) for k in [*keys, "只有甲决定有限公司", "只有乙决定有限公司"]], "run-1")
        for i, key in enumerate(keys):
            with_candidates(first, key, f"6005{i:03d}01")
        with page_of(first, os_user="alice") as (_, alice), page_of(second, os_user="bob") as (_, bob):
            outcomes = [_race(alice, bob, key, f"6005{i:03d}01", f"6005{i:03d}02") for i, key in enumerate(keys)]
            saved = [(a_saved, b_saved) for a_saved, b_saved, _ in outcomes]
            print(f"alice saved {sum(a for a, _ in saved)}, bob {sum(b for _, b in saved)}, of {tries} tries")
            assert all(a != b for a, b in saved)  # one of the two, every time
            for i, (key, (alice_saved, _, refusal)) in enumerate(zip(keys, outcomes, strict=True)):
                winner, user = (f"6005{i:03d}01", "alice") if alice_saved else (f"6005{i:03d}02", "bob")
                assert refusal == (
                    f"{key}: changed since this page showed it: it is settled now: {winner} (manual), decided by "
                    f"{user}; nothing saved"
                )
                assert entry_of(first, key) == (winner, "manual", "eqc_review", 1.0)
                assert [d.company_id for d in first.decisions.latest(key=key)] == [winner]
            decide(alice, key="只有甲决定有限公司", decision="skip")  # each page has a decision of its own
            decide(bob, key="只有乙决定有限公司", decision="not_a_company")
            _undo_only_undoes_the_pages_own(first, alice, bob)
    finally:
        first.close()
        second.close()


def _race(alice: httpx.Client, bob: httpx.Client, key: str, accepted: str, typed: str) -> tuple[bool, bool, str]:
    """Both pages show the name, then both send their decision at the same moment: alice accepts EQC's
    candidate, bob types another id."""
    forms = [
        (alice, {"key": key, "decision": "accept", "company_id": accepted, "seen": seen_of(alice, key)}),
        (bob, {"key": key, "decision": "typed", "company_id": typed, "seen": seen_of(bob, key)}),
    ]
    start = threading.Barrier(2, timeout=30)

    def send(page: httpx.Client, form: dict[str, str]) -> str:
        start.wait()
        return notice_text(notice_of(page, page.post("/decide", data=form)))

    with ThreadPoolExecutor(2) as pool:
        alice_page, bob_page = pool.map(lambda sent: send(*sent), forms)
    alice_saved, bob_saved = ("saved to the index" in text for text in (alice_page, bob_page))
    return alice_saved, bob_saved, bob_page if alice_saved else alice_page


def _undo_only_undoes_the_pages_own(store: IndexStore, alice: httpx.Client, bob: httpx.Client) -> None:
    alices = [d for d in store.decisions.latest(limit=100) if d.os_user == "alice"]
    shown = notice_of(bob, bob.post("/undo", data={"decision_id": str(alices[0].id)}))
    assert "was made on another page: only that page undoes it" in shown
    assert f'name="decision_id" value="{alices[0].id}"' not in shown  # no undo button for it on bob's page
    notice_of(bob, bob.post("/undo", data={}))  # `u` on bob's page: bob's newest decision
    undone = [d for d in store.decisions.latest(limit=100) if d.undone_at is not None]
    assert [(d.os_user, d.lookup_key) for d in undone] == [("bob", "只有乙决定有限公司")]
    assert all(d.undone_at is None for d in store.decisions.latest(limit=100) if d.os_user == "alice")
    notice_of(alice, alice.post("/undo", data={}))  # and alice's `u` undoes alice's newest
    assert store.decisions.get(alices[0].id).undone_at is not None  # type: ignore[union-attr]


def test_a_decision_for_a_name_whose_entry_changed_since_the_page_showed_it_is_refused(review_db: ReviewDb) -> None:
    store = review_db.open()
    key = "期间变化测试有限公司"
    try:
        store.entries.upsert([eqc_answer(key, "600600001", 0.8)])
        weak = name(key, 6, kind="low_confidence", status="weak_match", candidate_id="600600001", confidence=0.8)
        store.unsettled.record([weak], "run-1")
        with_candidates(store, key, "600600001", "600600002")
        with page_of(store) as (_, page):
            seen = seen_of(page, key)
            store.write(WriteBatch(entries=[eqc_answer(key, "600600009", 0.9)]))  # a run's better, still weak, answer
            form = {"key": key, "decision": "accept", "company_id": "600600002", "seen": seen}
            shown = notice_of(page, page.post("/decide", data=form))
        assert notice_text(shown) == (
            f"{key}: changed since this page showed it: it is open, the index holds 600600009 (eqc_api, 0.90); "
            "nothing saved"
        )
        assert entry_of(store, key) == ("600600009", "eqc_api", "eqc_sync_lookup", 0.9)
        assert store.decisions.latest() == []
    finally:
        store.close()


# --- 3. typed ids ---------------------------------------------------------------------------------------------

CARELESS_IDS = [
    "<script>alert(1)</script>", "1 OR 1=1", "0", "-1", "空白", '=HYPERLINK("http://x.example","1")', "@SUM(1)",
    "12345", "0600000001", "1e9", "600000001.0", "600000001\u202e", "IN4MDGRBC4XLPPGTUE", "", "N/A",
    "1" * (COMPANY_ID_DIGITS[1] + 1), "６００-０００１", "٦٠٠٠٠٠٠٠١",
]  # fmt: skip


def test_a_typed_id_must_have_the_form_of_an_eqc_company_id(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("键入测试有限公司", 2), name("全角测试有限公司", 2)], "run-1")
        with page_of(store) as (_, page):
            for typed in CARELESS_IDS:
                shown = notice_of(page, decide(page, key="键入测试有限公司", decision="typed", company_id=typed))
                assert "not a company id" in shown, typed
            assert store.decisions.latest() == []
            assert entry_of(store, "键入测试有限公司") is None
            # full-width digits (a Chinese input method) are folded, spaces dropped
            decide(page, key="全角测试有限公司", decision="typed", company_id=" ６００９９９ ００１ ")
        assert entry_of(store, "全角测试有限公司") == ("600999001", "manual", "eqc_review", 1.0)
    finally:
        store.close()
    assert [eqc_company_id(text) for text in ("600000001", "１２３４５６", "１２３４５")] == [
        "600000001",
        "123456",
        None,
    ]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(seed=11, latency=(0.0, 0.0), time_scale=1000.0, rate_limit=FAST, tokens=(TOKEN,),
                             token_ttl=86_400.0)  # fmt: skip
    with Simulator(config) as simulator:
        yield simulator


def test_a_typed_id_is_checked_with_one_eqc_call_and_the_company_named_before_it_is_saved(
    sim: Simulator, tmp_path: Path
) -> None:
    store = IndexStore(tmp_path / "index.db")
    company = sim.state.universe.companies[7]
    key = "核对测试有限公司"
    wide = company.company_id.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    eqc = access(sim.url)
    try:
        store.unsettled.record([name(key, 2)], "run-1")
        with page_of(store, eqc) as (_, page):
            assert 'id="check-id"' in page.get("/", params={"key": key}).text  # offered: the page can ask EQC
            shown = notice_of(page, page.post("/check", data={"key": key, "company_id": wide}))
            assert paragraph_text(shown, "id-check").startswith(f"EQC: {company.company_id} is {company.name}")
            assert f'value="{company.company_id}"' in shown  # the id, folded, waits in the field to be saved
            assert 'id="set-id" autofocus' in shown
            assert sim.state.stats.requests["findDepart"] == 1  # one call
            assert sum(sim.state.stats.search_keys.values()) == 0
            assert [owner.startswith("review-") for owner, _ in store.quota.slots_of(eqc.quota_key)] == [True]
            assert store.decisions.latest() == []  # nothing saved by a check
            assert entry_of(store, key) is None
            unknown = notice_of(page, page.post("/check", data={"key": key, "company_id": "600000000"}))
            assert paragraph_text(unknown, "id-check") == (
                "EQC knows no company 600000000: set it only if you are sure of it"
            )
            stray = notice_of(page, page.post("/check", data={"key": "无此名称", "company_id": company.company_id}))
            assert notice_text(stray) == "无此名称: no such name in the queue"
            careless = notice_of(page, page.post("/check", data={"key": key, "company_id": "1 OR 1=1"}))
            assert notice_text(careless) == f"{key}: not a company id: 1 OR 1=1"
            assert sim.state.stats.requests["findDepart"] == 2  # the careless one asked nothing
            saved = notice_of(page, decide(page, key=key, decision="typed", company_id=wide))
            assert "saved to the index" in saved
        assert entry_of(store, key) == (company.company_id, "manual", "eqc_review", 1.0)
    finally:
        store.close()


def test_without_a_token_no_check_is_offered_and_none_is_sent(sim: Simulator, tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("无令牌测试有限公司", 2)], "run-1")
        with page_of(store, access(sim.url, token=None)) as (_, page):
            assert 'id="check-id"' not in page.get("/").text
            shown = notice_of(page, page.post("/check", data={"key": "无令牌测试有限公司", "company_id": "600000001"}))
            assert paragraph_text(shown, "id-check").startswith("not checked with EQC (skipped): no EQC token")
        assert sim.state.stats.requests["findDepart"] == 0
    finally:
        store.close()


def test_a_decision_journaled_before_undo_records_were_kept_is_not_undone_blindly(tmp_path: Path) -> None:
    """A decision from an earlier version kept no record of what it replaced: the page says so, touches nothing."""
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("旧版决定有限公司", 2)], "run-1")
        old = store.decisions.add("旧版决定有限公司", "not_a_company", os_user="earlier")
        store.unsettled.mark_not_a_company("旧版决定有限公司")
        with page_of(store) as (_, page):
            assert 'name="decision_id"' not in page.get("/").text  # listed, with no undo button
            shown = notice_of(page, page.post("/undo", data={"decision_id": str(old)}))
            assert "was made by an earlier version, which kept nothing to undo it by" in notice_text(shown)
            assert "nothing to undo" in notice_text(notice_of(page, page.post("/undo", data={})))
        assert store.decisions.get(old).undone_at is None  # type: ignore[union-attr]
        assert store.unsettled.not_companies(["旧版决定有限公司"]) == {"旧版决定有限公司"}
    finally:
        store.close()
