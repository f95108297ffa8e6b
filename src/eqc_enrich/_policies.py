"""How the EQC stage reacts to trouble, as data: retries, an EQC outage, an index that cannot be written.

Each policy is a small frozen value with defaults, so a run, a worker or a test states its choices in one
place instead of constants spread over the code. Delays are measured in quota slots (window / requests)
where they should scale with the rate limit, so the same policy holds at the story's speed and in a
time-scaled benchmark.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from eqc_enrich._durations import RateLimit

__all__ = ["ConfidencePolicy", "IndexWaitPolicy", "MatchPolicy", "OutagePolicy", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of one request after 429, 5xx or a broken answer (never after 403/404, which will not change)."""

    retries: int = 3
    respect_retry_after: bool = True

    def delay(self, failures: int, limit: RateLimit, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Full jitter on an exponential ceiling of quota slots, capped at one window; the hold a Retry-After
        asks for (`hold_s`) is a floor."""
        slot = limit.window_s / limit.requests
        ceiling = min(limit.window_s, slot * 2 ** (failures - 1))
        delay = rng.uniform(0, ceiling)
        hold = self.hold_s(retry_after_s, limit)
        return max(delay, hold) if hold is not None else delay

    def hold_s(self, retry_after_s: float | None, limit: RateLimit) -> float | None:
        """How long a 429's Retry-After holds every send of the account; None when it asks nothing.

        The header has whole seconds only (RFC 9110), so a server whose window is shorter than a second can
        only round its wait up to `1`, which then means "once a request leaves the window". The pacing rule
        already keeps every send a window (and a margin) after the one a quota before it, so that `1` holds
        for one slot's spacing, not a second (twenty windows of 50 ms). Any other value (2 s and more, a
        window of a second or longer, a time-scaled simulator's fraction) is the server's own wait: held in
        full.
        """
        if not self.respect_retry_after or not retry_after_s or retry_after_s <= 0:
            return None
        if retry_after_s == 1 and limit.window_s < 1:
            return limit.window_s / limit.requests
        return retry_after_s


@dataclass(frozen=True, slots=True)
class OutagePolicy:
    """When EQC counts as gone, and how long to wait for it.

    `unreachable_in_a_row` requests without any HTTP answer (refused, DNS, TLS, timeout) mean EQC is down:
    the stage stops sending and probes, one request at a time, first after one quota slot, then at doubling
    intervals up to one window, for at most `wait_s` seconds. A certificate failure does not heal by
    waiting, so it ends the stage at once.
    """

    unreachable_in_a_row: int = 5
    wait_s: float = 300.0

    def probe_interval(self, probes: int, limit: RateLimit) -> float:
        slot = limit.window_s / limit.requests
        return float(min(limit.window_s, slot * 2 ** max(0, probes)))


@dataclass(frozen=True, slots=True)
class IndexWaitPolicy:
    """How long answers may wait for an index that cannot be written before the run stops.

    A commit that has not returned after `stall_s` counts as a failure already (a lock held elsewhere can
    keep it waiting for the database's whole busy timeout): new requests pause and answers start going to
    the side file at once. Retries come every `retry_s`.
    """

    wait_s: float = 120.0
    stall_s: float = 2.0
    retry_s: float = 0.5


@dataclass(frozen=True, slots=True)
class ConfidencePolicy:
    """What the index learns from an EQC answer, by its confidence.

    The confidence of an answer comes from its match type (`eqc.match_confidence`: EQC's own vocabulary,
    exact 1.00, fuzzy 0.80, pinyin 0.60, other 0.70). A name stays open for review until an entry of full
    confidence answers it (`store.SURE`, the top of the scale, not a choice).
    """

    min_learned: float = 0.60  # below this an answer is kept as a payload, but the index does not learn it
    former_name_factor: float = 0.9  # a former name is a little less sure than the name EQC was asked
    refresh_below: float = 0.80  # the worker asks again about answers below this once they are old

    def learns(self, confidence: float) -> bool:
        return confidence >= self.min_learned

    def former_name(self, confidence: float) -> float:
        return round(self.former_name_factor * confidence, 2)


@dataclass(frozen=True, slots=True)
class MatchPolicy:
    """How far a local match of an unknown name is trusted (the `--local-match` stage).

    An equivalent name (the same parts up to rules that cannot change the company) is answered locally in
    `shadow` and `on` alike. A similar one is answered locally only with `on`, when its score is at least
    `threshold` and ahead of the best candidate of any other company by at least `min_gap`; a score in the
    `review_band` below the threshold sends the name to EQC with its local candidate kept for the review page.
    Set `threshold` from `eqc-enrich index match-report`, which measures each score band against what EQC
    answered. `verify_share` of the equivalent answers (and every similar one) is asked again by the
    standing worker, in idle slots.
    """

    threshold: float = 0.92
    review_band: float = 0.15
    min_gap: float = 0.05
    verify_share: float = 0.05

    def __post_init__(self) -> None:
        for name in ("threshold", "review_band", "min_gap", "verify_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MatchPolicy.{name} must lie in [0, 1], got {value}")

    def answers(self, score: float, gap: float | None) -> bool:
        """Whether a similar name with this score and lead over the runner-up is answered locally (with `on`)."""
        return score >= self.threshold and (gap is None or gap >= self.min_gap)

    def for_review(self, score: float) -> bool:
        """Whether a similar name that is not answered keeps its candidate for the review page."""
        return self.threshold - self.review_band <= score

    def confidence(self, candidate: float, score: float) -> float:
        """The confidence a local answer is written with: never above its candidate's, less as the score is."""
        return math.floor(candidate * score * 100 + 1e-9) / 100
