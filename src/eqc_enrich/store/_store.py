"""The front object: one database, its tables as small objects, and transactions that span them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from eqc_enrich._errors import IndexStoreError
from eqc_enrich.store._base_info import BaseInfo
from eqc_enrich.store._cache import Negatives, Payloads
from eqc_enrich.store._claims import Claims
from eqc_enrich.store._conflicts import FOUND_BY_INDEX, FormerNameConflicts
from eqc_enrich.store._decisions import ReviewDecisions
from eqc_enrich.store._engine import INIT_HINT, SCHEMA_ENV, Database, database_url, redact_url
from eqc_enrich.store._entries import Entries
from eqc_enrich.store._journal import Journal
from eqc_enrich.store._model import IndexEntry, WriteBatch, utcnow
from eqc_enrich.store._quota import QuotaLedger
from eqc_enrich.store._schema import OPTIONAL_TABLES, Tables, define, missing_ddl, missing_tables
from eqc_enrich.store._shadow import MatchShadow, base_info_names, name_candidates
from eqc_enrich.store._unsettled import UnsettledNames
from eqc_enrich.store._worker import LegacyRequests, WorkerLog

__all__ = ["IndexStore", "InitReport", "init_index"]


class IndexStore:
    """The enrichment index and the tables beside it: `enrichment_index` and `base_info` compatible with
    `enterprise.enrichment_index` and `enterprise.base_info`, the negative cache, raw payloads, the run journal,
    the shared quota, the claims, the names runs left unsettled, the review page's decisions, and the former
    names that point at two companies.

    `db` is a SQLite path or a SQLAlchemy URL (default `EQC_ENRICH_DB`, else `./eqc_enrich.db`); `schema`
    places the tables in a PostgreSQL schema (default `EQC_ENRICH_DB_SCHEMA`; ignored for SQLite).

    `create` says whether missing tables are created on open. It defaults to True for a SQLite file (the
    user's own embedded index) and to False for PostgreSQL, where a run issues no DDL at all: the tables
    come from `eqc-enrich index init` (or the SQL of `--print-sql`, run by a DBA), and opening a database
    without them fails with one line saying so.

    Reads and writes are short transactions; each table object (`entries`, `base_info`, `negatives`,
    `payloads`, `journal`, `quota`, `claims`, `unsettled`, `decisions`, `conflicts`) takes `conn=` to work
    inside `transaction()`.
    """

    def __init__(self, db: str | Path | None = None, *, schema: str | None = None, create: bool | None = None) -> None:
        self.url = database_url(db)
        self._db = Database(self.url)
        self._engine = self._db.engine
        self.schema = self._db.dialect.schema(schema or os.environ.get(SCHEMA_ENV) or None)
        self.tables: Tables = define(self.schema)
        t = self.tables
        self.entries = Entries(self._db, t.index)
        self.base_info = BaseInfo(self._db, t.base_info)
        self.conflicts = FormerNameConflicts(self._db, t.conflicts, t.index)
        self.negatives = Negatives(self._db, t.negatives)
        self.payloads = Payloads(self._db, t.payloads)
        self.journal = Journal(self._db, t.journal)
        self.quota = QuotaLedger(self._db, t.quota, t.quota_slots, t.quota_rates)
        self.claims = Claims(self._db, t.claims)
        self.unsettled = UnsettledNames(self._db, t.unsettled, t.index)
        self.worker_log = WorkerLog(self._db, t.worker_log, index=t.index, negatives=t.negatives, unsettled=t.unsettled)
        self.legacy_requests = LegacyRequests(self._db, self.schema)  # the old tools' queue, where it exists
        self.decisions = ReviewDecisions(self._db, t.decisions, t.decision_undo)
        self.shadow = MatchShadow(self._db, t.shadow)
        self._absent: frozenset[str] = frozenset()  # optional tables this index lacks (no grant to check)
        try:
            if self._db.dialect.creates_on_open if create is None else create:
                _create_missing(self._db, t)
            else:
                self._require_tables()
        except BaseException:
            self._db.close()
            raise

    @property
    def dialect(self) -> str:
        return self._db.dialect.name

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction for several table objects (pass the connection as `conn=`): all or nothing."""
        with self._db.begin() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads of several tables (SQLite takes no write lock for it)."""
        with self._db.read() as conn:
            yield conn

    # -- the run's calls -----------------------------------------------------------------------------------

    def lookup(
        self, wanted: Mapping[str, Iterable[str]], *, updated_since: datetime | None = None
    ) -> dict[tuple[str, str], IndexEntry]:
        """All entries for the wanted (lookup_type -> keys): one query per lookup type, whatever the count."""
        return self.entries.lookup(wanted, updated_since=updated_since)

    def known_negatives(self, names: Iterable[str], *, asked_since: datetime) -> set[str]:
        """Names EQC said it does not know, asked recently enough to trust."""
        return self.negatives.known(names, asked_since=asked_since)

    def write(self, batch: WriteBatch, *, owner: str | None = None, conn: Connection | None = None) -> None:
        """Everything in one transaction, committed together or not at all: answers, the companies they name
        (`base_info`), negatives, payloads, and the release of `owner`'s claims on `batch.released` (inside the
        caller's transaction with `conn`). Former names that point at two companies are kept out (and
        recorded) on the way."""
        if not len(batch):
            return
        if batch.released and owner is None:
            raise ValueError("a batch that releases claims needs the owner of those claims")
        now = utcnow()
        with self._db.begin(conn) as conn:
            entries = self.conflicts.screen(batch.entries, now=now, conn=conn)
            self.entries.upsert(entries, now=now, conn=conn)
            self.base_info.upsert(batch.companies, now=now, conn=conn)
            self.unsettled.settle_entries(entries, now=now, conn=conn)
            self.negatives.add(batch.negatives, now=now, conn=conn)
            self.payloads.upsert(batch.payloads, now=now, conn=conn)
            self.negatives.clear(batch.cleared_negatives, conn=conn)
            if owner is not None:
                self.claims.release(batch.released, owner, conn=conn)

    def check_writable(self) -> None:
        """Take the write lock and let it go (an empty write transaction); raises when the index cannot."""
        with self.transaction():
            pass

    def check_grants(self) -> None:
        """Raise, in one line naming them, when the role lacks a privilege a run needs (PostgreSQL; exactly what
        the GRANT template of `index init --print-sql` grants). Called when a run, the worker or the review
        page starts, so a missing grant is said at once and not met by the first answer's commit."""
        if self.dialect != "postgresql":
            return
        wanted = [
            (table, privilege)
            for table, privileges in self.tables.privileges()
            if table.name not in self._absent
            for privilege in privileges
        ]
        names = [_qualified(table) for table, _ in wanted]
        kinds = [privilege for _, privilege in wanted]
        query = sa.text(
            "SELECT t.name, t.privilege FROM unnest(CAST(:names AS text[]), CAST(:kinds AS text[]))"
            " AS t(name, privilege) WHERE NOT has_table_privilege(t.name, t.privilege)"
        )
        with self._db.read() as conn:
            missing = conn.execute(query, {"names": names, "kinds": kinds}).all()
        if not missing:
            return
        by_table: dict[str, list[str]] = {}
        for name, privilege in missing:
            by_table.setdefault(str(name), []).append(str(privilege))
        lacking = "; ".join(f"{', '.join(privileges)} on {name}" for name, privileges in by_table.items())
        raise IndexStoreError(
            f"index at {redact_url(self.url)}: permission denied: the role lacks {lacking} (the database owner "
            f"grants it with the SQL of `{INIT_HINT}`)"
        )

    def record_hits(self, keys: Iterable[tuple[str, str]]) -> None:
        """`hit_count + 1` and `last_hit_at = now` for each (lookup_key, lookup_type) this run used: a use per
        run, not per row (a mapping's counts are ignored, its keys are the entries used)."""
        self.entries.record_hits(keys)

    def name_candidates(self, types: Sequence[str], *, skip_source: str) -> Iterator[tuple[Any, ...]]:
        """(key, type, company id, confidence) of every name entry of these types, read in slices."""
        return name_candidates(self._db, self.tables.index, types=types, skip_source=skip_source)

    def base_info_names(self) -> list[tuple[str, str]] | None:
        """(company id, registered name) from the users' `base_info` table; None where there is none."""
        return base_info_names(self._db, self.schema)

    def count_entries(self) -> int:
        return self.entries.count()

    def journal_start(self, run_id: str, input_path: str, input_hash: str, settings: Mapping[str, Any]) -> None:
        self.journal.start(run_id, input_path, input_hash, settings)

    def journal_finish(self, run_id: str, status: str, counters: Mapping[str, Any]) -> None:
        self.journal.finish(run_id, status, counters)

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return self.journal.recent(limit)

    # -- plumbing ------------------------------------------------------------------------------------------

    def _require_tables(self) -> None:
        with self._db.read() as conn:
            missing = missing_tables(conn, self.tables)
        self.quota.has_rates = self.tables.quota_rates.name not in missing
        self._absent = frozenset(missing)
        missing = [name for name in missing if name not in OPTIONAL_TABLES]
        if missing:
            where = f" in schema {self.schema}" if self.schema else ""
            command = f"eqc-enrich index init --db {redact_url(self.url)}"
            if self.schema:
                command += f" --db-schema {self.schema}"
            raise IndexStoreError(
                f"the index at {redact_url(self.url)} lacks table(s) {', '.join(missing)}{where}: the database owner "
                f"creates them once with `{command}` (or runs the SQL of `--print-sql`)"
            )


