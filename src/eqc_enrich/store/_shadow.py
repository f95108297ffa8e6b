"""`eqc_match_shadow`: what the local matcher proposed for a name, and what EQC said about that name.

One row per name the matcher found a candidate for: its kind (equivalent, similar), score, lead over the
runner-up and candidate, what the run did with it (answered locally, asked EQC, asked EQC and kept for
review), and, once EQC has spoken (the run that asked it, or the standing worker checking a local answer),
EQC's answer and whether it was the candidate. `index match-report` measures each score band on these rows;
the worker takes the local answers still to check from them.

`base_info` is read here too, when the schema has it: the registered names of the companies EQC answered,
more candidates for the matcher.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich.store._base_info import BASE_INFO_TABLE
from eqc_enrich.store._engine import Database
from eqc_enrich.store._entries import MAX_KEY
from eqc_enrich.store._model import utcnow

__all__ = [
    "ACTIONS",
    "BASE_INFO_ID",
    "BASE_INFO_NAME",
    "MatchShadow",
    "ShadowRow",
    "base_info_names",
    "define_table",
    "name_candidates",
]

ACTIONS = ("answered", "asked", "review")
"""answered: locally, no EQC call; asked: sent to EQC; review: sent to EQC, the candidate kept for a person."""

# The users' table of EQC answers (issue "same tables, same files, same meanings"): read only where it
# exists; the column names are here alone, so the reader follows the table's final definition.
BASE_INFO_ID = "company_id"
BASE_INFO_NAME = "company_full_name"

_READ_CHUNK = 20_000


@dataclass(frozen=True, slots=True)
class ShadowRow:
    lookup_key: str
    kind: str
    score: float
    candidate_key: str
    candidate_id: str
    candidate_confidence: float
    candidate_origin: str
    action: str  # one of ACTIONS
    gap: float | None = None
    verify: bool = False  # a local answer the worker is to check with EQC
    eqc_status: str | None = None  # found, not_found
    eqc_company_id: str | None = None
    agreed: bool | None = None  # EQC's answer was the candidate (None: no verdict yet, or EQC did not know)
    checked_by: str | None = None  # run, worker
    run_id: str | None = None
    recorded_at: datetime | None = None
    checked_at: datetime | None = None


def define_table(metadata: sa.MetaData) -> sa.Table:
    ts = sa.DateTime(timezone=True)
    return sa.Table(
        "eqc_match_shadow",
        metadata,
        sa.Column("lookup_key", sa.String(MAX_KEY), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("score", sa.Double, nullable=False),
        sa.Column("gap", sa.Double),
        sa.Column("candidate_key", sa.String(MAX_KEY), nullable=False),
        sa.Column("candidate_id", sa.String(100), nullable=False),
        sa.Column("candidate_confidence", sa.Double, nullable=False),
        sa.Column("candidate_origin", sa.String(20), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("verify", sa.Boolean, nullable=False),
        sa.Column("eqc_status", sa.String(20)),
        sa.Column("eqc_company_id", sa.String(100)),
        sa.Column("agreed", sa.Boolean),
        sa.Column("checked_by", sa.String(20)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("recorded_at", ts, nullable=False),
        sa.Column("checked_at", ts),
        sa.Index("ix_eqc_match_shadow_to_check", "verify", "checked_at"),
    )


_FIELDS = tuple(ShadowRow.__dataclass_fields__)


class MatchShadow:
    def __init__(self, db: Database, table: sa.Table) -> None:
        self._db = db
        self.table = table

    def record(self, rows: Sequence[ShadowRow], *, conn: Connection | None = None) -> int:
        """Write (or replace) the rows of these names: a name matched again is recorded afresh."""
        if not rows:
            return 0
        now = utcnow()
        values = [{**_values(row), "recorded_at": row.recorded_at or now} for row in _last_per_key(rows)]
        insert = self._db.dialect.insert(self.table)
        statement = insert.on_conflict_do_update(
            index_elements=[self.table.c.lookup_key],
            set_={name: insert.excluded[name] for name in _FIELDS if name != "lookup_key"},
        )
        with self._db.begin(conn) as c:
            c.execute(statement, values)
        return len(values)

    def checked(
        self,
        answers: Mapping[str, tuple[str, str | None]],
        *,
        by: str,
        conn: Connection | None = None,
    ) -> int:
        """EQC's answers (key -> (status, company id)) for recorded names; `agreed` follows from them."""
        if not answers:
            return 0
        t = self.table
        now = utcnow()
        done = 0
        with self._db.begin(conn) as c:
            rows = c.execute(
                sa.select(t.c.lookup_key, t.c.candidate_id).where(self._db.dialect.one_of(t.c.lookup_key, answers))
            ).all()
            for key, candidate_id in rows:
                status, company_id = answers[key]
                agreed = None if company_id is None else company_id == candidate_id
                c.execute(
                    sa.update(t)
                    .where(t.c.lookup_key == key)
                    .values(eqc_status=status, eqc_company_id=company_id, agreed=agreed, checked_by=by, checked_at=now)
                )
                done += 1
        return done

    def to_verify(self, *, limit: int | None = None, conn: Connection | None = None) -> list[ShadowRow]:
        """Local answers the worker is to check with EQC and has not yet, similar ones first, highest score last
        (the least sure first)."""
        t = self.table
        query = (
            sa.select(t)
            .where(t.c.verify.is_(True), t.c.checked_at.is_(None), t.c.action == "answered")
            .order_by(sa.case((t.c.kind == "similar", 0), else_=1), t.c.score, t.c.lookup_key)
        )
        if limit is not None:
            query = query.limit(limit)
        with self._db.read(conn) as c:
            return [_row(r) for r in c.execute(query).mappings()]

    def to_verify_counts(self, *, conn: Connection | None = None) -> dict[str, int]:
        """How many local answers still wait for the worker's check, by kind (`worker status`)."""
        t = self.table
        query = (
            sa.select(t.c.kind, sa.func.count())
            .where(t.c.verify.is_(True), t.c.checked_at.is_(None), t.c.action == "answered")
            .group_by(t.c.kind)
        )
        with self._db.read(conn) as c:
            return {str(kind): int(n) for kind, n in c.execute(query)}

    def for_a_person(
        self, keys: Iterable[str] | None = None, *, conn: Connection | None = None
    ) -> dict[str, ShadowRow]:
        """The rows whose candidate a person is to see on the review page: names in the review band, and local
        answers EQC named another company for (of these keys, or all of them)."""
        t = self.table
        query = sa.select(t).where(
            sa.or_(t.c.action == "review", sa.and_(t.c.action == "answered", t.c.agreed.is_(False)))
        )
        if keys is not None:
            query = query.where(self._db.dialect.one_of(t.c.lookup_key, keys))
        with self._db.read(conn) as c:
            return {r["lookup_key"]: _row(r) for r in c.execute(query).mappings()}

    def get(self, keys: Iterable[str], *, conn: Connection | None = None) -> dict[str, ShadowRow]:
        t = self.table
        with self._db.read(conn) as c:
            found = c.execute(sa.select(t).where(self._db.dialect.one_of(t.c.lookup_key, keys))).mappings()
            return {r["lookup_key"]: _row(r) for r in found}

    def all_rows(self, *, conn: Connection | None = None) -> list[ShadowRow]:
        with self._db.read(conn) as c:
            return [_row(r) for r in c.execute(sa.select(self.table).order_by(self.table.c.lookup_key)).mappings()]


