"""The EQC stage's live counters: the stage writes them, a display may read them while it runs, and the
stage's report is built from them when it ends (nothing else feeds the summary)."""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from eqc_enrich.eqc import CallRecord

__all__ = ["EqcStats", "summarize"]

_REFUSED = frozenset({"RateLimitedError", "TokenExpiredError"})
"""HTTP answers EQC gives before a request enters its quota window: a 429, and a token it refuses (invalid
or expired; EQC checks the token first). An attempt with no HTTP answer at all (refused connection, reset,
timeout) is not known to have entered the window either, so it is not counted: the efficiency's lower
bound must never count a request EQC did not take."""


@dataclass
class EqcStats:
    """Everything the EQC stage counts; read (never written) by progress displays while the run works."""

    found: int = 0
    not_found: int = 0
    failed: int = 0
    skipped: int = 0
    elsewhere: int = 0  # names another process answered while this one waited for them
    retries: int = 0
    rate_limited: int = 0
    token_refreshes: int = 0
    in_flight: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    calls: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # attempts by how they ended
    latencies: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    network_s: float = 0.0
    parse_s: float = 0.0
    limiter_wait_s: float = 0.0
    call_times: list[float] = field(default_factory=list)
    effective_rate: float = 0.0  # requests per second the limiter admits when saturated (0 before the stage runs)
    accepted_requests: int = 0  # attempts EQC took into its quota window: an HTTP answer, neither 429 nor 401
    unanswered: int = 0  # attempts that got no HTTP answer (refused or cut connection, timeout)

    @property
    def names_done(self) -> int:
        """Names EQC was asked about and that are finished (found, not found or failed); never the unasked."""
        return self.found + self.not_found + self.failed

    @property
    def api_calls(self) -> int:
        return sum(self.calls.values())

    def record_call(self, call: CallRecord) -> None:
        """The client's observer: one finished attempt."""
        self.calls[call.endpoint] += 1
        self.outcomes[call.outcome] += 1
        if call.status is None:
            self.unanswered += 1
        elif call.outcome not in _REFUSED:
            self.accepted_requests += 1
        self.network_s += call.network_s
        self.parse_s += call.parse_s
        self.call_times.append(time.monotonic())
        if call.outcome == "ok":
            self.latencies[call.endpoint].append(call.network_s)

    def recent_rate(self, window_s: float, now: float | None = None) -> float:
        """Requests per second over the last `window_s` seconds (the rate the quota sees)."""
        now = time.monotonic() if now is None else now
        recent = 0
        for stamp in reversed(self.call_times):
            if stamp < now - window_s:
                break
            recent += 1
        return recent / window_s if window_s > 0 else 0.0

    def latency_summary(self) -> dict[str, dict[str, float]]:
        return {endpoint: summarize(values) for endpoint, values in self.latencies.items() if values}


def summarize(values: list[float]) -> dict[str, float]:
    """mean, p50, p95, p99, max of a sample (seconds)."""
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {
        "count": float(len(ordered)),
        "mean": statistics.fmean(ordered),
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": ordered[-1],
    }
