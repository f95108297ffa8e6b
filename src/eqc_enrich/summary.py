"""The run summary: the figures a person, a scheduler or a benchmark reads after a run.

`build_summary` is the only thing that writes one: a pure function of what the stages returned (the index
stage's counts, the local match stage's counts, the EQC stage's report, the resolve stage's counts, the
output's report) and a few facts of the run. No live display, no shared state: the same reports always give
the same summary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eqc_enrich._durations import RateLimit
from eqc_enrich.eqc_stage import EqcReport
from eqc_enrich.index_stage import IndexCounts
from eqc_enrich.match_stage import MatchCounts
from eqc_enrich.model import Latency, strict_lower_bound
from eqc_enrich.output import write_text
from eqc_enrich.resolve_stage import NO_NAME_NO_ID, RowsCounts

__all__ = [
    "FAILED_NAMES_LISTED",
    "NO_NAME_NO_ID",
    "PHASES",
    "STATUSES",
    "EqcCounts",
    "OutputReport",
    "RunFacts",
    "RunSummary",
    "build_summary",
]

PHASES = ("read", "normalize", "index_lookup", "local_match", "eqc", "index_write", "write")
FAILED_NAMES_LISTED = 200  # the summary lists this many failed names; the unresolved export lists all

STATUSES: dict[str, str] = {
    "completed": "every name that was to be asked got an answer (found or not found), and all is in the index",
    "output_failed": "the output files could not be written after the work was done; every answer is in the index",
    "token_unavailable": "no usable EQC token, and no working way to get a fresh one",
    "eqc_unavailable": "EQC could not be reached (or its certificate is not trusted) and did not come back",
    "index_unavailable": "the index could not be written; answers in hand are in a side file the next run loads",
    "interrupted": "stopped by a signal or RunControl.stop(); every answer received is kept",
    "names_failed": "EQC failed for some names after every retry; they got temporary ids and are listed",
}
"""Every way a run can end, in the order the first that applies wins: outputs missing, then a stop, then
failed names. The command line gives each its exit code (`eqc_enrich.cli.EXIT_CODES`)."""


@dataclass
class EqcCounts:
    """Names, not requests: `names_planned` = asked + not_asked + answered_elsewhere, and
    asked = found + not_found + failed."""

    names_planned: int = 0
    names_asked: int = 0
    found: int = 0
    not_found: int = 0
    failed: int = 0
    not_asked: int = 0
    # found in the index before this run asked them: another run answered them meanwhile, or this run's answer
    # for another name (its registered or a former name) did; not asked here
    answered_elsewhere: int = 0
    too_long: int = 0  # keys too long for a request EQC can take: never sent
    negative_cache_hits: int = 0
    not_a_company: int = 0  # names a person marked as no company on the review page: never asked
    over_budget: int = 0
    skipped: int = 0  # names for EQC left unasked on purpose (--no-enrichment)


@dataclass
class RunSummary:
    """Everything `--summary FILE.json` holds; `status` is one of `STATUSES`."""

    status: str = "completed"
    message: str | None = None
    input: str | None = None
    output: str | None = None
    rows: int = 0
    distinct_names: int = 0
    resolved_by: dict[str, int] = field(default_factory=dict)
    rows_without_id: dict[str, int] = field(default_factory=dict)  # reason (NO_NAME_NO_ID) -> rows left empty
    answered_before_eqc: int = 0  # by the index stage: the index, an id in the input, overrides, known not-found
    answered_locally: int = 0  # by the local match stage: the index knew the company under another spelling
    index_hit_rate: float = 0.0
    index_hits_by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    local_match: dict[str, Any] = field(default_factory=dict)  # the match stage's counts, policy and time
    eqc: EqcCounts = field(default_factory=EqcCounts)
    failed_names: list[dict[str, str]] = field(default_factory=list)
    api_calls: dict[str, int] = field(default_factory=dict)
    accepted_requests: int = 0  # calls EQC took into its quota: an HTTP answer other than 429 or a refused token
    unanswered_requests: int = 0  # calls that got no HTTP answer (EQC down, a cut connection, a timeout)
    retries: int = 0
    rate_limited: int = 0
    token_refreshes: int = 0
    eqc_outages: int = 0
    index_outages: int = 0
    side_file: str | None = None
    elapsed_s: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    rate_limit: str = ""
    concurrency: dict[str, Any] = field(default_factory=dict)
    lower_bound_s: float | None = None
    efficiency: float | None = None
    unresolved_names: int = 0
    unsettled_recorded: int = 0  # names left open for the review page and the worker (`eqc_unsettled`)
    index: str = ""
    run_id: str = ""
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, indent=2, default=str)

    def write(self, path: Path) -> Path:
        return write_text(path, self.to_json() + "\n")


@dataclass(frozen=True, slots=True)
class OutputReport:
    """What the output stage wrote, or why it could not (after the paid work: the answers are in the index)."""

    output: str | None = None  # the enriched file, when one was written
    error: str | None = None  # one line naming the path that could not be written
    write_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the summary needs beyond the stages' reports."""

    run_id: str
    rate_limit: RateLimit
    elapsed_s: float
    read_s: float = 0.0
    input: str | None = None
    index: str = ""  # the index's URL, password hidden
    stopped: bool = False  # a stop was asked for (a signal, RunControl.stop())
    latency_hint: Latency | None = None  # stands in for the measured latency when nothing was measured
    warnings: tuple[str, ...] = ()


