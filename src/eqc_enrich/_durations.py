"""Parsing the human durations and rates that options accept (`30s`, `1.5m`, `10/60s`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from eqc_enrich._errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "": 1.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|)\s*$")


def parse_duration(text: str | float | int) -> float:
    """Seconds from `250ms`, `30s`, `2m`, `1h`, `30d` or a bare number of seconds."""
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ConfigError(f"duration must be a finite, non-negative number of seconds: {text}")
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 2m, 1h, 30d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `requests` in any `window_s`-second span (a strict sliding window)."""

    requests: int
    window_s: float

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window_s <= 0:
            raise ConfigError(f"rate limit must be at least 1 request per positive window, got {self}")

    @property
    def per_second(self) -> float:
        return self.requests / self.window_s

    def scaled(self, time_scale: float) -> RateLimit:
        return RateLimit(self.requests, self.window_s / time_scale)

    def __str__(self) -> str:
        """The form `parse_rate_limit` reads back: `10/60s`, `10/60ms`."""
        window = f"{self.window_s * 1000:g}ms" if self.window_s < 1 else f"{self.window_s:g}s"
        return f"{self.requests}/{window}"


def parse_rate_limit(text: str) -> RateLimit:
    """`10/60s` -> 10 requests per 60 s; the window defaults to seconds."""
    count, sep, window = text.partition("/")
    if not sep or not re.fullmatch(r"[0-9]+", count.strip()):
        raise ConfigError(f"not a rate limit: {text!r} (use e.g. 10/60s)")
    return RateLimit(int(count), parse_duration(window))


def parse_range(text: str) -> tuple[float, float]:
    """`20-60s` -> (20.0, 60.0); a single duration is a range of one value."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|)\s*-\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|)\s*$", text)
    if match is None:
        value = parse_duration(text)
        return value, value
    low_unit = match.group(2) or match.group(4)
    low = float(match.group(1)) * _UNITS[low_unit]
    high = float(match.group(3)) * _UNITS[match.group(4)]
    if low > high:
        raise ConfigError(f"range goes backwards: {text!r}")
    return low, high


def format_duration(seconds: float) -> str:
    """Compact text for a duration: `45ms`, `12.5s`, `3m20s`, `2h05m`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.4g}s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes}m{rest:02d}s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"
