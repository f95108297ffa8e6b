"""Former names that point at two companies: recorded once, never answering a row, never written again, and
nothing deleted from `enrichment_index`; found among existing rows by `index init` and `index stats`.

Real parts: SQLite files and PostgreSQL (`index_db`), the simulator on loopback with a universe in which two
companies once had the same name (the seeded generator never makes one), the review page on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import httpx
import polars as pl
import pytest
import sqlalchemy as sa
from tests.conftest import SIM_DEFAULTS
from tests.options import eqc_options, run_options

from eqc_enrich import enrich
from eqc_enrich.cli import main
from eqc_enrich.config import resolve_access
from eqc_enrich.keys import normalize_name
from eqc_enrich.review import ReviewServer
from eqc_enrich.settings import Settings
from eqc_enrich.simulator import Simulator, SimulatorConfig, Universe, build_universe
from eqc_enrich.store import IndexEntry, IndexStore, WriteBatch, init_index

if TYPE_CHECKING:
    from tests.conftest import IndexDb

TOKEN = "test-token"
SHARED = "华夏共名科技有限公司"  # the name both companies once had
A, B = "700000001", "700000002"


def former(key: str, company_id: str, confidence: float = 0.9) -> IndexEntry:
    return IndexEntry(key, "former_name", company_id, confidence, "eqc_api", source_domain="eqc_sync_former_name")


def customer(key: str, company_id: str, confidence: float = 1.0) -> IndexEntry:
    return IndexEntry(key, "customer_name", company_id, confidence, "eqc_api", source_domain="eqc_sync_lookup")


def rows_of(store: IndexStore, key: str) -> dict[str, dict[str, Any]]:
    index = store.tables.index
    with store.reading() as conn:
        found = conn.execute(sa.select(index).where(index.c.lookup_key == key)).mappings().all()
    return {str(row["lookup_type"]): dict(row) for row in found}


@pytest.fixture
def store(index_db: IndexDb) -> Iterator[IndexStore]:
    opened = index_db.open()
    yield opened
    opened.close()


# --- the rule, at the store -------------------------------------------------------------------------------------


def test_a_commit_naming_one_former_name_for_two_companies_writes_neither(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[former(SHARED, A), former(SHARED, B), customer("甲方公司", A)]))
    assert rows_of(store, SHARED) == {}
    assert set(rows_of(store, "甲方公司")) == {"customer_name"}  # the rest of the commit is written
    (conflict,) = store.conflicts.listing()
    assert (conflict.lookup_key, conflict.company_ids, conflict.found_by) == (SHARED, (A, B), "eqc")


def test_a_stored_former_name_met_with_another_company_stays_as_it_is_and_answers_no_more(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[former(SHARED, A)]))
    before = rows_of(store, SHARED)["former_name"]
    store.write(WriteBatch(entries=[former(SHARED, B, 1.0)]))  # stronger: the old rule would replace A with B
    assert rows_of(store, SHARED) == {"former_name": before}  # nothing deleted, nothing changed
    assert store.conflicts.known([SHARED]) == {SHARED}
    store.write(WriteBatch(entries=[former(SHARED, A)]))  # never written again, not even for the first company
    assert rows_of(store, SHARED) == {"former_name": before}


def test_a_former_name_that_is_another_companys_customer_name_is_a_conflict_and_the_customer_name_stays(
    store: IndexStore,
) -> None:
    store.write(WriteBatch(entries=[customer(SHARED, B)]))
    store.write(WriteBatch(entries=[former(SHARED, A)]))
    assert set(rows_of(store, SHARED)) == {"customer_name"}
    assert store.conflicts.known([SHARED]) == {SHARED}
    store.write(WriteBatch(entries=[customer(SHARED, B)]))  # customer names are written as before
    assert rows_of(store, SHARED)["customer_name"]["hit_count"] == 1


def test_the_same_company_again_is_no_conflict(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[former(SHARED, A), customer(SHARED, A)]))
    store.write(WriteBatch(entries=[former(SHARED, A)]))
    assert rows_of(store, SHARED)["former_name"]["hit_count"] == 1
    assert store.conflicts.count() == 0


# --- runs against EQC -------------------------------------------------------------------------------------------


def shared_universe() -> Universe:
    """Two companies of the seeded universe made to share a former name, beside a few others."""
    base = build_universe(7, 2_000).companies[:50]
    first, second = (
        replace(c, company_id=cid, former_names=(SHARED,)) for c, cid in zip(base[:2], (A, B), strict=True)
    )
    return Universe([first, second, *base[2:]])


@pytest.fixture
def shared_sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(**SIM_DEFAULTS), universe=shared_universe()) as sim:
        yield sim


def month(*names: str) -> pl.DataFrame:
    return pl.DataFrame({"客户名称": list(names)})


def run(sim: Simulator, index_db: IndexDb, data: pl.DataFrame) -> Any:
    return enrich(data, options=run_options(db=index_db.url, db_schema=index_db.schema, eqc_url=sim.url, token=TOKEN))


def test_a_former_name_eqc_gives_two_companies_answers_no_row_and_is_not_written_back(
    shared_sim: Simulator, index_db: IndexDb, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = (shared_sim.state.universe.by_id[cid] for cid in (A, B))
    store = index_db.open()
    try:  # what WorkDataHub's writer left: the shared name as A's former name
        store.write(WriteBatch(entries=[former(SHARED, A)]))
        before = rows_of(store, SHARED)
    finally:
        store.close()
    first = run(shared_sim, index_db, month(b.name))
    assert first.summary.status == "completed"  # EQC says B once had that name too
    second = run(shared_sim, index_db, month(SHARED, a.name))
    assert second.summary.status == "completed"
    sources = dict(zip(second.frame["客户名称"].to_list(), second.frame["company_id_source"].to_list(), strict=True))
    assert sources[SHARED] == "eqc"  # not index:former_name: the name went on to EQC
    assert shared_sim.state.stats.search_keys[normalize_name(SHARED)] == 1
    store = IndexStore(index_db.url, schema=index_db.schema)
    try:
        after = rows_of(store, SHARED)
        (conflict,) = store.conflicts.listing()
    finally:
        store.close()
    assert after["former_name"] == before["former_name"]  # A's answer did not write it back, B's neither
    assert conflict.company_ids == (A, B)
    assert main_out(["index", "stats", *index_db.cli(), "--json"], capsys)["former_name_conflicts"]["recorded"] == 1
    text = main_text(["index", "stats", *index_db.cli()], capsys)
    assert "former names tied to two companies: 1 recorded (no row is answered from them)" in text
    assert f"  {SHARED}: {A}, {B} (found by eqc)" in text


def test_two_companies_answered_in_one_run_leave_no_former_name_row_for_the_second(
    shared_sim: Simulator, index_db: IndexDb
) -> None:
    index_db.open().close()
    a, b = (shared_sim.state.universe.by_id[cid] for cid in (A, B))
    assert run(shared_sim, index_db, month(a.name, b.name)).summary.status == "completed"
    store = IndexStore(index_db.url, schema=index_db.schema)
    try:
        stored = rows_of(store, SHARED)
        known = store.conflicts.known([SHARED])
    finally:
        store.close()
    assert known == {SHARED}
    # in one commit neither is written; in two, the first is there and the second was kept out
    assert stored.get("former_name", {"company_id": A})["company_id"] in (A, B)
    assert len(stored) <= 1


# --- existing rows, index init and index stats -------------------------------------------------------------------


def main_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def main_out(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return dict(json.loads(main_text(argv, capsys)))


def test_index_stats_finds_conflicts_the_rows_already_hold_and_index_init_records_them(
    index_db: IndexDb, capsys: pytest.CaptureFixture[str]
) -> None:
    store = index_db.open()
    try:  # written by other tools before: a former name that is another company's customer name
        store.entries.upsert(
            [former(SHARED, A), customer(SHARED, B), former("乙旧名公司", A), customer("乙旧名公司", A)]
        )
    finally:
        store.close()
    stats = main_out(["index", "stats", *index_db.cli(), "--json"], capsys)["former_name_conflicts"]
    assert (stats["recorded"], stats["unrecorded_in_index"]) == (0, 1)
    assert stats["unrecorded_keys"] == [{"lookup_key": SHARED, "company_ids": [A, B]}]
    assert "not recorded yet: `eqc-enrich index init` records them" in main_text(["index", "stats", *index_db.cli()],
                                                                                  capsys)  # fmt: skip
    report = init_index(index_db.url, schema=index_db.schema)
    assert (report.conflicts_found, report.conflicts_recorded) == (1, 1)
    stats = main_out(["index", "stats", *index_db.cli(), "--json"], capsys)["former_name_conflicts"]
    assert (stats["recorded"], stats["unrecorded_in_index"]) == (1, 0)
    assert stats["keys"][0]["found_by"] == "index"
    assert "former names the index ties to two companies: 1 (0 newly recorded" in main_text(
        ["index", "init", *index_db.cli()], capsys
    )
    store = IndexStore(index_db.url, schema=index_db.schema)
    try:
        assert set(rows_of(store, SHARED)) == {"former_name", "customer_name"}  # nothing deleted
    finally:
        store.close()


# --- the review page ----------------------------------------------------------------------------------------------


def test_the_review_page_lists_the_conflicts(index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        store.write(WriteBatch(entries=[former(SHARED, A), former(SHARED, B)]))
        access = resolve_access(eqc_options(eqc_url="http://127.0.0.1:9", token=TOKEN), Settings())
        with (
            ReviewServer(store, access, os_user="tester") as server,
            httpx.Client(base_url=server.base_url, follow_redirects=False, timeout=30) as http,
        ):
            assert http.get(server.url).status_code == 303  # the printed link, traded for the session cookie
            queue = http.get("/")
            listed = http.get("/conflicts")
            stranger = httpx.get(f"{server.base_url}/conflicts", timeout=30)
            base = f"/{server.server_id}/"
    finally:
        store.close()
    assert f'href="{base}conflicts">former names on two companies <b>1</b>' in queue.text
    assert listed.status_code == 200
    assert f'<td><bdi lang="zh-CN">{SHARED}</bdi></td><td>{A}, {B}</td><td>eqc</td>' in listed.text
    assert stranger.status_code == 403  # the session guard covers it
