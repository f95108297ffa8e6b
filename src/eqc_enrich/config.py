"""How to reach EQC and share its quota: one value, resolved once, used by every job that talks to EQC.

A run, `plan`, the standing worker, the review page, the benchmark against a real endpoint and the Dagster
resource all take an `EqcOptions` (what the caller said; `None` means "from the WDH_* settings") and turn
it into an `EqcAccess` with `resolve_access`, the one place where "the option, else the setting, else the
default" is decided for these knobs. `StageConfig` adds what the EQC stage itself needs on top (details,
concurrency, the outage and index-wait policies), built by `stage_config` for runs and workers alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eqc_enrich._durations import RateLimit
from eqc_enrich._policies import ConfidencePolicy, IndexWaitPolicy, OutagePolicy
from eqc_enrich.eqc import CallObserver, EqcClient
from eqc_enrich.settings import Settings

__all__ = [
    "DEFAULT_CLAIM_LEASE_S",
    "MIN_COMMIT_INTERVAL_S",
    "EqcAccess",
    "EqcOptions",
    "StageConfig",
    "resolve_access",
    "stage_config",
]

DEFAULT_CLAIM_LEASE_S = 60.0


@dataclass(frozen=True)
class EqcOptions:
    """How to reach EQC and share its quota, as the caller gave it; `None` means "from the WDH_* settings".

    - `url`: EQC's base URL [`WDH_EQC_BASE_URL`].
    - `token` / `token_command`: the token, or a command that prints a fresh one [`WDH_EQC_TOKEN`,
      `WDH_EQC_TOKEN_COMMAND`]; never shown in a repr, a log or a summary.
    - `rate_limit`: the quota, never more than N requests in any window [`WDH_EQC_RATE_LIMIT(_WINDOW)`].
    - `quota_key`: the account whose quota every process on the index shares [`WDH_EQC_QUOTA_KEY`, else
      the URL].
    - `timeout_s`, `retries`: per request [`WDH_EQC_TIMEOUT`, `WDH_EQC_RETRY_MAX`].
    - `claim_lease_s`: how long a claim on a name outlives a process that died (default 60 s).
    """

    url: str | None = None
    token: str | None = field(default=None, repr=False)
    token_command: str | None = field(default=None, repr=False)
    rate_limit: RateLimit | None = None
    quota_key: str | None = None
    timeout_s: float | None = None
    retries: int | None = None
    claim_lease_s: float | None = None

    def public(self) -> dict[str, Any]:
        """As a journal or a log records them: the token and the token command left out."""
        return {
            "eqc_url": self.url,
            "rate_limit": str(self.rate_limit) if self.rate_limit is not None else None,
            "quota_key": self.quota_key,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "claim_lease_s": self.claim_lease_s,
        }


@dataclass(frozen=True, slots=True)
class EqcAccess:
    """Where EQC is, with which token, at which rate, on whose quota: every value decided."""

    url: str
    token: str | None
    token_command: str | None
    rate_limit: RateLimit
    quota_key: str
    timeout_s: float
    retries: int
    claim_lease_s: float

    def __repr__(self) -> str:  # the token and the token command never reach a log through a repr
        return f"EqcAccess(url={self.url!r}, rate_limit={self.rate_limit}, quota_key={self.quota_key!r})"

    @property
    def slot_s(self) -> float:
        """One quota slot: the even spacing of sends at the limit."""
        return self.rate_limit.window_s / self.rate_limit.requests

    def client(self, *, observer: CallObserver | None = None) -> EqcClient:
        """An EQC client on this access; `observer(CallRecord)` hears every finished attempt."""
        return EqcClient(self.token, base_url=self.url, timeout=self.timeout_s, observer=observer)

    def public(self) -> dict[str, Any]:
        return {"eqc_url": self.url, "rate_limit": str(self.rate_limit), "quota_key": self.quota_key}


def resolve_access(options: EqcOptions | None, settings: Settings) -> EqcAccess:
    """The option, else the WDH_* setting (environment, then `.wdh_env`), else the default."""
    given = options or EqcOptions()
    url = given.url or settings.eqc_base_url
    return EqcAccess(
        url=url,
        token=given.token if given.token is not None else settings.token_value(),
        token_command=given.token_command or settings.eqc_token_command,
        rate_limit=given.rate_limit or settings.rate_limit,
        quota_key=given.quota_key or settings.eqc_quota_key or url,
        timeout_s=given.timeout_s if given.timeout_s is not None else settings.eqc_timeout,
        retries=given.retries if given.retries is not None else settings.eqc_retry_max,
        claim_lease_s=given.claim_lease_s if given.claim_lease_s is not None else DEFAULT_CLAIM_LEASE_S,
    )


MIN_COMMIT_INTERVAL_S = 0.025


@dataclass(frozen=True, slots=True)
class StageConfig:
    """What the EQC stage runs on: the access, and how this job asks (for a run and the worker alike)."""

    access: EqcAccess
    details: bool = False
    concurrency: int | None = None  # a cap on requests in flight; None lets the gate adapt to latency
    margin_s: float | None = None  # the limiter's margin against the window; None: its default
    grace_s: float = 5.0  # how long requests in flight may finish after a stop
    commit_interval_s: float = 0.5
    outage: OutagePolicy = field(default_factory=OutagePolicy)
    index_wait: IndexWaitPolicy = field(default_factory=IndexWaitPolicy)
    confidence: ConfidencePolicy = field(default_factory=ConfidencePolicy)

    @property
    def calls_per_name(self) -> int:
        """search, and findDepart and findLabels when details are wanted."""
        return 3 if self.details else 1


def stage_config(
    access: EqcAccess,
    *,
    details: bool = False,
    concurrency: int | None = None,
    margin_s: float | None = None,
    grace_s: float = 5.0,
    commit_interval_s: float = 0.5,
    eqc_down_wait_s: float | None = None,
    index_wait_s: float | None = None,
    confidence: ConfidencePolicy | None = None,
) -> StageConfig:
    """The stage's policies, scaled to the quota so they hold at the story's speed and in a benchmark."""
    slot = access.slot_s
    outage = OutagePolicy() if eqc_down_wait_s is None else OutagePolicy(wait_s=eqc_down_wait_s)
    # A commit that has not returned within a few quota slots counts as stuck: at the story's speed that is
    # 2 s, in a 1000x benchmark 0.25 s (a busy database server can take that for a commit), so a lock stops
    # the sending after a handful of requests at any scale.
    stall = min(2.0, max(0.25, 3 * slot))
    index_wait = IndexWaitPolicy(
        wait_s=IndexWaitPolicy().wait_s if index_wait_s is None else index_wait_s, stall_s=stall
    )
    return StageConfig(
        access=access,
        details=details,
        concurrency=concurrency,
        margin_s=margin_s,
        grace_s=grace_s,
        # at least one commit per quota slot, so a SIGKILL repeats at most the requests in flight; but no more
        # often than every 25 ms unless asked: at 1000x a commit per 6 ms slot cost the process more than its
        # requests did (a time-scaled benchmark only: at the story's speed a slot is 6 s)
        commit_interval_s=max(0.001, min(commit_interval_s, max(slot, MIN_COMMIT_INTERVAL_S))),
        outage=outage,
        index_wait=index_wait,
        confidence=confidence or ConfidencePolicy(),
    )
