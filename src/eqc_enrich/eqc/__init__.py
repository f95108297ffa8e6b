"""The EQC company-information API: an async client and its typed answers and errors."""

from eqc_enrich.eqc._client import FIND_DEPART, FIND_LABELS, SEARCH, SEARCH_ALL, CallObserver, CallRecord, EqcClient
from eqc_enrich.eqc._errors import (
    BadResponseError,
    CertificateError,
    EqcError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    TokenExpiredError,
    TransientError,
    UnreachableError,
)
from eqc_enrich.eqc._models import (
    EXACT_MATCH,
    FUZZY_MATCH,
    PINYIN_MATCH,
    BusinessInfo,
    Label,
    LabelSet,
    SearchHit,
    SearchResult,
    match_confidence,
)
from eqc_enrich.eqc._retry_after import parse_retry_after

__all__ = [
    "EXACT_MATCH",
    "FIND_DEPART",
    "FIND_LABELS",
    "FUZZY_MATCH",
    "PINYIN_MATCH",
    "SEARCH",
    "SEARCH_ALL",
    "BadResponseError",
    "BusinessInfo",
    "CallObserver",
    "CallRecord",
    "CertificateError",
    "EqcClient",
    "EqcError",
    "ForbiddenError",
    "InvalidRequestError",
    "Label",
    "LabelSet",
    "NotFoundError",
    "RateLimitedError",
    "SearchHit",
    "SearchResult",
    "TokenExpiredError",
    "TransientError",
    "UnreachableError",
    "match_confidence",
    "parse_retry_after",
]
