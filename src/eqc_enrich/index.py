"""The enrichment index: what we already know, in a table compatible with `enterprise.enrichment_index`.

SQLite by default, any SQLAlchemy URL otherwise (PostgreSQL in production). Reads are one bulk join per run;
writes are upserts in short transactions so that an interruption loses at most what was in flight.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from eqc_enrich._errors import IndexStoreError

DEFAULT_DB = "./eqc_enrich.db"
DB_ENV = "EQC_ENRICH_DB"
SCHEMA_ENV = "EQC_ENRICH_DB_SCHEMA"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One row of the enrichment index, as read or to be written."""

    lookup_key: str
    lookup_type: str
    company_id: str
    confidence: float
    source: str
    updated_at: datetime | None = None


@dataclass(slots=True)
class WriteBatch:
    """What one commit carries: learned mappings, names EQC does not know, raw payloads."""

    entries: list[IndexEntry] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    payloads: list[Payload] = field(default_factory=list)
    cleared_negatives: list[str] = field(default_factory=list)  # names EQC has found since

    def __len__(self) -> int:
        return len(self.entries) + len(self.negatives) + len(self.payloads) + len(self.cleared_negatives)

    def extend(self, other: WriteBatch) -> None:
        self.entries.extend(other.entries)
        self.negatives.extend(other.negatives)
        self.payloads.extend(other.payloads)
        self.cleared_negatives.extend(other.cleared_negatives)


@dataclass(frozen=True, slots=True)
class Payload:
    """Raw EQC answers for one company; None means "not fetched", never "erase"."""

    company_id: str
    search_key: str | None = None
    search_json: dict[str, Any] | None = None
    depart_json: dict[str, Any] | None = None
    labels_json: dict[str, Any] | None = None


def _tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table, sa.Table]:
    ts = sa.DateTime(timezone=True)
    index = sa.Table(
        "enrichment_index",
        metadata,
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("lookup_key", sa.String(255), nullable=False),
        sa.Column("lookup_type", sa.String(20), nullable=False),
        sa.Column("company_id", sa.String(100), nullable=False),
        sa.Column("confidence", sa.Numeric(3, 2), nullable=False),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("source_domain", sa.String(50)),
        sa.Column("source_table", sa.String(100)),
        sa.Column("hit_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_hit_at", ts),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.UniqueConstraint("lookup_key", "lookup_type", name="uq_enrichment_index_key_type"),
    )
    negative = sa.Table(
        "eqc_negative_cache",
        metadata,
        sa.Column("lookup_key", sa.String(255), primary_key=True),
        sa.Column("asked_at", ts, nullable=False),
    )
    payload = sa.Table(
        "eqc_payload",
        metadata,
        sa.Column("company_id", sa.String(100), primary_key=True),
        sa.Column("search_key", sa.String(255)),
        # none_as_null: "not fetched" must be SQL NULL, so that the upsert's COALESCE keeps what was stored
        sa.Column("search_json", sa.JSON(none_as_null=True)),
        sa.Column("depart_json", sa.JSON(none_as_null=True)),
        sa.Column("labels_json", sa.JSON(none_as_null=True)),
        sa.Column("fetched_at", ts, nullable=False),
    )
    journal = sa.Table(
        "run_journal",
        metadata,
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("input_path", sa.Text),
        sa.Column("input_hash", sa.String(64)),
        sa.Column("settings_json", sa.JSON),
        sa.Column("counters_json", sa.JSON),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", ts, nullable=False),
        sa.Column("finished_at", ts),
    )
    return index, negative, payload, journal


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


