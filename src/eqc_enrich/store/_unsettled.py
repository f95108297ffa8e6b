"""`eqc_unsettled`: the names runs could not settle, kept until something settles them.

A run records here every name it left with a temporary id (EQC did not know it, failed, was not asked)
and every name EQC answered with less than an exact match (模糊匹配, 拼音). Whatever later writes a
customer-name entry for that key into the index (a later run, the standing worker, a person on the review
page) settles it in the same transaction, with the company id and the source; a low-confidence name only
by an entry that is sure (an exact match, a person's decision). Three things read it: the review page and
the worker (their queues) and `index remap` (the temporary ids that have become real ones).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich._text import shown_row, shown_text
from eqc_enrich.store._engine import Database
from eqc_enrich.store._entries import MAX_KEY, WITHDRAWN
from eqc_enrich.store._model import IndexEntry, utcnow

__all__ = ["KINDS", "NOT_A_COMPANY", "Remapped", "UnsettledName", "UnsettledNames"]

# what a name is: the rows got a temporary id, or an EQC id the index would not learn (weak match)
KINDS = ("temporary", "low_confidence")
NOT_A_COMPANY = "not_a_company"  # a person decided: the name is no company and is never asked again
# a low-confidence name stays open until an entry at least this sure (an exact match, a person) answers it
SURE = 1.0
_CUSTOMER_NAME = "customer_name"
_SAMPLE_ROWS = 5


@dataclass(frozen=True, slots=True)
class UnsettledName:
    """One name a run left open, with what a person or the worker needs to settle it."""

    lookup_key: str
    kind: str  # one of KINDS
    status: str  # not_found, failed, not_asked, too_long, weak_match
    rows: int
    display_name: str = ""
    reason: str = ""
    temp_id: str | None = None
    candidate_id: str | None = None  # the weak answer's company id (low_confidence)
    confidence: float | None = None
    assets: float | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None
    settled_at: datetime | None = None
    settled_company_id: str | None = None
    settled_source: str | None = None

    @property
    def settled(self) -> bool:
        return self.settled_at is not None


@dataclass(frozen=True, slots=True)
class Remapped:
    """A temporary id some run handed out, and the company id it has since become."""

    temp_id: str
    company_id: str
    name: str
    settled_at: datetime
    source: str


def define_table(metadata: sa.MetaData) -> sa.Table:
    ts = sa.DateTime(timezone=True)
    return sa.Table(
        "eqc_unsettled",
        metadata,
        sa.Column("lookup_key", sa.String(MAX_KEY), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("display_name", sa.Text),
        sa.Column("temp_id", sa.String(100)),
        sa.Column("candidate_id", sa.String(100)),
        sa.Column("confidence", sa.Double),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("assets", sa.Double),
        sa.Column("sample_json", sa.JSON),
        sa.Column("run_id", sa.String(36)),
        sa.Column("first_seen_at", ts, nullable=False),
        sa.Column("last_seen_at", ts, nullable=False),
        sa.Column("settled_at", ts),
        sa.Column("settled_company_id", sa.String(100)),
        sa.Column("settled_source", sa.String(50)),
        sa.Index("ix_eqc_unsettled_open_rows", "settled_at", "rows"),
        sa.Index("ix_eqc_unsettled_open_kind", "settled_at", "kind", "status"),  # the queue's counts, index only
        sa.Index("ix_eqc_unsettled_temp_id", "temp_id"),
    )


class UnsettledNames:
    def __init__(self, db: Database, table: sa.Table, index: sa.Table) -> None:
        self._db = db
        self.table = table
        self._index = index

    def record(
        self,
        names: Sequence[UnsettledName],
        run_id: str,
        *,
        conn: Connection | None = None,
        keep_answered: bool = False,
    ) -> int:
        """Open (or reopen, with this run's figures) each name; names the index answers by now are left out
        (unless `keep_answered`: a person is to look whatever the index says), and so are names a person settled
        as not a company. Returns how many were recorded."""
        if not names:
            return 0
        now = utcnow()
        by_key = {n.lookup_key[:MAX_KEY]: n for n in names}
        t = self.table
        with self._db.begin(conn) as c:
            answered = set() if keep_answered else self._answered(c, by_key)
            decided = {
                row[0]
                for row in c.execute(
                    sa.select(t.c.lookup_key).where(
                        self._db.dialect.one_of(t.c.lookup_key, by_key), t.c.settled_source == NOT_A_COMPANY
                    )
                )
            }
            rows = [_row(key, n, run_id, now) for key, n in by_key.items() if key not in answered | decided]
            if not rows:
                return 0
            insert = self._db.dialect.insert(t)
            fresh = {name: insert.excluded[name] for name in _RECORDED if name != "first_seen_at"}
            statement = insert.on_conflict_do_update(
                index_elements=[t.c.lookup_key],
                set_={**fresh, "settled_at": None, "settled_company_id": None, "settled_source": None},
            )
            c.execute(statement, rows)
        return len(rows)

    def settle_entries(self, entries: Iterable[IndexEntry], *, now: datetime | None = None, conn: Connection) -> None:
        """Close the open names these customer-name entries answer (called inside the index write)."""
        settled = {e.lookup_key: e for e in entries if e.lookup_type == _CUSTOMER_NAME}
        if not settled:
            return
        t = self.table
        stamp = now or utcnow()
        open_keys = [
            key
            for key, kind in conn.execute(
                sa.select(t.c.lookup_key, t.c.kind).where(
                    self._db.dialect.one_of(t.c.lookup_key, settled), t.c.settled_at.is_(None)
                )
            )
            if kind != "low_confidence" or settled[key].confidence >= SURE
        ]
        for key in open_keys:
            entry = settled[key]
            conn.execute(
                sa.update(t)
                .where(t.c.lookup_key == key)
                .values(settled_at=stamp, settled_company_id=entry.company_id, settled_source=entry.source)
            )

    def mark_not_a_company(self, key: str, *, conn: Connection | None = None) -> None:
        """A person decided the name is no company: it leaves every queue and runs never ask it."""
        self._set_settled(key, NOT_A_COMPANY, None, conn=conn)

    def reopen(self, key: str, *, conn: Connection | None = None) -> None:
        """Undo a decision: the name is open again."""
        t = self.table
        with self._db.begin(conn) as c:
            c.execute(
                sa.update(t)
                .where(t.c.lookup_key == key)
                .values(settled_at=None, settled_company_id=None, settled_source=None)
            )

    def not_companies(self, keys: Iterable[str], *, conn: Connection | None = None) -> set[str]:
        """Of these keys, those a person marked as no company: a run resolves them without asking EQC."""
        t = self.table
        query = sa.select(t.c.lookup_key).where(
            self._db.dialect.one_of(t.c.lookup_key, keys), t.c.settled_source == NOT_A_COMPANY
        )
        with self._db.read(conn) as c:
            return {row[0] for row in c.execute(query)}

    def open_names(
        self,
        *,
        kinds: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
        search: str | None = None,
        keys: Collection[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        conn: Connection | None = None,
    ) -> list[UnsettledName]:
        """Names still open, most rows affected first (then assets, then the key, for a stable order);
        `keys` keeps only those names (the names of one file)."""
        t = self.table
        query = sa.select(t).where(t.c.settled_at.is_(None))
        if keys is not None:
            query = query.where(self._db.dialect.one_of(t.c.lookup_key, keys))
        if kinds:
            query = query.where(t.c.kind.in_(list(kinds)))
        if statuses:
            query = query.where(t.c.status.in_(list(statuses)))
        if search:
            pattern = f"%{_escape_like(search)}%"
            query = query.where(
                sa.or_(t.c.lookup_key.like(pattern, escape="\\"), t.c.display_name.like(pattern, escape="\\"))
            )
        query = query.order_by(t.c.rows.desc(), sa.func.coalesce(t.c.assets, 0).desc(), t.c.lookup_key)
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        with self._db.read(conn) as c:
            return [_name(row) for row in c.execute(query).mappings()]

    def get(self, key: str, *, lock: bool = False, conn: Connection | None = None) -> UnsettledName | None:
        """One name, open or settled; `lock` holds its row until the caller's transaction ends (PostgreSQL; a
        SQLite writer holds the whole file from BEGIN)."""
        query = sa.select(self.table).where(self.table.c.lookup_key == key)
        if lock:
            query = query.with_for_update()
        with self._db.read(conn) as c:
            row = c.execute(query).mappings().first()
        return _name(row) if row is not None else None

    def counts(self, *, keys: Collection[str] | None = None, conn: Connection | None = None) -> dict[str, int]:
        """Open names by kind and by status (keys `kind:<k>` and `status:<s>`), and `settled`; `keys` counts
        only those names."""
        t = self.table
        scope = [self._db.dialect.one_of(t.c.lookup_key, keys)] if keys is not None else []
        result: dict[str, int] = {}
        with self._db.read(conn) as c:
            for column in (t.c.kind, t.c.status):
                query = sa.select(column, sa.func.count()).where(t.c.settled_at.is_(None), *scope).group_by(column)
                result.update({f"{column.name}:{value}": int(n) for value, n in c.execute(query)})
            settled = sa.select(sa.func.count()).select_from(t).where(t.c.settled_at.is_not(None), *scope)
            result["settled"] = int(c.execute(settled).scalar_one())
        return result

    def known(self, keys: Iterable[str], *, conn: Connection | None = None) -> set[str]:
        """Of these keys, those recorded here (open or settled)."""
        t = self.table
        with self._db.read(conn) as c:
            return {
                row[0]
                for row in c.execute(sa.select(t.c.lookup_key).where(self._db.dialect.one_of(t.c.lookup_key, keys)))
            }

    def remapped(self, *, since: datetime | None = None, conn: Connection | None = None) -> list[Remapped]:
        """Temporary ids that became company ids (settled after `since`), oldest settlement first."""
        t = self.table
        query = sa.select(t).where(t.c.temp_id.is_not(None), t.c.settled_company_id.is_not(None))
        if since is not None:
            query = query.where(t.c.settled_at >= since)
        query = query.order_by(t.c.settled_at, t.c.lookup_key)
        with self._db.read(conn) as c:
            return [_remapped(row) for row in c.execute(query).mappings()]

    def _answered(self, conn: Connection, names: dict[str, UnsettledName]) -> set[str]:
        """Names the index answers well enough by now: any entry for a temporary id, a sure one otherwise."""
        index = self._index
        query = sa.select(index.c.lookup_key, index.c.confidence).where(
            index.c.lookup_type == _CUSTOMER_NAME,
            self._db.dialect.one_of(index.c.lookup_key, names),
            index.c.source != WITHDRAWN,
        )
        return {
            key
            for key, confidence in conn.execute(query)
            if names[key].kind != "low_confidence" or float(confidence) >= SURE
        }

    def _set_settled(self, key: str, source: str, company_id: str | None, *, conn: Connection | None) -> None:
        t = self.table
        with self._db.begin(conn) as c:
            c.execute(
                sa.update(t)
                .where(t.c.lookup_key == key)
                .values(settled_at=utcnow(), settled_company_id=company_id, settled_source=source)
            )


_RECORDED = (
    "lookup_key", "kind", "status", "reason", "display_name", "temp_id", "candidate_id", "confidence",
    "rows", "assets", "sample_json", "run_id", "first_seen_at", "last_seen_at",
)  # fmt: skip


def _row(key: str, name: UnsettledName, run_id: str, now: datetime) -> dict[str, Any]:
    """What is stored of a name: its key whole, its text bounded (a cell of megabytes is kept as its first few
    hundred characters) and free of NUL, so SQLite and PostgreSQL keep the same."""
    return {
        "lookup_key": key,
        "kind": name.kind,
        "status": name.status,
        "reason": shown_text(name.reason),
        "display_name": shown_text(name.display_name),
        "temp_id": name.temp_id,
        "candidate_id": name.candidate_id,
        "confidence": name.confidence,
        "rows": name.rows,
        "assets": name.assets,
        "sample_json": [shown_row(row) for row in name.sample[:_SAMPLE_ROWS]],
        "run_id": run_id,
        "first_seen_at": now,
        "last_seen_at": now,
    }


def _name(row: Any) -> UnsettledName:
    return UnsettledName(
        lookup_key=row["lookup_key"],
        kind=row["kind"],
        status=row["status"],
        rows=int(row["rows"]),
        display_name=row["display_name"] or "",
        reason=row["reason"] or "",
        temp_id=row["temp_id"],
        candidate_id=row["candidate_id"],
        confidence=row["confidence"],
        assets=row["assets"],
        sample=list(row["sample_json"] or []),
        run_id=row["run_id"],
        first_seen_at=row["first_seen_at"],
        last_seen_at=row["last_seen_at"],
        settled_at=row["settled_at"],
        settled_company_id=row["settled_company_id"],
        settled_source=row["settled_source"],
    )


def _remapped(row: Any) -> Remapped:
    name = row["display_name"] or row["lookup_key"]
    return Remapped(row["temp_id"], row["settled_company_id"], name, row["settled_at"], row["settled_source"])


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
