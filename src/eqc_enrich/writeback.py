"""Stage 5: turn EQC answers into index rows and commit them as they arrive.

A background task commits whatever has accumulated every `interval_s` (well under a second), so an
interrupted run loses at most what was in flight, and a rerun asks nothing it already asked.
"""

from __future__ import annotations

import asyncio
import time

from eqc_enrich.keys import LookupType, normalize_name
from eqc_enrich.lookup import LookupOutcome
from eqc_enrich.store import IndexEntry, IndexStore, Payload, WriteBatch

EQC_SOURCE = "eqc_api"
LOOKUP_DOMAIN = "eqc_sync_lookup"  # source_domain of an EQC answer, as the existing EQC writer records it
FORMER_NAME_DOMAIN = "eqc_sync_former_name"
MIN_CACHED_CONFIDENCE = 0.60
FORMER_NAME_FACTOR = 0.9


def batch_for(outcome: LookupOutcome, *, keep_payloads: bool = True) -> WriteBatch:
    """What one answer teaches the index; failures and skips teach nothing."""
    batch = WriteBatch()
    if outcome.status == "not_found":
        batch.negatives.append(outcome.name)
        return batch
    hit = outcome.hit
    if outcome.status != "found" or hit is None:
        return batch
    batch.cleared_negatives.append(outcome.name)
    if hit.confidence >= MIN_CACHED_CONFIDENCE:
        batch.entries.extend(_entries(outcome.name, hit.company_id, hit.full_name, hit.confidence, hit.former_names))
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


def _entries(
    asked: str, company_id: str, full_name: str, confidence: float, former_names: tuple[str, ...]
) -> list[IndexEntry]:
    def entry(key: str, kind: LookupType, score: float, domain: str) -> IndexEntry:
        return IndexEntry(key, kind, company_id, score, EQC_SOURCE, source_domain=domain)

    entries = [entry(asked, LookupType.CUSTOMER_NAME, confidence, LOOKUP_DOMAIN)]
    official = normalize_name(full_name)
    if official and official != asked:
        # EQC named the company's registered name: asking that name would be an exact match.
        entries.append(entry(official, LookupType.CUSTOMER_NAME, 1.0, LOOKUP_DOMAIN))
    former_confidence = round(FORMER_NAME_FACTOR * confidence, 2)
    for former in former_names:
        key = normalize_name(former)
        if key and former_confidence >= MIN_CACHED_CONFIDENCE:
            entries.append(entry(key, LookupType.FORMER_NAME, former_confidence, FORMER_NAME_DOMAIN))
    return entries


class IndexWriter:
    """Collects answers from the event loop and commits them from a worker thread, one batch at a time."""

    def __init__(self, store: IndexStore, *, interval_s: float = 0.5, keep_payloads: bool = True) -> None:
        self._store = store
        self._interval_s = interval_s
        self._keep_payloads = keep_payloads
        self._pending = WriteBatch()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.write_s = 0.0
        self.commits = 0
        self.rows_written = 0

    def add(self, outcome: LookupOutcome) -> None:
        batch = batch_for(outcome, keep_payloads=self._keep_payloads)
        self._pending.extend(batch)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop the timer and commit what is left; raises if the last commit fails."""
        self._closed.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def flush(self) -> None:
        if not len(self._pending):
            return
        batch, self._pending = self._pending, WriteBatch()
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._store.write, batch)
        except BaseException:
            batch.extend(self._pending)
            self._pending = batch  # keep it for the next attempt; nothing learned is dropped
            raise
        self.write_s += time.perf_counter() - started
        self.commits += 1
        self.rows_written += len(batch)

    async def _run(self) -> None:
        while not self._closed.is_set():
            try:
                await asyncio.wait_for(self._closed.wait(), timeout=self._interval_s)
            except TimeoutError:
                await self.flush()
