"""The EQC stage as one call: ask EQC the names nothing else answered, and commit each answer as it lands.

Values in, a value out: the names, the index, the `StageConfig` and the caller's hooks go in; an
`EqcReport` comes out, carrying the outcomes, how the stage ended and every count and timing the run's
summary needs. The live counters (`EqcStats`) belong to the stage; a display may be handed them to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from eqc_enrich._errors import IndexStoreError
from eqc_enrich.config import EqcAccess, StageConfig
from eqc_enrich.eqc_stage._lookup import Ask, EqcLookup, LookupOutcome, LookupSettings, StageResult, StopReason
from eqc_enrich.eqc_stage._pacing import SendLedger, SlidingWindowLimiter
from eqc_enrich.eqc_stage._pending import PendingFile
from eqc_enrich.eqc_stage._shared import DatabaseClaims, DatabaseLedger
from eqc_enrich.eqc_stage._stats import EqcStats
from eqc_enrich.eqc_stage._tokens import LoginWatch, TokenKeeper
from eqc_enrich.eqc_stage._writeback import IndexWriter
from eqc_enrich.network import RouteError
from eqc_enrich.store import IndexStore

__all__ = ["EqcReport", "EqcTimings", "StopHandle", "lookup_settings", "run_eqc_stage"]

Events = Callable[[str, dict[str, Any]], None]
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class EqcTimings:
    """Where the stage's time went. `limiter_wait_s` and `network_s` are summed over concurrent requests;
    `wall_s` is the stage's own wall time."""

    wall_s: float = 0.0
    limiter_wait_s: float = 0.0
    network_s: float = 0.0
    parse_s: float = 0.0
    write_s: float = 0.0  # the commits of answers, which overlap the requests
    latency_s: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: _EMPTY)  # per endpoint
    fastest_s: float | None = None  # the fastest successful call: the strict lower bound's latency


@dataclass(frozen=True, slots=True)
class EqcReport:
    """What the EQC stage did. Names: `names_planned` = asked + `not_asked` + `answered_elsewhere`, and
    asked = `found` + `not_found` + `failed`. Requests: `api_calls` = `accepted_requests` + 429s and
    refused tokens + `unanswered_requests`."""

    outcomes: Mapping[str, LookupOutcome] = field(default_factory=lambda: _EMPTY)
    stopped: StopReason = ""  # why it stopped early ("" when it asked everything it set out to)
    message: str | None = None  # that reason, one line
    names_planned: int = 0
    found: int = 0
    not_found: int = 0
    failed: int = 0
    not_asked: int = 0
    answered_elsewhere: int = 0  # another process answered them while this one waited for them
    calls: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # attempts per endpoint
    accepted_requests: int = 0  # attempts EQC took into its quota window
    unanswered_requests: int = 0  # attempts that got no HTTP answer
    retries: int = 0
    rate_limited: int = 0  # answers of 429
    token_refreshes: int = 0
    eqc_outages: int = 0
    index_outages: int = 0
    index_error: str | None = None  # why answers could not be committed (then they are in `side_file`)
    side_file: str | None = None
    uncommitted: int = 0
    commits: int = 0
    pacing: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    timings: EqcTimings = field(default_factory=EqcTimings)

    @property
    def names_asked(self) -> int:
        return self.found + self.not_found + self.failed

    @property
    def api_calls(self) -> int:
        return sum(self.calls.values())

    def failed_names(self) -> list[LookupOutcome]:
        return [outcome for outcome in self.outcomes.values() if outcome.status == "failed"]


class StopHandle:
    """What a run's or a worker's control reaches: the lookup of the stage running now, if any."""

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


def lookup_settings(config: StageConfig) -> LookupSettings:
    access = config.access
    return LookupSettings(
        rate_limit=access.rate_limit,
        retries=access.retries,
        concurrency=config.concurrency,
        details=config.details,
        margin_s=config.margin_s,
        timeout_s=access.timeout_s,
        grace_s=config.grace_s,
        outage=config.outage,
    )


