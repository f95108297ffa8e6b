"""The enrichment index on a real SQLite file and, where the suite has one, a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from eqc_enrich import IndexStoreError
from eqc_enrich.index import IndexEntry, IndexStore, Payload, WriteBatch, redact_url

PG_URL = os.environ.get("EQC_ENRICH_TEST_PG_URL")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexStore]:
    if request.param == "sqlite":
        opened = IndexStore(tmp_path / "index.db")
        yield opened
        opened.close()
        return
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must provide EQC_ENRICH_TEST_PG_URL (.ci/run starts PostgreSQL)")
        pytest.skip("no PostgreSQL: set EQC_ENRICH_TEST_PG_URL")
    schema = f"t_{uuid.uuid4().hex[:12]}"  # a schema per test: tests never see each other's rows
    opened = IndexStore(PG_URL, schema=schema)
    yield opened
    opened.close()
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def entry(company_id: str, confidence: float, key: str = "示例公司", source: str = "eqc_api") -> IndexEntry:
    return IndexEntry(key, "customer_name", company_id, confidence, source)


def row(store: IndexStore, key: str = "示例公司", kind: str = "customer_name") -> dict[str, Any]:
    t = store.index
    engine = store._engine
    with engine.connect() as conn:
        found = conn.execute(sa.select(t).where(t.c.lookup_key == key, t.c.lookup_type == kind)).mappings().one()
    return dict(found)


def test_upsert_keeps_the_stronger_answer_and_counts_hits(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[entry("A", 0.80)]))
    store.write(WriteBatch(entries=[entry("B", 0.80, source="manual")]))  # equal: not strictly higher
    first = row(store)
    assert (first["company_id"], float(first["confidence"]), first["source"]) == ("A", 0.80, "eqc_api")
    store.write(WriteBatch(entries=[entry("C", 0.95, source="manual")]))
    store.write(WriteBatch(entries=[entry("D", 0.60)]))
    final = row(store)
    assert (final["company_id"], float(final["confidence"]), final["source"]) == ("C", 0.95, "manual")
    assert final["hit_count"] == 3  # every upsert after the first bumps it
    assert store.count_entries() == 1


def test_one_batch_may_name_a_key_twice(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[entry("A", 0.7), entry("B", 0.9), entry("C", 0.8)]))
    assert row(store)["company_id"] == "B"


def test_bulk_lookup_across_chunks_and_types_with_a_freshness_cut(store: IndexStore) -> None:
    names = [f"公司{i:05d}" for i in range(12_000)]
    store.write(WriteBatch(entries=[entry(str(i), 1.0, key=name) for i, name in enumerate(names)]))
    store.write(WriteBatch(entries=[IndexEntry("P0001", "plan_code", "900", 1.0, "yaml")]))
    wanted = {"customer_name": [*names[::2], "不存在"], "plan_code": ["P0001", "P9999"], "former_name": names[:5]}
    found = store.lookup(wanted)
    assert len(found) == 6_000 + 1
    assert found[("公司00002", "customer_name")].company_id == "2"
    assert found[("P0001", "plan_code")].company_id == "900"
    assert store.lookup(wanted, updated_since=datetime.now(UTC) + timedelta(hours=1)) == {}


def test_negative_cache_expires_and_is_cleared_by_a_later_find(store: IndexStore) -> None:
    store.write(WriteBatch(negatives=["甲", "乙", "甲"]))
    assert store.known_negatives(["甲", "乙", "丙"], asked_since=EPOCH) == {"甲", "乙"}
    assert store.known_negatives(["甲"], asked_since=datetime.now(UTC) + timedelta(seconds=5)) == set()
    store.write(WriteBatch(cleared_negatives=["甲"]))
    assert store.known_negatives(["甲", "乙"], asked_since=EPOCH) == {"乙"}


def test_payloads_are_never_overwritten_with_nothing(store: IndexStore) -> None:
    store.write(WriteBatch(payloads=[Payload("1", "示例", {"companyId": "1"}, {"businessInfodto": {"x": 1}})]))
    store.write(WriteBatch(payloads=[Payload("1", labels_json={"labels": []})]))
    with store._engine.connect() as conn:
        saved = conn.execute(sa.select(store.payload)).mappings().one()
    assert saved["search_json"] == {"companyId": "1"}
    assert saved["depart_json"] == {"businessInfodto": {"x": 1}}
    assert saved["labels_json"] == {"labels": []}
    assert saved["search_key"] == "示例"


def test_record_hits_bumps_counts_and_stamps_use(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[entry("A", 1.0)]))
    store.record_hits({("示例公司", "customer_name"): 41, ("不存在", "customer_name"): 3})
    used = row(store)
    assert used["hit_count"] == 41
    assert used["last_hit_at"] is not None


def test_run_journal(store: IndexStore) -> None:
    store.journal_start("r1", "month.xlsx", "ab" * 32, {"rate_limit": "10/60s"})
    store.journal_finish("r1", "interrupted", {"rows": 3})
    (run,) = store.recent_runs()
    assert run["status"] == "interrupted"
    assert run["counters_json"] == {"rows": 3}
    assert run["settings_json"] == {"rate_limit": "10/60s"}


def test_a_bad_database_is_one_line_without_the_password() -> None:
    with pytest.raises(IndexStoreError) as caught:
        IndexStore("postgresql+psycopg://user:s3cret@127.0.0.1:1/db")
    message = str(caught.value)
    assert "s3cret" not in message
    assert "\n" not in message
    assert "s3cret" not in redact_url("postgresql://u:s3cret@h/db")
