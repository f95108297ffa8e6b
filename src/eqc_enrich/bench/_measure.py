"""One run's figures in one shape, whichever flow produced them, and what the model says about them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from eqc_enrich._durations import RateLimit
from eqc_enrich.bench._old_flow import OldFlowResult
from eqc_enrich.bench._ours import OursResult
from eqc_enrich.eqc_stage import summarize
from eqc_enrich.model import Latency, Workload, even_pacing_bound, lower_bound, strict_lower_bound

ANSWERED = ("ok", "NotFoundError")  # outcomes that are an answer; every other attempt cost quota for nothing
NOT_ACCEPTED = ("RateLimitedError", "UnreachableError", "TokenExpiredError")  # never took a slot of the window


@dataclass(frozen=True)
class RunMeasure:
    """What a run did and how long it took; times on the benchmark's (scaled) clock."""

    key: str
    title: str
    calls_per_name: int
    wall_s: float
    eqc_stage_s: float
    distinct_names: int
    index_hits: int
    names_asked: int
    found: int
    not_found: int
    failed: int
    calls: dict[str, int]
    outcomes: dict[str, int]
    rate_limited: int
    latencies: dict[str, list[float]]
    limiter_wait_s: float  # summed over requests (they overlap in a concurrent run)
    network_s: float  # summed over requests, response parsing included
    backoff_s: float | None  # None: the flow does not time its retry sleeps
    curve: list[tuple[float, int]] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return sum(self.calls.values())

    @property
    def failed_attempts(self) -> int:
        return self.attempts - sum(self.outcomes.get(outcome, 0) for outcome in ANSWERED)

    @property
    def failure_share(self) -> float:
        return self.failed_attempts / self.attempts if self.attempts else 0.0

    @property
    def hit_rate(self) -> float:
        return self.index_hits / self.distinct_names if self.distinct_names else 1.0

    @property
    def local_s(self) -> float:
        return max(0.0, self.wall_s - self.eqc_stage_s)

    @property
    def accepted(self) -> int:
        """Attempts the server took into its window: every attempt but 429s, refused tokens and no answers."""
        return self.attempts - sum(self.outcomes.get(outcome, 0) for outcome in NOT_ACCEPTED)


def from_old_flow(result: OldFlowResult) -> RunMeasure:
    how = Counter(done.how for done in result.names)
    latencies: dict[str, list[float]] = {}
    for call in result.calls:
        if call.outcome == "ok":
            latencies.setdefault(call.endpoint, []).append(call.network_s)
    network = sum(call.network_s + call.parse_s for call in result.calls)
    asked = [done for done in result.names if done.how in ("found", "not_found", "failed")]
    return RunMeasure(
        key="old_flow",
        title="old flow (sequential, 3 calls)",
        calls_per_name=3,
        wall_s=result.wall_s,
        eqc_stage_s=min(result.wall_s, result.limiter_wait_s + network + result.backoff_s),
        distinct_names=len(result.names),
        index_hits=how["index"],
        names_asked=len(asked),
        found=how["found"],
        not_found=how["not_found"],
        failed=how["failed"],
        calls=dict(Counter(call.endpoint for call in result.calls)),
        outcomes=dict(Counter(call.outcome for call in result.calls)),
        rate_limited=sum(1 for call in result.calls if call.outcome == "RateLimitedError"),
        latencies=latencies,
        limiter_wait_s=result.limiter_wait_s,
        network_s=network,
        backoff_s=result.backoff_s,
        curve=[(0.0, 0), *((done.at_s, n) for n, done in enumerate(asked, start=1))],
    )


def from_ours(result: OursResult, *, key: str, title: str) -> RunMeasure:
    summary, stats = result.summary, result.progress.eqc
    return RunMeasure(
        key=key,
        title=title,
        calls_per_name=1,
        wall_s=result.wall_s,
        eqc_stage_s=summary.phases_s.get("eqc", 0.0),
        distinct_names=summary.distinct_names,
        index_hits=result.progress.answered_before_eqc,
        names_asked=summary.eqc.names_asked,
        found=summary.eqc.found,
        not_found=summary.eqc.not_found,
        failed=summary.eqc.failed,
        calls=dict(stats.calls),
        outcomes=dict(stats.outcomes),
        rate_limited=stats.rate_limited,
        latencies={endpoint: list(values) for endpoint, values in stats.latencies.items()},
        limiter_wait_s=stats.limiter_wait_s,
        network_s=stats.network_s + stats.parse_s,
        backoff_s=None,
        curve=result.curve,
    )


