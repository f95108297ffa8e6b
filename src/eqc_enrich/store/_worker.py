"""What the standing worker reads and writes beside the index: its log of names asked, the queries its queue
is built from, and the old tools' `enrichment_requests` table (when a deployment still has one).

`eqc_worker_log` is the worker's journal: one row per name it settled or tried (what kind of work it was,
what EQC said, when). Each worker session also has a `run_journal` row (input `worker`), so `index stats`
lists it beside the runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich.store._engine import Database
from eqc_enrich.store._entries import MAX_KEY
from eqc_enrich.store._model import utcnow

__all__ = ["LEGACY_TABLE", "Attempts", "LegacyRequest", "LegacyRequests", "WorkerLog", "define_log_table"]

LEGACY_TABLE = "enrichment_requests"
_CUSTOMER_NAME = "customer_name"
_LEGACY_BACKOFF_MIN = (1, 5, 15)  # the old worker's retry delays, in minutes, after attempts 1, 2, 3
_LEGACY_MAX_ATTEMPTS = 3
_LEGACY_STUCK = timedelta(minutes=15)
_LEGACY_BATCH = 50


def define_log_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "eqc_worker_log",
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.Identity(), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("lookup_key", sa.String(MAX_KEY), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("company_id", sa.String(100)),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_eqc_worker_log_key", "lookup_key", "asked_at"),
        sa.Index("ix_eqc_worker_log_asked_at", "asked_at"),
    )


@dataclass(frozen=True, slots=True)
class Attempts:
    """The worker's past tries of one name: when it last asked, how many tries failed, how many EQC answered
    (an answer that left the name open was too weak to learn)."""

    last_at: datetime
    failures: int
    found: int = 0


class WorkerLog:
    """The worker's journal and the queue's queries over the index's tables."""

    def __init__(self, db: Database, log: sa.Table, *, index: sa.Table, negatives: sa.Table, unsettled: sa.Table):
        self._db = db
        self.table = log
        self._index = index
        self._negatives = negatives
        self._unsettled = unsettled

    def record(self, rows: Sequence[Mapping[str, Any]], *, conn: Connection | None = None) -> None:
        """Rows of (owner, lookup_key, kind, outcome, company_id); stamped now."""
        if not rows:
            return
        now = utcnow()
        values = [{**row, "lookup_key": str(row["lookup_key"])[:MAX_KEY], "asked_at": now} for row in rows]
        with self._db.begin(conn) as c:
            c.execute(sa.insert(self.table), values)

    def attempts(self, keys: Iterable[str], *, conn: Connection | None = None) -> dict[str, Attempts]:
        t = self.table
        wanted = {key[:MAX_KEY] for key in keys}
        if not wanted:
            return {}
        failed = sa.func.sum(sa.case((t.c.outcome == "failed", 1), else_=0))
        found = sa.func.sum(sa.case((t.c.outcome == "found", 1), else_=0))
        query = (
            sa.select(t.c.lookup_key, sa.func.max(t.c.asked_at), failed, found)
            .where(self._db.dialect.one_of(t.c.lookup_key, wanted))
            .group_by(t.c.lookup_key)
        )
        with self._db.read(conn) as c:
            return {str(k): Attempts(aware(last), int(n or 0), int(f or 0)) for k, last, n, f in c.execute(query)}

    def done_since(self, since: datetime, *, conn: Connection | None = None) -> dict[str, dict[str, int]]:
        """Names the worker settled or tried since `since`: by outcome and by kind."""
        t = self.table
        result: dict[str, dict[str, int]] = {"outcome": {}, "kind": {}}
        with self._db.read(conn) as c:
            for name, column in (("outcome", t.c.outcome), ("kind", t.c.kind)):
                query = sa.select(column, sa.func.count()).where(t.c.asked_at >= since).group_by(column)
                result[name] = {str(value): int(n) for value, n in c.execute(query)}
        return result

    def history(self, *, limit: int = 100, conn: Connection | None = None) -> list[dict[str, Any]]:
        t = self.table
        query = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        with self._db.read(conn) as c:
            return [dict(row) for row in c.execute(query).mappings()]

    # -- the queue's sources beside eqc_unsettled -------------------------------------------------------

    def negatives_asked(self, keys: Iterable[str], *, conn: Connection | None = None) -> dict[str, datetime]:
        """When EQC last said it does not know each of these names."""
        n = self._negatives
        wanted = {key[:MAX_KEY] for key in keys}
        if not wanted:
            return {}
        query = sa.select(n.c.lookup_key, n.c.asked_at).where(self._db.dialect.one_of(n.c.lookup_key, wanted))
        with self._db.read(conn) as c:
            return {str(k): aware(at) for k, at in c.execute(query)}

    def expired_negatives(
        self, before: datetime, *, limit: int, conn: Connection | None = None
    ) -> list[tuple[str, datetime]]:
        """Not-found answers asked before `before` (their TTL ran out), oldest first."""
        n = self._negatives
        query = sa.select(n.c.lookup_key, n.c.asked_at).where(n.c.asked_at < before).order_by(n.c.asked_at).limit(limit)
        with self._db.read(conn) as c:
            return [(str(k), aware(at)) for k, at in c.execute(query)]

    def first_negative_expiry(self, after: datetime, *, conn: Connection | None = None) -> datetime | None:
        """The oldest not-found answer still trusted (asked at or after `after`): the next one to expire."""
        n = self._negatives
        with self._db.read(conn) as c:
            value = c.execute(sa.select(sa.func.min(n.c.asked_at)).where(n.c.asked_at >= after)).scalar_one_or_none()
        return aware(value) if value is not None else None

    def stale_low_confidence(
        self, before: datetime, *, below: float, source: str, limit: int, conn: Connection | None = None
    ) -> list[tuple[str, float, datetime]]:
        """Customer-name entries EQC answered with less than `below` confidence, last written before `before`."""
        i = self._index
        query = (
            sa.select(i.c.lookup_key, i.c.confidence, i.c.updated_at)
            .where(
                i.c.lookup_type == _CUSTOMER_NAME,
                i.c.source == source,
                i.c.confidence < below,
                i.c.updated_at < before,
            )
            .order_by(i.c.hit_count.desc(), i.c.updated_at)
            .limit(limit)
        )
        with self._db.read(conn) as c:
            return [(str(k), float(conf), aware(at)) for k, conf, at in c.execute(query)]

    def first_low_confidence_refresh(
        self, after: datetime, *, below: float, source: str, conn: Connection | None = None
    ) -> datetime | None:
        i = self._index
        query = sa.select(sa.func.min(i.c.updated_at)).where(
            i.c.lookup_type == _CUSTOMER_NAME, i.c.source == source, i.c.confidence < below, i.c.updated_at >= after
        )
        with self._db.read(conn) as c:
            value = c.execute(query).scalar_one_or_none()
        return aware(value) if value is not None else None

    def mark_not_found(self, keys: Iterable[str], *, conn: Connection | None = None) -> None:
        """Open names EQC has now said it does not know: their status says so (they wait for the TTL)."""
        u = self._unsettled
        wanted = {key[:MAX_KEY] for key in keys}
        if not wanted:
            return
        statement = (
            sa.update(u)
            .where(self._db.dialect.one_of(u.c.lookup_key, wanted), u.c.settled_at.is_(None), u.c.kind == "temporary")
            .values(status="not_found", reason="EQC did not know it (asked by the worker)")
        )
        with self._db.begin(conn) as c:
            c.execute(statement)