def build_summary(
    run: RunFacts,
    index: IndexCounts,
    eqc: EqcReport,
    rows: RowsCounts,
    output: OutputReport,
    match: MatchCounts | None = None,
) -> RunSummary:
    """`index` is the index stage's counts as handed on after the local match stage (what was left for EQC)."""
    match = match or MatchCounts()
    counts = _eqc_counts(index, eqc)
    status, message = _ending(eqc, counts, output, stopped=run.stopped)
    phases = {
        "read": run.read_s,
        "normalize": index.normalize_s,
        "index_lookup": index.index_lookup_s,
        "local_match": match.stage_s,
        "eqc": eqc.timings.wall_s,
        "index_write": eqc.timings.write_s + rows.index_write_s,
        "write": output.write_s,
    }
    summary = RunSummary(
        status=status,
        message=message,
        input=run.input,
        output=output.output,
        rows=index.rows,
        distinct_names=index.distinct_names,
        resolved_by=dict(rows.resolved_by),
        rows_without_id=dict(rows.rows_without_id),
        answered_before_eqc=index.answered_before_eqc,
        answered_locally=match.answered,
        index_hit_rate=index.index_hit_rate,
        index_hits_by_type={kind: dict(hits) for kind, hits in index.index_hits_by_type.items()},
        local_match=_local_match(match, rows),
        eqc=counts,
        failed_names=[{"name": o.name, "reason": o.error or ""} for o in eqc.failed_names()[:FAILED_NAMES_LISTED]],
        api_calls={**eqc.calls, "total": eqc.api_calls},
        accepted_requests=eqc.accepted_requests,
        unanswered_requests=eqc.unanswered_requests,
        retries=eqc.retries,
        rate_limited=eqc.rate_limited,
        token_refreshes=eqc.token_refreshes,
        eqc_outages=eqc.eqc_outages,
        index_outages=eqc.index_outages,
        side_file=eqc.side_file,
        elapsed_s=round(run.elapsed_s, 4),
        phases_s={name: round(seconds, 4) for name, seconds in phases.items()},
        timing=_timing(phases, eqc),
        rate_limit=str(run.rate_limit),
        concurrency=dict(eqc.pacing),
        unresolved_names=rows.unresolved_names,
        unsettled_recorded=rows.unsettled_recorded,
        index=run.index,
        run_id=run.run_id,
        warnings=[*run.warnings, *match.warnings, *rows.warnings],
    )
    summary.lower_bound_s, summary.efficiency = _efficiency(run, eqc)
    return summary


def _local_match(match: MatchCounts, rows: RowsCounts) -> dict[str, Any]:
    """What the local match stage did: names answered (equivalent, similar), sent on with a candidate, its time."""
    return {
        "mode": match.mode,
        "names": match.names,
        "with_candidate": match.with_candidate,
        "answered": match.answered,
        "equivalent": match.equivalent,
        "similar": match.similar,
        "review": match.review,
        "shadowed": match.shadowed,
        "ambiguous": match.ambiguous,
        "shadow_checked": rows.shadow_checked,
        "candidates": match.candidates,
        "candidates_parsed": match.candidates_parsed,
        "stage_s": round(match.stage_s, 4),
        "load_s": round(match.load_s, 4),
        "match_s": round(match.match_s, 4),
        "write_s": round(match.write_s, 4),
        "policy": dict(match.policy),
    }


