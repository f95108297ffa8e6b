"""`eqc_former_name_conflict`: former names that point at two companies, and the rule that keeps them out.

A `former_name` key is a name some company once had; when EQC (or the index) ties one key to two company
ids, the key says nothing certain about either. WorkDataHub's writer deletes such keys and forgets it did,
so the next answer writes them again; here the key is recorded once, and from then on it answers no row
(the name goes on to the next source, EQC included) and is never written again. Nothing is deleted from
`enrichment_index`: a conflicting row already there stays, and is ignored.

The rule, per name key K in a commit: let F be the ids K has as a `former_name` (the stored row and the
commit's entries) and N the ids it has as a `customer_name` (likewise). K is a conflict when F is not empty
and F and N together hold more than one id. Its `former_name` entries are then dropped from the commit
(its `customer_name` entries are written as usual); an existing conflict drops them without a second look.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich.store._engine import Database
from eqc_enrich.store._entries import MAX_KEY
from eqc_enrich.store._model import IndexEntry, utcnow

__all__ = ["CONFLICT_TABLE", "FOUND_BY_ANSWER", "FOUND_BY_INDEX", "Conflict", "FormerNameConflicts", "define_table"]

CONFLICT_TABLE = "eqc_former_name_conflict"
FOUND_BY_ANSWER = "eqc"  # an answer being written met it
FOUND_BY_INDEX = "index"  # rows already in the index disagreed (`index init` looks)
_FORMER = "former_name"
_CUSTOMER = "customer_name"
_NAME_TYPES = (_FORMER, _CUSTOMER)


def define_table(metadata: sa.MetaData) -> sa.Table:
    ts = sa.DateTime(timezone=True)
    return sa.Table(
        CONFLICT_TABLE,
        metadata,
        sa.Column("lookup_key", sa.String(MAX_KEY), primary_key=True),
        sa.Column("company_ids", sa.Text, nullable=False),  # every id seen for the key, sorted, comma-separated
        sa.Column("found_by", sa.String(20), nullable=False),
        sa.Column("first_seen_at", ts, nullable=False),
        sa.Column("last_seen_at", ts, nullable=False),
    )


@dataclass(frozen=True, slots=True)
class Conflict:
    lookup_key: str
    company_ids: tuple[str, ...]
    found_by: str
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lookup_key": self.lookup_key,
            "company_ids": list(self.company_ids),
            "found_by": self.found_by,
            "first_seen_at": _iso(self.first_seen_at),
            "last_seen_at": _iso(self.last_seen_at),
        }


class FormerNameConflicts:
    """The conflict table, the screen every commit of index rows passes, and the search of the index for
    conflicts its rows already hold."""

    def __init__(self, db: Database, table: sa.Table, index: sa.Table) -> None:
        self._db = db
        self.table = table
        self._index = index

    def known(self, keys: Iterable[str], *, conn: Connection | None = None) -> set[str]:
        wanted = {key[:MAX_KEY] for key in keys}
        if not wanted:
            return set()
        query = sa.select(self.table.c.lookup_key).where(self._db.dialect.one_of(self.table.c.lookup_key, wanted))
        with self._db.read(conn) as c:
            return {str(row[0]) for row in c.execute(query)}

    def screen(
        self, entries: Sequence[IndexEntry], *, now: datetime | None = None, conn: Connection | None = None
    ) -> list[IndexEntry]:
        """The entries without the `former_name` ones the rule keeps out; new conflicts are recorded (inside
        the caller's transaction with `conn`, so the record and the commit it screened go together)."""
        names = [e for e in entries if e.lookup_type in _NAME_TYPES]
        former_keys = {e.lookup_key[:MAX_KEY] for e in names if e.lookup_type == _FORMER}
        keys = {e.lookup_key[:MAX_KEY] for e in names}
        if not keys:
            return list(entries)
        with self._db.begin(conn) as c:
            stored = self._stored_ids(keys, c)
            # a customer name only matters where a former name is involved: stored, or in this commit
            involved = former_keys | {key for key, kinds in stored.items() if kinds.get(_FORMER)}
            if not involved:
                return list(entries)
            known = self.known(involved, conn=c)
            ids: dict[str, dict[str, set[str]]] = {key: {kind: set(v) for kind, v in stored.get(key, {}).items()}
                                                   for key in involved}  # fmt: skip
            for entry in names:
                key = entry.lookup_key[:MAX_KEY]
                if key in involved:
                    ids[key].setdefault(entry.lookup_type, set()).add(entry.company_id)
            found = {key: seen for key, kinds in ids.items() if key not in known and len(seen := _all_ids(kinds)) > 1}
            if found:
                self.record(found, found_by=FOUND_BY_ANSWER, now=now, conn=c)
        blocked = known | set(found)
        return [e for e in entries if not (e.lookup_type == _FORMER and e.lookup_key[:MAX_KEY] in blocked)]

    def _stored_ids(self, keys: set[str], conn: Connection) -> dict[str, dict[str, set[str]]]:
        i = self._index
        query = sa.select(i.c.lookup_key, i.c.lookup_type, i.c.company_id).where(
            i.c.lookup_type.in_(_NAME_TYPES), self._db.dialect.one_of(i.c.lookup_key, keys)
        )
        stored: dict[str, dict[str, set[str]]] = defaultdict(dict)
        for key, kind, company_id in conn.execute(query):
            stored[str(key)].setdefault(str(kind), set()).add(str(company_id))
        return stored

    def record(
        self,
        conflicts: Mapping[str, Iterable[str]],
        *,
        found_by: str,
        now: datetime | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Record (or widen) conflicts: key -> the company ids seen for it. Returns how many keys were new."""
        if not conflicts:
            return 0
        stamp = now or utcnow()
        wanted = {key[:MAX_KEY]: set(ids) for key, ids in conflicts.items()}
        t = self.table
        with self._db.begin(conn) as c:
            query = sa.select(t.c.lookup_key, t.c.company_ids).where(self._db.dialect.one_of(t.c.lookup_key, wanted))
            before = {str(key): set(str(ids).split(",")) for key, ids in c.execute(query)}
            rows = [
                {"lookup_key": key, "company_ids": ",".join(sorted(ids | before.get(key, set()))),
                 "found_by": found_by, "first_seen_at": stamp, "last_seen_at": stamp}
                for key, ids in sorted(wanted.items())
            ]  # fmt: skip
            insert = self._db.dialect.insert(t)
            statement = insert.on_conflict_do_update(
                index_elements=[t.c.lookup_key],
                set_={"company_ids": insert.excluded.company_ids, "last_seen_at": insert.excluded.last_seen_at},
            )
            c.execute(statement, rows)
        return sum(1 for key in wanted if key not in before)

    def count(self, *, conn: Connection | None = None) -> int:
        with self._db.read(conn) as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one())

    def listing(self, *, limit: int = 1000, conn: Connection | None = None) -> list[Conflict]:
        """Recorded conflicts, the latest seen first."""
        t = self.table
        query = sa.select(t).order_by(t.c.last_seen_at.desc(), t.c.lookup_key).limit(limit)
        with self._db.read(conn) as c:
            return [
                Conflict(r["lookup_key"], tuple(str(r["company_ids"]).split(",")), r["found_by"], r["first_seen_at"],
                         r["last_seen_at"])
                for r in c.execute(query).mappings()
            ]  # fmt: skip

    def in_index(self, *, conn: Connection | None = None) -> dict[str, set[str]]:
        """Conflicts the index's rows already hold: a `former_name` key that is also a `customer_name` key of
        another company (a key has one row per type, so that is the only way two rows can disagree)."""
        i = self._index
        other = i.alias("other")
        query = (
            sa.select(i.c.lookup_key, i.c.company_id, other.c.company_id)
            .join(
                other,
                sa.and_(
                    other.c.lookup_key == i.c.lookup_key,
                    other.c.lookup_type == _CUSTOMER,
                    other.c.company_id != i.c.company_id,
                ),
            )
            .where(i.c.lookup_type == _FORMER)
        )
        found: dict[str, set[str]] = defaultdict(set)
        with self._db.read(conn) as c:
            for key, former_id, customer_id in c.execute(query):
                found[str(key)].update((str(former_id), str(customer_id)))
        return dict(found)


def _all_ids(kinds: Mapping[str, set[str]]) -> set[str]:
    """Every id a key has as a former or customer name; nothing when no former name is involved."""
    former = kinds.get(_FORMER, set())
    return former | kinds.get(_CUSTOMER, set()) if former else set()


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat(timespec="seconds")