def workload(run: RunMeasure) -> Workload:
    """The model's workload with M equal to the attempts the server saw, failures included.

    `extra_calls` makes up the difference to k N / (1 - p): negative for the old flow, since a name EQC does
    not know costs it one call (the search), not three.
    """
    p = min(run.failure_share, 0.999)  # every attempt failing would make k N / (1 - p) infinite
    k, n = run.calls_per_name, run.names_asked
    return Workload(names=n, calls_per_name=k, failure_share=p, extra_calls=round(run.attempts - k * n / (1 - p)))


def bound_s(run: RunMeasure, limit: RateLimit, latency: Latency) -> float | None:
    """T_min for the run's own work; None when it asked EQC nothing (there is nothing to bound)."""
    if run.names_asked == 0:
        return None
    return lower_bound(workload(run), limit, latency, local_s=run.local_s)


def strict_bounds(run: RunMeasure, limit: RateLimit, fastest_s: float) -> tuple[float, float] | None:
    """(T_strict, T_even) for the requests the server accepted, each plus the run's local time: no run can beat
    the first; the second is the best a client that paces evenly (as ours does) can do. For a short run they
    differ by most of a window, so a reader sees which part of the gap is the pacing rule and which is ours."""
    if run.names_asked == 0 or run.accepted == 0:
        return None
    local = run.local_s
    return (
        strict_lower_bound(run.accepted, limit, fastest_s, local_s=local),
        even_pacing_bound(run.accepted, limit, fastest_s, local_s=local),
    )


def efficiency(run: RunMeasure, limit: RateLimit, latency: Latency) -> float | None:
    bound = bound_s(run, limit, latency)
    return bound / run.wall_s if bound is not None and run.wall_s > 0 else None


def time_split(run: RunMeasure) -> dict[str, float]:
    """Wall time split into limiter wait, network, retry backoff and local work; the parts add up to the wall.

    Requests overlap in a concurrent run, so its EQC stage is shared out in proportion to the request-seconds
    spent waiting for the limiter and on the network; a sequential run's sums are wall time already.
    """
    backoff = run.backoff_s or 0.0
    spent = run.limiter_wait_s + run.network_s + backoff
    stage = run.eqc_stage_s
    share = stage / spent if spent > 0 else 0.0
    return {
        "limiter_wait_s": run.limiter_wait_s * share,
        "network_s": run.network_s * share,
        "backoff_s": backoff * share,
        "local_s": run.local_s + (stage if spent == 0 else 0.0),
    }


def latency_table(run: RunMeasure) -> dict[str, dict[str, float]]:
    return {endpoint: summarize(values) for endpoint, values in sorted(run.latencies.items()) if values}


def run_report(
    run: RunMeasure, limit: RateLimit, latency: Latency, time_scale: float, fastest_s: float = 0.0
) -> dict[str, Any]:
    """The run as report.json holds it: scaled seconds, with the unscaled wall beside them."""
    bound = bound_s(run, limit, latency)
    strict = strict_bounds(run, limit, fastest_s)
    return {
        "title": run.title,
        "calls_per_name": run.calls_per_name,
        "wall_s": round(run.wall_s, 6),
        "wall_unscaled_s": round(run.wall_s * time_scale, 1),
        "eqc_stage_s": round(run.eqc_stage_s, 4),
        "distinct_names": run.distinct_names,
        "index_hits": run.index_hits,
        "index_hit_rate": round(run.hit_rate, 4),
        "names_asked": run.names_asked,
        "found": run.found,
        "not_found": run.not_found,
        "failed": run.failed,
        "calls": {**dict(sorted(run.calls.items())), "total": run.attempts},
        "failed_attempts": run.failed_attempts,
        "rate_limited": run.rate_limited,
        "failure_share": round(run.failure_share, 4),
        "requests_M": round(workload(run).requests, 1),
        "latency_s": latency_table(run),
        "time_split_s": {name: round(value, 4) for name, value in time_split(run).items()},
        "request_seconds": {
            "limiter_wait_s": round(run.limiter_wait_s, 4),
            "network_s": round(run.network_s, 4),
            "backoff_s": None if run.backoff_s is None else round(run.backoff_s, 4),
        },
        "lower_bound_s": None if bound is None else round(bound, 4),
        "efficiency": None if bound is None else round(bound / run.wall_s, 4),
        "accepted_requests": run.accepted,
        "strict_bound_s": None if strict is None else round(strict[0], 4),
        "even_pacing_bound_s": None if strict is None else round(strict[1], 4),
        "efficiency_strict": None if strict is None or run.wall_s <= 0 else round(strict[0] / run.wall_s, 4),
        "even_pacing_ceiling": None if strict is None else round(strict[0] / strict[1], 4),
        "curve": [[round(t, 4), n] for t, n in run.curve],
    }
