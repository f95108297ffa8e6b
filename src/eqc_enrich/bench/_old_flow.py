"""The OLD enrichment flow, rebuilt as the story describes it: the baseline every speed-up is measured against.

One name after another. Per name a single-row index query; on a hit the name is done. On a miss: search,
then findDepart, then findLabels, one after another (3 calls; a name EQC does not know stops after the
search, there is no company id to ask details of). Every attempt first passes a client-side sliding window
of send timestamps (the old client's limiter: retries count too). Transient failures (429, 5xx, timeouts)
are retried with exponential backoff; a 401 ends EQC for the rest of the run; the answer is written back to
the index before the next name starts (the same rows ours writes). Nothing overlaps, so the run costs the
sum of every call's latency.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from eqc_enrich._durations import RateLimit
from eqc_enrich.config import EqcOptions, resolve_access
from eqc_enrich.eqc import (
    BusinessInfo,
    CallRecord,
    EqcClient,
    EqcError,
    LabelSet,
    NotFoundError,
    RateLimitedError,
    SearchHit,
    TokenExpiredError,
    TransientError,
)
from eqc_enrich.eqc_stage import LookupOutcome, batch_for
from eqc_enrich.keys import LookupType, normalize_name
from eqc_enrich.settings import load_settings
from eqc_enrich.store import IndexStore, WriteBatch

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class OldFlowSettings:
    rate_limit: RateLimit
    retries: int = 3
    backoff_s: float = 1.0  # first retry waits this long, each further one twice as long


@dataclass(frozen=True, slots=True)
class NameDone:
    """One name finished: when (seconds since the flow started) and how (index, found, not_found, ...)."""

    name: str
    at_s: float
    how: str


@dataclass
class OldFlowResult:
    names: list[NameDone] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    limiter_wait_s: float = 0.0
    backoff_s: float = 0.0
    wall_s: float = 0.0
    gave_up: str | None = None  # why EQC was abandoned part-way (the token), if it was


class TimestampLimiter:
    """The old client's limiter: a deque of send times; a send waits until the oldest leaves the window."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.wait_s = 0.0
        self._sends: deque[float] = deque()

    async def acquire(self) -> None:
        started = time.monotonic()
        while True:
            now = time.monotonic()
            while self._sends and self._sends[0] <= now - self.limit.window_s:
                self._sends.popleft()
            if len(self._sends) < self.limit.requests:
                break
            await asyncio.sleep(self._sends[0] + self.limit.window_s - now)
        self._sends.append(time.monotonic())
        self.wait_s += time.monotonic() - started


class _GaveUp(Exception):
    """The token was refused: the old client stopped asking EQC for the rest of the run."""


class _Failed(Exception):
    """A call failed on every attempt, or with an error a retry cannot fix."""


ProgressHook = Callable[[NameDone, int], None]


class OldFlow:
    """Runs names through the old flow; one instance per run."""

    def __init__(
        self, client: EqcClient, store: IndexStore, settings: OldFlowSettings, *, on_name: ProgressHook | None = None
    ) -> None:
        self._client = client
        self._store = store
        self._settings = settings
        self._on_name = on_name
        self._limiter = TimestampLimiter(settings.rate_limit)
        self._started = 0.0
        self.result = OldFlowResult()

    async def run(self, raw_names: Sequence[str]) -> OldFlowResult:
        """Each distinct normalized name once, in the order the rows first show it."""
        self._started = time.monotonic()
        names = [name for name in dict.fromkeys(normalize_name(raw) for raw in raw_names) if name]
        for name in names:
            how = "skipped" if self.result.gave_up else await self._one(name)
            self._done(name, how, len(names))
        self.result.wall_s = time.monotonic() - self._started
        self.result.limiter_wait_s = self._limiter.wait_s
        return self.result

    def _done(self, name: str, how: str, total: int) -> None:
        done = NameDone(name, time.monotonic() - self._started, how)
        self.result.names.append(done)
        if self._on_name is not None:
            self._on_name(done, total)

    async def _one(self, name: str) -> str:
        if self._cached(name):
            return "index"
        try:
            return await self._ask(name)
        except _GaveUp as exc:
            self.result.gave_up = str(exc)
            return "skipped"
        except _Failed:
            return "failed"

    def _cached(self, name: str) -> bool:
        """The old per-name index query: one SELECT by lookup_key (blocking, as the old code was)."""
        return bool(self._store.lookup({LookupType.CUSTOMER_NAME: [name]}))

    async def _ask(self, name: str) -> str:
        result = await self._call(lambda: self._client.search(name))
        hit = result.best if result is not None else None
        if hit is None:
            return "not_found"
        business = await self._detail(lambda: self._client.find_depart(hit.company_id))
        labels = await self._detail(lambda: self._client.find_labels(hit.company_id))
        self._store.write(_write_back(name, hit, business, labels))
        return "found"

    async def _detail(self, call: Callable[[], Awaitable[_T]]) -> _T | None:
        """A detail that fails does not undo the company id the search already gave."""
        try:
            return await self._call(call)
        except _Failed:
            return None

    async def _call(self, call: Callable[[], Awaitable[_T]]) -> _T | None:
        """One request with the old client's retries; None for a 404 (an answer, not a failure)."""
        failures = 0
        while True:
            await self._limiter.acquire()
            try:
                return await call()
            except NotFoundError:
                return None
            except TokenExpiredError as exc:
                raise _GaveUp(str(exc)) from exc
            except (RateLimitedError, TransientError) as exc:
                failures += 1
                if failures > self._settings.retries:
                    raise _Failed(str(exc)) from exc
                await self._back_off(failures, exc)
            except EqcError as exc:  # 403, broken bodies: the old client reported an error, no retry
                raise _Failed(str(exc)) from exc

    async def _back_off(self, failures: int, exc: EqcError) -> None:
        delay = self._settings.backoff_s * 2 ** (failures - 1)
        if isinstance(exc, RateLimitedError) and exc.retry_after_s:
            delay = max(delay, exc.retry_after_s)
        started = time.monotonic()
        await asyncio.sleep(delay)
        self.result.backoff_s += time.monotonic() - started


def _write_back(name: str, hit: SearchHit, business: BusinessInfo | None, labels: LabelSet | None) -> WriteBatch:
    """The old flow stored what ours stores per answer (the name, former names at 0.9 x, the raw answers)."""
    return batch_for(LookupOutcome(name, "found", hit=hit, business=business, labels=labels))


async def run_old_flow(
    raw_names: Sequence[str],
    store: IndexStore,
    *,
    url: str,
    token: str,
    timeout_s: float,
    settings: OldFlowSettings,
    on_name: ProgressHook | None = None,
    route: EqcOptions | None = None,
) -> OldFlowResult:
    """The old flow against `url`, every attempt recorded through the client's observer; it goes to EQC the
    way a run would (`route`: proxy, PAC file, CA bundle; else the `WDH_*` settings)."""
    records: list[CallRecord] = []
    given = route or EqcOptions()
    options = EqcOptions(
        url=url, token=token, timeout_s=timeout_s, proxy=given.proxy, pac_url=given.pac_url, ca_bundle=given.ca_bundle
    )
    async with resolve_access(options, load_settings()).client(observer=records.append) as client:
        result = await OldFlow(client, store, settings, on_name=on_name).run(raw_names)
    result.calls = records
    return result
