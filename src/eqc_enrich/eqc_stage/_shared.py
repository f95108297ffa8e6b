"""Sharing one EQC account and one index between processes: the quota in the database, and claims on names.

Several jobs (other months, other domains, a standing worker, several hosts) use one index and one EQC
account. Each process alone would pace only itself, so together they would overrun the quota, and two of
them would ask the same name. Here the coordination lives in the index database itself, no other server:

- `DatabaseLedger`: every send slot of every process is a row reserved in a short transaction under the
  pacing rule, so together they never exceed the limit and stay evenly paced.
- `DatabaseClaims`: a name is claimed (owner and lease) before it is asked; a name another process holds is
  put aside and taken from the index once that process has answered it. A claim is a lease renewed while
  its process lives; a dead process's claims expire and are taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from eqc_enrich._errors import IndexStoreError
from eqc_enrich.eqc_stage._pacing import Rule
from eqc_enrich.keys import LookupType
from eqc_enrich.store import IndexStore

__all__ = ["AccountPause", "ClaimRound", "DatabaseClaims", "DatabaseLedger"]


class DatabaseLedger:
    """The shared quota: slots reserved in the index database, seen by every process on the account.

    The database is never between a slot and its send: slots are reserved ahead, in batches. While sends
    go out, a reservation in the background keeps enough slots in hand to cover the slowest recent round
    trip at the quota's pace (a round trip of 50 ms at a 6 ms spacing: nine slots), so the next reservation
    is back before the slots in hand run out; a reservation asks the pacing rule for slots no earlier than a
    typical round trip from now (at most one spacing), so even the first slot after a quiet spell is
    usually due only once it is known. A
    reserved slot whose time passed unused (a stop, a gate that let fewer requests through) is dropped,
    never sent late: the slots after it, this process's and others', were planned from its time.
    """

    def __init__(
        self,
        store: IndexStore,
        quota_key: str,
        owner: str,
        *,
        spacing_s: float = 0.0,
        max_batch: int = 16,
        ahead: bool = True,
    ) -> None:
        """`ahead=False`: one slot per request, reserved when it is asked for (the review page, whose
        occasional single calls would leave every slot reserved ahead unused)."""
        self._store = store
        self._key = quota_key
        self._owner = owner
        self._spacing_s = spacing_s
        self._max_batch = max(1, max_batch)
        self._ahead = ahead
        self._rtts: deque[float] = deque(maxlen=20)  # the last reservations' round trips
        self._slots: deque[float] = deque()  # reserved slots, on the database's clock
        self._refill: asyncio.Task[None] | None = None  # the reservation under way, if any
        self._error: IndexStoreError | None = None  # what the last reservation met, for the next caller
        # database clock minus this host's wall clock, from the quickest round trip seen so far (as NTP does):
        # its error is at most half that round trip, well inside the quota margin at any time scale
        self._offset = 0.0
        self._best_rtt = float("inf")
        self._account_pause = AccountPause(store, quota_key)
        self.dropped = 0  # reserved slots whose time passed before a send could use them
        self._unused: list[float] = []  # those slots, given back when the stage ends

    @property
    def lead_s(self) -> float:
        """How far ahead of now a reservation asks for its first slot: a typical round trip (the median of the
        recent ones), never more than one spacing, so that a slow round trip cannot open a gap in the pace
        (the slots in hand cover the slow ones)."""
        if not self._rtts:
            return 0.0
        typical = sorted(self._rtts)[len(self._rtts) // 2]
        return min(typical, self._spacing_s) if self._spacing_s > 0 else typical

    @property
    def batch(self) -> int:
        """Slots to hold in hand: enough to cover the slowest recent round trip at the quota's pace, one when
        a round trip is short next to the spacing of sends (a slot reserved and then not used leaves a hole
        in every process's pace)."""
        if self._spacing_s <= 0:
            return self._max_batch
        slowest = max(self._rtts, default=0.0)
        return max(1, min(self._max_batch, 1 + math.ceil(slowest / self._spacing_s)))

    async def reserve(self, rule: Rule, *, recent: int, keep_s: float) -> float:
        self._drop_passed()
        if not self._slots:
            # a fresh slot is used even if a round trip longer than the lead made it late: none comes sooner
            await self._reserved(rule, recent=recent, keep_s=keep_s)
        slot = self._slots.popleft() - self._now()
        if self._ahead and len(self._slots) < self.batch and self._refill is None:
            self._refill = asyncio.get_running_loop().create_task(self._take(rule, recent=recent, keep_s=keep_s))
        return slot

    async def settle(self) -> None:
        """The stage is ending: wait for a reservation still under way, then give back every slot no request
        used (a check of one id must not hold several of the account's ten slots a minute)."""
        if self._refill is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill
        unused, self._unused = [*self._unused, *self._slots], []
        self._slots.clear()
        if unused:
            with contextlib.suppress(IndexStoreError):  # not given back, they only pass unused
                await asyncio.to_thread(self._store.quota.release, self._key, self._owner, unused)

    def _now(self) -> float:
        return time.time() + self._offset

    def _drop_passed(self) -> None:
        """A slot a tenth of the spacing past (at least a millisecond) is a hole, not a send."""
        passed = self._now() - max(0.001, 0.1 * self._spacing_s)
        while self._slots and self._slots[0] < passed:
            self._unused.append(self._slots.popleft())
            self.dropped += 1

    async def _reserved(self, rule: Rule, *, recent: int, keep_s: float) -> None:
        """Slots in hand: the reservation under way, else a new one; raises what the database raised (the
        stage then holds off while the index is away)."""
        while not self._slots:
            if self._error is None and self._refill is None:
                self._refill = asyncio.get_running_loop().create_task(self._take(rule, recent=recent, keep_s=keep_s))
            if self._refill is not None:
                await self._refill
            if self._error is not None:
                error, self._error = self._error, None
                raise error

    async def _take(self, rule: Rule, *, recent: int, keep_s: float) -> None:
        try:
            await self._reserve_many(rule, recent=recent, keep_s=keep_s)
        except IndexStoreError as exc:
            self._error = exc
        finally:
            self._refill = None

    async def _reserve_many(self, rule: Rule, *, recent: int, keep_s: float) -> None:
        lead = self.lead_s

        def ahead(sends: list[float], paused_until: float, now: float) -> float:
            return rule(sends, paused_until, now + lead)

        asked = time.time()
        slots, now = await asyncio.to_thread(
            self._store.quota.reserve_many, self._key, self._owner, ahead,
            count=max(1, self.batch - len(self._slots)) if self._ahead else 1, recent=recent, keep_s=keep_s,
        )  # fmt: skip
        answered = time.time()
        self._rtts.append(answered - asked)
        if answered - asked < self._best_rtt:
            self._best_rtt = answered - asked
            self._offset = now - (asked + answered) / 2
        self._slots.extend(slots)

    def pause_for(self, seconds: float) -> None:
        """Tell every process on the account (fire and forget: this process pauses itself locally too)."""
        self._account_pause(seconds)


class AccountPause:
    """A Retry-After for the whole account, written to the shared quota in the background; a database error
    only loses the others' pause (this process pauses itself anyway)."""

    def __init__(self, store: IndexStore, quota_key: str) -> None:
        self._store = store
        self._key = quota_key
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, seconds: float) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._write, seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write(self, seconds: float) -> None:
        with contextlib.suppress(IndexStoreError):
            self._store.quota.pause(self._key, self._store.quota.clock() + seconds)


