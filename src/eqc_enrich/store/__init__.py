"""The enrichment index and the tool's tables, in SQLite (default) or PostgreSQL (production).

    store = IndexStore("postgresql+psycopg://etl@db/warehouse", schema="enterprise")
    store.lookup({"customer_name": keys})          # one bulk query per lookup type
    with store.transaction() as conn:              # several tables, one commit
        store.entries.upsert(entries, conn=conn)
        store.claims.release(keys, run_id, conn=conn)

Layout: `_engine` (URLs, engine, transactions, the one error-mapping table), `_dialects` (what differs
between SQLite and PostgreSQL, chosen once), `_schema` (the tables by name, DDL for `index init`), one
object per table (`Entries`, `BaseInfo`, `Negatives`, `Payloads`, `Journal`, `QuotaLedger`, `Claims`,
`UnsettledNames`, `ReviewDecisions`, `FormerNameConflicts`, `MatchShadow`), the front `IndexStore`, and
`_admin` (what the `index` commands do).
"""

from eqc_enrich.store._admin import ImportReport, export_entries, import_entries, index_stats, prune_index
from eqc_enrich.store._base_info import BASE_INFO_TABLE, BaseInfo
from eqc_enrich.store._cache import Negatives, Payloads
from eqc_enrich.store._claims import Claims
from eqc_enrich.store._conflicts import CONFLICT_TABLE, Conflict, FormerNameConflicts
from eqc_enrich.store._decisions import DECISIONS, Decision, ReviewDecisions, UndoRecord
from eqc_enrich.store._engine import DB_ENV, DEFAULT_DB, SCHEMA_ENV, database_url, redact_url
from eqc_enrich.store._entries import MAX_KEY, WITHDRAWN, Entries
from eqc_enrich.store._journal import Journal
from eqc_enrich.store._model import CompanyRecord, IndexEntry, Payload, WriteBatch, utcnow
from eqc_enrich.store._quota import Decide, QuotaLedger, QuotaRate
from eqc_enrich.store._schema import INDEX_TABLE, Tables, init_sql
from eqc_enrich.store._shadow import ACTIONS, MatchShadow, ShadowRow
from eqc_enrich.store._store import IndexStore, InitReport, init_index
from eqc_enrich.store._unsettled import KINDS, NOT_A_COMPANY, SURE, Remapped, UnsettledName, UnsettledNames
from eqc_enrich.store._worker import LEGACY_TABLE, Attempts, LegacyRequest, LegacyRequests, WorkerLog, aware

__all__ = [
    "ACTIONS",
    "BASE_INFO_TABLE",
    "CONFLICT_TABLE",
    "DB_ENV",
    "DECISIONS",
    "DEFAULT_DB",
    "INDEX_TABLE",
    "KINDS",
    "LEGACY_TABLE",
    "MAX_KEY",
    "NOT_A_COMPANY",
    "SCHEMA_ENV",
    "SURE",
    "WITHDRAWN",
    "Attempts",
    "BaseInfo",
    "Claims",
    "CompanyRecord",
    "Conflict",
    "Decide",
    "Decision",
    "Entries",
    "FormerNameConflicts",
    "ImportReport",
    "IndexEntry",
    "IndexStore",
    "InitReport",
    "Journal",
    "LegacyRequest",
    "LegacyRequests",
    "MatchShadow",
    "Negatives",
    "Payload",
    "Payloads",
    "QuotaLedger",
    "QuotaRate",
    "Remapped",
    "ReviewDecisions",
    "ShadowRow",
    "Tables",
    "UndoRecord",
    "UnsettledName",
    "UnsettledNames",
    "WorkerLog",
    "WriteBatch",
    "aware",
    "database_url",
    "export_entries",
    "import_entries",
    "index_stats",
    "init_index",
    "init_sql",
    "prune_index",
    "redact_url",
    "utcnow",
]
