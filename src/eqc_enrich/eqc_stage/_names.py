"""The names an EQC stage works through, in order; with claims, each handed out only once this process holds it.

Without claims (`claims=None`) this is a plain queue. With them, names are claimed a chunk at a time, and the
index is read for the chunk in the same transaction: a name another run answered since this one began is
settled from the index, never asked; a name another live process holds is put aside and checked again
later, when that process has answered it (then it comes from the index) or let it go (then it is ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from eqc_enrich.eqc_stage._pacing import Clock, sleep_unless
from eqc_enrich.eqc_stage._shared import ClaimRound, DatabaseClaims

__all__ = ["NameSource", "Settled"]


@dataclass(frozen=True, slots=True)
class Settled:
    """A name another process answered while this one waited: `company_id` None means EQC does not know it."""

    name: str
    company_id: str | None


class NameSource:
    def __init__(
        self,
        names: Sequence[str],
        claims: DatabaseClaims | None = None,
        *,
        chunk: int = 10,
        recheck_s: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._claims = claims
        self._todo: deque[str] = deque(names)
        self._ready: deque[str] = deque()
        self._settled: deque[Settled] = deque()
        self._held: dict[str, float] = {}  # name -> when to look again
        self._chunk = max(1, chunk)
        self._recheck_s = recheck_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._ahead: asyncio.Future[None] | None = None
        self.claimed: set[str] = set()  # names this process holds and has not finished
        self.waits = 0  # times a name had to wait for another process

    @property
    def waiting(self) -> list[str]:
        """Names claimed here but not yet handed out."""
        return list(self._ready)

    def lost(self, names: set[str]) -> None:
        """Claims that expired and went to another process (a stall longer than the lease): do not ask those
        names here; look for the other's answer later, as for any name another process holds."""
        if not names:
            return
        self._ready = deque(name for name in self._ready if name not in names)
        self.claimed -= names
        later = self._clock() + self._recheck_s
        for name in names:
            self._held[name] = later

    def done(self, name: str) -> None:
        """The name is finished here (its claim goes with the answer's commit)."""
        self.claimed.discard(name)

    async def next(self, stop: asyncio.Future[None] | None) -> str | Settled | None:
        """The next name to ask, or one settled elsewhere, or None when nothing is left. Raises `Stopped`."""
        while True:
            if self._ready:
                self._claim_ahead()
                return self._ready.popleft()
            if self._settled:
                return self._settled.popleft()
            if not self._todo and not self._held and not self._lock.locked():
                return None  # nothing left, and no claim under way (its chunk is out of `_todo` meanwhile)
            async with self._lock:
                if self._ready or self._settled:
                    continue
                if self._todo:
                    await self._claim_next_chunk()
                    continue
                if not self._held:
                    continue  # the claim waited for brought nothing more for this worker
                due = min(self._held.values())
                delay = due - self._clock()
                if delay > 0:
                    await sleep_unless(stop, delay)
                await self._recheck()

    def _claim_ahead(self) -> None:
        """Claim the next chunk in the background while half of this one is still to ask, so that no request
        waits for a claim's round trip to the database."""
        if (
            self._claims is None
            or not self._todo
            or len(self._ready) > self._chunk // 2
            or self._lock.locked()
            or (self._ahead is not None and not self._ahead.done())
        ):
            return
        self._ahead = asyncio.ensure_future(self._claim_quietly())

    async def _claim_quietly(self) -> None:
        async with self._lock:
            if self._todo:
                # an error here is met again, and reported, by the worker that claims in the foreground next
                with contextlib.suppress(Exception):
                    await self._claim_next_chunk()

    async def _claim_next_chunk(self) -> None:
        chunk = [self._todo.popleft() for _ in range(min(self._chunk, len(self._todo)))]
        if self._claims is None:
            self._ready.extend(chunk)
            return
        try:
            round_ = await self._claims.claim(chunk)
        except BaseException:
            self._todo.extendleft(reversed(chunk))  # the index did not answer: these names are still to do
            raise
        self._take(round_)

    async def _recheck(self) -> None:
        now = self._clock()
        due = [name for name, at in self._held.items() if at <= now]
        if due and self._claims is not None:
            self._take(await self._claims.claim(due))  # on an error the names stay held, to look at again

    def _take(self, round_: ClaimRound) -> None:
        self._ready.extend(round_.mine)
        self.claimed.update(round_.mine)
        self._settled.extend(Settled(name, company_id) for name, company_id in round_.found.items())
        self._settled.extend(Settled(name, None) for name in round_.not_found)
        for name in (*round_.mine, *round_.found, *round_.not_found):
            self._held.pop(name, None)
        later = self._clock() + self._recheck_s
        for name in round_.held:
            if name not in self._held:
                self.waits += 1
            self._held[name] = later
