"""The local match stage: between the index and EQC, answer what the index already knows under another spelling.

`run_match_stage` takes the index stage's report (its `askable` names: every name EQC could be asked) and
returns a `MatchReport`: each name's best candidate, what was decided for it, the names answered locally
and the stage's counts and times. Answers are written to the index at once as `customer_name` entries
(source `local_match`, the confidence never above the candidate's), so the next run finds them directly;
every name with a candidate is recorded in `eqc_match_shadow`, and once EQC has answered the names that
went on to it, `record_eqc_answers` puts EQC's answer beside the candidate there.

The rows get their ids from these answers as `index:match` (the resolve stage), and the index stage's report
is handed on without them (`index_stage.leave_for_eqc`), so the budget is spent on the names still open.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from eqc_enrich._errors import IndexStoreError
from eqc_enrich._jsonable import jsonable
from eqc_enrich._policies import MatchPolicy
from eqc_enrich.eqc_stage import LookupOutcome
from eqc_enrich.index_stage import IndexReport
from eqc_enrich.keys import LookupType
from eqc_enrich.match_stage._candidates import MATCH_SOURCE, BaseInfoNames, CandidateSource, default_sources
from eqc_enrich.match_stage._matcher import Matcher, MatchResult
from eqc_enrich.match_stage._score import EQUIVALENT
from eqc_enrich.options import RunOptions
from eqc_enrich.store import IndexEntry, IndexStore, ShadowRow, WriteBatch

__all__ = [
    "ANSWERED",
    "ASKED",
    "EQUIVALENT_DOMAIN",
    "REVIEW",
    "SIMILAR_DOMAIN",
    "MatchCounts",
    "MatchReport",
    "decide",
    "record_eqc_answers",
    "run_match_stage",
]

ANSWERED, ASKED, REVIEW = "answered", "asked", "review"
EQUIVALENT_DOMAIN = "eqc_match_equivalent"  # source_domain of a local answer, by its kind
SIMILAR_DOMAIN = "eqc_match_similar"
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class MatchCounts:
    """The stage's figures: of `names` looked at, `with_candidate` had one; `equivalent` + `similar` were
    answered locally (`answered`), `review` went to EQC with their candidate kept for a person, `shadowed`
    were similar enough to be answered with `on` but went to EQC (`shadow`), `ambiguous` were equivalent to
    more than one company."""

    mode: str = "off"
    names: int = 0
    candidates: int = 0  # candidate names read (index and base_info)
    candidates_parsed: int = 0  # those that shared an opening with a name looked at
    with_candidate: int = 0
    equivalent: int = 0
    similar: int = 0
    review: int = 0
    shadowed: int = 0
    ambiguous: int = 0
    load_s: float = 0.0
    match_s: float = 0.0
    write_s: float = 0.0
    stage_s: float = 0.0
    policy: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    warnings: tuple[str, ...] = ()

    @property
    def answered(self) -> int:
        return self.equivalent + self.similar


@dataclass(frozen=True)
class MatchReport:
    results: Mapping[str, MatchResult] = field(default_factory=lambda: _EMPTY)  # names with a candidate
    decisions: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # name -> ANSWERED, ASKED or REVIEW
    answers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # name -> company id, answered locally
    counts: MatchCounts = field(default_factory=MatchCounts)


def decide(result: MatchResult, policy: MatchPolicy, mode: str) -> str:
    """ANSWERED, REVIEW or ASKED for one name's best candidate under the policy and mode."""
    if result.kind == EQUIVALENT:
        return ASKED if result.ambiguous or mode == "off" else ANSWERED
    if mode == "on" and policy.answers(result.score, result.gap):
        return ANSWERED
    return REVIEW if policy.for_review(result.score) else ASKED


