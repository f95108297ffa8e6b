"""Pacing EQC traffic: a strict sliding-window limiter and an adaptive cap on requests in flight."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from eqc_enrich._durations import RateLimit

Clock = Callable[[], float]


class SlidingWindowLimiter:
    """Never more than `requests` sends in any `window + margin` span; every attempt counts, retries too.

    The server counts arrivals, not sends, so a send that travels faster than the one a window before it
    could land inside the server's window. The margin absorbs that jitter. Waiters are served in arrival
    order (the lock is FIFO), so a retry cannot be starved by fresh requests.
    """

    def __init__(self, limit: RateLimit, *, margin_s: float | None = None, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.margin_s = default_margin(limit) if margin_s is None else margin_s
        self._base_margin_s = self.margin_s
        self._paced_at = 0.0
        self.widened = 0
        self._clock = clock
        self._sends: deque[float] = deque(maxlen=limit.requests)
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.wait_s = 0.0  # total time callers spent waiting here, for the timing breakdown

    @property
    def span_s(self) -> float:
        return self.limit.window_s + self.margin_s

    @property
    def _spacing_s(self) -> float:
        return self.span_s / self.limit.requests

    @property
    def effective_rate(self) -> float:
        """Requests per second this limiter admits when saturated."""
        return self.limit.requests / self.span_s

    def widen(self) -> None:
        """A 429 despite pacing: arrivals jitter more than the margin allows, so widen it (up to 10%).

        `settle` narrows it again a hundredth of a step per accepted request, so the margin finds the
        width where about one request in a hundred meets a 429: each costs a slot, a wider margin costs
        every slot.
        """
        self.margin_s = min(max(self._base_margin_s, 0.1 * self.limit.window_s), self.margin_s + self._base_margin_s)
        self.widened += 1

    def settle(self) -> None:
        self.margin_s = max(self._base_margin_s, self.margin_s - self._base_margin_s / 100)

    def pause_until(self, deadline: float) -> None:
        """Hold every send until `deadline` (a server's Retry-After applies to the whole token)."""
        self._paused_until = max(self._paused_until, deadline)

    def next_free(self) -> float:
        now = self._clock()
        earliest = max(now, self._paused_until)
        if len(self._sends) == self.limit.requests:
            # Full window: its oldest send must age out (the hard rule), and sends keep an even pace. Bunched
            # arrivals are what jitter past the margin; even ones barely jitter at all.
            earliest = max(earliest, self._sends[0] + self.span_s, self._paced_at - self._spacing_s / 2)
        return earliest

    def _stamp(self, now: float) -> None:
        """Record a send. The pace advances from its own schedule, not from the (late) wake-up, so the
        sleep's overshoot is absorbed instead of accumulating over thousands of sends."""
        self._sends.append(now)
        self._paced_at = max(self._paced_at, now) + self._spacing_s

    async def acquire(self, stop: asyncio.Future[None] | None = None) -> None:
        """Wait for a send slot and take it; the caller must send right away (the slot is stamped now).

        Raises `Stopped` when `stop` completes first. Runs in the caller's own task, so no scheduling
        hop separates the stamp from the send.
        """
        started = self._clock()
        try:
            async with self._lock:
                # Sleeping under the lock is the point: the next waiter's slot depends on this one's send time.
                while (delay := self.next_free() - self._clock()) > 0:
                    await sleep_unless(stop, delay)
                self._stamp(self._clock())
        finally:
            self.wait_s += self._clock() - started


class Stopped(Exception):
    """The run was asked to stop while this caller waited."""


async def sleep_unless(stop: asyncio.Future[None] | None, seconds: float) -> None:
    """Sleep, unless `stop` completes first (then raise `Stopped`); waits on the future, starts no task."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    if not stop.done():
        await asyncio.wait({stop}, timeout=seconds)
    if stop.done():
        raise Stopped


def default_margin(limit: RateLimit) -> float:
    """2% of the window, at least 1 ms and at most 1 s: room for arrival jitter at any time scale."""
    return min(1.0, max(0.001, 0.02 * limit.window_s))


class ConcurrencyGate:
    """Caps requests in flight. The cap follows the latency seen (rate x latency, the quota's C*) and halves
    on a 429, then creeps back: enough to keep the quota busy, no more, since more only queues.

    Waiters queue in order and each release wakes exactly as many as there are free slots, so hundreds
    of waiting workers cost nothing while they wait.
    """

    def __init__(self, rate_per_s: float, *, burst: int, ceiling: int | None = None, floor: int = 1) -> None:
        self._rate = rate_per_s
        self._ceiling = ceiling
        self._floor = floor
        self.target = max(floor, min(ceiling or burst, burst))
        self.in_flight = 0
        self.peak_in_flight = 0
        self._latency_ewma: float | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def upper(self) -> int:
        """The cap latency asks for: rate x latency, with headroom for latency spread."""
        wanted = self.target if self._latency_ewma is None else math.ceil(self._rate * self._latency_ewma * 1.5) + 2
        if self._ceiling is not None:
            wanted = min(wanted, self._ceiling)
        return max(self._floor, wanted)

    async def acquire(self, stop: asyncio.Future[None] | None = None) -> None:
        """Take a slot, waiting in line for one; raises `Stopped` when `stop` completes first."""
        if stop is not None and stop.done():
            raise Stopped
        if self.in_flight < self.target and not self._waiters:
            self._take()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait({waiter} if stop is None else {waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if waiter.done():
                self.release_slot()  # handed a slot just as the task was cancelled: give it back
            else:
                waiter.cancel()
            raise
        if not waiter.done():
            waiter.cancel()  # stopped while waiting: never hand this waiter a slot
            raise Stopped

    def release(self, latency_s: float | None = None, *, throttled: bool = False) -> None:
        if latency_s is not None:
            self._observe(latency_s)
        if throttled:
            self.target = max(self._floor, self.target // 2)
        elif latency_s is not None:
            self.target = min(self.upper, self.target + 1)
        self.release_slot()

    def release_slot(self) -> None:
        self.in_flight -= 1
        while self._waiters and self.in_flight < self.target:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)

    def _take(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _observe(self, latency_s: float) -> None:
        if self._latency_ewma is None:
            self._latency_ewma = latency_s
        else:
            self._latency_ewma = 0.8 * self._latency_ewma + 0.2 * latency_s
