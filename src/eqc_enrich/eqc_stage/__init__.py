"""The EQC stage: ask EQC each name nothing before it answered, at the quota's limit, and commit every answer.

`run_eqc_stage(names, store=..., config=StageConfig(...), ...)` is the stage's entry; it returns an
`EqcReport` with the outcomes, how the stage ended and its counts and timings. Its parts, each a seam a
caller can hand its own of (the worker its yielding ledger, the review page its one-at-a-time gate, a test
its clock):

- the lookup (`EqcLookup`): workers, retries, the outage watch, the token keeper;
- pacing (`SlidingWindowLimiter` over a `SendLedger`, `ConcurrencyGate`);
- the shared quota and claims in the index (`DatabaseLedger`, `DatabaseClaims`, `AccountPause`);
- write-back (`IndexWriter`, `batch_for`; `company_record` for `base_info`) and the side file for answers
  the index cannot take yet.

Only this module is imported from outside the package; the `_` modules are its own.
"""

from eqc_enrich.eqc_stage._company import DATA_SOURCE_SEARCH, company_record, details_record, parse_capital
from eqc_enrich.eqc_stage._lookup import (
    Ask,
    EqcLookup,
    LookupOutcome,
    LookupSettings,
    StageResult,
    Status,
    StopReason,
)
from eqc_enrich.eqc_stage._names import NameSource, Settled
from eqc_enrich.eqc_stage._outage import EqcDown, EqcOutage
from eqc_enrich.eqc_stage._pacing import (
    Clock,
    ConcurrencyGate,
    MemoryLedger,
    Rule,
    SendLedger,
    SlidingWindowLimiter,
    Stopped,
    default_margin,
    next_send,
    sleep_unless,
)
from eqc_enrich.eqc_stage._pending import PendingFile, load_pending, load_side_files, pending_dirs
from eqc_enrich.eqc_stage._shared import AccountPause, ClaimRound, DatabaseClaims, DatabaseLedger
from eqc_enrich.eqc_stage._stage import EqcReport, EqcTimings, StopHandle, lookup_settings, run_eqc_stage
from eqc_enrich.eqc_stage._stats import EqcStats, summarize
from eqc_enrich.eqc_stage._tokens import NO_TOKEN_MESSAGE, TokenKeeper, run_token_command
from eqc_enrich.eqc_stage._writeback import (
    EQC_SOURCE,
    FIRST_COMMIT_STALL_S,
    FORMER_NAME_DOMAIN,
    LOOKUP_DOMAIN,
    IndexWriter,
    batch_for,
)

__all__ = [
    "DATA_SOURCE_SEARCH",
    "EQC_SOURCE",
    "FIRST_COMMIT_STALL_S",
    "FORMER_NAME_DOMAIN",
    "LOOKUP_DOMAIN",
    "NO_TOKEN_MESSAGE",
    "AccountPause",
    "Ask",
    "ClaimRound",
    "Clock",
    "ConcurrencyGate",
    "DatabaseClaims",
    "DatabaseLedger",
    "EqcDown",
    "EqcLookup",
    "EqcOutage",
    "EqcReport",
    "EqcStats",
    "EqcTimings",
    "IndexWriter",
    "LookupOutcome",
    "LookupSettings",
    "MemoryLedger",
    "NameSource",
    "PendingFile",
    "Rule",
    "SendLedger",
    "Settled",
    "SlidingWindowLimiter",
    "StageResult",
    "Status",
    "StopHandle",
    "StopReason",
    "Stopped",
    "TokenKeeper",
    "batch_for",
    "company_record",
    "default_margin",
    "details_record",
    "load_pending",
    "load_side_files",
    "lookup_settings",
    "next_send",
    "parse_capital",
    "pending_dirs",
    "run_eqc_stage",
    "run_token_command",
    "sleep_unless",
    "summarize",
]
