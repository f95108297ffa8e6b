"""The standing worker: pass after pass over the queue, each pass the EQC stage of a run, yielding to runs.

A pass takes up to `batch` due names (most valuable first, then rows of the old queue table if there is
room), waits until runs leave the quota idle, and asks them through `run_eqc_stage`: the same claims,
write-back, side file, outage handling and token refresh as a run. Every answer is in the index (or the
side file) as a run's would be; the worker's own log (`eqc_worker_log`) says what it did.

Passes make up rounds: a name asked in a round is not asked again in it, whatever the TTLs, so an answer
that falls due again at once (a `--negative-ttl` or `--refresh` shorter than a pass) neither loops nor
keeps the rest of the queue waiting. `--once` is one round over the names due when it starts.
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
    Ask,
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
from eqc_enrich.worker._queue import DETAILS, DETAILS_PREFIX, Queue, QueueItem, build_queue, with_legacy

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
        self.round = _Round()
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
            await asyncio.to_thread(store.check_grants)
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
            # a `--once` round lists every detail due, each pass: a batch's worth could be ones it already asked
            queue = await asyncio.to_thread(build_queue, store, self.options, every_detail=once)
            if once and self.round.only is None:
                due_checks = await asyncio.to_thread(store.shadow.to_verify)  # the round covers every one due
                checkable = [QueueItem(row.lookup_key, MATCH_CHECK) for row in due_checks]
                self.round.begin_once([*queue.items, *checkable, *queue.details], utcnow())
            fresh = self.round.fresh(queue.items)[: self.options.batch]
            items, taken_legacy = await asyncio.to_thread(self._with_legacy, store, fresh)
            checks: list[ShadowRow] = []
            if not items:  # nothing else due: the idle slots check what runs answered locally
                due = await asyncio.to_thread(store.shadow.to_verify, limit=self.options.batch)
                keys = {item.key for item in self.round.fresh([QueueItem(row.lookup_key, MATCH_CHECK) for row in due])}
                checks = [row for row in due if row.lookup_key in keys]
                items = [QueueItem(row.lookup_key, MATCH_CHECK) for row in checks]
            # base_info's missing details when nothing else is due
            items = items or self.round.fresh(queue.details)[: self.options.batch]
            if not items:
                if once:
                    break
                if self.round.asked:  # every name due had its turn: what is due again starts a new round
                    self.round = _Round(number=self.round.number + 1)
                    self.emit("worker_round", number=self.round.number)
                    continue
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

    def _with_legacy(self, store: IndexStore, fresh: list[QueueItem]) -> tuple[list[QueueItem], dict[int, str]]:
        """Rows of the old queue table join a pass only when the worker's own queue leaves room; a row whose
        name this round has asked already goes back untouched (it waits for the next round)."""
        room = self.options.batch - len(fresh)
        if room <= 0 or store.legacy_requests.table is None:
            return fresh, {}
        taken = store.legacy_requests.take(limit=min(50, room), due_by=self.round.started)
        items, unusable = with_legacy(fresh, taken)
        if unusable:
            store.legacy_requests.finish({}, unusable, [])
            self.report.legacy["retry"] += len(unusable)
        asked = [item for item in items if item.key in self.round.asked]
        if asked:
            store.legacy_requests.finish({}, {}, [row_id for item in asked for row_id in item.legacy_ids])
            items = [item for item in items if item.key not in self.round.asked]
        legacy_ids = {row_id for item in items for row_id in item.legacy_ids}
        return items, {row.id: row.raw_name for row in taken if row.id in legacy_ids}

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
        ask: Ask = "details" if items[0].kind == DETAILS else "search"
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
            stage = await self._stage(store, items, handle, ledger, side, refresh_since, negatives_since, ask)
        finally:
            if timer is not None:
                timer.cancel()
        stopped = stage.stopped
        if ledger.yielded and not self.control.stopped:
            self.report.yielded += 1
            stopped = ""
            self.emit("worker_yield", number=number, reason="a run took the quota")
        self.report.slots += ledger.slots
        self.round.mark_asked(items, stage.outcomes)
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
        ask: Ask,
    ) -> EqcReport:
        self.progress.eqc = EqcStats()  # this pass's counters, for a display or the event log to read
        return await run_eqc_stage(
            [item.key for item in items], store=store, config=self.config, side_file=side, owner=self.owner,
            entries_since=refresh_since, negatives_since=negatives_since, handle=handle, events=self._events,
            ledger=ledger, stats=self.progress.eqc, ask=ask,
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
            status = _logged_status(outcome)
            self.report.outcomes[status] += 1
            company_id = _company_id(outcome)
            if outcome.status != "skipped":
                self.report.by_kind[item.kind] += 1
                key = DETAILS_PREFIX + item.key if item.kind == DETAILS else item.key
                rows.append({"owner": self.owner, "lookup_key": key, "kind": item.kind,
                             "outcome": status, "company_id": company_id})  # fmt: skip
            if item.kind == DETAILS:
                continue  # a company id: no open name or old queue row stands for it
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


class _Round:
    """The names one round has asked (or seen answered by another process): none is asked twice in it.

    A standing worker starts a new round once every name due has had its turn. `--once` is a single round
    over `only`, the names due when it started (and the old queue's rows due by then)."""

    def __init__(self, number: int = 1) -> None:
        self.number = number
        self.asked: set[str] = set()
        self.only: set[str] | None = None
        self.started: datetime | None = None

    def begin_once(self, due: list[QueueItem], now: datetime) -> None:
        self.only = {item.key for item in due}
        self.started = now

    def fresh(self, due: list[QueueItem]) -> list[QueueItem]:
        """The due names this round may still ask, in the queue's order."""
        return [i for i in due if i.key not in self.asked and (self.only is None or i.key in self.only)]

    def mark_asked(self, items: list[QueueItem], outcomes: Mapping[str, LookupOutcome]) -> None:
        """Names a pass did not reach (a yield, a stop) stay askable."""
        reached = {key for key, outcome in outcomes.items() if outcome.status != "skipped"}
        self.asked.update(item.key for item in items if item.key in reached)


def _logged_status(outcome: LookupOutcome) -> str:
    """A company's details: `found` when EQC answered either call, `not_found` when neither (the row stays
    lacking, and waits the negative TTL); a name's outcome as it is."""
    if outcome.status != "details":
        return outcome.status
    return "found" if outcome.business is not None or outcome.labels is not None else "not_found"


def _company_id(outcome: LookupOutcome) -> str | None:
    if outcome.status == "details":
        return outcome.name
    if outcome.status == "found" and outcome.hit is not None:
        return outcome.hit.company_id
    if outcome.status == "elsewhere":
        return outcome.settled_id
    return None