def run_match_stage(
    store: IndexStore,
    index: IndexReport,
    options: RunOptions,
    *,
    run_id: str,
    sources: Sequence[CandidateSource] | None = None,
) -> MatchReport:
    """Match every name EQC could be asked against the names already known; answer what the policy allows."""
    started = time.perf_counter()
    mode, policy = options.local_match, options.match
    if mode == "off" or not index.askable:
        return MatchReport(counts=MatchCounts(mode=mode, policy=jsonable(policy)))
    sources = list(sources) if sources is not None else default_sources(store)
    matcher = Matcher(itertools.chain.from_iterable(source.candidates() for source in sources), index.askable)
    loaded = time.perf_counter()
    results = {name: found for name in index.askable if (found := matcher.best(name)) is not None}
    decisions = {name: decide(result, policy, mode) for name, result in results.items()}
    matched = time.perf_counter()
    answers = {name: results[name].candidate.company_id for name, what in decisions.items() if what == ANSWERED}
    warnings = [note for source in sources if isinstance(source, BaseInfoNames) and (note := source.note)]
    warnings += _write(store, results, decisions, policy, run_id)
    written = time.perf_counter()
    answered_kinds = [results[name].kind for name in answers]
    counts = MatchCounts(
        mode=mode,
        names=len(index.askable),
        candidates=matcher.candidates,
        candidates_parsed=matcher.parsed,
        with_candidate=len(results),
        equivalent=answered_kinds.count(EQUIVALENT),
        similar=len(answered_kinds) - answered_kinds.count(EQUIVALENT),
        review=sum(1 for what in decisions.values() if what == REVIEW),
        shadowed=_shadowed(results, decisions, policy),
        ambiguous=sum(1 for r in results.values() if r.ambiguous),
        load_s=loaded - started,
        match_s=matched - loaded,
        write_s=written - matched,
        stage_s=written - started,
        policy=jsonable(policy),
        warnings=tuple(warnings),
    )
    return MatchReport(
        results=MappingProxyType(results),
        decisions=MappingProxyType(decisions),
        answers=MappingProxyType(answers),
        counts=counts,
    )


def _shadowed(results: Mapping[str, MatchResult], decisions: Mapping[str, str], policy: MatchPolicy) -> int:
    """Similar names the policy would have answered with `on`, sent to EQC instead."""
    return sum(
        1
        for name, result in results.items()
        if decisions[name] != ANSWERED and result.kind != EQUIVALENT and policy.answers(result.score, result.gap)
    )


def _write(
    store: IndexStore,
    results: Mapping[str, MatchResult],
    decisions: Mapping[str, str],
    policy: MatchPolicy,
    run_id: str,
) -> list[str]:
    """Local answers as index entries and every candidate in the shadow record, in one commit; a failure is a
    warning (this run's rows are right either way; the next run matches those names again)."""
    entries = [_entry(results[name], policy) for name, what in decisions.items() if what == ANSWERED]
    rows = [_shadow_row(result, decisions[name], policy, run_id) for name, result in results.items()]
    try:
        with store.transaction() as conn:
            store.write(WriteBatch(entries=entries), conn=conn)
            store.shadow.record(rows, conn=conn)
    except IndexStoreError as exc:
        return [f"local matches not written to the index (this run used them): {exc}"]
    return []


def _entry(result: MatchResult, policy: MatchPolicy) -> IndexEntry:
    candidate = result.candidate
    return IndexEntry(
        result.name,
        LookupType.CUSTOMER_NAME,
        candidate.company_id,
        policy.confidence(candidate.confidence, result.score),
        MATCH_SOURCE,
        source_domain=EQUIVALENT_DOMAIN if result.kind == EQUIVALENT else SIMILAR_DOMAIN,
    )


def _shadow_row(result: MatchResult, action: str, policy: MatchPolicy, run_id: str) -> ShadowRow:
    candidate = result.candidate
    return ShadowRow(
        lookup_key=result.name,
        kind=result.kind,
        score=result.score,
        gap=result.gap,
        candidate_key=candidate.key,
        candidate_id=candidate.company_id,
        candidate_confidence=candidate.confidence,
        candidate_origin=candidate.origin,
        action=action,
        verify=action == ANSWERED and (result.kind != EQUIVALENT or _sampled(result.name, policy.verify_share)),
        run_id=run_id,
    )


def _sampled(key: str, share: float) -> bool:
    """The same names are sampled by every process: by the key's hash, not a random draw."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") < share * 2**32


def record_eqc_answers(store: IndexStore, match: MatchReport, outcomes: Mapping[str, LookupOutcome]) -> int:
    """EQC's answer beside the candidate of each name the stage sent on; raises `IndexStoreError`."""
    answers: dict[str, tuple[str, str | None]] = {}
    for name, what in match.decisions.items():
        outcome = outcomes.get(name)
        if what == ANSWERED or outcome is None:
            continue
        if outcome.status == "found" and outcome.hit is not None:
            answers[name] = ("found", outcome.hit.company_id)
        elif outcome.status == "not_found":
            answers[name] = ("not_found", None)
    return store.shadow.checked(answers, by="run")
