"""The shared quota: every send of every process on one EQC account, recorded as a reserved slot.

The pacing rule itself (`decide`) belongs to the caller; this object only makes it safe across processes:
the rule sees the slots every other process has reserved, and no two reservations of one quota interleave.
Beside the slots, `eqc_quota_rate` keeps the rate limit the processes last said they pace the quota by, so
that a reader (`worker status`) measures use against the real limit rather than its own default.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from eqc_enrich.store._engine import Database
from eqc_enrich.store._model import utcnow
from eqc_enrich.store._worker import aware

__all__ = ["RATE_TABLE", "Decide", "QuotaLedger", "QuotaRate", "define_rate_table"]

RATE_TABLE = "eqc_quota_rate"

Decide = Callable[[list[float], float, float], float]
"""`decide(recent_slot_times_ascending, paused_until, now) -> slot_time`: the caller's pure pacing rule."""


def define_rate_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        RATE_TABLE,
        metadata,
        sa.Column("quota_key", sa.String(100), primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("window_s", sa.Double, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


@dataclass(frozen=True, slots=True)
class QuotaRate:
    """The rate limit a process last paced one quota by: `requests` in any `window_s`."""

    requests: int
    window_s: float
    owner: str
    recorded_at: datetime


class QuotaLedger:
    """`eqc_quota` (one row per quota: the pause a server's Retry-After imposed), `eqc_quota_slot` (one
    row per reserved send) and `eqc_quota_rate` (the rate limit in force). Times of slots and pauses are
    seconds since the epoch on the shared clock: PostgreSQL's `clock_timestamp()`, or the host's
    `time.time()` for a SQLite file (one host, one clock).

    `eqc_quota_rate` came after the other two: an index whose owner has not run `index init` since lacks it,
    and then `has_rates` is False (nothing is recorded, and no rate is known)."""

    def __init__(self, db: Database, quota: sa.Table, slots: sa.Table, rates: sa.Table) -> None:
        self._db = db
        self.quota = quota
        self.slots = slots
        self.rates = rates
        self.has_rates = True

    def record_rate(self, quota_key: str, requests: int, window_s: float, owner: str) -> None:
        """Say which rate limit `owner` paces `quota_key` by (every process on one account must use the same;
        the latest one said is kept). Nothing is written where the table is missing."""
        if not self.has_rates:
            return
        values = {"requests": int(requests), "window_s": float(window_s), "owner": owner, "recorded_at": utcnow()}
        insert = self._db.dialect.insert(self.rates).values(quota_key=quota_key, **values)
        statement = insert.on_conflict_do_update(index_elements=[self.rates.c.quota_key], set_=values)
        with self._db.begin() as c:
            c.execute(statement)

    def rate_of(self, quota_key: str) -> QuotaRate | None:
        """The rate limit last recorded for `quota_key`; None when none was (or the table is missing)."""
        if not self.has_rates:
            return None
        r = self.rates
        query = sa.select(r.c.requests, r.c.window_s, r.c.owner, r.c.recorded_at).where(r.c.quota_key == quota_key)
        with self._db.read() as c:
            row = c.execute(query).one_or_none()
        if row is None:
            return None
        return QuotaRate(int(row.requests), float(row.window_s), str(row.owner), aware(row.recorded_at))

    def clock(self) -> float:
        """Now, on the clock `reserve` and `pause` use: a Retry-After becomes `pause(key, clock() + seconds)`."""
        with self._db.read() as c:
            return self._db.clock(c)

    def reserve(self, quota_key: str, owner: str, decide: Decide, *, recent: int, keep_s: float) -> tuple[float, float]:
        """Reserve one send: returns `(slot_at, now)`; the caller sleeps `slot_at - now`, then sends."""
        slots, now = self.reserve_many(quota_key, owner, decide, count=1, recent=recent, keep_s=keep_s)
        return slots[0], now

    def reserve_many(
        self, quota_key: str, owner: str, decide: Decide, *, count: int, recent: int, keep_s: float
    ) -> tuple[list[float], float]:
        """Reserve `count` sends in a row: returns `(slot_times, now)`.

        One short transaction that serialises every reserver of `quota_key`, in any process: PostgreSQL
        locks the quota's row (`SELECT ... FOR UPDATE`, the row inserted first if missing), SQLite takes the
        file's write lock at `BEGIN IMMEDIATE`. Inside it: read the `recent` latest slots, read the clock,
        call `decide` once per slot (keep it pure and quick: the lock is held; each call sees the slots before
        it), insert the slots it returns as given, and delete this quota's slots older than `keep_s` (several
        windows; only `decide` knows the window). A few slots a transaction let a process keep pace when one
        round trip to the database takes longer than one quota slot (a time-scaled benchmark).
        """
        if recent < 0 or keep_s <= 0 or count < 1:
            raise ValueError("reserve needs count >= 1, recent >= 0 and keep_s > 0")
        q, s = self.quota, self.slots
        with self._db.begin() as c:
            ensure = self._db.dialect.insert(q).values(quota_key=quota_key, paused_until=0.0)
            c.execute(ensure.on_conflict_do_nothing(index_elements=[q.c.quota_key]))
            locked = sa.select(q.c.paused_until).where(q.c.quota_key == quota_key).with_for_update()
            paused_until = float(c.execute(locked).scalar_one())
            now = self._db.clock(c)  # read only once the lock is held: a waiter must not use a stale now
            latest = sa.select(s.c.slot_at).where(s.c.quota_key == quota_key).order_by(s.c.slot_at.desc()).limit(recent)
            sends = sorted(float(value) for value in c.execute(latest).scalars())
            slots: list[float] = []
            for _ in range(count):
                slot_at = float(decide(sends[-recent:] if recent else [], paused_until, now))
                slots.append(slot_at)
                sends.append(slot_at)
            c.execute(sa.insert(s), [{"quota_key": quota_key, "owner": owner, "slot_at": at} for at in slots])
            c.execute(sa.delete(s).where(s.c.quota_key == quota_key, s.c.slot_at < now - keep_s))
        return slots, now

    def release(self, quota_key: str, owner: str, slots: Sequence[float]) -> int:
        """Give back `owner`'s reserved slots that no request used (a stage ending with slots in hand, a slot
        whose time passed before a send could take it): an unsent slot must not count against the account's
        quota for a window. Returns how many."""
        if not slots:
            return 0
        s = self.slots
        released = 0
        with self._db.begin() as c:
            for slot_at, count in sorted(Counter(slots).items()):  # slots of one time are alike: any `count`
                alike = sa.select(s.c.id).where(s.c.quota_key == quota_key, s.c.owner == owner, s.c.slot_at == slot_at)
                chosen = alike.order_by(s.c.id.desc()).limit(count).scalar_subquery()
                released += int(c.execute(sa.delete(s).where(s.c.id.in_(chosen))).rowcount)
        return released

    def last_busy(self, quota_key: str, background: str) -> tuple[float | None, float]:
        """`(latest slot of any owner not starting with `background`, now)`: a plain read, no lock taken, so
        a process that yields to others can watch the quota without slowing those who use it."""
        s = self.slots
        query = sa.select(sa.func.max(s.c.slot_at)).where(s.c.quota_key == quota_key, ~s.c.owner.startswith(background))
        with self._db.read() as c:
            latest = c.execute(query).scalar_one_or_none()
            now = self._db.clock(c)
        return (float(latest) if latest is not None else None), now

    def reserve_if_idle(
        self,
        quota_key: str,
        owner: str,
        decide: Decide,
        *,
        background: str,
        idle_s: float,
        ahead_s: float,
        recent: int,
        keep_s: float,
    ) -> tuple[float | None, float]:
        """Reserve one send for a process that yields to everyone else: `(slot_at, now)`, or `(None, now)`
        when it must not have one.

        Under the same lock as `reserve_many`: no slot when an owner not starting with `background` (a run,
        a review) has a slot later than `idle_s` ago (it is using the quota, or is about to), nor when the
        pacing rule's slot lies more than `ahead_s` in the future. A background slot is thus taken only while
        the foreground leaves the quota unused, and never far ahead, where a run starting meanwhile would
        have to queue behind it.
        """
        if recent < 0 or keep_s <= 0:
            raise ValueError("reserve needs recent >= 0 and keep_s > 0")
        q, s = self.quota, self.slots
        with self._db.begin() as c:
            ensure = self._db.dialect.insert(q).values(quota_key=quota_key, paused_until=0.0)
            c.execute(ensure.on_conflict_do_nothing(index_elements=[q.c.quota_key]))
            locked = sa.select(q.c.paused_until).where(q.c.quota_key == quota_key).with_for_update()
            paused_until = float(c.execute(locked).scalar_one())
            now = self._db.clock(c)
            busy = sa.select(sa.func.max(s.c.slot_at)).where(
                s.c.quota_key == quota_key, ~s.c.owner.startswith(background)
            )
            latest_busy = c.execute(busy).scalar_one_or_none()
            if latest_busy is not None and float(latest_busy) > now - idle_s:
                return None, now
            latest = sa.select(s.c.slot_at).where(s.c.quota_key == quota_key).order_by(s.c.slot_at.desc()).limit(recent)
            sends = sorted(float(value) for value in c.execute(latest).scalars())
            slot_at = float(decide(sends[-recent:] if recent else [], paused_until, now))
            if slot_at > now + ahead_s:
                return None, now
            c.execute(sa.insert(s).values(quota_key=quota_key, owner=owner, slot_at=slot_at))
            c.execute(sa.delete(s).where(s.c.quota_key == quota_key, s.c.slot_at < now - keep_s))
        return slot_at, now

    def pause(self, quota_key: str, until: float) -> None:
        """Hold every process's sends on this quota until `until` (a Retry-After applies to the whole account);
        an earlier pause never shortens a later one."""
        insert = self._db.dialect.insert(self.quota).values(quota_key=quota_key, paused_until=float(until))
        old = self.quota.c.paused_until
        longer = sa.case((insert.excluded.paused_until > old, insert.excluded.paused_until), else_=old)
        statement = insert.on_conflict_do_update(index_elements=[self.quota.c.quota_key], set_={"paused_until": longer})
        with self._db.begin() as c:
            c.execute(statement)

    def paused_until(self, quota_key: str) -> float:
        """The pause in force for `quota_key` (0.0 when none was ever set)."""
        q = self.quota
        with self._db.read() as c:
            value = c.execute(sa.select(q.c.paused_until).where(q.c.quota_key == quota_key)).scalar_one_or_none()
        return float(value) if value is not None else 0.0

    def prune(self, older_than_s: float) -> int:
        """Delete slots of every quota older than `older_than_s` seconds; returns how many."""
        s = self.slots
        with self._db.begin() as c:
            cutoff = self._db.clock(c) - older_than_s
            return int(c.execute(sa.delete(s).where(s.c.slot_at < cutoff)).rowcount)

    def slots_of(self, quota_key: str) -> list[tuple[str, float]]:
        """(owner, slot_at) of every slot kept for `quota_key`, in time order."""
        s = self.slots
        query = sa.select(s.c.owner, s.c.slot_at).where(s.c.quota_key == quota_key).order_by(s.c.slot_at, s.c.id)
        with self._db.read() as c:
            return [(str(owner), float(at)) for owner, at in c.execute(query).all()]

    def tallies(self) -> list[dict[str, Any]]:
        """Per quota: slots kept, the latest slot, the pause in force (for `index stats`)."""
        q, s = self.quota, self.slots
        per_key = (
            sa.select(s.c.quota_key, sa.func.count().label("slots"), sa.func.max(s.c.slot_at).label("last_slot_at"))
            .group_by(s.c.quota_key)
            .subquery()
        )
        query = (
            sa.select(q.c.quota_key, q.c.paused_until, per_key.c.slots, per_key.c.last_slot_at)
            .select_from(q.outerjoin(per_key, per_key.c.quota_key == q.c.quota_key))
            .order_by(q.c.quota_key)
        )
        with self._db.read() as c:
            return [
                {
                    "quota_key": key,
                    "slots": int(slots or 0),
                    "last_slot_at": float(last) if last is not None else None,
                    "paused_until": float(paused),
                }
                for key, paused, slots, last in c.execute(query).all()
            ]
