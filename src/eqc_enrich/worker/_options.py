"""The worker's knobs, and the run options its EQC stage is configured from (one resolution of defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eqc_enrich._durations import RateLimit
from eqc_enrich._policies import ConfidencePolicy
from eqc_enrich.enrich import DEFAULT_NEGATIVE_TTL_S, RunOptions

__all__ = ["WorkerOptions"]

DAY_S = 86_400.0


@dataclass(frozen=True)
class WorkerOptions:
    """Every knob of the standing worker; None means "from the WDH_* settings" (as for a run)."""

    db: str | Path | None = None
    db_schema: str | None = None
    eqc_url: str | None = None
    token: str | None = field(default=None, repr=False)
    token_command: str | None = field(default=None, repr=False)
    rate_limit: RateLimit | None = None
    quota_key: str | None = None
    timeout_s: float | None = None
    retries: int | None = None
    concurrency: int | None = None
    details: bool = False
    negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S  # a not-found name is asked again once this has passed
    refresh_s: float = 90 * DAY_S  # a low-confidence answer is asked again once it is this old
    retry_failed_s: float = 3_600.0  # a name that failed waits this long, doubled with every failure
    claim_lease_s: float = 60.0
    batch: int = 200  # names per pass: the queue is read again between passes (new runs, new priorities)
    idle_s: float | None = None  # how long runs must have left the quota unused (default: one rate window)
    poll_s: float | None = None  # how often a worker with nothing due looks again (default: ten windows)
    max_time_s: float | None = None  # stop after this long (a scheduler's slot); None: no limit
    grace_s: float = 5.0
    commit_interval_s: float = 0.5
    eqc_down_wait_s: float | None = None
    index_wait_s: float | None = None
    confidence: ConfidencePolicy = field(
        default_factory=ConfidencePolicy
    )  # what is learned, and which answers are asked again

    def run_options(self) -> RunOptions:
        """The same settings as a run's, so the EQC stage behaves exactly as in a run."""
        return RunOptions(
            db=self.db, db_schema=self.db_schema, eqc_url=self.eqc_url, token=self.token,
            token_command=self.token_command, rate_limit=self.rate_limit, concurrency=self.concurrency,
            timeout_s=self.timeout_s, retries=self.retries, details=self.details,
            negative_ttl_s=self.negative_ttl_s, refresh_s=self.refresh_s, grace_s=self.grace_s,
            commit_interval_s=self.commit_interval_s, eqc_down_wait_s=self.eqc_down_wait_s,
            index_wait_s=self.index_wait_s, quota_key=self.quota_key, claim_lease_s=self.claim_lease_s,
            confidence=self.confidence,
        )  # fmt: skip

    def public(self) -> dict[str, Any]:
        """As the journal and `--log-json` record them: no token, no token command, no database password."""
        shown = self.run_options().public()
        mine = {k: v for k, v in self.__dict__.items() if k not in {"token", "token_command"}}
        from eqc_enrich.events import jsonable

        return {**{k: jsonable(v) for k, v in mine.items()}, "db": shown["db"]}
