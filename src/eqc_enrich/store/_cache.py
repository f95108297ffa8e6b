"""The tool's caches of EQC answers: names EQC does not know, and raw payloads per company."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich.store._engine import Database
from eqc_enrich.store._entries import MAX_KEY
from eqc_enrich.store._model import Payload, utcnow

__all__ = ["Negatives", "Payloads"]


class Negatives:
    """`eqc_negative_cache`: a name EQC said it does not know, and when it said so."""

    def __init__(self, db: Database, table: sa.Table) -> None:
        self._db = db
        self.table = table

    def known(self, names: Iterable[str], *, asked_since: datetime, conn: Connection | None = None) -> set[str]:
        """Names EQC said it does not know, asked recently enough to trust."""
        t = self.table
        query = sa.select(t.c.lookup_key).where(
            self._db.dialect.one_of(t.c.lookup_key, names), t.c.asked_at >= asked_since
        )
        with self._db.read(conn) as c:
            return {row[0] for row in c.execute(query).all()}

    def add(self, names: Sequence[str], *, now: datetime | None = None, conn: Connection | None = None) -> None:
        if not names:
            return
        insert = self._db.dialect.insert(self.table)
        statement = insert.on_conflict_do_update(
            index_elements=[self.table.c.lookup_key], set_={"asked_at": insert.excluded.asked_at}
        )
        stamp = now or utcnow()
        rows = [{"lookup_key": name, "asked_at": stamp} for name in sorted({n[:MAX_KEY] for n in names})]
        with self._db.begin(conn) as c:
            c.execute(statement, rows)

    def clear(self, names: Sequence[str], *, conn: Connection | None = None) -> None:
        """Forget names EQC has found since."""
        if not names:
            return
        with self._db.begin(conn) as c:
            c.execute(sa.delete(self.table).where(self._db.dialect.one_of(self.table.c.lookup_key, names)))

    def count(self, *, asked_before: datetime | None = None, conn: Connection | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(self.table)
        if asked_before is not None:
            query = query.where(self.table.c.asked_at < asked_before)
        with self._db.read(conn) as c:
            return int(c.execute(query).scalar_one())

    def prune(self, *, asked_before: datetime, conn: Connection | None = None) -> int:
        """Delete answers too old to trust (a run would ask again anyway)."""
        with self._db.begin(conn) as c:
            return int(c.execute(sa.delete(self.table).where(self.table.c.asked_at < asked_before)).rowcount)


PAYLOAD_FIELDS = ("search_key", "search_json", "depart_json", "labels_json")


class Payloads:
    """`eqc_payload`: raw EQC answers by company id; a later answer never erases a field with nothing."""

    def __init__(self, db: Database, table: sa.Table) -> None:
        self._db = db
        self.table = table

    def upsert(
        self, payloads: Sequence[Payload], *, now: datetime | None = None, conn: Connection | None = None
    ) -> None:
        if not payloads:
            return
        merged: dict[str, Payload] = {}
        for payload in payloads:
            merged[payload.company_id] = _merge_payload(merged.get(payload.company_id), payload)
        stamp = now or utcnow()
        rows = [
            {"company_id": p.company_id, **{name: getattr(p, name) for name in PAYLOAD_FIELDS}, "fetched_at": stamp}
            for p in merged.values()
        ]
        with self._db.begin(conn) as c:
            c.execute(self._upsert, rows)

    @functools.cached_property
    def _upsert(self) -> Any:
        """Built once (see `Entries._upsert`)."""
        insert = self._db.dialect.insert(self.table)
        new, old = insert.excluded, self.table.c
        keep = {name: sa.func.coalesce(new[name], old[name]) for name in PAYLOAD_FIELDS}
        set_ = {**keep, "fetched_at": new.fetched_at}
        return insert.on_conflict_do_update(index_elements=[old.company_id], set_=set_)

    def count(self, *, conn: Connection | None = None) -> int:
        with self._db.read(conn) as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one())


def _merge_payload(old: Payload | None, new: Payload) -> Payload:
    if old is None:
        return new
    return Payload(
        company_id=new.company_id,
        search_key=new.search_key or old.search_key,
        search_json=new.search_json or old.search_json,
        depart_json=new.depart_json or old.depart_json,
        labels_json=new.labels_json or old.labels_json,
    )