async def run_eqc_stage(
    names: list[str],
    *,
    store: IndexStore,
    config: StageConfig,
    side_file: PendingFile,
    owner: str,
    entries_since: datetime | None,
    negatives_since: datetime,
    handle: StopHandle | None = None,
    check_token: bool = False,
    events: Events | None = None,
    ledger: SendLedger | None = None,
    stats: EqcStats | None = None,
    on_outcome: Callable[[LookupOutcome], None] | None = None,
    ask: Ask = "search",
) -> EqcReport:
    """Ask `names` (most valuable first) and commit each answer.

    `ledger`: where send slots are reserved (default: the shared quota in the index, as a run takes them;
    the standing worker passes one that yields to runs). `stats`: the live counters to write, when the
    caller wants to show them while the stage runs. `on_outcome` hears each name as it is settled.
    `ask="details"`: `names` are company ids whose findDepart and findLabels answers go to `base_info`
    (the standing worker's last kind of work); no claims are taken for them, as no name is answered.
    """
    stats = stats if stats is not None else EqcStats()
    handle = handle or StopHandle()
    access = config.access
    started = time.monotonic()
    try:
        client = access.client(observer=stats.record_call, on_fallover=_fallover_events(events))
    except RouteError as exc:  # no way to EQC can be worked out (the PAC file): EQC is out of reach
        return _report(names, _not_asked(names, str(exc), stats, stopped="eqc_down"), stats, started=started)
    try:
        settings = lookup_settings(config)
        shared = DatabaseLedger(store, access.quota_key, owner, spacing_s=access.slot_s) if ledger is None else None
        limiter = SlidingWindowLimiter(
            settings.rate_limit,
            margin_s=settings.margin_s,
            ledger=ledger or shared,
            lookahead=4 if ledger is None else 1,
        )
        keeper = TokenKeeper(
            client, access.token_command, events=events, admit=limiter.acquire, stopped=lambda: handle.stopped,
            watch=LoginWatch(access.env_file, access.token_wait_s, access.login_command()),
        )  # fmt: skip
        if not await keeper.prepare(check=check_token):
            if shared is not None:
                await shared.settle()  # a token check's reservation may still be under way
            if handle.stopped:
                return _report(names, _not_asked(names, "", stats, stopped="interrupted"), stats, started=started)
            result = _not_asked(names, keeper.unavailable_reason or "", stats)
            return _report(names, result, stats, started=started)
        if names:
            await _record_rate(store, access, owner)

        lookup: EqcLookup | None = None

        def settled(outcome: LookupOutcome) -> None:
            writer.add(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

        def index_gave_up(error: str) -> None:
            if lookup is not None:
                lookup.stop("index", f"the index could not be written: {error}")

        claims = (
            DatabaseClaims(
                store, owner, lease_s=access.claim_lease_s, entries_since=entries_since, negatives_since=negatives_since
            )
            if ask == "search"
            else None
        )
        writer = IndexWriter(
            store, interval_s=config.commit_interval_s, side_file=side_file, policy=config.index_wait,
            confidence=config.confidence, events=events, on_give_up=index_gave_up,
            owner=owner if claims is not None else None,  # details take no claims, so release none
        )  # fmt: skip
        lookup = EqcLookup(
            client, settings, stats=stats, tokens=keeper, on_outcome=settled, events=events,
            before_send=(writer,), limiter=limiter, claims=claims, on_store_error=writer.report_trouble,
        )  # fmt: skip
        stats.effective_rate = lookup.limiter.effective_rate
        handle.attach(lookup)
        writer.start()
        renewing = asyncio.create_task(_renew_claims(claims, lookup)) if claims is not None else None
        try:
            result = await lookup.run(names, ask=ask)
        finally:
            if renewing is not None:
                renewing.cancel()
            if shared is not None:
                await shared.settle()
            await writer.close()
            handle.lookup = None
            with contextlib.suppress(IndexStoreError):  # unreleased claims expire with their lease anyway
                if claims is not None:
                    await claims.release_all(sorted(lookup.names.claimed))
        stats.token_refreshes = keeper.refreshes
        if writer.gave_up is not None and result.stopped in ("", "interrupted"):
            # the answers are all in hand, but not all in the index: that is not a completed stage
            result.stopped = "index"
            result.message = f"the index could not be written: {writer.gave_up}"
        pacing = {
            "cap": settings.concurrency,
            "peak_in_flight": lookup.gate.peak_in_flight,
            "final_target": lookup.gate.target,
            "limiter_margin_s": round(lookup.limiter.margin_s, 6),
            "limiter_margin_floor_s": round(lookup.limiter.floor_s, 6),
            "send_lateness_spread_s": round(lookup.limiter.timing.spread(), 6),
            "limiter_margin_widened": lookup.limiter.widened,
            "slots_dropped": shared.dropped if shared is not None else 0,
        }
        return _report(
            names, result, stats, started=started, writer=writer, pacing=pacing, eqc_outages=lookup.outage.outages
        )
    finally:
        await client.aclose()


def _report(
    names: list[str],
    result: StageResult,
    stats: EqcStats,
    *,
    started: float,
    writer: IndexWriter | None = None,
    pacing: Mapping[str, Any] | None = None,
    eqc_outages: int = 0,
) -> EqcReport:
    """The stage's counts, from its own counters and writer: the one source of the run's EQC figures."""
    latencies = [value for values in stats.latencies.values() for value in values]
    side = writer.side_file if writer is not None else None
    return EqcReport(
        outcomes=MappingProxyType(dict(result.outcomes)),
        stopped=result.stopped,
        message=result.message,
        names_planned=len(names),
        found=stats.found,
        not_found=stats.not_found,
        failed=stats.failed,
        not_asked=stats.skipped,
        answered_elsewhere=stats.elsewhere,
        calls=MappingProxyType({endpoint: int(n) for endpoint, n in sorted(stats.calls.items())}),
        accepted_requests=stats.accepted_requests,
        unanswered_requests=stats.unanswered,
        retries=stats.retries,
        rate_limited=stats.rate_limited,
        token_refreshes=stats.token_refreshes,
        eqc_outages=eqc_outages,
        index_outages=writer.outages if writer is not None else 0,
        index_error=writer.gave_up if writer is not None else None,
        side_file=str(side.path) if side is not None else None,
        uncommitted=writer.uncommitted if writer is not None else 0,
        commits=writer.commits if writer is not None else 0,
        pacing=MappingProxyType(dict(pacing or {})),
        timings=EqcTimings(
            wall_s=time.monotonic() - started,
            limiter_wait_s=stats.limiter_wait_s,
            network_s=stats.network_s,
            parse_s=stats.parse_s,
            write_s=writer.write_s if writer is not None else 0.0,
            latency_s=MappingProxyType(stats.latency_summary()),
            fastest_s=min(latencies, default=None),
        ),
    )


async def _record_rate(store: IndexStore, access: EqcAccess, owner: str) -> None:
    """The rate limit this process paces the account by, kept with the shared quota for `worker status`; it
    is only ever shown, so an index that cannot take it now does not hold the stage up."""
    limit = access.rate_limit
    with contextlib.suppress(IndexStoreError):
        await asyncio.to_thread(store.quota.record_rate, access.quota_key, limit.requests, limit.window_s, owner)


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


def _fallover_events(events: Events | None) -> Callable[[str, str], None]:
    def fell_over(failed: str, following: str) -> None:
        if events is not None:
            events("proxy_fallover", {"failed": failed, "next": following})

    return fell_over


def _not_asked(names: list[str], message: str, stats: EqcStats, stopped: StopReason = "token") -> StageResult:
    result = StageResult(stopped=stopped, message=message)
    why = {"token": "not asked: no usable EQC token", "interrupted": "not asked: the run was interrupted"}.get(
        stopped, "not asked: EQC unavailable"
    )
    for name in names:
        result.outcomes[name] = LookupOutcome(name, "skipped", error=why)
    stats.skipped += len(names)
    return result
