"""The simulated server's rate limit: a strict sliding window over accepted requests, one per token.

A request accepted at time t occupies a slot for the half-open span [t, t + W): at no instant are more than
N accepted requests inside any W-second span. Rejected requests take no slot (the real service counts what
it serves). Check and record happen under one lock with no await in between, so concurrent requests on the
event loop (or on threads) can never both take the last slot.
"""

from __future__ import annotations

import threading
from collections import deque

from eqc_enrich._durations import RateLimit


class SlidingWindow:
    """Accept at most `limit.requests` per `limit.window_s`; say how long to wait otherwise."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.max_in_window = 0
        self._accepted: deque[float] = deque()
        self._lock = threading.Lock()

    def try_acquire(self, now: float) -> float | None:
        """None when the request arriving at `now` is accepted (and recorded), else seconds until a slot frees.

        `now` must not go backwards between calls (use a monotonic clock).
        """
        with self._lock:
            horizon = now - self.limit.window_s
            accepted = self._accepted
            while accepted and accepted[0] <= horizon:
                accepted.popleft()
            if len(accepted) >= self.limit.requests:
                return min(accepted[0] - horizon, self.limit.window_s)  # min: float rounding
            accepted.append(now)
            self.max_in_window = max(self.max_in_window, len(accepted))
            return None


class TokenLimits:
    """One sliding window per token, as the real service limits each user separately."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._windows: dict[str, SlidingWindow] = {}
        self._lock = threading.Lock()

    def try_acquire(self, token: str, now: float) -> float | None:
        """See `SlidingWindow.try_acquire`; the token's window is created on first use."""
        with self._lock:
            window = self._windows.get(token)
            if window is None:
                window = self._windows[token] = SlidingWindow(self.limit)
        return window.try_acquire(now)

    @property
    def max_in_window(self) -> int:
        """The most accepted requests any token ever had inside one window (since the last reset)."""
        with self._lock:
            return max((w.max_in_window for w in self._windows.values()), default=0)

    def reset_peak(self) -> None:
        """Forget the peak; the windows themselves keep running so the limit stays strict."""
        with self._lock:
            for window in self._windows.values():
                window.max_in_window = 0