# -- the old tools' queue ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegacyRequest:
    id: int
    raw_name: str
    temp_id: str | None
    attempts: int


class LegacyRequests:
    """`enrichment_requests`, read and updated by its own rules, so that the old hourly job and the worker can
    drain it side by side: `pending` rows due (`next_retry_at`, where the column exists) oldest first, 50 at
    a time, taken with `FOR UPDATE SKIP LOCKED` and set `processing`; an answer -> `done`; no result or an
    error -> back to `pending` after 1, 5, then 15 minutes, `failed` after 3 attempts; rows `processing` for
    15 minutes go back to `pending`."""

    def __init__(self, db: Database, schema: str | None) -> None:
        self._db = db
        self._schema = schema
        self._table: sa.Table | None = None
        self._checked = False

    @property
    def table(self) -> sa.Table | None:
        """The table, reflected once; None when this database has none."""
        if not self._checked:
            with self._db.read() as c:
                if sa.inspect(c).has_table(LEGACY_TABLE, schema=self._schema):
                    self._table = sa.Table(LEGACY_TABLE, sa.MetaData(schema=self._schema), autoload_with=c)
            self._checked = True
        return self._table

    def take(self, *, limit: int = _LEGACY_BATCH, due_by: datetime | None = None) -> list[LegacyRequest]:
        """Put stuck rows back, then take the `pending` rows due (oldest first) and mark them `processing`.

        `due_by`: only rows already there and due at that time (a worker's `--once` drains what was due when
        it started, not what falls due while it runs); default now."""
        t = self.table
        if t is None:
            return []
        now = utcnow()
        with self._db.begin() as c:
            c.execute(
                sa.update(t)
                .where(t.c.status == "processing", t.c.updated_at < now - _LEGACY_STUCK)
                .values(status="pending", updated_at=now)
            )
            cut = now if due_by is None else min(now, due_by)
            due = self._due(t, cut) if due_by is None else self._due(t, cut) & (t.c.created_at <= cut)
            query = sa.select(t.c.id, t.c.raw_name, t.c.temp_id, t.c.attempts).where(due)
            query = query.order_by(t.c.created_at, t.c.id).limit(limit)
            if self._db.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            taken = [LegacyRequest(int(i), str(raw), temp, int(n or 0)) for i, raw, temp, n in c.execute(query)]
            if taken:
                ids = [r.id for r in taken]
                c.execute(sa.update(t).where(t.c.id.in_(ids)).values(status="processing", updated_at=now))
        return taken

    def finish(self, answered: Mapping[int, str], tried: Mapping[int, str], put_back: Sequence[int]) -> None:
        """`answered`: id -> company id (done); `tried`: id -> error (an attempt that gave no company);
        `put_back`: rows taken but not asked (pending again, no attempt counted)."""
        t = self.table
        if t is None:
            return
        now = utcnow()
        has_retry = "next_retry_at" in t.c
        with self._db.begin() as c:
            for row_id, company_id in answered.items():
                c.execute(
                    sa.update(t)
                    .where(t.c.id == row_id)
                    .values(status="done", resolved_company_id=company_id, last_error=None, updated_at=now)
                )
            if tried:
                attempts = dict(c.execute(sa.select(t.c.id, t.c.attempts).where(t.c.id.in_(list(tried)))).all())
                for row_id, error in tried.items():
                    done = int(attempts.get(row_id) or 0) + 1
                    values: dict[str, Any] = {"attempts": done, "last_error": error, "updated_at": now}
                    if done >= _LEGACY_MAX_ATTEMPTS:
                        values["status"] = "failed"
                    else:
                        values["status"] = "pending"
                        if has_retry:
                            values["next_retry_at"] = now + timedelta(minutes=_LEGACY_BACKOFF_MIN[done - 1])
                    c.execute(sa.update(t).where(t.c.id == row_id).values(**values))
            if put_back:
                c.execute(sa.update(t).where(t.c.id.in_(list(put_back))).values(status="pending", updated_at=now))

    def counts(self) -> dict[str, int]:
        t = self.table
        if t is None:
            return {}
        with self._db.read() as c:
            return {str(s): int(n) for s, n in c.execute(sa.select(t.c.status, sa.func.count()).group_by(t.c.status))}

    def due_count(self) -> int:
        t = self.table
        if t is None:
            return 0
        with self._db.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(t).where(self._due(t, utcnow()))).scalar_one())

    def next_retry(self) -> datetime | None:
        t = self.table
        if t is None or "next_retry_at" not in t.c:
            return None
        query = sa.select(sa.func.min(t.c.next_retry_at)).where(t.c.status == "pending")
        with self._db.read() as c:
            value = c.execute(query).scalar_one_or_none()
        return aware(value) if value is not None else None

    @staticmethod
    def _due(t: sa.Table, now: datetime) -> sa.ColumnElement[bool]:
        due = t.c.status == "pending"
        if "next_retry_at" in t.c:
            due = due & (t.c.next_retry_at.is_(None) | (t.c.next_retry_at <= now))
        return due


def aware(value: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
