"""Pacing EQC traffic: a strict sliding-window limiter and an adaptive cap on requests in flight."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from eqc_enrich._durations import RateLimit

__all__ = [
    "Clock",
    "ConcurrencyGate",
    "MemoryLedger",
    "Rule",
    "SendLedger",
    "SendTiming",
    "SlidingWindowLimiter",
    "Stopped",
    "default_margin",
    "next_send",
    "sleep_unless",
]

Clock = Callable[[], float]


Rule = Callable[[list[float], float, float], float]
"""`rule(recent_send_times_ascending, paused_until, now) -> send_time`: the pacing rule as a pure function."""


def next_send(sends: Sequence[float], paused_until: float, now: float, *, requests: int, span_s: float) -> float:
    """When the next send may go: never more than `requests` in any `span_s`, and evenly paced once the
    window is full (one spacing after the slot before), since bunched arrivals are what jitter past the
    server's window.

    `sends` are the slots as planned, not the (late) wake-ups: the pace advances from its own schedule, so
    a sleep's overshoot is absorbed instead of accumulating over thousands of sends.

    Pure, so that one rule serves a process alone (an in-memory ledger) and many processes sharing one
    quota (a ledger in the index database, where `sends` are every process's reserved slots).
    """
    earliest = max(now, paused_until)
    if len(sends) >= requests:
        earliest = max(earliest, sends[-requests] + span_s, sends[-1] + span_s / requests)
    return earliest


class SendLedger(Protocol):
    """Where send slots are recorded and reserved: this process's memory, or a table every process shares."""

    async def reserve(self, rule: Rule, *, recent: int, keep_s: float) -> float:
        """Reserve the next slot the rule allows; returns the seconds from now until it."""
        ...

    def pause_for(self, seconds: float) -> None:
        """No slot for anyone on this quota in the next `seconds` (a server's Retry-After)."""
        ...


class MemoryLedger:
    """The slots of one process, in memory: the default, and the pacing a test drives with its own clock."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._sends: deque[float] = deque(maxlen=10_000)
        self._paused_until = 0.0

    async def reserve(self, rule: Rule, *, recent: int, keep_s: float) -> float:
        now = self._clock()
        window = list(self._sends)[-recent:] if recent else []
        slot = rule(window, self._paused_until, now)
        self._sends.append(slot)
        return slot - now

    def pause_for(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)


class SendTiming:
    """How late the last sends left against their slots: a wake-up after the slot, the event loop's other
    work, the HTTP client's queue. Only the spread matters (a lateness every send shares moves every arrival
    alike); kept for the last `keep` sends."""

    MIN_SENDS = 20  # fewer say nothing yet: the margin stays at its floor

    def __init__(self, keep: int = 200) -> None:
        self._late: deque[float] = deque(maxlen=keep)
        self._spread: float | None = 0.0

    def add(self, late_s: float) -> None:
        self._late.append(max(0.0, late_s))
        self._spread = None

    @property
    def sends(self) -> int:
        return len(self._late)

    def spread(self) -> float:
        """How much later a late send leaves than a prompt one: the 98th percentile of lateness less the 10th.

        A send R slots earlier that left that much later than its successor brings their arrivals that much
        closer than their slots are: the margin must cover it, for all but a few sends in a hundred."""
        if self._spread is None:
            if len(self._late) < self.MIN_SENDS:
                self._spread = 0.0
            else:
                ordered = sorted(self._late)
                last = len(ordered) - 1
                self._spread = ordered[round(0.98 * last)] - ordered[round(0.10 * last)]
        return self._spread


class SlidingWindowLimiter:
    """Never more than `requests` sends in any `window + margin` span; every attempt counts, retries too.

    The server counts arrivals, not sends, so a send that leaves later than its slot brings its arrival
    closer to the ones after it. The margin covers that: a floor, plus the spread of how late this process's
    own sends leave (`SendTiming`, fed by `sent`), plus what 429s despite both add (`widen`, undone slowly by
    `settle`). Waiters are served in arrival order (the lock is FIFO), so a retry cannot be starved by fresh
    requests. The slots themselves live in a `SendLedger`: this process's memory by default, or the index
    database when several processes share one EQC account.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        margin_s: float | None = None,
        clock: Clock = time.monotonic,
        ledger: SendLedger | None = None,
        lookahead: int = 1,
    ) -> None:
        """`margin_s` is the margin's floor (default `default_margin`). `lookahead`: how many slots this process
        may hold reserved before using them. One keeps a stop from wasting more than one slot; a ledger in a
        database wants a few, so that the round trip of the next reservation overlaps the wait for the
        current slot instead of adding to it."""
        self.limit = limit
        self.floor_s = default_margin(limit) if margin_s is None else margin_s
        self.timing = SendTiming()
        self._penalty_s = 0.0  # what 429s added
        self.widened = 0
        self._clock = clock
        self._ledger: SendLedger = ledger or MemoryLedger(clock)
        self._paused_until = 0.0  # this process's view of a pause, to recheck a slot reserved before it
        self._lock = asyncio.Lock()
        self._ahead = asyncio.Semaphore(max(1, lookahead))
        self.wait_s = 0.0  # total time callers spent waiting here, for the timing breakdown

    @property
    def margin_s(self) -> float:
        """The floor, the spread of this process's send timing, and what 429s added; never over a quarter of
        the window (a machine that late cannot keep any pace)."""
        wanted = self.floor_s + self.timing.spread() + self._penalty_s
        return min(wanted, max(self.floor_s, 0.25 * self.limit.window_s))

    @property
    def span_s(self) -> float:
        return self.limit.window_s + self.margin_s

    @property
    def effective_rate(self) -> float:
        """Requests per second this limiter admits when saturated."""
        return self.limit.requests / self.span_s

    @property
    def widen_step_s(self) -> float:
        """What one 429 adds to the margin: the floor, at least 1% of the window."""
        return max(self.floor_s, 0.01 * self.limit.window_s)

    def widen(self) -> None:
        """A 429 despite pacing: arrivals jitter more than this process's own timing shows (the network, the
        server), so widen the margin by a step.

        `settle` narrows it again by a two-hundredth of a step per accepted request, so the margin finds the
        width where about one request in two hundred meets a 429: each costs a slot, a wider margin costs
        every slot.
        """
        self._penalty_s = min(0.25 * self.limit.window_s, self._penalty_s + self.widen_step_s)
        self.widened += 1

    def settle(self) -> None:
        self._penalty_s = max(0.0, self._penalty_s - self.widen_step_s / 200)

    def since(self, slot: float) -> float:
        """Seconds from `slot` (what `acquire` returned) to now: how late a send made now leaves its slot."""
        return self._clock() - slot

    def sent(self, late_s: float) -> None:
        """A request left `late_s` after its slot (`since` at the call, plus the HTTP client's own queue)."""
        self.timing.add(late_s)

    def pause_for(self, seconds: float) -> None:
        """Hold every send for `seconds` (a server's Retry-After applies to the whole account)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._ledger.pause_for(seconds)

    def _rule(self, sends: list[float], paused_until: float, now: float) -> float:
        return next_send(sends, paused_until, now, requests=self.limit.requests, span_s=self.span_s)

    async def acquire(self, stop: asyncio.Future[None] | None = None) -> float:
        """Reserve a send slot and wait for it; the caller must send right away. Returns the slot's time on
        this limiter's clock, for `sent`.

        Raises `Stopped` when `stop` completes first (the reserved slot then goes unused). Runs in the
        caller's own task, so no scheduling hop separates the slot from the send.
        """
        started = self._clock()
        try:
            # At most `lookahead` slots held ahead (a stop wastes no more), reserved in arrival order (the lock
            # is FIFO), so the slots of other processes interleave with ours.
            async with self._ahead:
                while True:
                    async with self._lock:
                        if stop is not None and stop.done():
                            raise Stopped  # waited in line past a stop: take no slot
                        delay = await self._ledger.reserve(
                            self._rule, recent=self.limit.requests, keep_s=10 * self.span_s
                        )
                        slot = self._clock() + delay
                    if delay > 0:
                        await sleep_unless(stop, delay)
                    if self._clock() >= self._paused_until:
                        return slot  # else a 429's Retry-After came while this slot was waited for: take a later one
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
    """The margin's floor: 0.5% of the window, at least 0.5 ms and at most 1 s. What a process's send timing
    and the server's jitter need on top is measured (`SlidingWindowLimiter.margin_s`), not guessed here."""
    return min(1.0, max(0.0005, 0.005 * limit.window_s))


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
