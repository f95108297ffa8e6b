"""A run's options resolved against the WDH_* settings once: "the option, else the setting" is decided here.

Everything downstream reads a `RunConfig`, never the pair (options, settings), so a default cannot be
decided differently in two places.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eqc_enrich._durations import RateLimit, check_rate_window
from eqc_enrich._policies import ConfidencePolicy, IndexWaitPolicy, OutagePolicy
from eqc_enrich.settings import Settings, checked_token

if TYPE_CHECKING:
    from eqc_enrich.enrich import RunOptions

__all__ = ["RunConfig", "resolve_config"]


@dataclass(frozen=True, slots=True)
class RunConfig:
    rate_limit: RateLimit
    eqc_url: str
    token: str | None
    token_command: str | None
    timeout_s: float
    retries: int
    salt: str
    calls_per_name: int
    commit_interval_s: float
    outage: OutagePolicy
    index_wait: IndexWaitPolicy
    quota_key: str  # the EQC account every process on this index shares a rate limit for
    claim_lease_s: float
    confidence: ConfidencePolicy

    def __repr__(self) -> str:  # the token and the salt never reach a log through a repr
        return f"RunConfig(rate_limit={self.rate_limit}, eqc_url={self.eqc_url!r}, retries={self.retries})"

    @property
    def slot_s(self) -> float:
        """One quota slot: the even spacing of sends at the limit."""
        return self.rate_limit.window_s / self.rate_limit.requests


def resolve_config(options: RunOptions, settings: Settings) -> RunConfig:
    rate_limit = options.rate_limit or settings.rate_limit
    check_rate_window(rate_limit.window_s)  # a window too short to pace by, however it was given
    slot = rate_limit.window_s / rate_limit.requests
    outage = OutagePolicy() if options.eqc_down_wait_s is None else OutagePolicy(wait_s=options.eqc_down_wait_s)
    # A commit that has not returned within a few quota slots counts as stuck: at the story's speed that is
    # 2 s, in a 1000x benchmark 0.25 s (a busy database server can take that for a commit), so a lock stops
    # the sending after a handful of requests at any scale.
    stall = min(2.0, max(0.25, 3 * slot))
    index_wait = IndexWaitPolicy(
        wait_s=IndexWaitPolicy().wait_s if options.index_wait_s is None else options.index_wait_s, stall_s=stall
    )
    return RunConfig(
        rate_limit=rate_limit,
        eqc_url=options.eqc_url or settings.eqc_base_url,
        token=checked_token(options.token, source="token") if options.token is not None else settings.token_value(),
        token_command=options.token_command or settings.eqc_token_command,
        timeout_s=options.timeout_s if options.timeout_s is not None else settings.eqc_timeout,
        retries=options.retries if options.retries is not None else settings.eqc_retry_max,
        salt=options.salt if options.salt is not None else settings.alias_salt.get_secret_value(),
        calls_per_name=3 if options.details else 1,
        # at least one commit per quota slot: a SIGKILL repeats at most the requests in flight, at any time scale
        commit_interval_s=max(0.001, min(options.commit_interval_s, slot)),
        outage=outage,
        index_wait=index_wait,
        quota_key=options.quota_key or settings.eqc_quota_key or (options.eqc_url or settings.eqc_base_url),
        claim_lease_s=options.claim_lease_s,
        confidence=options.confidence,
    )
