"""Database failures as a caller meets them: one line, no password, and `transient` where waiting helps.

Every case is produced for real: a lock another connection holds, a backend killed mid-transaction, a
database without the tool's tables.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from eqc_enrich import IndexBusyError, IndexConnectionError, IndexStoreError
from eqc_enrich.store import IndexStore, WriteBatch, init_index

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def test_a_sqlite_file_locked_by_another_process_is_busy_and_transient(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    IndexStore(path).close()
    store = IndexStore(f"sqlite:///{path}?timeout=0.05")  # wait 50 ms for the lock, not 30 s
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the file's write lock
            with pytest.raises(IndexBusyError) as caught:
                store.write(WriteBatch(negatives=["甲"]))
            with pytest.raises(IndexBusyError):
                store.quota.reserve("k", "a", lambda sends, paused, now: now, recent=1, keep_s=60.0)
            assert store.known_negatives(["甲"], asked_since=EPOCH) == set()  # reading still works
            other.execute("ROLLBACK")
        store.write(WriteBatch(negatives=["甲"]))  # and once the lock is gone, the same call succeeds
    finally:
        store.close()
    assert caught.value.transient
    assert "database is locked" in one_line(caught.value)


def test_sqlite_without_create_names_index_init(tmp_path: Path) -> None:
    with pytest.raises(IndexStoreError) as caught:
        IndexStore(tmp_path / "empty.db", create=False)
    message = one_line(caught.value)
    assert "eqc-enrich index init --db sqlite:///" in message
    assert not caught.value.transient


def test_an_unsupported_database_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IndexStoreError, match="not supported"):
        IndexStore("mysql://u:p@127.0.0.1/db")


@pytest.mark.postgres
def test_postgres_without_the_tools_tables_issues_no_ddl_and_names_index_init(pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    with pytest.raises(IndexStoreError) as caught:
        IndexStore(url, schema=schema)
    message = one_line(caught.value)
    assert f"eqc-enrich index init --db {url} --db-schema {schema}" in message
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert schema not in sa.inspect(conn).get_schema_names()  # opening created nothing
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_postgres_lock_past_its_timeout_is_busy(pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    init_index(url, schema=schema)
    store = IndexStore(f"{url}?options=-c%20lock_timeout%3D100ms", schema=schema)
    engine = sa.create_engine(url)
    try:
        store.quota.pause("k", 0.0)  # the quota's row exists
        with engine.begin() as other:
            other.execute(sa.text(f'SELECT * FROM "{schema}".eqc_quota FOR UPDATE'))  # another reserver holds it
            with pytest.raises(IndexBusyError) as caught:
                store.quota.reserve("k", "a", lambda sends, paused, now: now, recent=1, keep_s=60.0)
        store.quota.reserve("k", "a", lambda sends, paused, now: now, recent=1, keep_s=60.0)
    finally:
        store.close()
        engine.dispose()
    assert caught.value.transient
    assert "lock" in one_line(caught.value)


def kill_mid_transaction(store: IndexStore, admin: sa.Engine) -> None:
    """A transaction whose server process dies (a restart, a DBA) before its next statement."""
    with store.transaction() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with admin.begin() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        store.entries.record_hits([("甲", "customer_name")], conn=conn)


@pytest.mark.postgres
def test_a_connection_lost_mid_transaction_is_a_connection_error(pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    init_index(url, schema=schema)
    store = IndexStore(url, schema=schema)
    engine = sa.create_engine(url)
    try:
        with pytest.raises(IndexConnectionError) as caught:
            kill_mid_transaction(store, engine)
        assert store.count_entries() == 0  # the pool replaced the dead connection
    finally:
        store.close()
        engine.dispose()
    assert caught.value.transient
    one_line(caught.value)
