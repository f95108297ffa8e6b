"""The worker's knobs, and the EQC stage's configuration they resolve to (as a run's do, in one place)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from eqc_enrich._jsonable import jsonable
from eqc_enrich._policies import ConfidencePolicy
from eqc_enrich.config import EqcOptions, StageConfig, resolve_access, stage_config
from eqc_enrich.options import DEFAULT_NEGATIVE_TTL_S
from eqc_enrich.settings import Settings
from eqc_enrich.store import redact_url

__all__ = ["WorkerOptions"]

DAY_S = 86_400.0


@dataclass(frozen=True)
class WorkerOptions:
    """Every knob of the standing worker; `None` means "from the WDH_* settings" (as for a run).

    `eqc` is how to reach EQC and share its quota: the same value a run takes, so the worker and the runs
    on one account agree on the quota they share.
    """

    db: str | Path | None = None
    db_schema: str | None = None
    eqc: EqcOptions = field(default_factory=EqcOptions)
    concurrency: int | None = None
    details: bool = False
    fill_details: bool = True  # when nothing else is due: findDepart and findLabels of base_info rows lacking them
    negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S  # a not-found name is asked again once this has passed
    refresh_s: float = 90 * DAY_S  # a low-confidence answer is asked again once it is this old
    retry_failed_s: float = 3_600.0  # a name that failed waits this long, doubled with every failure
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

    def stage_config(self, settings: Settings) -> StageConfig:
        """The EQC stage's configuration: the same resolution as a run's, so it behaves exactly as in a run."""
        return stage_config(
            resolve_access(self.eqc, settings),
            details=self.details,
            concurrency=self.concurrency,
            grace_s=self.grace_s,
            commit_interval_s=self.commit_interval_s,
            eqc_down_wait_s=self.eqc_down_wait_s,
            index_wait_s=self.index_wait_s,
            confidence=self.confidence,
        )

    def public(self) -> dict[str, Any]:
        """As the journal and `--log-json` record them: no token, no token command, no database password."""
        shown = {f.name: jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "eqc"}
        shown.update(self.eqc.public())
        if isinstance(self.db, str) and "://" in self.db:
            shown["db"] = redact_url(self.db)
        return shown
