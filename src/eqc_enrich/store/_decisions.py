"""`eqc_review_decision`: every decision a person made on the review page, and whether it was undone; and
`eqc_review_undo`: what undoing one needs, kept beside it.

The journal is what makes a decision undoable and accountable: who (the operating-system user), when, what
(accept a candidate, type an id, not a company, skip), and the query that found the candidate. Its undo row
says which page made the decision (only that page may undo it) and what the index held for the name just
before (the row's values, or that there was none), so an undo puts exactly that back. It is a table of its
own, not new columns: `index init` never alters a table an earlier version created.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich.store._engine import Database
from eqc_enrich.store._entries import MAX_KEY
from eqc_enrich.store._model import IndexEntry, utcnow

__all__ = ["DECISIONS", "Decision", "ReviewDecisions", "UndoRecord"]

DECISIONS = ("accept", "typed", "not_a_company", "skip")
"""accept: a candidate EQC offered; typed: an id the person typed; not_a_company; skip: looked at, left open."""

_CUSTOMER_NAME = "customer_name"


@dataclass(frozen=True, slots=True)
class UndoRecord:
    """Which page made a decision, and the index row for its name just before it (None: there was none)."""

    page: str
    before: IndexEntry | None


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
    undo: UndoRecord | None = None  # None: journaled by a version that kept no undo record


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


def define_undo_table(metadata: sa.MetaData) -> sa.Table:
    """One row per decision: the page that made it, and the `enrichment_index` row it replaced (its values as
    they were, `had_entry` false when the name had none)."""
    return sa.Table(
        "eqc_review_undo",
        metadata,
        sa.Column(
            "decision_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False
        ),
        sa.Column("page", sa.String(32), nullable=False),
        sa.Column("had_entry", sa.Boolean, nullable=False),
        sa.Column("company_id", sa.String(100)),
        sa.Column("confidence", sa.Numeric(3, 2)),
        sa.Column("source", sa.String(50)),
        sa.Column("source_domain", sa.String(50)),
        sa.Column("source_table", sa.String(100)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Index("ix_eqc_review_undo_page", "page"),
    )


class ReviewDecisions:
    def __init__(self, db: Database, table: sa.Table, undo_table: sa.Table) -> None:
        self._db = db
        self.table = table
        self.undo_table = undo_table

    def add(
        self,
        lookup_key: str,
        decision: str,
        *,
        os_user: str,
        company_id: str | None = None,
        query: str | None = None,
        undo: UndoRecord | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Journal one decision (and what undoing it needs, in the same transaction); returns its id."""
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}")
        values = {
            "lookup_key": lookup_key[:MAX_KEY], "decision": decision, "company_id": company_id,
            "query": query, "os_user": os_user[:100], "decided_at": utcnow(),
        }  # fmt: skip
        with self._db.begin(conn) as c:
            inserted = c.execute(sa.insert(self.table).values(**values).returning(self.table.c.id))
            decision_id = int(inserted.scalar_one())
            if undo is not None:
                c.execute(sa.insert(self.undo_table).values(decision_id=decision_id, **_undo_values(undo)))
            return decision_id

    def get(self, decision_id: int, *, conn: Connection | None = None) -> Decision | None:
        with self._db.read(conn) as c:
            row = c.execute(self._select().where(self.table.c.id == decision_id)).mappings().first()
        return _decision(row) if row is not None else None

    def latest(
        self,
        *,
        limit: int = 20,
        undone: bool = True,
        page: str | None = None,
        key: str | None = None,
        conn: Connection | None = None,
    ) -> list[Decision]:
        """The newest decisions first; `undone=False` leaves out those already undone, `page` keeps one page's,
        `key` one name's."""
        t, u = self.table, self.undo_table
        query = self._select().order_by(t.c.id.desc()).limit(limit)
        if not undone:
            query = query.where(t.c.undone_at.is_(None))
        if page is not None:
            query = query.where(u.c.page == page)
        if key is not None:
            query = query.where(t.c.lookup_key == key)
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

    def _select(self) -> sa.Select[tuple[object, ...]]:
        t, u = self.table, self.undo_table
        before = [u.c[name].label(f"before_{name}") for name in _BEFORE]
        joined = t.outerjoin(u, u.c.decision_id == t.c.id)
        return sa.select(t, u.c.page, u.c.had_entry, *before).select_from(joined)


_BEFORE = ("company_id", "confidence", "source", "source_domain", "source_table", "updated_at")


def _undo_values(undo: UndoRecord) -> dict[str, object]:
    before = undo.before
    if before is None:
        return {"page": undo.page[:32], "had_entry": False}
    return {
        "page": undo.page[:32], "had_entry": True, "company_id": before.company_id,
        "confidence": Decimal(f"{before.confidence:.2f}"), "source": before.source,
        "source_domain": before.source_domain, "source_table": before.source_table, "updated_at": before.updated_at,
    }  # fmt: skip


def _decision(row: sa.RowMapping) -> Decision:
    undo = None
    if row["page"] is not None:
        before = None
        if row["had_entry"]:
            before = IndexEntry(
                row["lookup_key"], _CUSTOMER_NAME, row["before_company_id"], float(row["before_confidence"]),
                row["before_source"], row["before_updated_at"], row["before_source_domain"], row["before_source_table"],
            )  # fmt: skip
        undo = UndoRecord(row["page"], before)
    return Decision(
        id=int(row["id"]),
        lookup_key=row["lookup_key"],
        decision=row["decision"],
        company_id=row["company_id"],
        query=row["query"],
        os_user=row["os_user"],
        decided_at=row["decided_at"],
        undone_at=row["undone_at"],
        undo=undo,
    )
