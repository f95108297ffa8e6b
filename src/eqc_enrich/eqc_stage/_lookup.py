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
from typing import Any, Literal, Protocol, TypeVar

from eqc_enrich._durations import RateLimit
from eqc_enrich._errors import IndexStoreError
from eqc_enrich._policies import OutagePolicy, RetryPolicy
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
    UnreachableError,
)
from eqc_enrich.eqc_stage._names import NameSource, Settled
from eqc_enrich.eqc_stage._outage import EqcDown, EqcOutage
from eqc_enrich.eqc_stage._pacing import ConcurrencyGate, SlidingWindowLimiter, Stopped, sleep_unless
from eqc_enrich.eqc_stage._shared import DatabaseClaims
from eqc_enrich.eqc_stage._stats import EqcStats
from eqc_enrich.eqc_stage._tokens import TokenKeeper

__all__ = [
    "Ask",
    "EqcLookup",
    "LookupOutcome",
    "LookupSettings",
    "SendCondition",
    "StageResult",
    "Status",
    "StopReason",
]

_T = TypeVar("_T")
Status = Literal["found", "not_found", "failed", "skipped", "elsewhere", "details"]
"""`elsewhere`: another process answered the name while this one waited for it (its claim); not asked here.
`details`: a company's findDepart and findLabels answers (the name is its company id; see `Ask`)."""
Ask = Literal["search", "details"]
"""What a stage asks of each item: `search` a name (and, with `details`, the company it found), or `details`
of a company id it already knows (findDepart and findLabels; the standing worker fills `base_info` so)."""
StopReason = Literal["", "interrupted", "token", "eqc_down", "index"]
_NOT_SENT = object()


class SendCondition(Protocol):
    """Something that must hold for a request to go out (the index writable, ...): waited for before a quota
    slot is taken, and checked again right before the send."""

    def ready(self) -> bool: ...

    async def wait(self, stop: asyncio.Future[None] | None) -> None: ...


@dataclass(frozen=True, slots=True)
class LookupSettings:
    rate_limit: RateLimit
    retries: int = 3
    concurrency: int | None = None  # a cap; None lets the gate adapt to latency
    details: bool = False
    margin_s: float | None = None
    timeout_s: float = 30.0
    grace_s: float = 5.0  # how long in-flight requests may finish after a stop
    outage: OutagePolicy = field(default_factory=OutagePolicy)

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(retries=self.retries)


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
    settled_id: str | None = None  # for `elsewhere`: the id another process found (None: EQC does not know it)


@dataclass
class StageResult:
    outcomes: dict[str, LookupOutcome] = field(default_factory=dict)
    stopped: StopReason = ""
    message: str | None = None  # why the stage stopped early, one line

    @property
    def token_message(self) -> str | None:
        return self.message if self.stopped == "token" else None


class _TokenUnavailable(Exception):
    """Internal: the token expired and cannot be renewed."""


class _Exhausted(Exception):
    """Internal: a call failed on every allowed attempt."""


class _Unauthorized(Exception):
    """Internal: EQC refused the token that request carried (generation noted at send time)."""

    def __init__(self, generation: int, error: TokenExpiredError) -> None:
        super().__init__(str(error))
        self.generation = generation
        self.error = error


_SKIP_REASONS: dict[StopReason, str] = {
    "": "not asked",
    "interrupted": "not asked: the run was interrupted",
    "token": "not asked: no usable EQC token",
    "eqc_down": "not asked: EQC unavailable",
    "index": "not asked: the index could not be written",
}