def _last_per_key(rows: Sequence[ShadowRow]) -> list[ShadowRow]:
    return list({row.lookup_key[:MAX_KEY]: row for row in rows}.values())


def _values(row: ShadowRow) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in _FIELDS}
    values["lookup_key"] = row.lookup_key[:MAX_KEY]
    values["candidate_key"] = row.candidate_key[:MAX_KEY]
    return values


def _row(row: Any) -> ShadowRow:
    return ShadowRow(**{name: row[name] for name in _FIELDS})


def name_candidates(
    db: Database, index: sa.Table, *, types: Sequence[str], skip_source: str
) -> Iterator[tuple[Any, ...]]:
    """(key, type, company id, confidence) of every name entry of these types, in chunks (a large index is
    read a slice at a time), leaving out entries of `skip_source` (a local match is no evidence for another)."""
    t = index
    confidence = sa.type_coerce(t.c.confidence, sa.Float)
    query = sa.select(t.c.lookup_key, t.c.lookup_type, t.c.company_id, confidence).where(
        t.c.lookup_type.in_(list(types)), t.c.source != skip_source
    )
    with db.read() as c:
        result = c.execution_options(yield_per=_READ_CHUNK).execute(query)
        for partition in result.partitions():
            yield from (tuple(row) for row in partition)


def base_info_names(db: Database, schema: str | None) -> list[tuple[str, str]] | None:
    """(company id, registered name) of every company in `base_info`, or None when the schema has no such
    table (or it lacks those columns): then it is simply not a source."""
    with db.read() as c:
        inspector = sa.inspect(c)
        if BASE_INFO_TABLE not in inspector.get_table_names(schema=schema):
            return None
        columns = {column["name"] for column in inspector.get_columns(BASE_INFO_TABLE, schema=schema)}
        if not {BASE_INFO_ID, BASE_INFO_NAME} <= columns:
            return None
        table = sa.table(BASE_INFO_TABLE, sa.column(BASE_INFO_ID), sa.column(BASE_INFO_NAME), schema=schema)
        query = sa.select(table.c[BASE_INFO_ID], table.c[BASE_INFO_NAME]).where(table.c[BASE_INFO_NAME].is_not(None))
        return [(str(company_id), str(name)) for company_id, name in c.execute(query)]
