"""`run_journal`: one row per run (its input, options and final counters); its run id also names the run as
the owner of claims and quota slots."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich.store._engine import Database
from eqc_enrich.store._model import utcnow

__all__ = ["Journal"]


class Journal:
    def __init__(self, db: Database, table: sa.Table) -> None:
        self._db = db
        self.table = table

    def start(
        self,
        run_id: str,
        input_path: str,
        input_hash: str,
        settings: Mapping[str, Any],
        *,
        conn: Connection | None = None,
    ) -> None:
        with self._db.begin(conn) as c:
            c.execute(
                sa.insert(self.table).values(
                    run_id=run_id,
                    input_path=input_path,
                    input_hash=input_hash,
                    settings_json=_jsonable(settings),
                    status="running",
                    started_at=utcnow(),
                )
            )

    def finish(self, run_id: str, status: str, counters: Mapping[str, Any], *, conn: Connection | None = None) -> None:
        with self._db.begin(conn) as c:
            c.execute(
                sa.update(self.table)
                .where(self.table.c.run_id == run_id)
                .values(status=status, counters_json=_jsonable(counters), finished_at=utcnow())
            )

    def recent(self, limit: int = 20, *, conn: Connection | None = None) -> list[dict[str, Any]]:
        t = self.table
        with self._db.read(conn) as c:
            rows = c.execute(sa.select(t).order_by(t.c.started_at.desc()).limit(limit)).mappings()
            return [dict(row) for row in rows]


def _jsonable(value: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(value, default=str))