@dataclass
class ClaimRound:
    """What one claim of a chunk of names found."""

    mine: list[str] = field(default_factory=list)  # claimed by this process now: ask them
    held: list[str] = field(default_factory=list)  # another live process holds them: come back later
    found: dict[str, str] = field(default_factory=dict)  # answered in the index since the run began: name -> id
    not_found: list[str] = field(default_factory=list)  # EQC told another process it does not know them


class DatabaseClaims:
    """Claims on names in the index database, with the index checked first (someone may have answered)."""

    def __init__(
        self,
        store: IndexStore,
        owner: str,
        *,
        lease_s: float,
        entries_since: datetime | None,
        negatives_since: datetime,
    ) -> None:
        """`entries_since` and `negatives_since` are the same cut-offs the run's first index read used
        (--refresh, the negative TTL), so an answer counts here exactly when it would have counted there."""
        self._store = store
        self.owner = owner
        self.lease_s = lease_s
        self._entries_since = entries_since
        self._negatives_since = negatives_since

    async def claim(self, names: Sequence[str]) -> ClaimRound:
        return await asyncio.to_thread(self._claim, list(names))

    def _claim(self, names: list[str]) -> ClaimRound:
        """Claim first, then read the index for what was claimed: an answer committed (and its claim released)
        by another process just before our claim is then visible to the read that follows it, on PostgreSQL's
        read-committed statements as on SQLite's serialized transactions."""
        round_ = ClaimRound()
        store = self._store
        with store.transaction() as conn:
            mine = store.claims.claim(names, self.owner, self.lease_s, conn=conn)
            claimed = [name for name in names if name in mine]
            wanted: dict[str, list[str]] = {LookupType.CUSTOMER_NAME: claimed}
            entries = store.entries.lookup(wanted, updated_since=self._entries_since, conn=conn) if claimed else {}
            round_.found = {key: entry.company_id for (key, _), entry in entries.items()}
            fresh = store.negatives.known(claimed, asked_since=self._negatives_since, conn=conn) if claimed else set()
            round_.not_found = sorted(fresh - set(round_.found))
            answered = set(round_.found) | set(round_.not_found)
            if answered:
                store.claims.release(sorted(answered), self.owner, conn=conn)
        round_.mine = [name for name in claimed if name not in answered]
        round_.held = [name for name in names if name not in mine]
        return round_

    async def renew(self, waiting: Sequence[str]) -> set[str]:
        """Extend this process's claims; returns those of `waiting` that another process has taken meanwhile."""
        return await asyncio.to_thread(self._renew, list(waiting))

    def _renew(self, waiting: list[str]) -> set[str]:
        with self._store.transaction() as conn:
            self._store.claims.renew(self.owner, self.lease_s, conn=conn)
            return self._store.claims.held_by_others(waiting, self.owner, conn=conn) if waiting else set()

    async def release_all(self, names: Sequence[str]) -> None:
        """Give back the claims on names this process will not answer (a stop, a failure to hand on)."""
        if names:
            await asyncio.to_thread(self._store.claims.release, list(names), self.owner)