class IndexStore:
    """Reads and writes the index tables; safe to call from one worker thread at a time."""

    def __init__(self, db: str | Path | None = None, *, schema: str | None = None) -> None:
        """`schema` places the tables in a PostgreSQL schema, e.g. `enterprise` for the production index."""
        self.url = database_url(db)
        self._engine = _create_engine(self.url)
        schema = schema or os.environ.get(SCHEMA_ENV) or None
        metadata = sa.MetaData(schema=schema)
        self.index, self.negative, self.payload, self.journal_table = _tables(metadata)
        try:
            if schema is not None and self.dialect == "postgresql":
                with self._engine.begin() as conn:
                    conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
            metadata.create_all(self._engine)
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise IndexStoreError(f"cannot open the index at {redact_url(self.url)}: {_first_line(exc)}") from None

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    # -- reads ---------------------------------------------------------------------------------------------

    def lookup(
        self, wanted: Mapping[str, Iterable[str]], *, updated_since: datetime | None = None
    ) -> dict[tuple[str, str], IndexEntry]:
        """All entries for the wanted (lookup_type -> keys): one query per lookup type, whatever the count."""
        found: dict[tuple[str, str], IndexEntry] = {}
        t = self.index
        # confidence read as a float, not a Decimal, and no timestamps: row conversion dominates a big lookup
        confidence = sa.type_coerce(t.c.confidence, sa.Float)
        columns = [t.c.lookup_key, t.c.lookup_type, t.c.company_id, confidence, t.c.source]
        with self._connect() as conn:
            for lookup_type, keys in wanted.items():
                query = sa.select(*columns).where(t.c.lookup_type == lookup_type, self._one_of(t.c.lookup_key, keys))
                if updated_since is not None:
                    query = query.where(t.c.updated_at >= updated_since)
                for key, kind, company_id, score, source in conn.execute(query).all():
                    found[(key, kind)] = IndexEntry(key, kind, company_id, float(score), source)
        return found

    def known_negatives(self, names: Iterable[str], *, asked_since: datetime) -> set[str]:
        """Names EQC said it does not know, asked recently enough to trust."""
        t = self.negative
        query = sa.select(t.c.lookup_key).where(self._one_of(t.c.lookup_key, names), t.c.asked_at >= asked_since)
        with self._connect() as conn:
            return {row[0] for row in conn.execute(query).all()}

    def _one_of(self, column: sa.Column[str], values: Iterable[str]) -> sa.ColumnElement[bool]:
        """`column IN values` as ONE bound parameter (a JSON array for SQLite, an array for PostgreSQL).

        A plain IN list costs a bound parameter per key, and with 100,000 keys binding them costs more
        than the lookup itself.
        """
        keys = sorted(set(values))
        if self.dialect == "postgresql":
            return column == sa.any_(sa.bindparam(None, keys, type_=postgresql.ARRAY(sa.String)))
        listed = sa.select(sa.column("value", sa.String)).select_from(sa.func.json_each(json.dumps(keys)))
        return column.in_(listed.scalar_subquery())

    def count_entries(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.index)).scalar_one())

    # -- writes --------------------------------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        """Everything in one transaction: committed together or not at all."""
        if not len(batch):
            return
        now = utcnow()
        with self._begin() as conn:
            if batch.entries:
                self._upsert_entries(conn, batch.entries, now)
            if batch.negatives:
                self._upsert_negatives(conn, batch.negatives, now)
            if batch.payloads:
                self._upsert_payloads(conn, batch.payloads, now)
            if batch.cleared_negatives:
                key = self.negative.c.lookup_key
                conn.execute(sa.delete(self.negative).where(self._one_of(key, batch.cleared_negatives)))

    def record_hits(self, hits: Mapping[tuple[str, str], int]) -> None:
        """`hit_count += n` and `last_hit_at` for every entry used this run, in one statement.

        The hits travel as one JSON document (SQLite) or three arrays (PostgreSQL) joined in `UPDATE ... FROM`:
        an UPDATE per entry costs a round trip each, and a month uses tens of thousands of entries.
        """
        if not hits:
            return
        table = self._engine.dialect.identifier_preparer.format_table(self.index)
        if self.dialect == "postgresql":
            statement = sa.text(
                f"UPDATE {table} AS i SET hit_count = i.hit_count + h.n, last_hit_at = :now "
                "FROM unnest(CAST(:keys AS text[]), CAST(:kinds AS text[]), CAST(:counts AS integer[])) AS h(k, t, n) "
                "WHERE i.lookup_key = h.k AND i.lookup_type = h.t"
            )
            params: dict[str, Any] = {
                "keys": [key for key, _ in hits],
                "kinds": [kind for _, kind in hits],
                "counts": list(hits.values()),
            }
        else:
            statement = sa.text(
                f"UPDATE {table} SET hit_count = hit_count + h.n, last_hit_at = :now FROM "
                "(SELECT value ->> 0 AS k, value ->> 1 AS t, value ->> 2 AS n FROM json_each(:hits)) AS h "
                f"WHERE {table}.lookup_key = h.k AND {table}.lookup_type = h.t"
            )
            params = {"hits": json.dumps([[key, kind, n] for (key, kind), n in hits.items()], ensure_ascii=False)}
        statement = statement.bindparams(sa.bindparam("now", type_=sa.DateTime(timezone=True)))
        with self._begin() as conn:
            conn.execute(statement, {**params, "now": utcnow()})

    def _upsert_entries(self, conn: Connection, entries: Sequence[IndexEntry], now: datetime) -> None:
        rows = [
            {
                "lookup_key": e.lookup_key[:255],
                "lookup_type": e.lookup_type,
                "company_id": e.company_id,
                "confidence": Decimal(f"{e.confidence:.2f}"),
                "source": e.source,
                "hit_count": 0,
                "created_at": now,
                "updated_at": now,
            }
            for e in _strongest_per_key(entries)
        ]
        insert = self._insert(self.index)
        new, old = insert.excluded, self.index.c
        stronger = new.confidence > old.confidence
        statement = insert.on_conflict_do_update(
            index_elements=[old.lookup_key, old.lookup_type],
            set_={
                "company_id": sa.case((stronger, new.company_id), else_=old.company_id),
                "source": sa.case((stronger, new.source), else_=old.source),
                "confidence": sa.case((stronger, new.confidence), else_=old.confidence),
                "hit_count": old.hit_count + 1,
                "updated_at": new.updated_at,
            },
        )
        conn.execute(statement, rows)

    def _upsert_negatives(self, conn: Connection, names: Sequence[str], now: datetime) -> None:
        insert = self._insert(self.negative)
        statement = insert.on_conflict_do_update(
            index_elements=[self.negative.c.lookup_key], set_={"asked_at": insert.excluded.asked_at}
        )
        conn.execute(statement, [{"lookup_key": name[:255], "asked_at": now} for name in dict.fromkeys(names)])

    def _upsert_payloads(self, conn: Connection, payloads: Sequence[Payload], now: datetime) -> None:
        merged: dict[str, Payload] = {}
        for payload in payloads:
            merged[payload.company_id] = _merge_payload(merged.get(payload.company_id), payload)
        insert = self._insert(self.payload)
        new, old = insert.excluded, self.payload.c
        keep = {name: sa.func.coalesce(getattr(new, name), getattr(old, name)) for name in _PAYLOAD_FIELDS}
        statement = insert.on_conflict_do_update(
            index_elements=[old.company_id], set_={**keep, "fetched_at": new.fetched_at}
        )
        rows = [
            {"company_id": p.company_id, **{name: getattr(p, name) for name in _PAYLOAD_FIELDS}, "fetched_at": now}
            for p in merged.values()
        ]
        conn.execute(statement, rows)

    # -- run journal ---------------------------------------------------------------------------------------

    def journal_start(self, run_id: str, input_path: str, input_hash: str, settings: Mapping[str, Any]) -> None:
        with self._begin() as conn:
            conn.execute(
                sa.insert(self.journal_table).values(
                    run_id=run_id,
                    input_path=input_path,
                    input_hash=input_hash,
                    settings_json=_jsonable(settings),
                    status="running",
                    started_at=utcnow(),
                )
            )

    def journal_finish(self, run_id: str, status: str, counters: Mapping[str, Any]) -> None:
        with self._begin() as conn:
            conn.execute(
                sa.update(self.journal_table)
                .where(self.journal_table.c.run_id == run_id)
                .values(status=status, counters_json=_jsonable(counters), finished_at=utcnow())
            )

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        t = self.journal_table
        with self._connect() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.started_at.desc()).limit(limit)).mappings()
            return [dict(row) for row in rows]

    # -- plumbing ------------------------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT that knows ON CONFLICT (SQLite and PostgreSQL spell it alike)."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise IndexStoreError(f"index databases of kind {self.dialect!r} are not supported (use SQLite or PostgreSQL)")

    def _connect(self) -> _Guarded:
        return _Guarded(self._engine, self.url, begin=False)

    def _begin(self) -> _Guarded:
        return _Guarded(self._engine, self.url, begin=True)