def _qualified(table: sa.Table) -> str:
    """`schema.table`, quoted where needed, as `has_table_privilege` reads a name."""
    quote = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    return str(quote.format_table(table))


@dataclass(frozen=True, slots=True)
class InitReport:
    """What `init_index` found and did. `conflicts_found`: former names the index's rows already tie to two
    companies, recorded now (`conflicts_recorded` of them were new)."""

    url: str
    schema: str | None
    created: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    statements: int = 0
    conflicts_found: int = 0
    conflicts_recorded: int = 0


def init_index(db: str | Path | None = None, *, schema: str | None = None) -> InitReport:
    """Create what is missing of the tool's tables (and the schema, and `enrichment_index` and `base_info`
    themselves, exactly as their migrations define them); an existing table is never altered. Then look for
    former names the index's rows already tie to two companies and record them, so runs keep them out. Run
    once by the database's owner; returns which tables were created and which were there."""
    url = database_url(db)
    database = Database(url)
    try:
        tables = define(database.dialect.schema(schema or os.environ.get(SCHEMA_ENV) or None))
        statements, created = _create_missing(database, tables)
        conflicts = FormerNameConflicts(database, tables.conflicts, tables.index)
        found = conflicts.in_index()
        recorded = conflicts.record(found, found_by=FOUND_BY_INDEX) if found else 0
    finally:
        database.close()
    present = [table.name for table in tables.all if table.name not in created]
    return InitReport(redact_url(url), tables.schema, created, present, statements, len(found), recorded)


def _create_missing(database: Database, tables: Tables) -> tuple[int, list[str]]:
    """Check on a reading connection first: the common case (all there) then never takes a write lock."""
    with database.read() as conn:
        statements, _ = missing_ddl(conn, tables)
    if not statements:
        return 0, []
    with database.begin() as conn:
        statements, created = missing_ddl(conn, tables)
        for statement in statements:
            conn.execute(statement)
    return len(statements), created
