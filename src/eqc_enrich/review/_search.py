"""A person's "search EQC": one request at a time, through the same quota, token keeper and claims as runs.

The search runs the EQC stage's own lookup (`EqcLookup`) on one query, with the limiter on the shared
ledger (`DatabaseLedger`), the `TokenKeeper` that refreshes an expired token once, and `DatabaseClaims`,
so a run asking the same name at the same moment is never asked twice. What EQC answers is stored as
payloads (every candidate, under the reviewed name's key) so the candidates are there next time, and its
top hit goes to `base_info` as a run's would (a candidate a person accepts follows when accepted); no
index entry is written: a person decides which candidate, if any, is the company.

Checking a typed id is one findDepart call through the same limiter and token keeper (a token EQC calls
expired is refreshed once and the call sent again); its registry record is kept as the company's payload.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from eqc_enrich._policies import OutagePolicy
from eqc_enrich.config import EqcAccess
from eqc_enrich.eqc import BusinessInfo, EqcClient, EqcError, RateLimitedError, SearchHit, TokenExpiredError
from eqc_enrich.eqc_stage import (
    ConcurrencyGate,
    DatabaseClaims,
    DatabaseLedger,
    EqcLookup,
    EqcStats,
    LookupOutcome,
    LookupSettings,
    SlidingWindowLimiter,
    TokenKeeper,
    company_record,
    default_margin,
    next_send,
)
from eqc_enrich.store import MAX_KEY, IndexStore, Payload, WriteBatch, utcnow

__all__ = ["EqcSearcher", "IdCheck", "SearchAnswer", "seconds_to_next_slot"]

_SEARCH_LEASE_S = 600.0
"""A search's claim is not renewed while it waits for a slot and its answer: it must outlive the slowest."""


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    """What one search came back with: the candidates, or why there are none."""

    query: str
    status: str  # found, not_found, failed, skipped, elsewhere, busy
    hits: tuple[SearchHit, ...] = ()
    message: str = ""
    settled_id: str | None = None  # `elsewhere`: the id another process found meanwhile

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "status": self.status,
            "message": self.message,
            "settled_id": self.settled_id,
            "hits": [candidate_view(hit.raw) for hit in self.hits],
        }


@dataclass(frozen=True, slots=True)
class IdCheck:
    """What EQC said of one typed id: found (with the company's name), unknown, or why it was not asked."""

    company_id: str
    status: str  # found, unknown, failed, skipped
    company_name: str = ""
    registered_status: str = ""
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "company_id": self.company_id, "status": self.status, "company_name": self.company_name,
            "registered_status": self.registered_status, "message": self.message,
        }  # fmt: skip


