"""`base_info`: one row per company EQC answered, as WorkDataHub's migration defines it and its ETL fills it.

The users' downstream (`cleanse` into `business_info` and `biz_label`, `eqc-refresh`, reports) reads this
table, so eqc-enrich keeps it growing: the raw search, findDepart and findLabels bodies and the fields
parsed from them. The upsert follows their writer: on `company_id`, every written column becomes the new
value unless that is NULL (`COALESCE(new, old)`: nothing stored is ever erased), and `api_fetched_at` and
`updated_at` are set to now on every write. Columns their ETL never writes are never written here either.

The table is theirs: `index init` creates it only where it does not exist, with exactly the columns, key
and indexes of their migration, and a run may SELECT, INSERT and UPDATE it, never DELETE.

`eqc_payload` stays beside it rather than being replaced by it: the review page keeps every candidate of a
search under the reviewed name's key there (several companies under one key; `base_info` has one
`search_key_word` per company, and their `eqc-refresh` and seed loads rewrite it), and it is the tool's own
to prune. The cost is the search item of each answer stored twice.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich.store._engine import Database
from eqc_enrich.store._model import CompanyRecord, utcnow

__all__ = ["BASE_INFO_TABLE", "NULLABLE_ON_SQLITE", "BaseInfo", "define_table"]

BASE_INFO_TABLE = "base_info"
NULLABLE_ON_SQLITE = "eqc_enrich_nullable_on_sqlite"
"""Column `info` flag: SQLite has no identity columns, so the surrogate `id` (which nothing reads) may stay
NULL there; on PostgreSQL it is the identity column the migration defines."""

_TS = sa.DateTime(timezone=True)
_TEXT = sa.String(255)

# record field -> column, where they differ (a dataclass field cannot start with an underscore)
_COLUMN_OF = {"score": "_score"}


def define_table(metadata: sa.MetaData) -> sa.Table:
    """The 39 columns, the key `base_info_pkey1` and the three indexes, in the migration's order."""
    columns: list[tuple[str, Any]] = [(name, _TEXT) for name in ("search_key_word", "name", "name_display", "symbol")]
    columns += [("rank_score", sa.Float), ("country", _TEXT), ("company_en_name", _TEXT), ("smdb_code", _TEXT)]
    columns += [("is_hk", sa.Integer), ("coname", _TEXT), ("is_list", sa.Integer), ("company_nature", _TEXT)]
    columns += [("_score", sa.Float), ("type", _TEXT), ("organization_code", _TEXT), ("le_rep", sa.Text)]
    columns += [("reg_cap", sa.Float), ("is_pa_relatedparty", sa.Integer), ("province", _TEXT), ("est_date", _TEXT)]
    columns += [("company_short_name", _TEXT), ("is_debt", sa.Integer), ("unite_code", _TEXT)]
    columns += [("registered_status", _TEXT), ("cocode", _TEXT), ("default_score", sa.Float)]
    columns += [("company_former_name", _TEXT), ("is_rank_list", sa.Integer), ("trade_register_code", _TEXT)]
    columns += [("is_normal", sa.Integer), ("company_full_name", _TEXT), ("data_source", sa.String(20))]
    # none_as_null: "not fetched" must be SQL NULL, so that the upsert's COALESCE keeps what was stored
    columns += [(name, sa.JSON(none_as_null=True)) for name in ("raw_data", "raw_business_info", "raw_biz_label")]
    columns += [("api_fetched_at", _TS)]
    return sa.Table(
        BASE_INFO_TABLE,
        metadata,
        sa.Column("id", sa.Integer, sa.Identity(always=False), nullable=False, info={NULLABLE_ON_SQLITE: True}),
        sa.Column("company_id", _TEXT, nullable=False),
        *(sa.Column(name, kind) for name, kind in columns),
        sa.Column("updated_at", _TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("company_id", name="base_info_pkey1"),
        sa.Index("idx_base_info_unite_code", "unite_code"),
        sa.Index("idx_base_info_search_key", "search_key_word"),
        sa.Index("idx_base_info_api_fetched", "api_fetched_at"),
    )


WRITTEN = tuple(f.name for f in fields(CompanyRecord) if f.name != "company_id")
"""The record's fields: the columns their ETL writes (besides the key and the two times)."""


class BaseInfo:
    """Upserts by their writer's rule; the counts `index stats` and `worker status` show; the companies whose
    details (findDepart, findLabels) are still missing, for the worker."""

    def __init__(self, db: Database, table: sa.Table) -> None:
        self._db = db
        self.table = table
        self._widths = {
            column.name: column.type.length
            for column in table.c
            if isinstance(column.type, sa.String) and column.type.length is not None
        }

    def upsert(
        self, records: Sequence[CompanyRecord], *, now: datetime | None = None, conn: Connection | None = None
    ) -> None:
        if not records:
            return
        merged: dict[str, CompanyRecord] = {}
        for record in records:
            earlier = merged.get(record.company_id)
            merged[record.company_id] = record if earlier is None else earlier.merged(record)
        stamp = now or utcnow()
        rows = [self._row(merged[key], stamp) for key in sorted(merged)]  # key order: no deadlock between writers
        with self._db.begin(conn) as c:
            c.execute(self._upsert, rows)

    @functools.cached_property
    def _upsert(self) -> Any:
        """Built once: a commit of answers runs it every half second, and its 19 COALESCEs cost a build and a
        cache key each time otherwise (time taken from the thread that writes while the requests fly)."""
        insert = self._db.dialect.insert(self.table)
        new, old = insert.excluded, self.table.c
        columns = [_COLUMN_OF.get(name, name) for name in WRITTEN]
        keep = {name: sa.func.coalesce(new[name], old[name]) for name in columns}
        return insert.on_conflict_do_update(
            index_elements=[old.company_id],
            set_={**keep, "api_fetched_at": new.api_fetched_at, "updated_at": new.updated_at},
        )

    def _row(self, record: CompanyRecord, stamp: datetime) -> dict[str, Any]:
        row: dict[str, Any] = {"company_id": self._fit("company_id", record.company_id)}
        for name in WRITTEN:
            column = _COLUMN_OF.get(name, name)
            row[column] = self._fit(column, getattr(record, name))
        row["api_fetched_at"] = row["updated_at"] = stamp
        return row

    def _fit(self, column: str, value: Any) -> Any:
        """Text as the column can hold it: no NUL (PostgreSQL text cannot), at most the column's width (a
        long list of former names must not fail the commit that carries the answer; the raw body keeps all)."""
        if not isinstance(value, str):
            return value
        text = value.replace("\x00", "")
        width = self._widths.get(column)
        return text[:width] if width is not None else text

    def count(self, *, conn: Connection | None = None) -> int:
        with self._db.read(conn) as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one())

    def _lacking(self) -> sa.ColumnElement[bool]:
        t = self.table
        return sa.or_(t.c.raw_business_info.is_(None), t.c.raw_biz_label.is_(None))

    def tallies(self, *, conn: Connection | None = None) -> dict[str, Any]:
        """Rows, rows without details, and the oldest `api_fetched_at` (ISO text, None when empty)."""
        t = self.table
        lacking = sa.func.sum(sa.case((self._lacking(), 1), else_=0))
        with self._db.read(conn) as c:
            rows, without, oldest = c.execute(
                sa.select(sa.func.count(), lacking, sa.func.min(t.c.api_fetched_at))
            ).one()
        return {"rows": int(rows), "without_details": int(without or 0), "oldest_api_fetched_at": oldest}

    def missing_details(self, *, limit: int, conn: Connection | None = None) -> list[str]:
        """Companies whose findDepart or findLabels answer is not stored, the longest fetched first."""
        t = self.table
        query = (
            sa.select(t.c.company_id)
            .where(self._lacking())
            .order_by(t.c.api_fetched_at.asc().nulls_first(), t.c.company_id)
            .limit(limit)
        )
        with self._db.read(conn) as c:
            return [str(row[0]) for row in c.execute(query)]

    def get(self, company_id: str, *, conn: Connection | None = None) -> dict[str, Any] | None:
        with self._db.read(conn) as c:
            row = c.execute(sa.select(self.table).where(self.table.c.company_id == company_id)).mappings().first()
        return dict(row) if row is not None else None
