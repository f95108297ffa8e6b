"""The tables, by name: the shared `enrichment_index` and `base_info` exactly as the existing migrations create
them, and the tool's own tables beside them.

DDL is only ever issued by `init_index` (and, for a SQLite file, when the store opens it); `init_sql`
prints the same DDL for a DBA, with the grants a run needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn
from sqlalchemy.sql.compiler import DDLCompiler
from sqlalchemy.sql.ddl import ExecutableDDLElement

from eqc_enrich.store._base_info import NULLABLE_ON_SQLITE
from eqc_enrich.store._base_info import define_table as define_base_info
from eqc_enrich.store._conflicts import define_table as define_conflicts
from eqc_enrich.store._decisions import define_table as define_decisions
from eqc_enrich.store._decisions import define_undo_table as define_decision_undo
from eqc_enrich.store._quota import RATE_TABLE, define_rate_table
from eqc_enrich.store._shadow import define_table as define_shadow
from eqc_enrich.store._unsettled import define_table as define_unsettled
from eqc_enrich.store._worker import define_log_table as define_worker_log

__all__ = ["INDEX_TABLE", "OPTIONAL_TABLES", "Tables", "define", "init_sql", "missing_ddl", "missing_tables"]

INDEX_TABLE = "enrichment_index"
OPTIONAL_TABLES = frozenset({RATE_TABLE})
"""Tables a run does without when an older index lacks them (`index init` adds them): what they record is
only ever shown, never needed to enrich."""
_TS = sa.DateTime(timezone=True)


@dataclass(frozen=True, slots=True)
class Tables:
    """Every table the store uses, placed in one schema (None: the default one)."""

    schema: str | None
    index: sa.Table
    base_info: sa.Table
    negatives: sa.Table
    payloads: sa.Table
    journal: sa.Table
    quota: sa.Table
    quota_slots: sa.Table
    quota_rates: sa.Table
    claims: sa.Table
    unsettled: sa.Table
    worker_log: sa.Table
    decisions: sa.Table
    decision_undo: sa.Table
    conflicts: sa.Table
    shadow: sa.Table

    @property
    def shared(self) -> tuple[sa.Table, ...]:
        """The tables other tools write too: a run may SELECT, INSERT and UPDATE them, never DELETE."""
        return (self.index, self.base_info)

    @property
    def tool(self) -> tuple[sa.Table, ...]:
        """The tables only this tool writes (a run may SELECT, INSERT, UPDATE and DELETE in them)."""
        return (
            self.negatives, self.payloads, self.journal, self.quota, self.quota_slots, self.claims, self.unsettled,
            self.worker_log,
            self.decisions, self.decision_undo, self.quota_rates,
            self.conflicts, self.shadow,
        )  # fmt: skip

    @property
    def all(self) -> tuple[sa.Table, ...]:
        return (*self.shared, *self.tool)

    def privileges(self) -> list[tuple[sa.Table, tuple[str, ...]]]:
        """Each table with the privileges a run needs on it: exactly what the GRANT template grants."""
        shared = ("SELECT", "INSERT", "UPDATE")
        return [(table, shared) for table in self.shared] + [(table, (*shared, "DELETE")) for table in self.tool]


def define(schema: str | None) -> Tables:
    metadata = sa.MetaData(schema=schema)
    return Tables(
        schema=schema,
        index=_index_table(metadata),
        base_info=define_base_info(metadata),
        negatives=sa.Table(
            "eqc_negative_cache",
            metadata,
            sa.Column("lookup_key", sa.String(255), primary_key=True),
            sa.Column("asked_at", _TS, nullable=False),
        ),
        payloads=sa.Table(
            "eqc_payload",
            metadata,
            sa.Column("company_id", sa.String(100), primary_key=True),
            sa.Column("search_key", sa.String(255)),
            # none_as_null: "not fetched" must be SQL NULL, so that the upsert's COALESCE keeps what was stored
            sa.Column("search_json", sa.JSON(none_as_null=True)),
            sa.Column("depart_json", sa.JSON(none_as_null=True)),
            sa.Column("labels_json", sa.JSON(none_as_null=True)),
            sa.Column("fetched_at", _TS, nullable=False),
        ),
        journal=sa.Table(
            "run_journal",
            metadata,
            sa.Column("run_id", sa.String(36), primary_key=True),
            sa.Column("input_path", sa.Text),
            sa.Column("input_hash", sa.String(64)),
            sa.Column("settings_json", sa.JSON),
            sa.Column("counters_json", sa.JSON),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("started_at", _TS, nullable=False),
            sa.Column("finished_at", _TS),
        ),
        # Times in the quota and claim tables are seconds since the epoch on the shared clock (PostgreSQL's,
        # or the host's for a SQLite file): the pacing rule computes with them as plain numbers.
        quota=sa.Table(
            "eqc_quota",
            metadata,
            sa.Column("quota_key", sa.String(100), primary_key=True),
            sa.Column("paused_until", sa.Double, nullable=False, server_default=sa.text("0")),
        ),
        quota_slots=sa.Table(
            "eqc_quota_slot",
            metadata,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.Identity(), primary_key=True),
            sa.Column("quota_key", sa.String(100), nullable=False),
            sa.Column("owner", sa.String(64), nullable=False),
            sa.Column("slot_at", sa.Double, nullable=False),
            sa.Index("ix_eqc_quota_slot_key_at", "quota_key", "slot_at"),
        ),
        quota_rates=define_rate_table(metadata),
        claims=sa.Table(
            "eqc_claim",
            metadata,
            sa.Column("lookup_key", sa.String(255), primary_key=True),
            sa.Column("owner", sa.String(64), nullable=False),
            sa.Column("claimed_at", sa.Double, nullable=False),
            sa.Column("expires_at", sa.Double, nullable=False),
            sa.Index("ix_eqc_claim_owner", "owner"),
            sa.Index("ix_eqc_claim_expires_at", "expires_at"),
        ),
        unsettled=define_unsettled(metadata),
        worker_log=define_worker_log(metadata),
        decisions=define_decisions(metadata),
        decision_undo=define_decision_undo(metadata),
        conflicts=define_conflicts(metadata),
        shadow=define_shadow(metadata),
    )


@compiles(CreateColumn, "sqlite")
def _sqlite_column(element: CreateColumn, compiler: DDLCompiler, **kw: Any) -> str | None:
    """`base_info.id` is an identity column on PostgreSQL; SQLite has none, so there it may stay NULL."""
    text: str | None = compiler.visit_create_column(element, **kw)  # type: ignore[no-untyped-call]
    if text is not None and element.element.info.get(NULLABLE_ON_SQLITE):
        text = text.replace(" NOT NULL", "")
    return text


def _index_table(metadata: sa.MetaData) -> sa.Table:
    """`enrichment_index` column for column, constraint for constraint, as the reference migration has it."""
    return sa.Table(
        INDEX_TABLE,
        metadata,
        sa.Column("id", sa.Integer, sa.Identity(always=False), nullable=False),
        sa.Column("lookup_key", sa.String(255), nullable=False),
        sa.Column("lookup_type", sa.String(20), nullable=False),
        sa.Column("company_id", sa.String(100), nullable=False),
        sa.Column("confidence", sa.Numeric(3, 2), nullable=False, server_default=sa.text("1.00")),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("source_domain", sa.String(50)),
        sa.Column("source_table", sa.String(100)),
        sa.Column("hit_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_hit_at", _TS),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", _TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="enrichment_index_pkey"),
        sa.UniqueConstraint("lookup_key", "lookup_type", name="uq_enrichment_index_key_type"),
        sa.Index("ix_enrichment_index_type_key", "lookup_type", "lookup_key"),
        sa.Index("ix_enrichment_index_source", "source"),
        sa.Index("ix_enrichment_index_source_domain", "source_domain"),
    )


def _creation(table: sa.Table) -> list[ExecutableDDLElement]:
    indexes = sorted(table.indexes, key=lambda index: str(index.name))
    created: list[ExecutableDDLElement] = [sa.schema.CreateTable(table, if_not_exists=True)]
    return created + [sa.schema.CreateIndex(index, if_not_exists=True) for index in indexes]


def missing_ddl(conn: Connection, tables: Tables) -> tuple[list[ExecutableDDLElement], list[str]]:
    """The DDL that creates what is missing (schema, tables, indexes), and the names of the missing tables.

    Only what is missing: `CREATE ... IF NOT EXISTS` on an existing object still needs the CREATE privilege
    on PostgreSQL, and the owner of a foreign `enrichment_index` may not be who runs `init`.
    """
    inspector = sa.inspect(conn)
    statements: list[ExecutableDDLElement] = []
    if tables.schema is not None and tables.schema not in inspector.get_schema_names():
        statements.append(sa.schema.CreateSchema(tables.schema, if_not_exists=True))
        present: set[str] = set()
    else:
        present = set(inspector.get_table_names(schema=tables.schema))
    missing: list[str] = []
    for table in tables.all:
        if table.name not in present:
            missing.append(table.name)
            statements.extend(_creation(table))
            continue
        have = {index["name"] for index in inspector.get_indexes(table.name, schema=tables.schema)}
        statements.extend(sa.schema.CreateIndex(i, if_not_exists=True) for i in table.indexes if i.name not in have)
    return statements, missing


def missing_tables(conn: Connection, tables: Tables) -> list[str]:
    """Names of the tables of the store that the database lacks, `OPTIONAL_TABLES` included (one catalogue
    query, no DDL)."""
    present = set(sa.inspect(conn).get_table_names(schema=tables.schema))
    return [table.name for table in tables.all if table.name not in present]


def init_sql(schema: str | None, *, role: str = "etl_role") -> str:
    """The PostgreSQL DDL `index init` would run, for a DBA to run instead, with the grants a run needs."""
    tables = define(schema)
    from sqlalchemy.dialects import postgresql  # for printing only: a run on SQLite never loads it

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    statements: list[ExecutableDDLElement] = []
    if schema is not None:
        statements.append(sa.schema.CreateSchema(schema, if_not_exists=True))
    for table in tables.all:
        statements.extend(_creation(table))
    body = [str(statement.compile(dialect=dialect)).strip() + ";" for statement in statements]
    quote = dialect.identifier_preparer
    name = quote.quote_schema(schema) if schema is not None else "public"
    own = ", ".join(quote.format_table(table) for table in tables.tool)
    grants = [
        f"-- Grants for the role the runs connect as (replace {role}); a run issues no DDL:",
        f"-- GRANT USAGE ON SCHEMA {name} TO {role};",
        *(f"-- GRANT SELECT, INSERT, UPDATE ON {quote.format_table(table)} TO {role};" for table in tables.shared),
        f"-- GRANT SELECT, INSERT, UPDATE, DELETE ON {own} TO {role};",
    ]
    header = [
        "-- eqc-enrich: the enrichment index, base_info and the tool's own tables (PostgreSQL).",
        f"-- {INDEX_TABLE} and base_info are created only if missing, as the existing migrations define them.",
        "BEGIN;",
    ]
    return "\n".join([*header, *body, "COMMIT;", "", *grants]) + "\n"