class EqcLookup:
    """Runs the names through EQC; one instance per run.

    The limiter and the gate are passed in where a caller shares them (a worker beside runs, a test with
    its own clock); `before_send` are waits every request passes before it takes a quota slot.
    """

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
        limiter: SlidingWindowLimiter | None = None,
        gate: ConcurrencyGate | None = None,
        before_send: Sequence[SendCondition] = (),
        claims: DatabaseClaims | None = None,
        on_store_error: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._retry = settings.retry
        self._stats = stats
        self._tokens = tokens
        self._on_outcome = on_outcome
        self._events = events or (lambda kind, fields: None)
        self._rng = rng or random.Random()
        self.limiter = limiter or SlidingWindowLimiter(settings.rate_limit, margin_s=settings.margin_s)
        self.gate = gate or ConcurrencyGate(
            self.limiter.effective_rate, burst=settings.rate_limit.requests, ceiling=settings.concurrency
        )
        self.outage = EqcOutage(settings.outage, settings.rate_limit, events=self._events)
        self._before_send = tuple(before_send)
        self._claims = claims
        self._store_trouble = on_store_error or (lambda error: None)
        self.names = NameSource(())
        self._ask: Ask = "search"
        self._stop: asyncio.Future[None] | None = None
        self._stop_requested = False
        self._result = StageResult()

    def stop(self, reason: StopReason = "interrupted", message: str | None = None) -> None:
        """Start no new request; those in flight get `grace_s` to finish. The first reason given sticks."""
        if not self._result.stopped and reason:
            self._result.stopped = reason
            self._result.message = message
            self._events("stopping", {"reason": reason})
        self._stop_requested = True
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    async def run(self, names: Sequence[str], *, ask: Ask = "search") -> StageResult:
        """Ask EQC about every item of `names` (names, or company ids with `ask="details"`)."""
        self._ask = ask
        stats = self._stats
        stats.started_at = time.monotonic()
        self._stop = asyncio.get_running_loop().create_future()
        if self._stop_requested:
            self._stop.set_result(None)
        limit = self._settings.rate_limit
        slot = limit.window_s / limit.requests
        self.names = NameSource(
            names,
            self._claims,
            chunk=max(limit.requests, self.gate.target),
            # another process answers a name it holds within a latency or so; look again at a few slots' pace
            recheck_s=min(30.0, max(5 * slot, 0.05)),
        )
        workers = [asyncio.create_task(self._worker()) for _ in range(min(len(names), self._worker_count()))]
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

    async def _worker(self) -> None:
        while not self._stop_requested:
            try:
                item = await self.names.next(self._stop)
            except Stopped:
                return
            except IndexStoreError as exc:  # claims live in the index: wait until it takes writes again
                self._store_trouble(str(exc))
                try:
                    for condition in self._before_send:
                        await condition.wait(self._stop)
                except Stopped:
                    return
                continue
            if item is None:
                return
            if isinstance(item, Settled):
                self._finish(LookupOutcome(item.name, "elsewhere", settled_id=item.company_id))
                continue
            name = item
            try:
                outcome = await (self._lookup(name) if self._ask == "search" else self._fetch_details(name))
            except Stopped:
                return
            except _TokenUnavailable:
                self.stop("token", self._tokens.unavailable_reason)
                return
            except EqcDown as exc:
                self.stop("eqc_down", str(exc))
                return
            except Exception as exc:  # a bug or a library surprise: this name fails, loudly, the run goes on
                outcome = LookupOutcome(name, "failed", error=f"unexpected {type(exc).__name__}: {exc}")
                self._events("name_failed", {"name": name, "error": outcome.error})
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

    async def _fetch_details(self, company_id: str) -> LookupOutcome:
        """findDepart and findLabels of a known company: here they are the point, so a call that fails on every
        attempt fails the item (to be tried again later), and a stop stops it like a search."""
        try:
            business = await self._call(FIND_DEPART, lambda: self._client.find_depart(company_id))
            labels = await self._call(FIND_LABELS, lambda: self._client.find_labels(company_id))
        except _Exhausted as exc:
            return LookupOutcome(company_id, "failed", error=str(exc))
        return LookupOutcome(company_id, "details", business=business, labels=labels)  # both None: EQC has neither

    async def _details(self, company_id: str) -> tuple[BusinessInfo | None, LabelSet | None]:
        """findDepart and findLabels: wanted for storage, never needed for the id, so failures are tolerated."""
        business: BusinessInfo | None = None
        labels: LabelSet | None = None
        # A stop (or a token or EQC gone for good) here must not throw away the search answer already in hand:
        # keep what we have; the next name's search meets the same condition and stops the stage.
        with contextlib.suppress(_Exhausted, Stopped, _TokenUnavailable, EqcDown):
            business = await self._call(FIND_DEPART, lambda: self._client.find_depart(company_id))
        with contextlib.suppress(_Exhausted, Stopped, _TokenUnavailable, EqcDown):
            labels = await self._call(FIND_LABELS, lambda: self._client.find_labels(company_id))
        return business, labels

    async def _call(self, endpoint: str, call: Callable[[], Awaitable[_T]]) -> _T | None:
        """One logical request with retries; None when EQC answers 404 (an answer, not a failure)."""
        failures = 0
        while True:
            try:
                return await self._attempt(call)
            except NotFoundError:
                return None
            except _Unauthorized as exc:
                if not await self._tokens.refresh(exc.generation, exc.error):
                    self._events("token_unavailable", {"endpoint": endpoint})
                    raise _TokenUnavailable from exc
                self._stats.token_refreshes = self._tokens.refreshes
            except UnreachableError as exc:
                if self.outage.down:
                    continue  # not this name's fault: it waits for EQC, unfailed
                failures += 1
                if failures > self._retry.retries:
                    if self.outage.in_a_row >= failures:
                        self.outage.trip()  # nothing answered since this name's first try: EQC is away
                        continue
                    raise _Exhausted(f"{exc} (after {failures} attempts)") from exc
                await self._back_off(endpoint, failures, exc)
            except (RateLimitedError, TransientError, BadResponseError) as exc:
                failures += 1
                if failures > self._retry.retries:
                    raise _Exhausted(f"{exc} (after {failures} attempts)") from exc
                await self._back_off(endpoint, failures, exc)
            except EqcError as exc:  # 403, a request that cannot be sent: the same request will not fare better
                raise _Exhausted(str(exc)) from exc

    async def _back_off(self, endpoint: str, failures: int, exc: EqcError) -> None:
        self._stats.retries += 1
        retry_after = exc.retry_after_s if isinstance(exc, RateLimitedError) else None
        delay = self._retry.delay(failures, self._settings.rate_limit, self._rng, retry_after)
        self._events("retry", {"endpoint": endpoint, "attempt": failures, "error": type(exc).__name__,
                               "delay_s": round(delay, 4)})  # fmt: skip
        await sleep_unless(self._stop, delay)

    async def _attempt(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Wait until sending is allowed, take a slot, and check again right before sending: the waits for
        the gate and the limiter can be long, and EQC, the index or the token may have gone meanwhile."""
        while True:
            for condition in self._before_send:
                await condition.wait(self._stop)
            await self._tokens.ready()
            probe = await self.outage.admit(self._stop)
            try:
                sent = await self._send(call, probe)
            finally:
                if probe:
                    self.outage.probe_done()
            if sent is not _NOT_SENT:
                return sent  # type: ignore[return-value]

    def _clear_to_send(self, probe: bool) -> bool:
        if self.outage.down and not probe:
            return False
        return self._tokens.settled and all(condition.ready() for condition in self._before_send)

    async def _send(self, call: Callable[[], Awaitable[_T]], probe: bool) -> _T | object:
        await self.gate.acquire(self._stop)
        self._sync_limiter_wait()
        latency: float | None = None
        throttled = False
        sent: float | None = None
        late = 0.0
        try:
            if not self._clear_to_send(probe):
                return _NOT_SENT  # it changed while this request queued for the gate: no quota slot taken
            try:
                slot = await self.limiter.acquire(self._stop)
            except IndexStoreError as exc:  # the shared quota lives in the index: it is away, so hold off
                self._store_trouble(str(exc))
                return _NOT_SENT
            if not self._clear_to_send(probe):
                return _NOT_SENT  # the slot goes unused: cheaper than a request that cannot succeed
            generation = self._tokens.generation  # the token this request carries, read as it goes out
            late = self.limiter.since(slot)
            sent = time.monotonic()
            epoch = self.outage.epoch
            self._stats.in_flight += 1
            try:
                result = await call()
            except UnreachableError as exc:
                self.outage.unanswered(exc, sent_in=epoch)
                raise
            except EqcError:
                self.outage.answered(sent_in=epoch)
                raise
            self.outage.answered(sent_in=epoch)
            self._tokens.confirm(generation)
            latency = time.monotonic() - sent
            self.limiter.settle()
            return result
        except TokenExpiredError as exc:
            raise _Unauthorized(generation, exc) from exc
        except RateLimitedError as exc:
            throttled = True
            self._stats.rate_limited += 1
            self.limiter.widen()
            hold = self._retry.hold_s(exc.retry_after_s, self._settings.rate_limit)
            if hold is not None:
                self.limiter.pause_for(hold)
            raise
        finally:
            if sent is not None:
                self._stats.in_flight -= 1
                self.limiter.sent(late + self._queued_s())
            self.gate.release(latency, throttled=throttled)
            self._sync_limiter_wait()

    def _queued_s(self) -> float:
        """How long this task's last request waited inside the HTTP client before it was written."""
        record = self._client.last_call()
        return record.queued_s if record is not None else 0.0

    def _sync_limiter_wait(self) -> None:
        self._stats.limiter_wait_s = self.limiter.wait_s

    def _finish(self, outcome: LookupOutcome) -> None:
        self._result.outcomes[outcome.name] = outcome
        self.names.done(outcome.name)
        if outcome.status in ("found", "details"):
            self._stats.found += 1
        elif outcome.status == "not_found":
            self._stats.not_found += 1
        elif outcome.status == "elsewhere":
            self._stats.elsewhere += 1
        else:
            self._stats.failed += 1
        self._on_outcome(outcome)

    def _skip_rest(self, names: Sequence[str]) -> None:
        if self._stop_requested and not self._result.stopped:
            self._result.stopped = "interrupted"
        reason = _SKIP_REASONS[self._result.stopped]
        for name in names:
            if name not in self._result.outcomes:
                self._result.outcomes[name] = LookupOutcome(name, "skipped", error=reason)
                self._stats.skipped += 1
