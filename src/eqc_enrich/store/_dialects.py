"""What differs between SQLite and PostgreSQL, decided once per database: engine set-up, upsert, key lists, clock.

Everything else in the store is dialect-neutral SQLAlchemy Core; no other module asks which database it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

__all__ = ["WRITE", "Dialect", "PostgresDialect", "SQLiteDialect", "dialect_for"]

WRITE = "eqc_enrich_write"
"""Execution option marking a connection that will write (SQLite then takes the write lock when it begins)."""

LOCK_TIMEOUT_S = 5
"""How long a statement waits for another's lock. Other writers' transactions are short (a commit of answers,
a quota slot), so 5 s covers them; a lock held longer is an outage that the EQC stage rides out (it pauses
and keeps answers in a side file), better noticed in seconds than after a long block."""
"""How long a statement waits for a lock another process holds before it fails as busy (both databases)."""


class Dialect:
    """The dialect strategy: the few places where SQLite and PostgreSQL need different SQL or set-up."""

    name: ClassVar[str]
    creates_on_open: ClassVar[bool]
    """Whether `IndexStore` creates missing tables when it opens (only for a file the user owns)."""

    def create_engine(self, url: str) -> Engine:
        raise NotImplementedError

    def schema(self, requested: str | None) -> str | None:
        return requested

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT (both spell it alike)."""
        raise NotImplementedError

    def one_of(self, column: sa.ColumnElement[str], values: Iterable[str]) -> sa.ColumnElement[bool]:
        """`column IN values` as ONE bound parameter: a plain IN list costs a parameter per key, and binding
        100,000 of them costs more than the lookup itself."""
        raise NotImplementedError

    def clock(self, conn: Connection) -> float:
        """Seconds since the epoch on the clock every process sharing this database agrees on."""
        raise NotImplementedError


class SQLiteDialect(Dialect):
    """A local file: the host clock is shared by every process using it; writers take the lock at BEGIN."""

    name = "sqlite"
    creates_on_open = True

    def create_engine(self, url: str) -> Engine:
        args: dict[str, Any] = {"check_same_thread": False}
        if "timeout" not in sa.make_url(url).query:  # `sqlite:///f.db?timeout=2` sets another bound
            args["timeout"] = LOCK_TIMEOUT_S
        parsed = sa.make_url(url)
        in_memory = parsed.database in (None, "", ":memory:")
        # one connection for an in-memory index (each new one would be another, empty database)
        engine = sa.create_engine(url, connect_args=args, **({"poolclass": StaticPool} if in_memory else {}))
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine

    def schema(self, requested: str | None) -> str | None:
        return None  # a SQLite file has no schemas; `--db-schema` only places PostgreSQL tables

    def insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table)

    def one_of(self, column: sa.ColumnElement[str], values: Iterable[str]) -> sa.ColumnElement[bool]:
        listed = sa.select(sa.column("value", sa.String)).select_from(
            sa.func.json_each(json.dumps(sorted(set(values)), ensure_ascii=False))
        )
        return column.in_(listed.scalar_subquery())

    def clock(self, conn: Connection) -> float:
        return time.time()


class PostgresDialect(Dialect):
    """A shared server: its clock is the one every client agrees on; lock waits are bounded."""

    name = "postgresql"
    creates_on_open = False

    def create_engine(self, url: str) -> Engine:
        engine = sa.create_engine(url, pool_pre_ping=True)
        if "lock_timeout" not in str(sa.make_url(url).query.get("options", "")):  # `?options=-c lock_timeout=2s`
            sa.event.listen(engine, "connect", _postgres_connect)
        return engine

    def insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects import postgresql  # loaded by a PostgreSQL index only: a SQLite run starts faster

        return postgresql.insert(table)

    def one_of(self, column: sa.ColumnElement[str], values: Iterable[str]) -> sa.ColumnElement[bool]:
        keys = sorted(set(values))
        from sqlalchemy.dialects import postgresql

        return column == sa.any_(sa.bindparam(None, keys, type_=postgresql.ARRAY(sa.String)))

    def clock(self, conn: Connection) -> float:
        # clock_timestamp(), not now(): now() is the start of the transaction, which may have waited for a lock
        return float(conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())


_DIALECTS: dict[str, type[Dialect]] = {"sqlite": SQLiteDialect, "postgresql": PostgresDialect}


def dialect_for(url: sa.URL) -> Dialect | None:
    """The strategy for a URL's backend, or None when the store does not support it."""
    kind = _DIALECTS.get(url.get_backend_name())
    return kind() if kind is not None else None


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Transactions under our control (the driver would open them lazily, too late to lock); WAL lets a
    reader (a `plan` beside a running `run`) proceed while answers are being committed."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """A writer takes the file's write lock at BEGIN: one that read first and then tried to write would fail
    at once if another process committed in between, instead of waiting its turn."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


def _postgres_connect(dbapi_connection: Any, _record: Any) -> None:
    """A lock held by a stuck process becomes a busy error after a bound, not a hang."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
    cursor.close()
    dbapi_connection.commit()
