"""`enrichment_index`: bulk lookup, the existing writers' upsert rule, hit counts."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich.store._engine import Database
from eqc_enrich.store._model import IndexEntry, utcnow

__all__ = ["CONFIDENCE_BANDS", "WITHDRAWN", "Entries"]

MAX_KEY = 255

WITHDRAWN = "manual_undone"
"""The source of a row whose only content was a person's decision, undone since. The row cannot be deleted (the
production role has no DELETE on the index), so it stays with no company id and confidence 0.00: lookups pass
over it, and any writer's answer (any confidence above 0) replaces it under the existing writers' rule."""

CONFIDENCE_BANDS: tuple[tuple[str, float], ...] = (
    ("1.00", 1.0),
    ("0.90-0.99", 0.9),
    ("0.80-0.89", 0.8),
    ("0.60-0.79", 0.6),
    ("<0.60", 0.0),
)
"""Bands for `index stats`, highest first: (label, lower bound)."""


class Entries:
    """The shared index table. Writes follow the conventions of the tools that wrote it before us."""

    def __init__(self, db: Database, table: sa.Table) -> None:
        self._db = db
        self.table = table

    def lookup(
        self,
        wanted: Mapping[str, Iterable[str]],
        *,
        updated_since: datetime | None = None,
        conn: Connection | None = None,
    ) -> dict[tuple[str, str], IndexEntry]:
        """All entries for the wanted (lookup_type -> keys): one query per lookup type, whatever the count."""
        found: dict[tuple[str, str], IndexEntry] = {}
        t = self.table
        # confidence read as a float, not a Decimal, and no timestamps: row conversion dominates a big lookup
        confidence = sa.type_coerce(t.c.confidence, sa.Float)
        columns = [t.c.lookup_key, t.c.lookup_type, t.c.company_id, confidence, t.c.source]
        with self._db.read(conn) as c:
            for lookup_type, keys in wanted.items():
                query = sa.select(*columns).where(
                    t.c.lookup_type == lookup_type,
                    self._db.dialect.one_of(t.c.lookup_key, keys),
                    t.c.source != WITHDRAWN,
                )
                if updated_since is not None:
                    query = query.where(t.c.updated_at >= updated_since)
                for key, kind, company_id, score, source in c.execute(query).all():
                    found[(key, kind)] = IndexEntry(key, kind, company_id, float(score), source)
        return found

    def upsert(
        self, entries: Sequence[IndexEntry], *, now: datetime | None = None, conn: Connection | None = None
    ) -> None:
        """Insert, or on (lookup_key, lookup_type) apply the existing writers' rule.

        confidence = GREATEST(old, new); company_id, source, source_domain, source_table replaced only when
        the new confidence is strictly higher; hit_count + 1, last_hit_at and updated_at = now on every
        conflict. A new row starts with hit_count 0 and last_hit_at = now.
        """
        if not entries:
            return
        now = now or utcnow()
        rows = [
            {
                "lookup_key": e.lookup_key[:MAX_KEY],
                "lookup_type": e.lookup_type,
                "company_id": e.company_id,
                "confidence": Decimal(f"{e.confidence:.2f}"),
                "source": e.source,
                "source_domain": e.source_domain,
                "source_table": e.source_table,
                "hit_count": 0,
                "last_hit_at": now,
                "created_at": now,
                "updated_at": now,
            }
            # in key order: two processes writing overlapping rows then lock them in the same order (no deadlock)
            for e in sorted(strongest_per_key(entries), key=lambda e: (e.lookup_key[:MAX_KEY], e.lookup_type))
        ]
        with self._db.begin(conn) as c:
            c.execute(self._upsert, rows)

    @functools.cached_property
    def _upsert(self) -> Any:
        """The upsert statement, built once: building it (the `excluded` alias, the CASEs) took longer than
        running it for the few rows a commit of the EQC stage carries."""
        insert = self._db.dialect.insert(self.table)
        new, old = insert.excluded, self.table.c
        stronger = new.confidence > old.confidence
        replaced = ("company_id", "source", "source_domain", "source_table", "confidence")
        return insert.on_conflict_do_update(
            index_elements=[old.lookup_key, old.lookup_type],
            set_={
                **{name: sa.case((stronger, new[name]), else_=old[name]) for name in replaced},
                "hit_count": old.hit_count + 1,
                "last_hit_at": new.last_hit_at,
                "updated_at": new.updated_at,
            },
        )

    def row(
        self, key: str, lookup_type: str, *, lock: bool = False, conn: Connection | None = None
    ) -> IndexEntry | None:
        """The whole row for one key, withdrawn or not (`lock`: held until the caller's transaction ends)."""
        t = self.table
        query = sa.select(
            t.c.lookup_key, t.c.lookup_type, t.c.company_id, t.c.confidence, t.c.source, t.c.updated_at,
            t.c.source_domain, t.c.source_table,
        ).where(t.c.lookup_key == key[:MAX_KEY], t.c.lookup_type == lookup_type)  # fmt: skip
        if lock:
            query = query.with_for_update()
        with self._db.read(conn) as c:
            found = c.execute(query).first()
        if found is None:
            return None
        key_, kind, company_id, confidence, source, updated_at, domain, table = found
        return IndexEntry(key_, kind, company_id, float(confidence), source, updated_at, domain, table)

    def replace_row(self, expected: IndexEntry, new: IndexEntry, *, conn: Connection) -> bool:
        """Put `new`'s values (updated_at included) in place of the row, only while it still holds `expected`'s
        company id and provenance. An UPDATE, never a DELETE: True when the row was replaced."""
        t = self.table
        domain = expected.source_domain
        same_domain = t.c.source_domain.is_(None) if domain is None else t.c.source_domain == domain
        statement = (
            sa.update(t)
            .where(
                t.c.lookup_key == expected.lookup_key[:MAX_KEY],
                t.c.lookup_type == expected.lookup_type,
                t.c.company_id == expected.company_id,
                t.c.source == expected.source,
                same_domain,
            )
            .values(
                company_id=new.company_id,
                confidence=Decimal(f"{new.confidence:.2f}"),
                source=new.source,
                source_domain=new.source_domain,
                source_table=new.source_table,
                updated_at=new.updated_at or utcnow(),
            )
        )
        return bool(conn.execute(statement).rowcount)

    def record_hits(
        self, keys: Iterable[tuple[str, str]], *, now: datetime | None = None, conn: Connection | None = None
    ) -> int:
        """`hit_count + 1` and `last_hit_at = now` for every (key, type) a run used, however many rows it
        answered: one UPDATE per lookup type, the keys bound as one parameter."""
        by_type: dict[str, set[str]] = defaultdict(set)
        for key, kind in keys:
            by_type[str(kind)].add(key)
        if not by_type:
            return 0
        t = self.table
        stamp = now or utcnow()
        updated = 0
        with self._db.begin(conn) as c:
            for kind, names in sorted(by_type.items()):
                statement = (
                    sa.update(t)
                    .where(t.c.lookup_type == kind, self._db.dialect.one_of(t.c.lookup_key, names))
                    .values(hit_count=t.c.hit_count + 1, last_hit_at=stamp)
                )
                updated += c.execute(statement).rowcount
        return updated

    def overrule(self, entry: IndexEntry, *, only_source: str, conn: Connection | None = None) -> bool:
        """Replace the entry of `entry`'s key and type with `entry`, but only while it is still one `only_source`
        wrote (EQC's answer where a local match said otherwise; a person's entry is never touched)."""
        t = self.table
        statement = (
            sa.update(t)
            .where(t.c.lookup_key == entry.lookup_key, t.c.lookup_type == entry.lookup_type, t.c.source == only_source)
            .values(
                company_id=entry.company_id, confidence=Decimal(f"{entry.confidence:.2f}"), source=entry.source,
                source_domain=entry.source_domain, source_table=entry.source_table, updated_at=utcnow(),
            )
        )  # fmt: skip
        with self._db.begin(conn) as c:
            return bool(c.execute(statement).rowcount)

    def count(self, *, conn: Connection | None = None) -> int:
        with self._db.read(conn) as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one())

    def tallies(self, *, conn: Connection | None = None) -> dict[str, dict[str, int]]:
        """Rows by lookup type, by source and by confidence band."""
        t = self.table
        band: Any = sa.case(
            *((t.c.confidence >= Decimal(f"{low:.2f}"), label) for label, low in CONFIDENCE_BANDS[:-1]),
            else_=CONFIDENCE_BANDS[-1][0],
        )
        result: dict[str, dict[str, int]] = {}
        with self._db.read(conn) as c:
            for name, column in (("by_type", t.c.lookup_type), ("by_source", t.c.source), ("by_confidence", band)):
                rows = c.execute(sa.select(column, sa.func.count()).group_by(column)).all()
                result[name] = {str(value): int(n) for value, n in sorted(rows, key=lambda r: (-r[1], str(r[0])))}
        return result

    def all_rows(self, *, conn: Connection | None = None) -> list[dict[str, Any]]:
        """Every row but the surrogate id, in key order (for export)."""
        t = self.table
        columns = [column for column in t.c if column.name != "id"]
        with self._db.read(conn) as c:
            query = sa.select(*columns).order_by(t.c.lookup_type, t.c.lookup_key)
            return [dict(row) for row in c.execute(query).mappings()]


def strongest_per_key(entries: Sequence[IndexEntry]) -> list[IndexEntry]:
    """One row per (key, type), the most confident (the first of equals): a single upsert may not touch a
    row twice."""
    best: dict[tuple[str, str], IndexEntry] = {}
    for entry in entries:
        key = (entry.lookup_key[:MAX_KEY], entry.lookup_type)
        current = best.get(key)
        if current is None or entry.confidence > current.confidence:
            best[key] = entry
    return list(best.values())
