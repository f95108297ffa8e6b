"""What one benchmark is configured with: the story's conditions, divided by a time scale.

Benchmarks cannot wait hours, so latency and rate-limit window are both divided by the same factor; ratios
(speed-up, efficiency) are unchanged by that, absolute times are reported with the scale beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eqc_enrich._durations import RateLimit
from eqc_enrich._errors import ConfigError
from eqc_enrich.model import Latency

STORY_RATE = RateLimit(10, 60.0)
STORY_LATENCY_S = (20.0, 60.0)
DEFAULT_TIME_SCALE = 1000.0
SAMPLE_EVERY_S = 10.0  # progress sampling interval in story seconds (10 ms at time scale 1000)
TIMEOUT_FACTOR = 2.0  # per-request timeout: twice the slowest configured call, at the same scale
MIN_TIMEOUT_S = 0.5  # at high scales the client's own overhead is comparable to a scaled call
JOBS_MAX_TIME_SCALE = 100.0
"""The fastest clock for several jobs at once on a 2-core machine: N processes, the simulator and perhaps a
database server then share the CPU, and at 1/1000 their scheduling jitter exceeds the quota's margin."""


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of `eqc-enrich bench`; durations in story (unscaled) seconds."""

    names: int = 1000
    eqc_url: str | None = None
    time_scale: float = DEFAULT_TIME_SCALE
    rate_limit: RateLimit = STORY_RATE
    latency: tuple[float, float] = STORY_LATENCY_S
    cached_share: float = 0.3
    out: Path = Path("bench-report")
    seed: int = 7
    token: str | None = field(default=None, repr=False)
    unknown_share: float = 0.05
    retries: int = 3
    workers: int = 1  # 2 or more: also N `eqc-enrich run` processes at once over slices of the rows
    jobs_time_scale: float | None = None  # their time scale; None: the main one, at most JOBS_MAX_TIME_SCALE
    db: str | None = field(default=None, repr=False)  # PostgreSQL URL for their index (default: SQLite)
    timeout_override_s: float | None = None  # --timeout: instead of twice the slowest configured call
    proxy: str | None = field(default=None, repr=False)  # the way to a real endpoint: as for a run
    pac_url: str | None = None
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        if self.names < 1:
            raise ConfigError(f"--names must be at least 1, got {self.names}")
        if self.time_scale <= 0:
            raise ConfigError(f"--time-scale must be positive, got {self.time_scale:g}")
        if self.eqc_url is not None and self.time_scale != 1:
            raise ConfigError("a real endpoint (--eqc-url) runs at time scale 1: its latency cannot be scaled")
        if self.eqc_url is not None and not self.token:
            raise ConfigError("a real endpoint (--eqc-url) needs a token: WDH_EQC_TOKEN or --token-command")
        if not 0 <= self.cached_share <= 1 or not 0 <= self.unknown_share < 1:
            raise ConfigError("--cached-share must lie in [0, 1] (and the unknown share in [0, 1))")
        low, high = self.latency
        if not 0 <= low <= high:
            raise ConfigError(f"--latency must be a range low-high with 0 <= low <= high, got {self.latency}")
        self._check_jobs()

    def _check_jobs(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.workers == 1 and (self.jobs_time_scale is not None or self.db is not None):
            raise ConfigError("--jobs-time-scale and --db apply to several jobs at once: give --workers 2 or more")
        if self.workers > 1 and not self.simulated:
            raise ConfigError("--workers needs the simulated EQC: its arrival times are what measures the jobs")
        if self.jobs_time_scale is not None and self.jobs_time_scale <= 0:
            raise ConfigError(f"--jobs-time-scale must be positive, got {self.jobs_time_scale:g}")
        if self.db is not None and not _is_postgresql(self.db):
            raise ConfigError(
                "--db must be a PostgreSQL URL (postgresql+psycopg://user@host/db): without it the jobs use SQLite"
            )

    @property
    def simulated(self) -> bool:
        return self.eqc_url is None

    @property
    def jobs_scale(self) -> float:
        """The time scale of the several-jobs runs."""
        if self.jobs_time_scale is not None:
            return self.jobs_time_scale
        return min(self.time_scale, JOBS_MAX_TIME_SCALE)

    @property
    def scaled_rate(self) -> RateLimit:
        """The limit both flows pace to, on the benchmark's clock."""
        return self.rate_limit.scaled(self.time_scale)

    @property
    def scaled_latency(self) -> Latency:
        """The configured latency range on the benchmark's clock, as the model's mean and max."""
        low, high = self.latency
        return Latency(mean_s=(low + high) / 2 / self.time_scale, max_s=high / self.time_scale)

    @property
    def timeout_s(self) -> float:
        if self.timeout_override_s is not None:
            return self.timeout_override_s
        return max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * self.latency[1] / self.time_scale)

    @property
    def jobs_timeout_s(self) -> float:
        if self.timeout_override_s is not None:
            return self.timeout_override_s
        return max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * self.latency[1] / self.jobs_scale)

    @property
    def sample_interval_s(self) -> float:
        return max(0.001, SAMPLE_EVERY_S / self.time_scale)


def _is_postgresql(url: str) -> bool:
    """Whether `url` names PostgreSQL; sqlalchemy loads only when --db is given."""
    import sqlalchemy as sa

    try:
        return sa.make_url(url).get_backend_name() == "postgresql"
    except sa.exc.ArgumentError:
        return False
