"""The performance model: the lower bound on an enrichment run's wall time that every report measures against.

    T_min = max(M W / R, M L_mean / C) + k L_max + local,   M = k N / (1 - p) + A

N names need EQC, k calls each, p the share of attempts failing transiently, A extra calls, R requests per
window W, C requests in flight (None: at least C* = R L_mean / W, so the quota term binds).
"""

from __future__ import annotations

from dataclasses import dataclass

from eqc_enrich._durations import RateLimit

__all__ = [
    "Latency",
    "Workload",
    "even_pacing_bound",
    "lower_bound",
    "sequential_time",
    "strict_lower_bound",
]


@dataclass(frozen=True, slots=True)
class Workload:
    names: int
    calls_per_name: int = 1
    failure_share: float = 0.0
    extra_calls: int = 0

    @property
    def requests(self) -> float:
        """M: every request the server will see, retries included."""
        return self.calls_per_name * self.names / (1.0 - self.failure_share) + self.extra_calls


@dataclass(frozen=True, slots=True)
class Latency:
    mean_s: float
    max_s: float


EQC_WINDOW_S = 60.0  # EQC's quota window as users configure it: 10 requests per 60 s
EQC_LATENCY_S = (20.0, 60.0)  # EQC's latency per call, as the story measured it


def implied_latency(limit: RateLimit) -> tuple[float, float]:
    """The latency range (low, high) to assume beside `limit` when nobody measured one: EQC's 20-60 s, divided
    by the time scale a window shorter than EQC's 60 s implies (a simulator divides latency and window by
    the same factor, so 10/60ms means 20-60 ms); a window of 60 s or more leaves it as it is."""
    scale = min(1.0, limit.window_s / EQC_WINDOW_S)
    low, high = EQC_LATENCY_S
    return low * scale, high * scale


def lower_bound(
    work: Workload,
    limit: RateLimit,
    latency: Latency,
    *,
    concurrency: int | None = None,
    local_s: float = 0.0,
) -> float:
    """T_min in seconds; zero names cost only the local time."""
    if work.names == 0 and work.extra_calls == 0:
        return local_s
    m = work.requests
    quota = m * limit.window_s / limit.requests
    overlap = m * latency.mean_s / concurrency if concurrency else 0.0
    return max(quota, overlap) + work.calls_per_name * latency.max_s + local_s


def sequential_time(work: Workload, limit: RateLimit, latency: Latency) -> float:
    """The old flow: one call after another, never faster than the limiter, never overlapping."""
    per_call = max(latency.mean_s, limit.window_s / limit.requests)
    return work.requests * per_call


def strict_lower_bound(
    accepted_requests: int, limit: RateLimit, min_latency_s: float, *, local_s: float = 0.0
) -> float:
    """T_strict: no run that had EQC accept these requests could have been faster, whatever it planned.

    Under a strict sliding window accepted request i (from 0) cannot be sent before floor(i / R) W, and its
    answer cannot land sooner than the fastest latency after that; so an efficiency measured against this
    never exceeds 1, in any ending (interrupted, stopped, budget reached).
    """
    if accepted_requests <= 0:
        return local_s
    return (accepted_requests - 1) // limit.requests * limit.window_s + min_latency_s + local_s


def even_pacing_bound(accepted_requests: int, limit: RateLimit, min_latency_s: float, *, local_s: float = 0.0) -> float:
    """T_even: the strict bound for a client that keeps its sends a slot (W / R) apart, as ours does (bunched
    sends are what jitter past a server's window): request i cannot go before i W / R, so

        T_even = (M - 1) W / R + L_min

    For a short run it lies most of a window above T_strict (M = 50, R = 10: 4.9 windows against 4), which
    no pacing that spaces its sends can close; for M of 400 and more the two differ by under 2.5%.
    """
    if accepted_requests <= 0:
        return local_s
    return (accepted_requests - 1) * limit.window_s / limit.requests + min_latency_s + local_s
