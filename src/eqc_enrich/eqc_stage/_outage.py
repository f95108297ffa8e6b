"""Noticing that EQC went away, waiting for it with probes, and giving up after a bound.

Without this, every name burns its retries against a closed port and the run "completes" with temporary
ids for companies EQC knows. With it, a handful of unanswered requests in a row stops the sending; one
probe at a time asks whether EQC is back; the names wait, unasked and unfailed, until it is, or until the
bound passes and the stage ends as "EQC unavailable".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from eqc_enrich._durations import RateLimit
from eqc_enrich._policies import OutagePolicy
from eqc_enrich.eqc import CertificateError, EqcError, ProxyAuthError
from eqc_enrich.eqc_stage._pacing import Clock, Stopped

__all__ = ["EqcDown", "EqcOutage"]


class EqcDown(Exception):
    """EQC stayed unreachable past the policy's bound (or its certificate is not trusted, or the proxy
    refused the credentials)."""


class EqcOutage:
    """Counts requests that got no HTTP answer; after enough in a row, admits one probe at a time."""

    def __init__(
        self,
        policy: OutagePolicy,
        limit: RateLimit,
        *,
        clock: Clock = time.monotonic,
        events: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._policy = policy
        self._limit = limit
        self._clock = clock
        self._events = events or (lambda kind, fields: None)
        self.in_a_row = 0
        self.down_since: float | None = None
        self.outages = 0  # how many times EQC went down during the run
        self.reason: str | None = None  # the last transport failure, for the one-line message
        self._fatal: str | None = None
        self._probes = 0
        self._next_probe_at = 0.0
        self._probing = False
        self._changed = asyncio.Event()
        # One more at every trip and every comeback. A request carries the epoch it left in, and its outcome
        # reported in a later epoch says nothing about EQC now: a failure of a request that was in flight
        # when EQC went neither counts toward a new outage nor pushes the next probe back, and an answer
        # that left before the trip (a server answering as it shuts down) does not end the outage; only a
        # probe does. On a busy machine such late outcomes are common.
        self.epoch = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def answered(self, sent_in: int | None = None) -> None:
        """Any HTTP answer (even a 5xx or a 429) to a request sent in this epoch proves EQC is reachable."""
        if sent_in is not None and sent_in != self.epoch:
            return
        self.in_a_row = 0
        if self.down_since is not None:
            self._events("eqc_back", {"down_s": round(self._clock() - self.down_since, 3)})
            self.down_since = None
            self._probes = 0
            self.epoch += 1
        self._wake()

    def unanswered(self, error: EqcError, sent_in: int | None = None) -> None:
        """A request that got no HTTP answer at all; `sent_in` is the `epoch` it was sent in."""
        self.reason = str(error)
        if isinstance(error, CertificateError | ProxyAuthError):  # waiting fixes neither: end at once
            self._fatal = str(error)
        elif sent_in is not None and sent_in != self.epoch:
            self._wake()
            return
        self.in_a_row += 1
        if self.down_since is None and (self._fatal or self.in_a_row >= self._policy.unreachable_in_a_row):
            self.trip()
        elif self.down_since is not None:
            self._probes += 1
            self._next_probe_at = self._clock() + self._policy.probe_interval(self._probes, self._limit)
        self._wake()

    def trip(self) -> None:
        """EQC counts as down from now on: no sending until a probe gets an answer."""
        if self.down_since is not None:
            return
        self.down_since = self._clock()
        self.outages += 1
        self.epoch += 1
        self._probes = 0
        self._next_probe_at = self.down_since + self._policy.probe_interval(0, self._limit)
        self._events(
            "eqc_down",
            {
                "reason": self.reason,
                "in_a_row": self.in_a_row,
                "wait_s": self._policy.wait_s,
                "fatal": bool(self._fatal),
            },
        )
        self._wake()

    async def admit(self, stop: asyncio.Future[None] | None) -> bool:
        """Wait until a request may go out; True when the caller carries the probe and must call `probe_done`.

        Raises `EqcDown` once the outage has lasted longer than the policy allows, `Stopped` on a stop.
        """
        while self.down_since is not None:
            if self._fatal is not None:
                raise EqcDown(self._fatal)
            now = self._clock()
            if now - self.down_since > self._policy.wait_s:
                raise EqcDown(self._gave_up_message())
            if not self._probing and now >= self._next_probe_at:
                self._probing = True
                return True
            # While a probe is out, only its answer (or the bound) changes anything: wait for that, not for a
            # probe time already past, or every waiting request would spin.
            next_turn = self.down_since + self._policy.wait_s if self._probing else self._next_probe_at
            deadline = min(next_turn, self.down_since + self._policy.wait_s) + 1e-3
            await self._wait_change(stop, max(0.0, deadline - now))
        return False

    def probe_done(self) -> None:
        self._probing = False
        self._wake()

    def _gave_up_message(self) -> str:
        waited = self._policy.wait_s
        return f"EQC unreachable for {waited:g}s ({self.reason}); gave up waiting (--eqc-down-wait)"

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, stop: asyncio.Future[None] | None, seconds: float) -> None:
        changed = asyncio.ensure_future(self._changed.wait())
        waiting: set[asyncio.Future[Any]] = {changed} if stop is None else {changed, stop}
        try:
            await asyncio.wait(waiting, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
        if stop is not None and stop.done():
            raise Stopped
