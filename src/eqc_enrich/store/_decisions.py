"""`eqc_review_decision`: every decision a person made on the review page, and whether it was undone.

The journal is what makes a decision undoable and accountable: who (the operating-system user), when, what
(accept a candidate, type an id, not a company, skip), and the query that found the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich.store._engine import Database
from eqc_enrich.store._entries import MAX_KEY
from eqc_enrich.store._model import utcnow

__all__ = ["DECISIONS", "Decision", "ReviewDecisions"]

DECISIONS = ("accept", "typed", "not_a_company", "skip")
"""accept: a candidate EQC offered; typed: an id the person typed; not_a_company; skip: looked at, left open."""


@dataclass(frozen=True, slots=True)
class Decision:
    id: int
    lookup_key: str
    decision: str
    company_id: str | None
    query: str | None
    os_user: str
    decided_at: datetime
    undone_at: datetime | None = None


def define_table(metadata: sa.MetaData) -> sa.Table:
    ts = sa.DateTime(timezone=True)
    return sa.Table(
        "eqc_review_decision",
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.Identity(), primary_key=True),
        sa.Column("lookup_key", sa.String(MAX_KEY), nullable=False),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("company_id", sa.String(100)),
        sa.Column("query", sa.Text),
        sa.Column("os_user", sa.String(100), nullable=False),
        sa.Column("decided_at", ts, nullable=False),
        sa.Column("undone_at", ts),
        sa.Index("ix_eqc_review_decision_key", "lookup_key"),
        sa.Index("ix_eqc_review_decision_at", "decided_at"),
    )


class ReviewDecisions:
    def __init__(self, db: Database, table: sa.Table) -> None:
        self._db = db
        self.table = table

    def add(
        self,
        lookup_key: str,
        decision: str,
        *,
        os_user: str,
        company_id: str | None = None,
        query: str | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Journal one decision; returns its id."""
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}")
        values = {
            "lookup_key": lookup_key[:MAX_KEY], "decision": decision, "company_id": company_id,
            "query": query, "os_user": os_user[:100], "decided_at": utcnow(),
        }  # fmt: skip
        with self._db.begin(conn) as c:
            inserted = c.execute(sa.insert(self.table).values(**values).returning(self.table.c.id))
            return int(inserted.scalar_one())

    def get(self, decision_id: int, *, conn: Connection | None = None) -> Decision | None:
        with self._db.read(conn) as c:
            row = c.execute(sa.select(self.table).where(self.table.c.id == decision_id)).mappings().first()
        return _decision(row) if row is not None else None

    def latest(self, *, limit: int = 20, undone: bool = True, conn: Connection | None = None) -> list[Decision]:
        """The newest decisions first; `undone=False` leaves out those already undone."""
        t = self.table
        query = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if not undone:
            query = query.where(t.c.undone_at.is_(None))
        with self._db.read(conn) as c:
            return [_decision(row) for row in c.execute(query).mappings()]

    def mark_undone(self, decision_id: int, *, conn: Connection | None = None) -> bool:
        """True when this call undid it (False: unknown, or undone already)."""
        t = self.table
        with self._db.begin(conn) as c:
            done = c.execute(
                sa.update(t).where(t.c.id == decision_id, t.c.undone_at.is_(None)).values(undone_at=utcnow())
            )
            return bool(done.rowcount)


def _decision(row: sa.RowMapping) -> Decision:
    return Decision(
        id=int(row["id"]),
        lookup_key=row["lookup_key"],
        decision=row["decision"],
        company_id=row["company_id"],
        query=row["query"],
        os_user=row["os_user"],
        decided_at=row["decided_at"],
        undone_at=row["undone_at"],
    )
