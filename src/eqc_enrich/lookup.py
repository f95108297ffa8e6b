"""The EQC stage: ask EQC each name the index could not answer, once, as fast as the quota allows.

Requests go out concurrently, gated by an adaptive in-flight cap and paced by a strict sliding-window
limiter that counts every attempt. Each finished name is handed to `on_outcome` at once, so the caller
can commit it before the next one lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from eqc_enrich._durations import RateLimit
from eqc_enrich._pacing import ConcurrencyGate, SlidingWindowLimiter, Stopped, sleep_unless
from eqc_enrich._stats import EqcStats
from eqc_enrich._tokens import TokenKeeper
from eqc_enrich.eqc import (
    FIND_DEPART,
    FIND_LABELS,
    SEARCH,
    BadResponseError,
    BusinessInfo,
    EqcClient,
    EqcError,
    LabelSet,
    NotFoundError,
    RateLimitedError,
    SearchHit,
    SearchResult,
    TokenExpiredError,
    TransientError,
)

_T = TypeVar("_T")
Status = Literal["found", "not_found", "failed", "skipped"]
_MAX_REPLAYS_PER_CALL = 3


@dataclass(frozen=True, slots=True)
class LookupSettings:
    rate_limit: RateLimit
    retries: int = 3
    concurrency: int | None = None  # a cap; None lets the gate adapt to latency
    details: bool = False
    margin_s: float | None = None
    timeout_s: float = 30.0
    grace_s: float = 5.0  # how long in-flight requests may finish after a stop


@dataclass(frozen=True, slots=True)
class LookupOutcome:
    """What EQC said about one name, or why it could not say."""

    name: str
    status: Status
    hit: SearchHit | None = None
    search: SearchResult | None = None
    business: BusinessInfo | None = None
    labels: LabelSet | None = None
    error: str | None = None


@dataclass
class StageResult:
    outcomes: dict[str, LookupOutcome] = field(default_factory=dict)
    stopped: Literal["", "interrupted", "token"] = ""
    token_message: str | None = None


class _TokenUnavailable(Exception):
    """Internal: the token expired and cannot be renewed."""


class _Exhausted(Exception):
    """Internal: a call failed on every allowed attempt."""


class EqcLookup:
    """Runs the names through EQC; one instance per run."""

    def __init__(
        self,
        client: EqcClient,
        settings: LookupSettings,
        *,
        stats: EqcStats,
        tokens: TokenKeeper,
        on_outcome: Callable[[LookupOutcome], None],
        events: Callable[[str, dict[str, Any]], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._stats = stats
        self._tokens = tokens
        self._on_outcome = on_outcome
        self._events = events or (lambda kind, fields: None)
        self._rng = rng or random.Random()
        self.limiter = SlidingWindowLimiter(settings.rate_limit, margin_s=settings.margin_s)
        self.gate = ConcurrencyGate(
            self.limiter.effective_rate, burst=settings.rate_limit.requests, ceiling=settings.concurrency
        )
        self._stop: asyncio.Future[None] | None = None
        self._stop_requested = False
        self._result = StageResult()

    def stop(self) -> None:
        """Start no new request; those in flight get `grace_s` to finish."""
        self._stop_requested = True
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    async def run(self, names: Sequence[str]) -> StageResult:
        stats = self._stats
        stats.started_at = time.monotonic()
        self._stop = asyncio.get_running_loop().create_future()
        if self._stop_requested:
            self._stop.set_result(None)
        queue: asyncio.Queue[str] = asyncio.Queue()
        for name in names:
            queue.put_nowait(name)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(min(len(names), self._worker_count()))]
        try:
            await self._wait_for(workers, self._stop)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._skip_rest(names)
            stats.finished_at = time.monotonic()
            stats.limiter_wait_s = self.limiter.wait_s
        return self._result

    async def _wait_for(self, workers: list[asyncio.Task[None]], stop: asyncio.Future[None]) -> None:
        """Until every worker is done, or a stop plus the grace for requests in flight."""
        pending: set[asyncio.Future[Any]] = {*workers, stop}
        while any(not task.done() for task in workers) and not stop.done():
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if stop.done():
            running = [task for task in workers if not task.done()]
            if running:
                await asyncio.wait(running, timeout=self._settings.grace_s)

    def _worker_count(self) -> int:
        """Enough workers that the gate, not the pool, limits requests in flight (rate x timeout)."""
        wanted = math.ceil(self.limiter.effective_rate * self._settings.timeout_s) + self._settings.rate_limit.requests
        if self._settings.concurrency is not None:
            wanted = min(wanted, self._settings.concurrency * 2)
        return max(1, min(256, wanted))

    async def _worker(self, queue: asyncio.Queue[str]) -> None:
        while not self._stop_requested:
            try:
                name = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                outcome = await self._lookup(name)
            except Stopped:
                return
            except _TokenUnavailable:
                self._result.stopped = "token"
                self._result.token_message = self._tokens.unavailable_reason
                self.stop()
                return
            self._finish(outcome)

    async def _lookup(self, name: str) -> LookupOutcome:
        try:
            result = await self._call(SEARCH, lambda: self._client.search(name))
        except _Exhausted as exc:
            return LookupOutcome(name, "failed", error=str(exc))
        if result is None or result.best is None:
            return LookupOutcome(name, "not_found", search=result)
        hit = result.best
        if not self._settings.details:
            return LookupOutcome(name, "found", hit=hit, search=result)
        business, labels = await self._details(hit.company_id)
        return LookupOutcome(name, "found", hit=hit, search=result, business=business, labels=labels)

    async def _details(self, company_id: str) -> tuple[BusinessInfo | None, LabelSet | None]:
        """findDepart and findLabels: wanted for storage, never needed for the id, so failures are tolerated."""
        business: BusinessInfo | None = None
        labels: LabelSet | None = None
        # A stop (or a token gone for good) here must not throw away the search answer already in hand: keep
        # what we have; the next name's search meets the same condition and stops the stage.
        with contextlib.suppress(_Exhausted, Stopped, _TokenUnavailable):
            business = await self._call(FIND_DEPART, lambda: self._client.find_depart(company_id))
        with contextlib.suppress(_Exhausted, Stopped, _TokenUnavailable):
            labels = await self._call(FIND_LABELS, lambda: self._client.find_labels(company_id))
        return business, labels

    async def _call(self, endpoint: str, call: Callable[[], Awaitable[_T]]) -> _T | None:
        """One logical request with retries; None when EQC answers 404 (an answer, not a failure)."""
        failures = 0
        replays = 0
        while True:
            generation = self._tokens.generation
            try:
                return await self._attempt(call)
            except NotFoundError:
                return None
            except TokenExpiredError:
                replays += 1
                refreshes_before = self._tokens.refreshes
                if replays > _MAX_REPLAYS_PER_CALL or not await self._tokens.refresh(generation):
                    self._events("token_unavailable", {"endpoint": endpoint})
                    raise _TokenUnavailable from None
                self._stats.token_refreshes = self._tokens.refreshes
                if self._tokens.refreshes > refreshes_before:
                    self._events("token_refresh", {"refreshes": self._tokens.refreshes})
                continue
            except (RateLimitedError, TransientError, BadResponseError) as exc:
                failures += 1
                if failures > self._settings.retries:
                    raise _Exhausted(f"{endpoint}: {exc} (after {failures} attempts)") from None
                self._stats.retries += 1
                delay = self._backoff(failures, exc)
                self._events("retry", {"endpoint": endpoint, "attempt": failures, "error": type(exc).__name__,
                                       "delay_s": round(delay, 4)})  # fmt: skip
                await self._sleep_or_stop(delay)
            except EqcError as exc:  # 403 and the like: the same request will not fare better
                raise _Exhausted(f"{endpoint}: {exc}") from None

    async def _attempt(self, call: Callable[[], Awaitable[_T]]) -> _T:
        await self.gate.acquire(self._stop)
        self._sync_limiter_wait()
        latency: float | None = None
        throttled = False
        sent: float | None = None
        try:
            await self.limiter.acquire(self._stop)
            sent = time.monotonic()
            self._stats.in_flight += 1
            result = await call()
            latency = time.monotonic() - sent
            self.limiter.settle()
            return result
        except RateLimitedError as exc:
            throttled = True
            self._stats.rate_limited += 1
            self.limiter.widen()
            if exc.retry_after_s:
                self.limiter.pause_until(time.monotonic() + exc.retry_after_s)
            raise
        finally:
            if sent is not None:
                self._stats.in_flight -= 1
            self.gate.release(latency, throttled=throttled)
            self._sync_limiter_wait()

    def _backoff(self, failures: int, exc: EqcError) -> float:
        """Full jitter on an exponential ceiling measured in quota slots, so it scales with the limit."""
        slot = self._settings.rate_limit.window_s / self._settings.rate_limit.requests
        ceiling = min(self._settings.rate_limit.window_s, slot * 2 ** (failures - 1))
        delay = self._rng.uniform(0, ceiling)
        if isinstance(exc, RateLimitedError) and exc.retry_after_s:
            delay = max(delay, exc.retry_after_s)
        return delay

    async def _sleep_or_stop(self, seconds: float) -> None:
        await sleep_unless(self._stop, seconds)

    def _sync_limiter_wait(self) -> None:
        self._stats.limiter_wait_s = self.limiter.wait_s

    def _finish(self, outcome: LookupOutcome) -> None:
        self._result.outcomes[outcome.name] = outcome
        if outcome.status == "found":
            self._stats.found += 1
        elif outcome.status == "not_found":
            self._stats.not_found += 1
        else:
            self._stats.failed += 1
        self._on_outcome(outcome)

    def _skip_rest(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self._result.outcomes:
                self._result.outcomes[name] = LookupOutcome(name, "skipped")
                self._stats.skipped += 1
        if self._stop_requested and not self._result.stopped:
            self._result.stopped = "interrupted"
