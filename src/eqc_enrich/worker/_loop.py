"""The standing worker: pass after pass over the queue, each pass the EQC stage of a run, yielding to runs.

A pass takes up to `batch` due names (most valuable first, then rows of the old queue table if there is
room), waits until runs leave the quota idle, and asks them through `run_eqc_stage`: the same claims,
write-back, side file, outage handling and token refresh as a run. Every answer is in the index (or the
side file) as a run's would be; the worker's own log (`eqc_worker_log`) says what it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from eqc_enrich._errors import EqcEnrichError, IndexStoreError
from eqc_enrich.config import StageConfig
from eqc_enrich.eqc_stage import (
    EqcReport,
    EqcStats,
    LookupOutcome,
    PendingFile,
    StopHandle,
    StopReason,
    load_side_files,
    pending_dirs,
    run_eqc_stage,
)
from eqc_enrich.events import EventSink
from eqc_enrich.progress import RunProgress
from eqc_enrich.settings import Settings, load_settings
from eqc_enrich.store import IndexStore, ShadowRow, utcnow
from eqc_enrich.worker._checks import MATCH_CHECK, settle_checks
from eqc_enrich.worker._ledger import WORKER_PREFIX, YieldingLedger, quota_busy
from eqc_enrich.worker._options import WorkerOptions
from eqc_enrich.worker._queue import Queue, QueueItem, build_queue, with_legacy

__all__ = ["WorkerControl", "WorkerReport", "run_worker", "run_worker_async"]

WORKER_INPUT = "worker"  # the run_journal row of a worker session has this as its input


class WorkerControl:
    """Stop a worker from outside (a signal, a scheduler): no new requests, those in flight finish."""

    def __init__(self) -> None:
        self.handle = StopHandle()
        self._event: asyncio.Event | None = None
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        self.handle.stop()
        if self._event is not None:
            self._event.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep, cut short by a stop."""
        if self._event is None:
            self._event = asyncio.Event()
            if self.stopped:
                self._event.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout=max(0.0, seconds))


@dataclass
class WorkerReport:
    """What a worker session did."""

    owner: str
    status: str = "completed"  # completed, interrupted (stopped), token_unavailable, eqc_unavailable, index_unavailable
    message: str | None = None
    passes: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # found, not_found, failed, elsewhere, skipped
    by_kind: Counter[str] = field(default_factory=Counter)  # names settled or tried, by queue kind
    yielded: int = 0  # passes cut short because a run took the quota
    slots: int = 0  # quota slots the worker used
    legacy: Counter[str] = field(default_factory=Counter)  # enrichment_requests rows: done, retry, failed, back
    match_checks: Counter[str] = field(default_factory=Counter)  # local answers checked: agreed, disagreed, no_verdict
    elapsed_s: float = 0.0
    side_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def asked(self) -> int:
        return self.outcomes["found"] + self.outcomes["not_found"] + self.outcomes["failed"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner, "status": self.status, "message": self.message, "passes": self.passes,
            "asked": self.asked, "outcomes": dict(self.outcomes), "by_kind": dict(self.by_kind),
            "yielded": self.yielded, "slots": self.slots, "legacy": dict(self.legacy),
            "match_checks": dict(self.match_checks),
            "elapsed_s": round(self.elapsed_s, 4), "side_files": self.side_files, "warnings": self.warnings,
        }  # fmt: skip


def run_worker(
    options: WorkerOptions | None = None,
    *,
    once: bool = False,
    stop: WorkerControl | None = None,
    events: EventSink | None = None,
    settings: Settings | None = None,
) -> WorkerReport:
    """Run the worker until stopped (`stop.stop()`), or with `once` until nothing is due; for a pipeline."""
    return asyncio.run(run_worker_async(options, once=once, control=stop, events=events, settings=settings))


async def run_worker_async(
    options: WorkerOptions | None = None,
    *,
    once: bool = False,
    control: WorkerControl | None = None,
    events: EventSink | None = None,
    settings: Settings | None = None,
    progress: RunProgress | None = None,
) -> WorkerReport:
    opts = options or WorkerOptions()
    config = opts.stage_config(settings or load_settings())
    worker = _Worker(opts, config, control or WorkerControl(), events, progress or RunProgress())
    return await worker.run(once=once)


