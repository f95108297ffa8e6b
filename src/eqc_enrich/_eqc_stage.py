"""Stages 4 and 5 together: ask EQC the names nothing else answered, and commit each answer as it lands.

One function, values in and a value out: the names, the index, the resolved configuration and the run's
observers go in; the outcomes, how the stage ended and its pacing figures come out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eqc_enrich._config import RunConfig
from eqc_enrich._errors import IndexStoreError
from eqc_enrich._pacing import SendLedger, SlidingWindowLimiter
from eqc_enrich._pending import PendingFile
from eqc_enrich._shared import DatabaseClaims, DatabaseLedger
from eqc_enrich._stats import RunProgress
from eqc_enrich._tokens import TokenKeeper
from eqc_enrich.eqc import EqcClient
from eqc_enrich.lookup import EqcLookup, LookupOutcome, LookupSettings, StageResult
from eqc_enrich.store import IndexStore
from eqc_enrich.writeback import IndexWriter

__all__ = ["StageReport", "StopHandle", "run_eqc_stage"]

Events = Callable[[str, dict[str, Any]], None]


@dataclass
class StageReport:
    result: StageResult = field(default_factory=StageResult)
    pacing: dict[str, Any] = field(default_factory=dict)
    commits: int = 0
    write_s: float = 0.0
    index_error: str | None = None  # why answers could not be committed (then they are in `side_file`)
    side_file: str | None = None
    uncommitted: int = 0
    eqc_outages: int = 0
    index_outages: int = 0


class StopHandle:
    """What a `RunControl` reaches: the lookup of the stage running now, if any."""

    def __init__(self) -> None:
        self.lookup: EqcLookup | None = None
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        if self.lookup is not None:
            self.lookup.stop("interrupted")

    def attach(self, lookup: EqcLookup) -> None:
        self.lookup = lookup
        if self.stopped:
            lookup.stop("interrupted")


async def run_eqc_stage(
    names: list[str],
    *,
    store: IndexStore,
    config: RunConfig,
    settings: LookupSettings,
    progress: RunProgress,
    rows_per_name: Mapping[str, int],
    side_file: PendingFile,
    owner: str,
    entries_since: datetime | None,
    negatives_since: datetime,
    handle: StopHandle,
    check_token: bool = False,
    events: Events | None = None,
    ledger: SendLedger | None = None,
) -> StageReport:
    """`ledger`: where send slots are reserved (default: the shared quota in the index, as a run takes them;
    the standing worker passes one that yields to runs)."""
    report = StageReport()
    stats = progress.eqc
    events = _tracking_phase(progress, events)
    client = EqcClient(config.token, base_url=config.eqc_url, timeout=config.timeout_s, observer=stats.record_call)
    try:
        keeper = TokenKeeper(client, config.token_command, events=events)
        if not await keeper.prepare(check=check_token):
            report.result = _not_asked(names, keeper.unavailable_reason or "", progress)
            return report
        stats.token_refreshes = keeper.refreshes
        if names:
            await _record_rate(store, config, owner)

        lookup: EqcLookup | None = None

        def on_outcome(outcome: LookupOutcome) -> None:
            writer.add(outcome)
            # every row of a name EQC has answered is settled now: its id, or a temporary one
            progress.rows_resolved += rows_per_name.get(outcome.name, 0)

        def index_gave_up(error: str) -> None:
            if lookup is not None:
                lookup.stop("index", f"the index could not be written: {error}")

        claims = DatabaseClaims(
            store, owner, lease_s=config.claim_lease_s, entries_since=entries_since, negatives_since=negatives_since
        )
        writer = IndexWriter(
            store,
            interval_s=config.commit_interval_s,
            side_file=side_file,
            policy=config.index_wait,
            confidence=config.confidence,
            events=events,
            on_give_up=index_gave_up,
            owner=owner,
        )
        limiter = SlidingWindowLimiter(
            settings.rate_limit,
            margin_s=settings.margin_s,
            ledger=ledger or DatabaseLedger(store, config.quota_key, owner, spacing_s=config.slot_s),
            lookahead=4 if ledger is None else 1,
        )
        lookup = EqcLookup(
            client, settings, stats=stats, tokens=keeper, on_outcome=on_outcome, events=events,
            before_send=(writer,), limiter=limiter, claims=claims, on_store_error=writer.report_trouble,
        )  # fmt: skip
        progress.effective_rate = lookup.limiter.effective_rate
        handle.attach(lookup)
        writer.start()
        renewing = asyncio.create_task(_renew_claims(claims, lookup))
        try:
            report.result = await lookup.run(names)
        finally:
            renewing.cancel()
            await writer.close()
            handle.lookup = None
            with contextlib.suppress(IndexStoreError):  # unreleased claims expire with their lease anyway
                await claims.release_all(sorted(lookup.names.claimed))
        stats.token_refreshes = keeper.refreshes
        if writer.gave_up is not None and report.result.stopped in ("", "interrupted"):
            # the answers are all in hand, but not all in the index: that is not a completed run
            report.result.stopped = "index"
            report.result.message = f"the index could not be written: {writer.gave_up}"
        report.pacing = {
            "cap": settings.concurrency,
            "peak_in_flight": lookup.gate.peak_in_flight,
            "final_target": lookup.gate.target,
            "limiter_margin_s": lookup.limiter.margin_s,
            "limiter_margin_widened": lookup.limiter.widened,
        }
        report.commits, report.write_s = writer.commits, writer.write_s
        report.index_error = writer.gave_up
        report.uncommitted = writer.uncommitted
        report.side_file = str(writer.side_file.path) if writer.side_file is not None else None
        report.eqc_outages, report.index_outages = lookup.outage.outages, writer.outages
        return report
    finally:
        await client.aclose()


async def _renew_claims(claims: DatabaseClaims, lookup: EqcLookup) -> None:
    """Keep this process's claims alive (a third of the lease apart) until the stage ends; names whose claim
    expired anyway (a stall longer than the lease) and went to another process are not asked here."""
    pause = claims.lease_s / 3
    while True:
        await asyncio.sleep(pause)
        try:
            names = lookup.names  # the stage's own, once it runs
            names.lost(await claims.renew(names.waiting))
        except IndexStoreError:
            pause = claims.lease_s / 10  # try again soon: the lease is running out
        else:
            pause = claims.lease_s / 3


_PHASES = {
    "eqc_down": "eqc: waiting for EQC",
    "eqc_back": "eqc",
    "index_unwritable": "eqc: waiting for the index",
    "index_back": "eqc",
    "stopping": "eqc: stopping",
}
"""What the progress display says while the stage waits: no ETA is given then, since none would be true."""


async def _record_rate(store: IndexStore, config: RunConfig, owner: str) -> None:
    """The rate limit this process paces the account by, kept with the shared quota for `worker status`; it
    is only ever shown, so an index that cannot take it now does not hold the stage up."""
    limit = config.rate_limit
    with contextlib.suppress(IndexStoreError):
        await asyncio.to_thread(store.quota.record_rate, config.quota_key, limit.requests, limit.window_s, owner)


def _tracking_phase(progress: RunProgress, events: Events | None) -> Events:
    def emit(kind: str, fields: dict[str, Any]) -> None:
        phase = _PHASES.get(kind)
        if phase is not None and progress.phase != _PHASES["stopping"]:
            progress.phase = phase
        if events is not None:
            events(kind, fields)

    return emit


def _not_asked(names: list[str], message: str, progress: RunProgress) -> StageResult:
    result = StageResult(stopped="token", message=message)
    for name in names:
        result.outcomes[name] = LookupOutcome(name, "skipped", error="not asked: no usable EQC token")
    progress.eqc.skipped += len(names)
    return result
