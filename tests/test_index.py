"""The enrichment index on a real SQLite file and, where the suite has one, a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from eqc_enrich import IndexConnectionError, IndexStoreError
from eqc_enrich.store import IndexEntry, IndexStore, Payload, WriteBatch, redact_url

if TYPE_CHECKING:
    from tests.conftest import IndexDb

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(index_db: IndexDb) -> Iterator[IndexStore]:
    opened = index_db.open()
    yield opened
    opened.close()


def entry(
    company_id: str, confidence: float, key: str = "示例公司", source: str = "eqc_api", domain: str | None = None
) -> IndexEntry:
    return IndexEntry(key, "customer_name", company_id, confidence, source, source_domain=domain)


def row(store: IndexStore, key: str = "示例公司", kind: str = "customer_name") -> dict[str, Any]:
    t = store.entries.table
    with store._engine.connect() as conn:
        found = conn.execute(sa.select(t).where(t.c.lookup_key == key, t.c.lookup_type == kind)).mappings().one()
    return dict(found)


def test_upsert_keeps_the_stronger_answer_and_counts_hits(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[entry("A", 0.80, domain="eqc_sync_lookup")]))
    fresh = row(store)
    assert (fresh["hit_count"], fresh["source_domain"]) == (0, "eqc_sync_lookup")
    assert fresh["last_hit_at"] is not None  # a new row is stamped as used
    store.write(WriteBatch(entries=[entry("B", 0.80, source="manual", domain="eqc_gui_manual")]))  # equal
    first = row(store)
    assert (first["company_id"], float(first["confidence"]), first["source"]) == ("A", 0.80, "eqc_api")
    assert first["source_domain"] == "eqc_sync_lookup"  # provenance travels with the id
    store.write(WriteBatch(entries=[entry("C", 0.95, source="manual", domain="eqc_gui_manual")]))
    store.write(WriteBatch(entries=[entry("D", 0.60)]))
    final = row(store)
    assert (final["company_id"], float(final["confidence"]), final["source"]) == ("C", 0.95, "manual")
    assert final["source_domain"] == "eqc_gui_manual"
    assert final["hit_count"] == 3  # every upsert after the first bumps it
    assert final["updated_at"] >= first["updated_at"]
    assert store.count_entries() == 1


def test_a_stronger_answer_without_provenance_clears_the_old_provenance(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[entry("A", 0.80, domain="eqc_sync_lookup")]))
    store.write(WriteBatch(entries=[IndexEntry("示例公司", "customer_name", "B", 1.0, "backflow")]))
    assert (row(store)["company_id"], row(store)["source_domain"]) == ("B", None)


def test_one_batch_may_name_a_key_twice(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[entry("A", 0.7), entry("B", 0.9), entry("C", 0.8)]))
    assert row(store)["company_id"] == "B"
    store.write(WriteBatch(entries=[entry("D", 0.9, key="另一公司"), entry("E", 0.9, key="另一公司")]))
    assert row(store, "另一公司")["company_id"] == "D"  # of equals the first, as across batches (equal keeps)


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
        saved = conn.execute(sa.select(store.payloads.table)).mappings().one()
    assert saved["search_json"] == {"companyId": "1"}
    assert saved["depart_json"] == {"businessInfodto": {"x": 1}}
    assert saved["labels_json"] == {"labels": []}
    assert saved["search_key"] == "示例"


def test_record_hits_counts_one_use_per_key_per_call(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[entry("A", 1.0), IndexEntry("P1", "plan_code", "A", 1.0, "yaml")]))
    store.record_hits({("示例公司", "customer_name"), ("不存在", "customer_name"), ("P1", "plan_code")})
    store.record_hits([("示例公司", "customer_name"), ("示例公司", "customer_name")])  # the same use, named twice
    used = row(store)
    assert used["hit_count"] == 2
    assert used["last_hit_at"] is not None
    assert row(store, "P1", "plan_code")["hit_count"] == 1


def test_run_journal(store: IndexStore) -> None:
    store.journal_start("r1", "month.xlsx", "ab" * 32, {"rate_limit": "10/60s"})
    store.journal_finish("r1", "interrupted", {"rows": 3})
    (run,) = store.recent_runs()
    assert run["status"] == "interrupted"
    assert run["counters_json"] == {"rows": 3}
    assert run["settings_json"] == {"rate_limit": "10/60s"}


def test_answers_and_their_claims_commit_together(store: IndexStore) -> None:
    assert store.claims.claim(["示例公司", "乙公司"], "run-1", 60.0) == {"示例公司", "乙公司"}
    store.write(WriteBatch(entries=[entry("A", 1.0)], released=["示例公司"]), owner="run-1")
    assert store.claims.held_by_others(["示例公司", "乙公司"], "run-2") == {"乙公司"}
    with pytest.raises(ValueError, match="owner"):
        store.write(WriteBatch(released=["乙公司"]))


def test_a_failed_commit_keeps_the_claims_and_stores_nothing(store: IndexStore) -> None:
    store.claims.claim(["示例公司"], "run-1", 60.0)
    too_long = "x" * 200  # the source column holds 50 characters: PostgreSQL refuses the row
    batch = WriteBatch(entries=[entry("A", 1.0), entry("B", 1.0, key="乙", source=too_long)], released=["示例公司"])
    if store.dialect == "sqlite":  # SQLite stores any length: make the batch fail on a NOT NULL instead
        batch.entries.append(IndexEntry("丙", "customer_name", None, 1.0, "x"))  # type: ignore[arg-type]
    with pytest.raises(IndexStoreError):
        store.write(batch, owner="run-1")
    assert store.count_entries() == 0
    assert store.claims.held_by_others(["示例公司"], "run-2") == {"示例公司"}


def test_a_bad_database_is_one_line_without_the_password() -> None:
    with pytest.raises(IndexConnectionError) as caught:
        IndexStore("postgresql+psycopg://user:s3cret@127.0.0.1:1/db")
    message = str(caught.value)
    assert "s3cret" not in message
    assert "\n" not in message
    assert caught.value.transient
    assert "s3cret" not in redact_url("postgresql://u:s3cret@h/db")


# --- each table inside the caller's transaction, and its boundaries (found untested by mutation testing) ------


class Rollback(Exception):
    pass


def every_call_in_one_transaction(store: IndexStore, stamp: datetime) -> None:
    with store.transaction() as conn:
        store.negatives.add(["丙"], now=stamp, conn=conn)
        assert store.negatives.known(["丙"], asked_since=EPOCH, conn=conn) == {"丙"}
        assert store.negatives.count(conn=conn) == 1
        assert store.negatives.prune(asked_before=stamp + timedelta(days=1), conn=conn) == 1
        store.negatives.add(["丁"], conn=conn)
        store.negatives.clear(["丁"], conn=conn)
        assert store.negatives.count(conn=conn) == 0
        store.payloads.upsert([Payload("C1", "甲")], conn=conn)
        assert store.payloads.count(conn=conn) == 1
        store.entries.upsert([entry("C", 0.9, key="戊")], conn=conn)
        assert store.entries.count(conn=conn) == 3
        assert store.entries.record_hits([("甲", "customer_name")], conn=conn) == 1
        assert [r["lookup_key"] for r in store.entries.all_rows(conn=conn)] == ["乙", "戊", "甲"]
        assert store.entries.tallies(conn=conn)["by_type"] == {"customer_name": 3}
        raise Rollback


def test_every_table_call_takes_part_in_the_callers_transaction(store: IndexStore) -> None:
    """Inside `transaction()`, writes are seen by reads on the same connection, and a failure takes them all
    back: nothing a call did went through a connection of its own."""
    stamp = datetime(2025, 1, 1, tzinfo=UTC)
    store.write(WriteBatch(entries=[entry("A", 0.9, key="甲"), entry("B", 0.9, key="乙")]))
    with pytest.raises(Rollback):
        every_call_in_one_transaction(store, stamp)
    assert store.negatives.count() == 0
    assert store.payloads.count() == 0
    assert store.entries.count() == 2
    assert row(store, "甲")["hit_count"] == 0


def test_negative_cut_offs_are_inclusive_for_known_and_exclusive_for_count_and_prune(store: IndexStore) -> None:
    stamp = datetime(2025, 1, 1, tzinfo=UTC)
    store.negatives.add(["甲", "乙"], now=stamp)
    assert store.negatives.known(["甲"], asked_since=stamp) == {"甲"}  # asked exactly at the cut-off: trusted
    assert store.negatives.known(["甲"], asked_since=stamp + timedelta(seconds=1)) == set()
    assert store.negatives.count(asked_before=stamp) == 0
    assert store.negatives.count(asked_before=stamp + timedelta(seconds=1)) == 2
    assert store.negatives.prune(asked_before=stamp) == 0
    assert store.negatives.count() == 2


def test_record_hits_counts_the_rows_it_touched_per_type_and_stamps_them(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[entry("A", 0.9, key="甲"), IndexEntry("甲", "former_name", "A", 0.8, "eqc_api")]))
    assert store.entries.record_hits([]) == 0
    later = datetime(2030, 1, 1, tzinfo=UTC)
    touched = store.entries.record_hits(
        [("甲", "customer_name"), ("甲", "customer_name"), ("乙", "customer_name"), ("甲", "former_name")], now=later
    )
    assert touched == 2  # one row per (key, type) however often it was named; 乙 has none
    assert row(store, "甲")["hit_count"] == 1
    assert row(store, "甲", "former_name")["hit_count"] == 1
    assert row(store, "甲")["last_hit_at"].replace(tzinfo=UTC) == later
    assert store.entries.record_hits([("甲", "plan_code")]) == 0  # the type is part of the match


def test_tallies_band_confidence_and_list_the_most_common_first(store: IndexStore) -> None:
    store.write(
        WriteBatch(
            entries=[
                entry("A", 1.0, key="甲"), entry("B", 0.95, key="乙"), entry("C", 0.85, key="丙"),
                entry("D", 0.65, key="丁", source="manual"), entry("E", 0.5, key="戊", source="manual"),
                entry("F", 0.9, key="己", source="backflow"),
            ]
        )
    )  # fmt: skip
    tallies = store.entries.tallies()
    assert list(tallies["by_confidence"].items()) == [  # most first, ties in name order
        ("0.90-0.99", 2), ("0.60-0.79", 1), ("0.80-0.89", 1), ("1.00", 1), ("<0.60", 1)
    ]  # fmt: skip
    assert list(tallies["by_source"].items()) == [("eqc_api", 3), ("manual", 2), ("backflow", 1)]


def test_all_rows_leave_out_the_surrogate_id_and_come_in_key_order(store: IndexStore) -> None:
    store.write(WriteBatch(entries=[entry("B", 0.9, key="乙"), IndexEntry("甲", "former_name", "A", 0.8, "eqc_api"),
                                    entry("A", 0.9, key="甲")]))  # fmt: skip
    rows = store.entries.all_rows()
    assert "id" not in rows[0]
    assert [(r["lookup_type"], r["lookup_key"]) for r in rows] == [
        ("customer_name", "乙"),
        ("customer_name", "甲"),
        ("former_name", "甲"),
    ]


def test_all_rows_sort_by_type_before_key(store: IndexStore) -> None:
    """Key order and type order disagree here (乙 sorts before 甲): the type comes first."""
    store.write(WriteBatch(entries=[entry("A", 0.9, key="甲"), IndexEntry("乙", "former_name", "B", 0.8, "eqc_api"),
                                    entry("B", 0.9, key="乙")]))  # fmt: skip
    assert [(r["lookup_type"], r["lookup_key"]) for r in store.entries.all_rows()] == [
        ("customer_name", "乙"), ("customer_name", "甲"), ("former_name", "乙")
    ]  # fmt: skip


def test_a_payload_answered_again_is_stamped_again(store: IndexStore) -> None:
    first, later = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    store.payloads.upsert([Payload("C1", "甲")], now=first)
    store.payloads.upsert([Payload("C1", None, {"s": 1})], now=later)
    with store._engine.connect() as conn:
        stamps = conn.execute(sa.select(store.payloads.table.c.fetched_at)).scalars().all()
    assert [stamp.replace(tzinfo=UTC) for stamp in stamps] == [later]
