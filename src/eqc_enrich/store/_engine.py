"""The connection to the index database: URLs, the engine, transactions, and database errors as one line.

Every database error leaves the store through `map_error`, one table of rules, so a caller sees an
`IndexStoreError` (or its transient subclasses `IndexBusyError`, `IndexConnectionError`) and never a
driver's exception or a password.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from eqc_enrich._errors import IndexBusyError, IndexConnectionError, IndexStoreError
from eqc_enrich.store._dialects import WRITE, Dialect, dialect_for

__all__ = ["DB_ENV", "DEFAULT_DB", "SCHEMA_ENV", "Database", "database_url", "map_error", "redact_url"]

DEFAULT_DB = "./eqc_enrich.db"
DB_ENV = "EQC_ENRICH_DB"
SCHEMA_ENV = "EQC_ENRICH_DB_SCHEMA"

INIT_HINT = "eqc-enrich index init --print-sql"


def database_url(db: str | Path | None) -> str:
    """A SQLAlchemy URL from `--db`: a URL as it is, a path as a SQLite file; default from `EQC_ENRICH_DB`."""
    text = str(db) if db else os.environ.get(DB_ENV, DEFAULT_DB)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser()}"


def redact_url(url: str) -> str:
    """The URL with any password hidden, for messages and summaries."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparseable database URL>"


@dataclass(frozen=True, slots=True)
class _Rule:
    """Errors with one of these SQLSTATE prefixes (PostgreSQL), SQLite error names or phrases map to `error`."""

    error: type[IndexStoreError]
    sqlstates: tuple[str, ...] = ()
    sqlite_names: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    hint: str = ""


_RULES: tuple[_Rule, ...] = (
    _Rule(
        IndexBusyError,
        sqlstates=("55P03", "40001", "40P01"),  # lock_not_available, serialization_failure, deadlock_detected
        sqlite_names=("SQLITE_BUSY", "SQLITE_LOCKED"),
        phrases=("database is locked", "database table is locked", "database is busy"),
        hint="another process holds the lock; try again",
    ),
    _Rule(
        IndexConnectionError,
        sqlstates=("08", "57P01", "57P02", "57P03"),  # connection exceptions, server shutting down
        phrases=(
            "server closed the connection",
            "connection refused",
            "could not connect",
            "connection is closed",
            "terminating connection",
            "connection timeout",
            "connection failed",
            "could not translate host",
        ),
    ),
    _Rule(
        IndexStoreError,
        sqlstates=("42501",),  # insufficient_privilege
        hint=f"the database role lacks a privilege: the owner grants it with the SQL of `{INIT_HINT}`",
    ),
    _Rule(
        IndexStoreError,
        sqlstates=("42P01", "3F000"),  # undefined_table, invalid_schema_name
        hint="a table is missing: the database owner runs `eqc-enrich index init` once",
    ),
)


def map_error(exc: BaseException, url: str) -> IndexStoreError:
    """The one-line `IndexStoreError` (or subclass) for a database error, with the password hidden."""
    text = _first_line(exc)
    password = _password(url)
    if password:
        text = text.replace(password, "***")
    rule = _matching_rule(exc, text)
    message = f"index at {redact_url(url)}: {text}"
    if rule is None:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return IndexConnectionError(message)
        return IndexStoreError(message)
    return rule.error(f"{message} ({rule.hint})" if rule.hint else message)


def _matching_rule(exc: BaseException, text: str) -> _Rule | None:
    orig = getattr(exc, "orig", None)
    sqlstate = str(getattr(orig, "sqlstate", None) or "")
    sqlite_name = str(getattr(orig, "sqlite_errorname", None) or "")
    lowered = text.lower()
    for rule in _RULES:
        if (
            (sqlstate and sqlstate.startswith(rule.sqlstates))
            or (sqlite_name and sqlite_name in rule.sqlite_names)
            or any(phrase in lowered for phrase in rule.phrases)
        ):
            return rule
    return None


def _password(url: str) -> str | None:
    try:
        password = sa.make_url(url).password
    except (SQLAlchemyError, ValueError):
        return None
    return str(password) if password else None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


class Database:
    """One engine, its dialect strategy, and transactions whose errors come out mapped.

    Table objects take an optional open connection: given one they work inside it (so that several of them
    commit together in `IndexStore.transaction()`), otherwise they open and commit their own.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = sa.make_url(url)
        except (SQLAlchemyError, ValueError) as exc:
            raise IndexStoreError(f"cannot use index database {redact_url(url)}: {_first_line(exc)}") from exc
        dialect = dialect_for(parsed)
        if dialect is None:
            raise IndexStoreError(
                f"index databases of kind {parsed.get_backend_name()!r} are not supported (use SQLite or PostgreSQL)"
            )
        self.dialect: Dialect = dialect
        try:
            self.engine = dialect.create_engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise IndexStoreError(f"cannot use index database {redact_url(url)}: {_first_line(exc)}") from exc
        self._writer = self.engine.execution_options(**{WRITE: True})
        # SQLite has one write lock per file and hands it out by busy-wait with growing sleeps, which starves
        # a waiter when this process's own threads (commits, quota slots, claims) write many times a second:
        # they queue here instead, and only other processes meet the busy wait.
        self._local_writes = threading.Lock() if dialect.name == "sqlite" else contextlib.nullcontext()

    @contextmanager
    def begin(self, conn: Connection | None = None) -> Iterator[Connection]:
        """A write transaction, committed on leaving; or `conn` as it is, when the caller owns the transaction."""
        if conn is not None:
            yield conn
            return
        try:
            with self._local_writes, self._writer.begin() as opened:
                yield opened
        except SQLAlchemyError as exc:
            raise map_error(exc, self.url) from exc

    @contextmanager
    def read(self, conn: Connection | None = None) -> Iterator[Connection]:
        """A connection for reading (SQLite takes no write lock for it)."""
        if conn is not None:
            yield conn
            return
        try:
            with self.engine.connect() as opened:
                yield opened
        except SQLAlchemyError as exc:
            raise map_error(exc, self.url) from exc

    def clock(self, conn: Connection) -> float:
        try:
            return self.dialect.clock(conn)
        except SQLAlchemyError as exc:
            raise map_error(exc, self.url) from exc

    def close(self) -> None:
        self.engine.dispose()
