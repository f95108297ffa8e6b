"""The summary builder on its own: hand-made stage reports in, every ending and every figure out, no server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from eqc_enrich import RateLimit
from eqc_enrich.cli import EXIT_CODES
from eqc_enrich.eqc_stage import EqcReport, EqcTimings, LookupOutcome
from eqc_enrich.index_stage import IndexCounts
from eqc_enrich.match_stage import MatchCounts
from eqc_enrich.model import Latency
from eqc_enrich.resolve_stage import NO_NAME_NO_ID, RowsCounts
from eqc_enrich.summary import STATUSES, OutputReport, RunFacts, build_summary

LIMIT = RateLimit(10, 60.0)
FACTS = RunFacts(run_id="run-1", rate_limit=LIMIT, elapsed_s=230.0, read_s=1.5, input="m.xlsx", index="sqlite:///i")
INDEX = IndexCounts(
    rows=1_000, distinct_names=120, answered_before_eqc=70, index_names=60, negative_cache_hits=5, not_a_company=2,
    too_long=1, names_planned=40, normalize_s=0.25, index_lookup_s=0.5,
    index_hits_by_type={"customer_name": {"asked": 120, "found": 55}},
)  # fmt: skip
ROWS = RowsCounts(
    resolved_by={"index:customer_name": 700, "eqc": 250, "temp": 40, "none": 10},
    rows_without_id={NO_NAME_NO_ID: 10}, unresolved_names=9, unsettled_recorded=11, index_write_s=0.75,
    warnings=("a warning of the resolve stage",),
)  # fmt: skip


def outcomes(**by_status: int) -> dict[str, LookupOutcome]:
    made: dict[str, LookupOutcome] = {}
    for status, count in by_status.items():
        for n in range(count):
            name = f"{status}-{n}"
            error = "HTTP 503 (after 4 attempts)" if status == "failed" else None
            made[name] = LookupOutcome(name, status, error=error)  # type: ignore[arg-type]
    return made


EQC = EqcReport(
    outcomes=outcomes(found=30, not_found=8, elsewhere=2),
    names_planned=40, found=30, not_found=8, answered_elsewhere=2,
    calls={"search": 41}, accepted_requests=40, rate_limited=1, retries=1,
    timings=EqcTimings(wall_s=220.0, limiter_wait_s=300.0, network_s=800.0, parse_s=0.5, write_s=0.25,
                       latency_s={"search": {"mean": 20.0}}, fastest_s=18.0),
    pacing={"cap": None, "peak_in_flight": 7},
)  # fmt: skip


MATCH = MatchCounts(
    mode="shadow", names=52, candidates=5_000, candidates_parsed=800, with_candidate=20, equivalent=12, similar=0,
    review=3, shadowed=2, ambiguous=1, load_s=0.5, match_s=0.25, write_s=0.125, stage_s=0.875,
    policy={"threshold": 0.92}, warnings=("a warning of the match stage",),
)  # fmt: skip


def build(eqc: EqcReport = EQC, output: OutputReport | None = None, **facts: Any) -> Any:
    out = output or OutputReport(output="m.enriched.xlsx")
    return build_summary(replace(FACTS, **facts), INDEX, eqc, replace(ROWS, shadow_checked=7), out, MATCH)


def test_a_completed_run_takes_every_figure_from_the_reports() -> None:
    s = build()
    assert (s.status, s.message) == ("completed", None)
    assert (s.rows, s.distinct_names, s.answered_before_eqc, s.index_hit_rate) == (1_000, 120, 70, 0.5)
    assert s.index_hits_by_type == {"customer_name": {"asked": 120, "found": 55}}
    e = s.eqc
    assert (e.names_planned, e.names_asked, e.found, e.not_found, e.failed) == (40, 38, 30, 8, 0)
    assert (e.not_asked, e.answered_elsewhere, e.too_long, e.negative_cache_hits, e.not_a_company) == (0, 2, 1, 5, 2)
    assert e.names_planned == e.names_asked + e.not_asked + e.answered_elsewhere
    assert s.api_calls == {"search": 41, "total": 41}
    assert (s.accepted_requests, s.rate_limited, s.retries) == (40, 1, 1)
    assert s.resolved_by == dict(ROWS.resolved_by)
    assert s.rows_without_id == {NO_NAME_NO_ID: 10}
    assert (s.unresolved_names, s.unsettled_recorded) == (9, 11)
    assert s.phases_s == {"read": 1.5, "normalize": 0.25, "index_lookup": 0.5, "local_match": 0.875, "eqc": 220.0,
                          "index_write": 1.0, "write": 0.0}  # fmt: skip
    assert s.timing["limiter_wait_s"] == 300.0
    assert s.timing["latency_s"] == {"search": {"mean": 20.0}}
    assert s.concurrency == {"cap": None, "peak_in_flight": 7}
    assert (s.output, s.input, s.index, s.run_id, s.rate_limit) == ("m.enriched.xlsx", "m.xlsx", "sqlite:///i",
                                                                    "run-1", "10/60s")  # fmt: skip
    assert s.warnings == ["a warning of the match stage", "a warning of the resolve stage"]


def test_the_local_match_stage_has_its_names_answered_and_its_time_in_the_summary() -> None:
    s = build()
    assert s.answered_locally == 12
    assert s.local_match == {
        "mode": "shadow", "names": 52, "with_candidate": 20, "answered": 12, "equivalent": 12, "similar": 0,
        "review": 3, "shadowed": 2, "ambiguous": 1, "shadow_checked": 7, "candidates": 5_000,
        "candidates_parsed": 800, "stage_s": 0.875, "load_s": 0.5, "match_s": 0.25, "write_s": 0.125,
        "policy": {"threshold": 0.92},
    }  # fmt: skip
    assert s.timing["local_match_s"] == 0.875
    # a run without the stage (off, or a caller that builds a summary without it) says so, with no time
    off = build_summary(FACTS, INDEX, EQC, ROWS, OutputReport())
    assert (off.answered_locally, off.local_match["mode"], off.phases_s["local_match"]) == (0, "off", 0.0)


def test_efficiency_is_the_strict_bound_over_the_elapsed_time() -> None:
    s = build()
    # 40 accepted: floor(39 / 10) = 3 windows of 60 s, the fastest call 18 s, and 10 s of local work
    assert s.lower_bound_s == pytest.approx(3 * 60 + 18 + 10)
    assert s.efficiency == pytest.approx(208 / 230, abs=1e-4)
    slower = build(elapsed_s=460.0, eqc=replace(EQC, timings=replace(EQC.timings, wall_s=450.0)))
    assert slower.lower_bound_s == s.lower_bound_s
    assert slower.efficiency == pytest.approx(208 / 460, abs=1e-4)


def test_no_accepted_request_has_no_bound_and_a_hint_stands_in_for_an_unmeasured_latency() -> None:
    none = build(eqc=replace(EQC, accepted_requests=0))
    assert (none.lower_bound_s, none.efficiency) == (None, None)
    unmeasured = replace(EQC, timings=replace(EQC.timings, fastest_s=None))
    assert build(eqc=unmeasured).lower_bound_s is None
    hinted = build(eqc=unmeasured, latency_hint=Latency(mean_s=30.0, max_s=60.0))
    assert hinted.lower_bound_s == pytest.approx(3 * 60 + 30 + 10)


ENDINGS: dict[str, tuple[EqcReport, OutputReport | None, dict[str, Any], str]] = {
    "names_failed": (
        replace(EQC, outcomes=outcomes(found=30, not_found=7, failed=3), found=30, not_found=7, failed=3,
                answered_elsewhere=0),
        None, {}, "3 names failed after every retry",
    ),
    "token_unavailable": (
        replace(EQC, stopped="token", message="EQC refused the token", found=10, not_found=0, not_asked=30,
                answered_elsewhere=0),
        None, {}, "EQC refused the token",
    ),
    "eqc_unavailable": (
        replace(EQC, stopped="eqc_down", message="EQC unreachable for 5m", found=10, not_found=0, not_asked=30,
                answered_elsewhere=0),
        None, {}, "EQC unreachable for 5m; 30 names not asked: rerun to ask them",
    ),
    "index_unavailable": (
        replace(EQC, stopped="index", message="the index could not be written: locked", side_file="/x/run.jsonl"),
        None, {}, "answers saved in /x/run.jsonl, which the next run loads first",
    ),
    "interrupted": (
        replace(EQC, stopped="interrupted", found=10, not_found=0, not_asked=30, answered_elsewhere=0),
        None, {"stopped": True}, "rerun the same command to resume",
    ),
    "output_failed": (
        EQC, OutputReport(error="cannot write /full/m.enriched.xlsx: No space left on device"), {},
        "cannot write /full/m.enriched.xlsx: No space left on device: no output was written",
    ),
}  # fmt: skip


def test_every_status_has_an_ending_here_and_an_exit_code_of_its_own() -> None:
    assert set(ENDINGS) | {"completed"} == set(STATUSES)
    codes = [EXIT_CODES[status] for status in STATUSES]
    assert len(set(codes)) == len(codes)
    assert not {1, 2} & set(codes)  # an unexpected error and bad input have their own


@pytest.mark.parametrize("status", sorted(ENDINGS))
def test_each_ending_has_its_status_and_one_line_message(status: str) -> None:
    eqc, output, facts, says = ENDINGS[status]
    s = build(eqc=eqc, output=output, **facts)
    assert s.status == status
    assert s.message is not None
    assert says in s.message
    assert "\n" not in s.message
    e = s.eqc
    assert e.names_planned == e.names_asked + e.not_asked + e.answered_elsewhere


def test_a_stop_asked_for_is_interrupted_even_when_the_stage_had_nothing_left() -> None:
    assert build(stopped=True).status == "interrupted"


def test_missing_outputs_win_over_a_stop_and_say_both() -> None:
    down = replace(EQC, stopped="eqc_down", message="EQC unreachable")
    s = build(eqc=down, output=OutputReport(error="cannot write /o.csv: Read-only file system"))
    assert s.status == "output_failed"
    assert s.output is None
    assert "(the run had also ended eqc_unavailable)" in (s.message or "")


def test_a_budget_left_over_completes_and_says_so() -> None:
    s = build_summary(FACTS, replace(INDEX, over_budget=25), EQC, ROWS, OutputReport())
    assert s.status == "completed"
    assert "budget reached: 25 less frequent names were not asked" in (s.message or "")


def test_failed_names_are_listed_with_their_reason_up_to_the_cap() -> None:
    many = replace(EQC, outcomes=outcomes(failed=250), failed=250, found=0, not_found=0, answered_elsewhere=0)
    s = build(eqc=many)
    assert len(s.failed_names) == 200
    assert s.failed_names[0] == {"name": "failed-0", "reason": "HTTP 503 (after 4 attempts)"}


def test_the_same_reports_give_the_same_summary() -> None:
    assert build().as_dict() == build().as_dict()
