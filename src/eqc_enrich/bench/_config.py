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

    def __post_init__(self) -> None:
        if self.names < 1:
            raise ConfigError(f"--names must be at least 1, got {self.names}")
        if self.time_scale <= 0:
            raise ConfigError(f"--time-scale must be positive, got {self.time_scale:g}")
        if self.eqc_url is not None and self.time_scale != 1:
            raise ConfigError("a real endpoint (--eqc-url) runs at time scale 1: its latency cannot be scaled")
        if self.eqc_url is not None and not self.token:
            raise ConfigError("a real endpoint (--eqc-url) needs a token: --token or WDH_EQC_TOKEN")
        if not 0 <= self.cached_share <= 1 or not 0 <= self.unknown_share < 1:
            raise ConfigError("--cached-share must lie in [0, 1] (and the unknown share in [0, 1))")
        low, high = self.latency
        if not 0 <= low <= high:
            raise ConfigError(f"--latency must be a range low-high with 0 <= low <= high, got {self.latency}")

    @property
    def simulated(self) -> bool:
        return self.eqc_url is None

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
        return max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * self.latency[1] / self.time_scale)

    @property
    def sample_interval_s(self) -> float:
        return max(0.001, SAMPLE_EVERY_S / self.time_scale)
