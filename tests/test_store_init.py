"""Creating the tables: a SQLite file is set up (or brought up to date) when opened, `index init` does it
explicitly and says what it did, and nothing that exists is altered."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from eqc_enrich import IndexStoreError
from eqc_enrich.cli import main
from eqc_enrich.store import IndexStore, init_index
from eqc_enrich.store._schema import define

OLD_SCHEMA = """
CREATE TABLE enrichment_index (
    id INTEGER NOT NULL, lookup_key VARCHAR(255) NOT NULL, lookup_type VARCHAR(20) NOT NULL,
    company_id VARCHAR(100) NOT NULL, confidence NUMERIC(3, 2) NOT NULL, source VARCHAR(50) NOT NULL,
    source_domain VARCHAR(50), source_table VARCHAR(100), hit_count INTEGER DEFAULT '0' NOT NULL,
    last_hit_at DATETIME, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL,
    PRIMARY KEY (id), CONSTRAINT uq_enrichment_index_key_type UNIQUE (lookup_key, lookup_type)
);
CREATE TABLE eqc_negative_cache (
    lookup_key VARCHAR(255) NOT NULL, asked_at DATETIME NOT NULL, PRIMARY KEY (lookup_key)
);
CREATE TABLE eqc_payload (
    company_id VARCHAR(100) NOT NULL, search_key VARCHAR(255), search_json JSON, depart_json JSON,
    labels_json JSON, fetched_at DATETIME NOT NULL, PRIMARY KEY (company_id)
);
CREATE TABLE run_journal (
    run_id VARCHAR(36) NOT NULL, input_path TEXT, input_hash VARCHAR(64), settings_json JSON, counters_json JSON,
    status VARCHAR(20) NOT NULL, started_at DATETIME NOT NULL, finished_at DATETIME, PRIMARY KEY (run_id)
);
INSERT INTO enrichment_index (lookup_key, lookup_type, company_id, confidence, source, hit_count, created_at,
    updated_at) VALUES ('甲公司', 'customer_name', '600000001', 0.9, 'eqc_api', 7, '2025-01-01 00:00:00.000000',
    '2025-01-01 00:00:00.000000');
"""
"""An index file as the previous version of the tool left it: no quota or claim tables, fewer indexes."""


def old_index(path: Path) -> Path:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(OLD_SCHEMA)
    return path


def table_names(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_sqlite_file_of_the_previous_version_gains_the_new_tables_and_keeps_its_rows(tmp_path: Path) -> None:
    path = old_index(tmp_path / "index.db")
    with pytest.raises(IndexStoreError, match="lacks table\\(s\\) base_info, eqc_quota, eqc_quota_slot, eqc_claim"):
        IndexStore(path, create=False)
    store = IndexStore(path, schema="enterprise")  # a schema means nothing to a SQLite file
    try:
        (entry,) = store.lookup({"customer_name": ["甲公司"]}).values()
        assert (entry.company_id, entry.confidence) == ("600000001", 0.9)
        assert store.claims.claim(["甲公司"], "run-1", 60.0) == {"甲公司"}
    finally:
        store.close()
    assert {"eqc_quota", "eqc_quota_slot", "eqc_claim"} <= table_names(path)
    with closing(sqlite3.connect(path)) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert conn.execute("SELECT hit_count FROM enrichment_index").fetchone() == (7,)
    assert {"ix_enrichment_index_type_key", "ix_enrichment_index_source", "ix_eqc_claim_owner"} <= indexes


def test_index_init_says_what_it_created_and_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = old_index(tmp_path / "index.db")
    report = init_index(path)
    assert report.created == [
        "base_info", "eqc_quota", "eqc_quota_slot", "eqc_claim", "eqc_unsettled", "eqc_worker_log",
        "eqc_review_decision", "eqc_review_undo", "eqc_quota_rate", "eqc_former_name_conflict", "eqc_match_shadow",
    ]  # fmt: skip
    assert report.present == ["enrichment_index", "eqc_negative_cache", "eqc_payload", "run_journal"]
    with pytest.raises(SystemExit) as done:
        main(["index", "init", "--db", str(path)])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip().endswith("created nothing (every table was there)")
    fresh = tmp_path / "fresh.db"
    with pytest.raises(SystemExit):
        main(["index", "init", "--db", str(fresh)])
    assert "created enrichment_index, base_info, eqc_negative_cache" in capsys.readouterr().out
    assert table_names(fresh) == {table.name for table in define(None).all}


def test_opening_a_complete_index_takes_no_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    IndexStore(path).close()
    with closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")  # a run committing answers holds the write lock
        store = IndexStore(f"sqlite:///{path}?timeout=0.05")  # would fail as busy if opening wanted to write
        try:
            assert store.count_entries() == 0
        finally:
            store.close()
        writer.execute("ROLLBACK")
