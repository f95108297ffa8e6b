"""The enrichment index and the tool's tables, in SQLite (default) or PostgreSQL (production).

    store = IndexStore("postgresql+psycopg://etl@db/warehouse", schema="enterprise")
    store.lookup({"customer_name": keys})          # one bulk query per lookup type
    with store.transaction() as conn:              # several tables, one commit
        store.entries.upsert(entries, conn=conn)
        store.claims.release(keys, run_id, conn=conn)

Layout: `_engine` (URLs, engine, transactions, the one error-mapping table), `_dialects` (what differs
between SQLite and PostgreSQL, chosen once), `_schema` (the tables by name, DDL for `index init`), one
object per table (`Entries`, `Negatives`, `Payloads`, `Journal`, `QuotaLedger`, `Claims`,
`UnsettledNames`, `ReviewDecisions`, `MatchShadow`), the front `IndexStore`, and `_admin` (what the `index`
commands do).
"""

from eqc_enrich.store._admin import ImportReport, export_entries, import_entries, index_stats, prune_index
from eqc_enrich.store._cache import Negatives, Payloads
from eqc_enrich.store._claims import Claims
from eqc_enrich.store._decisions import DECISIONS, Decision, ReviewDecisions
from eqc_enrich.store._engine import DB_ENV, DEFAULT_DB, SCHEMA_ENV, database_url, redact_url
from eqc_enrich.store._entries import MAX_KEY, Entries
from eqc_enrich.store._journal import Journal
from eqc_enrich.store._model import IndexEntry, Payload, WriteBatch, utcnow
from eqc_enrich.store._quota import Decide, QuotaLedger
from eqc_enrich.store._schema import INDEX_TABLE, Tables, init_sql
from eqc_enrich.store._shadow import ACTIONS, BASE_INFO_TABLE, MatchShadow, ShadowRow
from eqc_enrich.store._store import IndexStore, InitReport, init_index
from eqc_enrich.store._unsettled import KINDS, NOT_A_COMPANY, SURE, Remapped, UnsettledName, UnsettledNames
from eqc_enrich.store._worker import LEGACY_TABLE, Attempts, LegacyRequest, LegacyRequests, WorkerLog, aware

__all__ = [
    "ACTIONS",
    "BASE_INFO_TABLE",
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
    "Attempts",
    "Claims",
    "Decide",
    "Decision",
    "Entries",
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
    "Remapped",
    "ReviewDecisions",
    "ShadowRow",
    "Tables",
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
