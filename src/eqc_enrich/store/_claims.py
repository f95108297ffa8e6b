"""Claims: a name is claimed before it is asked, so two processes never spend quota on the same name.

A claim is a lease: it lapses at `expires_at` unless its owner renews it, so a crashed process's names
are taken over by others instead of staying blocked. Times are seconds on the shared clock (PostgreSQL's,
or the host's for a SQLite file).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich.store._engine import Database
from eqc_enrich.store._entries import MAX_KEY

__all__ = ["Claims"]


class Claims:
    """`eqc_claim`: lookup key -> owner (a run id) and lease expiry."""

    def __init__(self, db: Database, table: sa.Table) -> None:
        self._db = db
        self.table = table

    def claim(self, keys: Sequence[str], owner: str, lease_s: float, *, conn: Connection | None = None) -> set[str]:
        """Claim `keys` for `lease_s` seconds; returns those `owner` now holds: new claims, its own (renewed)
        and others' expired ones taken over. Keys another owner holds unexpired are left out.

        One `INSERT ... ON CONFLICT (lookup_key) DO UPDATE ... WHERE expired OR same owner RETURNING`: the
        database decides each key atomically, so two claimers racing for a key cannot both get it. Keys go
        in sorted order, so two claimers with overlapping sets lock rows in the same order (no deadlock).
        """
        wanted = sorted({key[:MAX_KEY] for key in keys})
        if not wanted:
            return set()
        t = self.table
        with self._db.begin(conn) as c:
            now = self._db.clock(c)
            insert = self._db.dialect.insert(t)
            new = insert.excluded
            statement = insert.on_conflict_do_update(
                index_elements=[t.c.lookup_key],
                set_={
                    "owner": new.owner,
                    "claimed_at": sa.case((t.c.owner == new.owner, t.c.claimed_at), else_=new.claimed_at),
                    "expires_at": new.expires_at,
                },
                where=(t.c.expires_at <= now) | (t.c.owner == new.owner),
            ).returning(t.c.lookup_key)
            rows = [{"lookup_key": k, "owner": owner, "claimed_at": now, "expires_at": now + lease_s} for k in wanted]
            return {str(row[0]) for row in c.execute(statement, rows)}

    def renew(self, owner: str, lease_s: float, *, conn: Connection | None = None) -> int:
        """Extend every claim `owner` still holds to `lease_s` from now; returns how many."""
        t = self.table
        with self._db.begin(conn) as c:
            # lock the rows in key order first, as `claim` does: a renewal meeting another process's claim
            # of an expired key then waits instead of deadlocking
            c.execute(sa.select(t.c.lookup_key).where(t.c.owner == owner).order_by(t.c.lookup_key).with_for_update())
            now = self._db.clock(c)
            statement = sa.update(t).where(t.c.owner == owner).values(expires_at=now + lease_s)
            return int(c.execute(statement).rowcount)

    def release(self, keys: Iterable[str], owner: str, *, conn: Connection | None = None) -> int:
        """Drop `owner`'s claims on `keys` (others' claims are untouched); returns how many."""
        names = {key[:MAX_KEY] for key in keys}
        if not names:
            return 0
        t = self.table
        with self._db.begin(conn) as c:
            statement = sa.delete(t).where(t.c.owner == owner, self._db.dialect.one_of(t.c.lookup_key, names))
            return int(c.execute(statement).rowcount)

    def held_by_others(self, keys: Iterable[str], owner: str, *, conn: Connection | None = None) -> set[str]:
        """Which of `keys` another owner holds unexpired (their answers may soon be in the index)."""
        names = {key[:MAX_KEY] for key in keys}
        if not names:
            return set()
        t = self.table
        with self._db.read(conn) as c:
            now = self._db.clock(c)
            query = sa.select(t.c.lookup_key).where(
                self._db.dialect.one_of(t.c.lookup_key, names), t.c.owner != owner, t.c.expires_at > now
            )
            return {str(row[0]) for row in c.execute(query)}

    def prune_expired(self, *, conn: Connection | None = None) -> int:
        """Delete lapsed claims; returns how many."""
        t = self.table
        with self._db.begin(conn) as c:
            now = self._db.clock(c)
            return int(c.execute(sa.delete(t).where(t.c.expires_at <= now)).rowcount)

    def live(self, *, conn: Connection | None = None) -> list[dict[str, Any]]:
        """Unexpired claims per owner: how many, and when the last lapses (for `index stats`)."""
        t = self.table
        with self._db.read(conn) as c:
            now = self._db.clock(c)
            query = (
                sa.select(t.c.owner, sa.func.count(), sa.func.max(t.c.expires_at))
                .where(t.c.expires_at > now)
                .group_by(t.c.owner)
                .order_by(t.c.owner)
            )
            return [
                {"owner": owner, "claims": int(n), "expires_in_s": round(float(last) - now, 1)}
                for owner, n, last in c.execute(query).all()
            ]
