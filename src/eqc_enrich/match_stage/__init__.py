"""The local match stage: names the index does not know exactly, matched against the names it does know.

    report = run_match_stage(store, index_report, options, run_id=run_id)   # -> MatchReport
    parse_name("華潤（北京）科技有限責任公司")   # region 北京市, trade 华润, industry 科技, form 有限公司

Layout: `_fold` (width, then traditional to simplified), `_regions` and `_vocabulary` (the words a name is
built from), `_parts` (a name taken apart), `_score` (two names compared part by part), `_matcher`
(blocking and the best candidate), `_candidates` (where candidates come from: the index, base_info),
`_stage` (the stage in a run, the shadow record), `_report` (`index match-report`: precision per band).
"""

from eqc_enrich.match_stage._candidates import (
    MATCH_SOURCE,
    BaseInfoNames,
    CandidateSource,
    IndexNames,
    default_sources,
)
from eqc_enrich.match_stage._matcher import Candidate, Matcher, MatchResult
from eqc_enrich.match_stage._parts import NameParts, parse_key, parse_name
from eqc_enrich.match_stage._report import BANDS, MIN_NAMES, TARGET_PRECISION, Band, MatchQuality, match_quality
from eqc_enrich.match_stage._score import EQUIVALENT, SIMILAR, Comparison, compare
from eqc_enrich.match_stage._stage import (
    ANSWERED,
    ASKED,
    EQUIVALENT_DOMAIN,
    REVIEW,
    SIMILAR_DOMAIN,
    MatchCounts,
    MatchReport,
    decide,
    record_eqc_answers,
    run_match_stage,
)

__all__ = [
    "ANSWERED",
    "ASKED",
    "BANDS",
    "EQUIVALENT",
    "EQUIVALENT_DOMAIN",
    "MATCH_SOURCE",
    "MIN_NAMES",
    "REVIEW",
    "SIMILAR",
    "SIMILAR_DOMAIN",
    "TARGET_PRECISION",
    "Band",
    "BaseInfoNames",
    "Candidate",
    "CandidateSource",
    "Comparison",
    "IndexNames",
    "MatchCounts",
    "MatchQuality",
    "MatchReport",
    "MatchResult",
    "Matcher",
    "NameParts",
    "compare",
    "decide",
    "default_sources",
    "match_quality",
    "parse_key",
    "parse_name",
    "record_eqc_answers",
    "run_match_stage",
]