def candidate_view(item: dict[str, Any], depart: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields a person compares, from a search item (and the registry record, when fetched)."""
    hit = SearchHit.from_item(item)
    business = (depart or {}).get("businessInfodto") or {}
    status = item.get("registeredStatus") or item.get("registered_status") or business.get("registered_status")
    return {
        "company_id": hit.company_id if hit else str(item.get("companyId") or ""),
        "full_name": hit.full_name if hit else str(item.get("companyFullName") or ""),
        "match_type": hit.match_type if hit else str(item.get("type") or ""),
        "confidence": hit.confidence if hit else None,
        "unite_code": (hit.unite_code if hit else "") or str(business.get("credit_code") or ""),
        "registered_status": str(status or ""),
        "former_names": list(hit.former_names) if hit else [],
    }


def seconds_to_next_slot(store: IndexStore, access: EqcAccess) -> float:
    """How long until the shared quota has a slot free (0: now), read from the ledger without reserving."""
    limit = access.rate_limit
    span = limit.window_s + default_margin(limit)
    slots = [at for _, at in store.quota.slots_of(access.quota_key)][-limit.requests :]
    now = store.quota.clock()
    slot = next_send(slots, store.quota.paused_until(access.quota_key), now, requests=limit.requests, span_s=span)
    return max(0.0, slot - now)


class EqcSearcher:
    """One per page server: a client, a token keeper and a limiter shared by every search it makes."""

    def __init__(self, store: IndexStore, access: EqcAccess) -> None:
        self._store = store
        self._access = access
        self._owner = f"review-{uuid.uuid4().hex[:12]}"
        self._client: EqcClient | None = None
        self._keeper: TokenKeeper | None = None
        self._limiter: SlidingWindowLimiter | None = None
        self._lock: asyncio.Lock | None = None
        self.searches = 0

    async def search(self, key: str, query: str) -> SearchAnswer:
        """Ask EQC `query` for the reviewed name `key`; one search at a time (a second one waits its turn)."""
        query = " ".join(query.split())[:MAX_KEY]
        if not query:
            return SearchAnswer(query, "failed", message="empty query")
        if self._lock is None:
            self._lock = asyncio.Lock()  # made on the server's own event loop
        async with self._lock:
            return await self._search(key, query)

    async def confirm(self, company_id: str) -> IdCheck:
        """One findDepart call for a typed id (two when the token is refreshed on the way): the company's name."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            client, keeper, limiter = await self._ready()
            for _ in range(2):
                if keeper.unavailable_reason is not None:
                    return IdCheck(company_id, "skipped", message=keeper.unavailable_reason)
                await keeper.ready()
                generation = keeper.generation
                await limiter.acquire()
                try:
                    info = await client.find_depart(company_id)
                except TokenExpiredError as exc:
                    if await keeper.refresh(generation, exc):
                        continue
                    return IdCheck(company_id, "skipped", message=keeper.unavailable_reason or str(exc))
                except RateLimitedError as exc:
                    limiter.pause_for(exc.retry_after_s or limiter.span_s)  # the whole account waits, runs too
                    return IdCheck(company_id, "failed", message=f"{exc}: try again in a moment")
                except EqcError as exc:
                    return IdCheck(company_id, "failed", message=str(exc))
                keeper.confirm(generation)
                self.searches += 1
                return await asyncio.to_thread(self._keep_record, company_id, info)
            return IdCheck(company_id, "failed", message="EQC refused the token twice")

    def _keep_record(self, company_id: str, info: BusinessInfo | None) -> IdCheck:
        if info is None or not info.company_name:
            return IdCheck(company_id, "unknown")
        self._store.write(WriteBatch(payloads=[Payload(company_id=company_id, depart_json=info.raw)]))
        return IdCheck(company_id, "found", info.company_name, info.registered_status)

    async def _ready(self) -> tuple[EqcClient, TokenKeeper, SlidingWindowLimiter]:
        """The client, token keeper and limiter, made on first use (on the server's own event loop)."""
        access = self._access
        if self._client is None:
            self._client = access.client()
            self._keeper = TokenKeeper(self._client, access.token_command)
            await self._keeper.prepare(check=False)
            ledger = DatabaseLedger(self._store, access.quota_key, self._owner, spacing_s=access.slot_s, ahead=False)
            self._limiter = SlidingWindowLimiter(access.rate_limit, ledger=ledger)
        assert self._keeper is not None
        assert self._limiter is not None
        return self._client, self._keeper, self._limiter

    async def _search(self, key: str, query: str) -> SearchAnswer:
        access = self._access
        client, keeper, limiter = await self._ready()
        if keeper.unavailable_reason is not None:
            return SearchAnswer(query, "skipped", message=keeper.unavailable_reason)
        outcomes: list[LookupOutcome] = []
        started = utcnow()  # only answers written from now on count as "another process answered it"
        claims = DatabaseClaims(
            self._store,
            self._owner,
            lease_s=max(access.claim_lease_s, _SEARCH_LEASE_S),
            entries_since=started,
            negatives_since=started,
        )
        settings = LookupSettings(
            rate_limit=access.rate_limit, retries=access.retries, concurrency=1, timeout_s=access.timeout_s,
            outage=OutagePolicy(wait_s=0.0),  # a person waits for an answer: an EQC that is away is said at once
        )  # fmt: skip
        lookup = EqcLookup(
            client, settings, stats=EqcStats(), tokens=keeper, on_outcome=outcomes.append, limiter=limiter,
            gate=ConcurrencyGate(limiter.effective_rate, burst=1, ceiling=1), claims=claims,
        )  # fmt: skip
        try:
            result = await lookup.run([query])
        finally:
            await claims.release_all([query])
        self.searches += 1
        outcome = result.outcomes.get(query)
        if outcome is None:
            return SearchAnswer(query, "failed", message=result.message or "not asked")
        return await asyncio.to_thread(self._keep, key, outcome, result.message)

    def _keep(self, key: str, outcome: LookupOutcome, message: str | None) -> SearchAnswer:
        """Store every candidate as a payload under the reviewed name's key: the page shows them next time."""
        hits = outcome.search.hits if outcome.search is not None else ()
        if hits:
            self._store.write(
                WriteBatch(
                    payloads=[Payload(company_id=h.company_id, search_key=key, search_json=h.raw) for h in hits],
                    companies=[company_record(outcome.name, outcome.search, hits[0])],
                )
            )
        text = outcome.error or message or ""
        if outcome.status == "elsewhere":
            text = "another process answered this name meanwhile" + (
                f": {outcome.settled_id}" if outcome.settled_id else " (EQC does not know it)"
            )
        return SearchAnswer(outcome.name, outcome.status, hits, text, outcome.settled_id)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
