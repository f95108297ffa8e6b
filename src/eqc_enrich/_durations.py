"""Parsing the human durations and rates that options accept (`30s`, `1.5m`, `10/60s`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from eqc_enrich._errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "": 1.0}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|)\s*$")

MAX_DURATION_S: Final[float] = 365_000 * 86_400.0
"""The longest duration accepted (365000d, about a thousand years, room for the benchmark's "never expires"
token): anything longer is a typo, and would overflow the dates and integer arithmetic it feeds (a date a
few thousand years back no longer exists)."""

MAX_RATE_REQUESTS: Final[int] = 1_000_000
"""The most requests a rate-limit window may allow; EQC allows 10, and the limiter keeps one slot per request."""

MIN_RATE_WINDOW_S: Final[float] = 0.001
"""The shortest rate-limit window a user may give and a run paces by (1ms): the event loop's timers tick in
milliseconds, so a shorter window cannot be paced and means nothing; `10/0s` and `10/0.000001ms` are refused
alike (`check_rate_window`). A `RateLimit` value itself need only be positive: the simulator divides its
quota by the time scale."""

_SHOWN_CHARS = 40


def parse_duration(text: str | float | int) -> float:
    """Seconds from `250ms`, `30s`, `2m`, `1h`, `30d` or a bare number of seconds (at most `MAX_DURATION_S`)."""
    if isinstance(text, int | float):
        try:
            seconds = float(text)
        except OverflowError:
            seconds = math.inf
        return _bounded(seconds, _shown(text))
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"not a duration: {_shown(text)} (use e.g. 500ms, 30s, 2m, 1h, 30d)")
    return _bounded(float(match.group(1)) * _UNITS[match.group(2)], _shown(text))


def _bounded(seconds: float, shown: str) -> float:
    """The one place a duration's range is checked, so `inf` (from `1e400` or 400 digits) never gets through."""
    if math.isnan(seconds) or seconds < 0:
        raise ConfigError(f"duration must be a finite, non-negative number of seconds: {shown}")
    if seconds > MAX_DURATION_S:
        raise ConfigError(f"duration too long: {shown} (at most {MAX_DURATION_S / 86_400:.0f}d)")
    return seconds


def _shown(value: object) -> str:
    """The value as an error message quotes it: its repr, cut short so that the message stays one short line."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 5]}...{text[-2:]}"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `requests` in any `window_s`-second span (a strict sliding window)."""

    requests: int
    window_s: float

    def __post_init__(self) -> None:
        if not 1 <= self.requests <= MAX_RATE_REQUESTS:
            raise ConfigError(
                f"rate limit must allow 1 to {MAX_RATE_REQUESTS:,} requests per window, got {_shown(self.requests)}"
            )
        if not (math.isfinite(self.window_s) and 0 < self.window_s <= MAX_DURATION_S):
            # structural only: what a user types, and what a run paces by, meets `check_rate_window` too
            raise ConfigError(
                f"rate limit window must be positive and at most {MAX_DURATION_S / 86_400:.0f}d, got {self.window_s:g}s"
            )

    @property
    def per_second(self) -> float:
        return self.requests / self.window_s

    def scaled(self, time_scale: float) -> RateLimit:
        return RateLimit(self.requests, self.window_s / time_scale)

    def __str__(self) -> str:
        """The form `parse_rate_limit` reads back: `10/60s`, `10/60ms`."""
        # 12 significant digits: no exponent below 1e12 s, so every window allowed reads back
        window = f"{self.window_s * 1000:.12g}ms" if self.window_s < 1 else f"{self.window_s:.12g}s"
        return f"{self.requests}/{window}"


def check_rate_window(window_s: float) -> None:
    """The one rule for a rate-limit window, wherever it comes from (an option, a setting, a run's options)."""
    if not (math.isfinite(window_s) and MIN_RATE_WINDOW_S <= window_s <= MAX_DURATION_S):
        raise ConfigError(
            f"rate limit window must be at least 1ms and at most {MAX_DURATION_S / 86_400:.0f}d, got {window_s:g}s"
        )


def parse_rate_limit(text: str) -> RateLimit:
    """`10/60s` -> 10 requests per 60 s; the window defaults to seconds."""
    count, sep, window = text.partition("/")
    digits = count.strip()
    if not sep or not re.fullmatch(r"[0-9]+", digits):
        raise ConfigError(f"not a rate limit: {_shown(text)} (use e.g. 10/60s)")
    if len(digits.lstrip("0")) > len(str(MAX_RATE_REQUESTS)):  # before int(), which refuses past 4300 digits
        raise ConfigError(f"rate limit must allow 1 to {MAX_RATE_REQUESTS:,} requests per window, got {_shown(digits)}")
    seconds = parse_duration(window)
    check_rate_window(seconds)
    return RateLimit(int(digits), seconds)


def parse_range(text: str) -> tuple[float, float]:
    """`20-60s` -> (20.0, 60.0); a single duration is a range of one value."""
    match = re.match(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|)\s*-\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|)\s*$", text)
    if match is None:
        value = parse_duration(text)
        return value, value
    low_unit = match.group(2) or match.group(4)
    low = _bounded(float(match.group(1)) * _UNITS[low_unit], _shown(text))
    high = _bounded(float(match.group(3)) * _UNITS[match.group(4)], _shown(text))
    if low > high:
        raise ConfigError(f"range goes backwards: {_shown(text)}")
    return low, high


def format_range(low: float, high: float) -> str:
    """`(0.02, 0.06)` -> `20-60ms`, `(20, 60)` -> `20-60s`: the form `parse_range` reads back, exactly."""
    if high < 1:
        return f"{low * 1000:.12g}-{high * 1000:.12g}ms"
    return f"{low:.12g}-{high:.12g}s"


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
