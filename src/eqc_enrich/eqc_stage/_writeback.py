"""Stage 5: turn EQC answers into index rows and commit them as they arrive.

A background task commits whatever has accumulated every `interval_s` (at least once per quota slot), so
an interrupted run loses at most what was in flight, and a rerun asks nothing it already asked. When the
index cannot be written, the writer says so at once: the EQC stage sends nothing new, and every answer in
hand or still arriving goes to the side file (`_pending.py`) until the index takes it again, or the wait
bound passes and the run stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from eqc_enrich._errors import IndexStoreError
from eqc_enrich._policies import ConfidencePolicy, IndexWaitPolicy
from eqc_enrich.eqc import SearchHit
from eqc_enrich.eqc_stage._company import company_record, details_record
from eqc_enrich.eqc_stage._lookup import LookupOutcome
from eqc_enrich.eqc_stage._pacing import Stopped
from eqc_enrich.eqc_stage._pending import PendingFile
from eqc_enrich.keys import LookupType, normalize_name
from eqc_enrich.store import IndexEntry, IndexStore, Payload, WriteBatch

__all__ = ["EQC_SOURCE", "FIRST_COMMIT_STALL_S", "FORMER_NAME_DOMAIN", "LOOKUP_DOMAIN", "IndexWriter", "batch_for"]

EQC_SOURCE = "eqc_api"
LOOKUP_DOMAIN = "eqc_sync_lookup"  # source_domain of an EQC answer, as the existing EQC writer records it
FORMER_NAME_DOMAIN = "eqc_sync_former_name"
FIRST_COMMIT_STALL_S = 1.0  # how long a writer's first commit of answers may take before it counts as stuck


def batch_for(
    outcome: LookupOutcome, *, keep_payloads: bool = True, confidence: ConfidencePolicy | None = None
) -> WriteBatch:
    """What one answer teaches the index and `base_info`; failures and skips teach nothing.

    A found name: its index rows (when confident enough to learn) and the company in `base_info` (always, a
    weak answer too); a company's details (`details`): its `base_info` row only.
    """
    confidence = confidence or ConfidencePolicy()
    batch = WriteBatch()
    if outcome.status == "not_found":
        batch.negatives.append(outcome.name)
        return batch
    if outcome.status == "details":
        if outcome.business is not None or outcome.labels is not None:
            batch.companies.append(details_record(outcome.name, outcome.business, outcome.labels))
        return batch
    hit = outcome.hit
    if outcome.status != "found" or hit is None:
        return batch
    batch.cleared_negatives.append(outcome.name)
    if confidence.learns(hit.confidence):
        former = outcome.business.former_names if outcome.business is not None else ()
        batch.entries.extend(_entries(outcome.name, hit, confidence, former))
    batch.companies.append(company_record(outcome.name, outcome.search, hit, outcome.business, outcome.labels))
    if keep_payloads:
        batch.payloads.append(
            Payload(
                company_id=hit.company_id,
                search_key=outcome.name,
                search_json=hit.raw,
                depart_json=outcome.business.raw if outcome.business else None,
                labels_json=outcome.labels.raw if outcome.labels else None,
            )
        )
    return batch


def _entries(asked: str, hit: SearchHit, policy: ConfidencePolicy, details_former: tuple[str, ...]) -> list[IndexEntry]:
    """The name asked and the registered name as customer names; former names (the search item's, and
    findDepart's when fetched) as former names, at the policy's discount."""

    def entry(key: str, kind: LookupType, score: float, domain: str) -> IndexEntry:
        return IndexEntry(key, kind, hit.company_id, score, EQC_SOURCE, source_domain=domain)

    entries = [entry(asked, LookupType.CUSTOMER_NAME, hit.confidence, LOOKUP_DOMAIN)]
    official = normalize_name(hit.full_name)
    if official and official != asked:
        # EQC named the company's registered name: asking that name would be an exact match.
        entries.append(entry(official, LookupType.CUSTOMER_NAME, 1.0, LOOKUP_DOMAIN))
    former_confidence = policy.former_name(hit.confidence)
    for former in dict.fromkeys((*hit.former_names, *details_former)):
        key = normalize_name(former)
        if key and policy.learns(former_confidence):
            entries.append(entry(key, LookupType.FORMER_NAME, former_confidence, FORMER_NAME_DOMAIN))
    return entries


class IndexWriter:
    """Collects answers from the event loop and commits them from a worker thread, one batch at a time."""

    def __init__(
        self,
        store: IndexStore,
        *,
        interval_s: float = 0.5,
        keep_payloads: bool = True,
        side_file: PendingFile | None = None,
        policy: IndexWaitPolicy | None = None,
        confidence: ConfidencePolicy | None = None,
        events: Callable[[str, dict[str, Any]], None] | None = None,
        on_give_up: Callable[[str], None] | None = None,
        owner: str | None = None,
    ) -> None:
        self._store = store
        self._owner = owner
        self._interval_s = interval_s
        self._keep_payloads = keep_payloads
        self._side = side_file
        self._policy = policy or IndexWaitPolicy()
        self._confidence = confidence or ConfidencePolicy()
        self._events = events or (lambda kind, fields: None)
        self._on_give_up = on_give_up
        self._pending = WriteBatch()
        self._closed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._compiled = False  # a commit of answers went through: its statements are compiled
        self.error: str | None = None  # why the index cannot be written right now
        self.gave_up: str | None = None  # set once the wait bound passed: the run must stop
        self.spill_error: str | None = None
        self.write_s = 0.0
        self.commits = 0
        self.rows_written = 0
        self.outages = 0

    @property
    def writable(self) -> bool:
        return self._writable.is_set()

    @property
    def uncommitted(self) -> int:
        """Rows (entries, negatives, payloads) received but not in the index."""
        return len(self._pending)

    @property
    def side_file(self) -> PendingFile | None:
        return self._side if self._side is not None and self._side.exists else None

    def add(self, outcome: LookupOutcome) -> None:
        batch = batch_for(outcome, keep_payloads=self._keep_payloads, confidence=self._confidence)
        if self._owner is not None and outcome.status in ("found", "not_found", "failed"):
            batch.released.append(outcome.name)  # the claim goes in the same commit as the answer
        self._pending.extend(batch)
        if not self.writable:
            self._spill(batch)

    def ready(self) -> bool:
        """The EQC stage's send condition: answers can be committed right now."""
        return self.writable

    async def wait(self, stop: asyncio.Future[None] | None) -> None:
        await self.wait_writable(stop)

    async def wait_writable(self, stop: asyncio.Future[None] | None) -> None:
        """Hold a new request while the index cannot take its answer; raises `Stopped` on a stop."""
        if self.writable:
            return
        waiting: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._writable.wait())}
        if stop is not None:
            waiting.add(stop)
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for future in waiting:
            if future is not stop:
                future.cancel()
        if not self.writable:
            raise Stopped

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop the timer and commit what is left, waiting (within the bound) for an index in trouble.

        Never raises for a database error: what cannot be committed is in the side file, and `gave_up`
        says why.
        """
        self._closed.set()
        if self._task is not None:
            await self._task
        while len(self._pending) and self.gave_up is None:
            if await self.flush():
                break
            await asyncio.sleep(self._policy.retry_s)
        if len(self._pending) and self.gave_up is None:
            self._give_up(self.error or "index write failed")
        if self._side is not None:
            # Always let go of the file: after a stalled write the answers are in it while nothing is
            # pending here, and a handle left open would keep its lock, so the next run would skip it.
            self._side.close()

    def report_trouble(self, error: str) -> None:
        """Another use of the index (the shared quota, claims) failed: it cannot take answers either."""
        self._trouble(error, WriteBatch())

    async def flush(self) -> bool:
        """Commit what has accumulated; False when the index did not take it (it stays pending)."""
        if not len(self._pending):
            if not self.writable:
                return await self._probe()
            return True
        batch, self._pending = self._pending, WriteBatch()
        started = time.perf_counter()
        write = asyncio.ensure_future(asyncio.to_thread(self._store.write, batch, owner=self._owner))
        # the first commit of answers also compiles the write statements (index rows, base_info, payloads): on
        # a busy machine that alone can pass the stall bound, which is there to notice a lock, not a compiler
        compiling = not self._compiled and bool(batch.entries or batch.companies)
        stall_s = max(self._policy.stall_s, FIRST_COMMIT_STALL_S) if compiling else self._policy.stall_s
        try:
            while True:
                done, _ = await asyncio.wait({write}, timeout=stall_s)
                if done:
                    write.result()
                    break
                self._trouble(f"an index write has not returned for {stall_s:g}s (locked?)", batch)
                if self.gave_up is not None:
                    # The batch is in the side file; the write may still land later (harmless: upserts repeat).
                    write.add_done_callback(_observed)
                    return False
        except IndexStoreError as exc:
            batch.extend(self._pending)
            self._pending = batch  # keep it for the next attempt; nothing learned is dropped
            self._trouble(str(exc), WriteBatch())
            return False
        self.write_s += time.perf_counter() - started
        self._compiled = self._compiled or bool(batch.entries or batch.companies)
        self.commits += 1
        self.rows_written += len(batch)
        if not len(self._pending):
            self._recovered()
        return True

    async def _probe(self) -> bool:
        """Nothing to commit, but the index was in trouble: is it writable again?"""
        try:
            await asyncio.wait_for(asyncio.to_thread(self._store.check_writable), timeout=self._policy.stall_s)
        except (IndexStoreError, TimeoutError) as exc:
            self._trouble(str(exc) or "index write lock not granted", WriteBatch())
            return False
        self._recovered()
        return True

    def _trouble(self, error: str, in_flight: WriteBatch) -> None:
        """The index cannot take answers now: stop new requests, keep every answer on disk, mind the bound."""
        self.error = error
        now = time.monotonic()
        if self.writable:
            self._writable.clear()
            self._failing_since = now
            self.outages += 1
            self._events("index_unwritable", {"error": error, "wait_s": self._policy.wait_s})
            self._spill(in_flight)
            self._spill(self._pending)
        if self._failing_since is not None and now - self._failing_since > self._policy.wait_s:
            self._give_up(error)

    def _give_up(self, error: str) -> None:
        if self.gave_up is not None:
            return
        self.gave_up = error
        self._events("index_gave_up", {"error": error, "side_file": str(self._side.path) if self._side else None})
        if self._on_give_up is not None:
            self._on_give_up(error)

    def _recovered(self) -> None:
        if self.writable:
            return
        self._events("index_back", {"down_s": round(time.monotonic() - (self._failing_since or 0.0), 3)})
        self._failing_since = None
        self.error = None
        if self._side is not None:
            self._side.discard()
        self._writable.set()

    def _spill(self, batch: WriteBatch) -> None:
        if self._side is None or not len(batch) or self.spill_error is not None:
            return
        try:
            self._side.append(batch)
        except OSError as exc:
            # Nowhere durable is left (a full disk takes both): stop now, while the answers are still in memory.
            self.spill_error = f"cannot write the side file {self._side.path}: {exc.strerror or exc}"
            self._give_up(f"{self.error}; {self.spill_error}")

    async def _run(self) -> None:
        while not self._closed.is_set() and self.gave_up is None:
            interval = self._interval_s if self.writable else self._policy.retry_s
            try:
                await asyncio.wait_for(self._closed.wait(), timeout=interval)
            except TimeoutError:
                await self.flush()


def _observed(future: asyncio.Future[None]) -> None:
    """Retrieve the outcome of a write nobody waits for any more (its batch is safe in the side file)."""
    if not future.cancelled():
        future.exception()
