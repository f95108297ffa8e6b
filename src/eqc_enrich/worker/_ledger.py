"""Quota slots for a process that always yields: the worker takes only what runs leave unused.

Runs announce themselves by the slots they reserve in the shared quota (`eqc_quota_slot`). The worker's
owner names start with `worker-`; a slot is granted to it only while no other owner has reserved one in
the last `idle_s` (nor ahead), and never more than one slot ahead. The moment a run takes a slot, the
worker's next reservation finds the quota busy: the worker stops its pass (requests in flight finish,
unasked names' claims are released, so the run finds them free) and waits until the quota is idle again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from eqc_enrich.eqc_stage import AccountPause, Rule, Stopped
from eqc_enrich.store import IndexStore

__all__ = ["WORKER_PREFIX", "YieldingLedger", "quota_busy"]

WORKER_PREFIX = "worker-"


class YieldingLedger:
    """A `SendLedger` over the shared quota that raises `Stopped` (after `on_busy`) when a run uses it."""

    def __init__(
        self,
        store: IndexStore,
        quota_key: str,
        owner: str,
        *,
        slot_s: float,
        idle_s: float,
        on_busy: Callable[[], None],
    ) -> None:
        self._store = store
        self._key = quota_key
        self._owner = owner
        self._slot_s = slot_s
        self._idle_s = idle_s
        self._on_busy = on_busy
        self.yielded = False
        self.slots = 0
        self._account_pause = AccountPause(store, quota_key)

    async def reserve(self, rule: Rule, *, recent: int, keep_s: float) -> float:
        while True:
            if self.yielded:
                raise Stopped
            slot, now = await asyncio.to_thread(
                self._store.quota.reserve_if_idle, self._key, self._owner, rule, background=WORKER_PREFIX,
                idle_s=self._idle_s, ahead_s=1.05 * self._slot_s, recent=recent, keep_s=keep_s,
            )  # fmt: skip
            if slot is not None:
                self.slots += 1
                return slot - now
            if await asyncio.to_thread(quota_busy, self._store, self._key, self._idle_s):
                self.yielded = True
                self._on_busy()
                raise Stopped
            await asyncio.sleep(max(0.002, self._slot_s / 2))  # another worker holds the next slot

    def pause_for(self, seconds: float) -> None:
        self._account_pause(seconds)


def quota_busy(store: IndexStore, quota_key: str, idle_s: float) -> float:
    """Seconds until the quota has been left unused by runs for `idle_s` (0.0: it is idle now)."""
    latest, now = store.quota.last_busy(quota_key, WORKER_PREFIX)
    if latest is None:
        return 0.0
    return max(0.0, latest + idle_s - now)