class _Worker:
    def __init__(
        self,
        options: WorkerOptions,
        config: StageConfig,
        control: WorkerControl,
        events: EventSink | None,
        progress: RunProgress,
    ) -> None:
        self.options = options
        self.config = config
        self.control = control
        self._events = events
        self.progress = progress
        self.owner = WORKER_PREFIX + uuid.uuid4().hex[:24]
        self.report = WorkerReport(owner=self.owner)
        window = config.access.rate_limit.window_s
        self.idle_s = options.idle_s if options.idle_s is not None else window
        self.poll_s = options.poll_s if options.poll_s is not None else min(300.0, max(0.05, 10 * window))

    def emit(self, kind: str, **fields: Any) -> None:
        if self._events is not None:
            self._events(kind, fields)

    async def run(self, *, once: bool) -> WorkerReport:
        started = time.monotonic()
        store = await asyncio.to_thread(IndexStore, self.options.db, schema=self.options.db_schema)
        try:
            await asyncio.to_thread(self._load_side_files, store)
            await asyncio.to_thread(store.journal_start, self.owner, WORKER_INPUT, "", self.options.public())
            try:
                await self._loop(store, once=once, started=started)
            finally:
                self.report.elapsed_s = time.monotonic() - started
                with contextlib.suppress(EqcEnrichError):
                    await asyncio.to_thread(store.journal_finish, self.owner, self.report.status, self.report.as_dict())
        finally:
            store.close()
        return self.report

    async def _loop(self, store: IndexStore, *, once: bool, started: float) -> None:
        deadline = started + self.options.max_time_s if self.options.max_time_s else None
        while not self.control.stopped:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not await self._wait_idle(store, deadline):
                break
            queue = await asyncio.to_thread(build_queue, store, self.options, limit=self.options.batch)
            items, taken_legacy = await asyncio.to_thread(self._with_legacy, store, queue)
            checks: list[ShadowRow] = []
            if not items:  # nothing else due: the idle slots check what runs answered locally
                checks = await asyncio.to_thread(store.shadow.to_verify, limit=self.options.batch)
                items = [QueueItem(row.lookup_key, MATCH_CHECK) for row in checks]
            if not items:
                if once:
                    break
                self._idle(queue)
                await self.control.sleep(self._until_due(queue, deadline))
                continue
            stopped, message = await self._pass(store, items, taken_legacy, deadline, checks=checks)
            if stopped in ("token", "index") or (stopped == "eqc_down" and once):
                self.report.status = {"token": "token_unavailable", "index": "index_unavailable"}.get(
                    stopped, "eqc_unavailable"
                )
                self.report.message = message
                return
            if stopped == "eqc_down":
                self.emit("worker_eqc_down", message=message, retry_in_s=self.poll_s)
                await self.control.sleep(self.poll_s)
        if self.control.stopped:
            self.report.status = "interrupted"

    async def _wait_idle(self, store: IndexStore, deadline: float | None) -> bool:
        """Until runs have left the quota unused for `idle_s`; False when stopped or past the deadline."""
        announced = False
        while not self.control.stopped:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            wait = await asyncio.to_thread(quota_busy, store, self.config.access.quota_key, self.idle_s)
            if wait <= 0:
                return True
            if not announced:
                self.emit("worker_waiting", reason="a run is using the quota", wait_s=round(wait, 4))
                announced = True
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(wait, left)
            await self.control.sleep(min(max(wait, 0.002), self.poll_s))
        return False

    def _with_legacy(self, store: IndexStore, queue: Queue) -> tuple[list[QueueItem], dict[int, str]]:
        """Rows of the old queue table join a pass only when the worker's own queue leaves room."""
        room = self.options.batch - len(queue.items)
        if room <= 0 or store.legacy_requests.table is None:
            return queue.items, {}
        taken = store.legacy_requests.take(limit=min(50, room))
        items, unusable = with_legacy(queue.items, taken)
        if unusable:
            store.legacy_requests.finish({}, unusable, [])
            self.report.legacy["retry"] += len(unusable)
        return items, {row.id: row.raw_name for row in taken if row.id not in unusable}

    def _idle(self, queue: Queue) -> None:
        nxt = queue.next_due.isoformat(timespec="seconds") if queue.next_due else None
        self.emit("worker_idle", waiting=dict(queue.waiting), next_due=nxt)

    def _until_due(self, queue: Queue, deadline: float | None) -> float:
        wait = self.poll_s
        if queue.next_due is not None:
            wait = min(wait, max(0.0, (queue.next_due - utcnow()).total_seconds()) + 0.001)
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        return wait

    async def _pass(
        self,
        store: IndexStore,
        items: list[QueueItem],
        legacy: dict[int, str],
        deadline: float | None,
        *,
        checks: list[ShadowRow] | None = None,
    ) -> tuple[StopReason, str | None]:
        """One pass of the EQC stage over `items`; how it ended (stepping aside for a run is no ending).
        `checks`: the pass checks local answers, so the index's entries for them (the local matches) do not
        count as answers already there."""
        self.report.passes += 1
        number = self.report.passes
        names = [item.key for item in items]
        self.emit("worker_pass", number=number, names=len(names), by_kind=dict(Counter(i.kind for i in items)))
        handle = self.control.handle
        handle.stopped = self.control.stopped  # a fresh stop state per pass; a worker stop carries over
        ledger = YieldingLedger(
            store, self.config.access.quota_key, self.owner, slot_s=self.config.access.slot_s, idle_s=self.idle_s,
            on_busy=handle.stop,
        )  # fmt: skip
        now = utcnow()
        refresh_since = now if checks else now - timedelta(seconds=self.options.refresh_s)
        negatives_since = now if checks else now - timedelta(seconds=self.options.negative_ttl_s)
        side = PendingFile(pending_dirs(store.url, self.options.db_schema), f"{self.owner}-{number}")
        # --max-time ends a pass too: requests in flight finish, the names not asked are given back
        timer = None if deadline is None else asyncio.get_running_loop().call_later(
            max(0.0, deadline - time.monotonic()), handle.stop
        )  # fmt: skip
        try:
            stage = await self._stage(store, items, handle, ledger, side, refresh_since, negatives_since)
        finally:
            if timer is not None:
                timer.cancel()
        stopped = stage.stopped
        if ledger.yielded and not self.control.stopped:
            self.report.yielded += 1
            stopped = ""
            self.emit("worker_yield", number=number, reason="a run took the quota")
        self.report.slots += ledger.slots
        if stage.side_file:
            self.report.side_files.append(stage.side_file)
        await asyncio.to_thread(self._record, store, items, stage.outcomes, legacy, stage.index_error)
        if checks and stage.index_error is None:
            await asyncio.to_thread(self._settle_checks, store, checks, stage.outcomes)
        return stopped, stage.message

    def _settle_checks(self, store: IndexStore, checks: list[ShadowRow], outcomes: Mapping[str, LookupOutcome]) -> None:
        try:
            self.report.match_checks.update(settle_checks(store, checks, outcomes, self.owner))
        except IndexStoreError as exc:
            self.report.warnings.append(f"the checks of local matches were not recorded: {exc}")

    async def _stage(
        self,
        store: IndexStore,
        items: list[QueueItem],
        handle: StopHandle,
        ledger: YieldingLedger,
        side: PendingFile,
        refresh_since: datetime,
        negatives_since: datetime,
    ) -> EqcReport:
        self.progress.eqc = EqcStats()  # this pass's counters, for a display or the event log to read
        return await run_eqc_stage(
            [item.key for item in items], store=store, config=self.config, side_file=side, owner=self.owner,
            entries_since=refresh_since, negatives_since=negatives_since, handle=handle, events=self._events,
            ledger=ledger, stats=self.progress.eqc,
        )  # fmt: skip

    def _record(
        self,
        store: IndexStore,
        items: list[QueueItem],
        outcomes: Mapping[str, LookupOutcome],
        legacy: dict[int, str],
        index_error: str | None,
    ) -> None:
        """The worker's log, not-found statuses and the old queue's rows, by that table's rules."""
        rows: list[dict[str, Any]] = []
        answered: dict[int, str] = {}
        tried: dict[int, str] = {}
        back: list[int] = []
        not_found: list[str] = []
        for item in items:
            outcome = outcomes.get(item.key) or LookupOutcome(item.key, "skipped")
            self.report.outcomes[outcome.status] += 1
            company_id = _company_id(outcome)
            if outcome.status != "skipped":
                self.report.by_kind[item.kind] += 1
                rows.append({"owner": self.owner, "lookup_key": item.key, "kind": item.kind,
                             "outcome": outcome.status, "company_id": company_id})  # fmt: skip
            if company_id is None and outcome.status in ("not_found", "elsewhere"):
                not_found.append(item.key)
            for row_id in item.legacy_ids:
                if company_id is not None:
                    answered[row_id] = company_id
                elif outcome.status == "skipped":
                    back.append(row_id)
                else:
                    tried[row_id] = outcome.error or "no result"
        self.report.legacy.update({"done": len(answered), "retry": len(tried), "back": len(back)})
        self.emit("worker_pass_done", number=self.report.passes, outcomes=dict(Counter(
            (outcomes.get(i.key) or LookupOutcome(i.key, "skipped")).status for i in items)))  # fmt: skip
        try:
            if index_error is None:
                store.worker_log.record(rows)
                store.worker_log.mark_not_found(not_found)
            store.legacy_requests.finish(answered, tried, back)
        except IndexStoreError as exc:
            self.report.warnings.append(f"the worker's log was not written: {exc}")

    def _load_side_files(self, store: IndexStore) -> None:
        """Answers an earlier run or worker could not commit go into the index first."""
        loaded = load_side_files(store, self.options.db_schema)
        if loaded is not None:
            self.report.warnings.append(loaded)


def _company_id(outcome: LookupOutcome) -> str | None:
    if outcome.status == "found" and outcome.hit is not None:
        return outcome.hit.company_id
    if outcome.status == "elsewhere":
        return outcome.settled_id
    return None