_PAYLOAD_FIELDS = ("search_key", "search_json", "depart_json", "labels_json")


class _Guarded:
    """A connection (or transaction) whose database errors become one-line `IndexStoreError`s."""

    def __init__(self, engine: Engine, url: str, *, begin: bool) -> None:
        self._engine, self._url, self._begin = engine, url, begin
        self._context: Any = None

    def __enter__(self) -> Connection:
        try:
            self._context = self._engine.begin() if self._begin else self._engine.connect()
            conn: Connection = self._context.__enter__()
        except SQLAlchemyError as exc:
            raise IndexStoreError(f"index at {redact_url(self._url)}: {_first_line(exc)}") from None
        return conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._context.__exit__(exc_type, exc, tb)
        except SQLAlchemyError as error:
            raise IndexStoreError(f"index at {redact_url(self._url)}: {_first_line(error)}") from None
        if isinstance(exc, SQLAlchemyError):
            raise IndexStoreError(f"index at {redact_url(self._url)}: {_first_line(exc)}") from None


def _create_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            # 5 s of busy wait covers any other writer's short transaction; a lock held longer is an outage,
            # which the writer reports and rides out (side file) rather than blocking for minutes.
            engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})
            sa.event.listen(engine, "connect", _tune_sqlite)
            return engine
        return sa.create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise IndexStoreError(f"cannot use index database {redact_url(url)}: {_first_line(exc)}") from None


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets a reader (a `plan` beside a running `run`) proceed while answers are being committed."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _strongest_per_key(entries: Sequence[IndexEntry]) -> list[IndexEntry]:
    """One row per (key, type), the most confident: a single upsert may not touch a row twice."""
    best: dict[tuple[str, str], IndexEntry] = {}
    for entry in entries:
        key = (entry.lookup_key[:255], entry.lookup_type)
        current = best.get(key)
        if current is None or entry.confidence > current.confidence:
            best[key] = entry
    return list(best.values())


def _merge_payload(old: Payload | None, new: Payload) -> Payload:
    if old is None:
        return new
    return Payload(
        company_id=new.company_id,
        search_key=new.search_key or old.search_key,
        search_json=new.search_json or old.search_json,
        depart_json=new.depart_json or old.depart_json,
        labels_json=new.labels_json or old.labels_json,
    )


def _jsonable(value: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(value, default=str))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
