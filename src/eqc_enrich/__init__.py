"""eqc-enrich: give every row a stable company_id, asking EQC only what the index cannot answer.

    import eqc_enrich
    eqc = eqc_enrich.EqcOptions(rate_limit=eqc_enrich.parse_rate_limit("10/60s"))
    result = eqc_enrich.enrich("202501.xlsx", db="index.db", eqc=eqc)
    result.frame            # the input, plus company_id and company_id_source
    result.summary.status   # "completed", or how the run ended (eqc_enrich.STATUSES)

The command line (`eqc-enrich run ...`) is a thin layer over these functions.
"""

from eqc_enrich._durations import RateLimit, parse_duration, parse_rate_limit
from eqc_enrich._errors import (
    ConfigError,
    EqcEnrichError,
    IndexBusyError,
    IndexConnectionError,
    IndexStoreError,
    InputError,
    OutputError,
)
from eqc_enrich._policies import ConfidencePolicy, IndexWaitPolicy, OutagePolicy, RetryPolicy
from eqc_enrich.config import EqcAccess, EqcOptions, resolve_access
from eqc_enrich.enrich import EnrichResult, RunControl, enrich, enrich_async
from eqc_enrich.eqc import EqcError
from eqc_enrich.eqc_stage import EqcReport, EqcStats
from eqc_enrich.keys import LookupType, normalize_name, temp_company_id
from eqc_enrich.model import Latency, Workload, lower_bound
from eqc_enrich.options import RunOptions
from eqc_enrich.planning import PlanReport, plan, plan_async
from eqc_enrich.progress import RunProgress
from eqc_enrich.resolve import Columns, Overrides
from eqc_enrich.settings import Settings, load_settings
from eqc_enrich.store import IndexStore
from eqc_enrich.summary import STATUSES, RunSummary

__version__ = "0.1.0"

__all__ = [
    "STATUSES",
    "Columns",
    "ConfidencePolicy",
    "ConfigError",
    "EnrichResult",
    "EqcAccess",
    "EqcEnrichError",
    "EqcError",
    "EqcOptions",
    "EqcReport",
    "EqcStats",
    "IndexBusyError",
    "IndexConnectionError",
    "IndexStore",
    "IndexStoreError",
    "IndexWaitPolicy",
    "InputError",
    "Latency",
    "LookupType",
    "OutagePolicy",
    "OutputError",
    "Overrides",
    "PlanReport",
    "RateLimit",
    "RetryPolicy",
    "RunControl",
    "RunOptions",
    "RunProgress",
    "RunSummary",
    "Settings",
    "Workload",
    "__version__",
    "enrich",
    "enrich_async",
    "load_settings",
    "lower_bound",
    "normalize_name",
    "parse_duration",
    "parse_rate_limit",
    "plan",
    "plan_async",
    "resolve_access",
    "temp_company_id",
]