def _eqc_counts(index: IndexCounts, eqc: EqcReport) -> EqcCounts:
    return EqcCounts(
        names_planned=index.names_planned,
        names_asked=eqc.names_asked,
        found=eqc.found,
        not_found=eqc.not_found,
        failed=eqc.failed,
        not_asked=eqc.not_asked,
        answered_elsewhere=eqc.answered_elsewhere,
        too_long=index.too_long,
        negative_cache_hits=index.negative_cache_hits,
        not_a_company=index.not_a_company,
        over_budget=index.over_budget,
        skipped=index.skipped,
    )


def _ending(eqc: EqcReport, counts: EqcCounts, output: OutputReport, *, stopped: bool) -> tuple[str, str | None]:
    """The status and its one-line message: missing outputs first, then a stop reason, then failed names."""
    if output.error is not None:
        after = _stop_status(eqc, counts, stopped)
        also = f" (the run had also ended {after[0]})" if after is not None else ""
        return "output_failed", (
            f"{output.error}: no output was written{also}; every EQC answer is in the index (or its side file), "
            "so a rerun writes the outputs without asking EQC again"
        )
    ended = _stop_status(eqc, counts, stopped)
    if ended is not None:
        return ended
    if counts.failed:
        return "names_failed", (
            f"{counts.failed:,} names failed after every retry (listed with their reason in the summary and the "
            "unresolved export); they got temporary ids, and a rerun asks them again"
        )
    if counts.over_budget:
        return "completed", (
            f"budget reached: {counts.over_budget:,} less frequent names were not asked (over --budget); they got "
            "temporary ids, and a rerun asks them"
        )
    return "completed", None


def _stop_status(eqc: EqcReport, counts: EqcCounts, stopped: bool) -> tuple[str, str | None] | None:
    if eqc.stopped == "token":
        return "token_unavailable", eqc.message
    if eqc.stopped == "eqc_down":
        return "eqc_unavailable", f"{eqc.message}; {counts.not_asked:,} names not asked: rerun to ask them"
    if eqc.stopped == "index":
        saved = f"; answers saved in {eqc.side_file}, which the next run loads first" if eqc.side_file else ""
        return "index_unavailable", f"{eqc.message}{saved}"
    if eqc.stopped == "interrupted" or stopped:
        return "interrupted", "interrupted: every answer received is in the index; rerun the same command to resume"
    return None


def _timing(phases: Mapping[str, float], eqc: EqcReport) -> dict[str, Any]:
    """The breakdown that answers "is it the API or the quota?": limiter wait against network time."""
    t = eqc.timings
    return {
        "read_s": round(phases["read"], 4),
        "normalize_s": round(phases["normalize"], 4),
        "index_lookup_s": round(phases["index_lookup"], 4),
        "local_match_s": round(phases["local_match"], 4),
        "eqc_wall_s": round(t.wall_s, 4),
        "limiter_wait_s": round(t.limiter_wait_s, 4),
        "network_s": round(t.network_s, 4),
        "parse_s": round(t.parse_s, 4),
        "index_write_s": round(phases["index_write"], 4),
        "write_s": round(phases["write"], 4),
        "latency_s": {endpoint: dict(values) for endpoint, values in t.latency_s.items()},
        "note": "limiter_wait_s and network_s are summed over concurrent requests; eqc_wall_s is wall time",
    }


def _efficiency(run: RunFacts, eqc: EqcReport) -> tuple[float | None, float | None]:
    """The strict lower bound for the requests EQC accepted, and the run's time against it.

    Everything outside the EQC stage's wall time is local work (the writer's commits overlap the stage).
    """
    local = max(0.0, run.elapsed_s - eqc.timings.wall_s)
    fastest = eqc.timings.fastest_s
    if fastest is None and run.latency_hint is not None:
        fastest = run.latency_hint.mean_s
    if not eqc.accepted_requests or fastest is None:
        return None, None
    bound = strict_lower_bound(eqc.accepted_requests, run.rate_limit, fastest, local_s=local)
    efficiency = round(bound / run.elapsed_s, 4) if run.elapsed_s > 0 else None
    return round(bound, 4), efficiency
