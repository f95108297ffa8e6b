"""A person's "search EQC": one request at a time, through the same quota, token keeper and claims as runs.

The search runs the EQC stage's own lookup (`EqcLookup`) on one query, with the limiter on the shared
ledger (`DatabaseLedger`), the `TokenKeeper` that refreshes an expired token once, and `DatabaseClaims`,
so a run asking the same name at the same moment is never asked twice. What EQC answers is stored as
payloads (every candidate, under the reviewed name's key) so the candidates are there next time, and its
top hit goes to `base_info` as a run's would (a candidate a person accepts follows when accepted); no
index entry is written: a person decides which candidate, if any, is the company.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from eqc_enrich._policies import OutagePolicy
from eqc_enrich.config import EqcAccess
from eqc_enrich.eqc import EqcClient, SearchHit
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

__all__ = ["EqcSearcher", "SearchAnswer", "seconds_to_next_slot"]

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

    async def _search(self, key: str, query: str) -> SearchAnswer:
        access = self._access
        if self._client is None:
            self._client = access.client()
            self._keeper = TokenKeeper(self._client, access.token_command)
            await self._keeper.prepare(check=False)
            ledger = DatabaseLedger(self._store, access.quota_key, self._owner, spacing_s=access.slot_s)
            self._limiter = SlidingWindowLimiter(access.rate_limit, ledger=ledger)
        assert self._keeper is not None
        assert self._limiter is not None
        if self._keeper.unavailable_reason is not None:
            return SearchAnswer(query, "skipped", message=self._keeper.unavailable_reason)
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
            self._client, settings, stats=EqcStats(), tokens=self._keeper, on_outcome=outcomes.append,
            limiter=self._limiter, gate=ConcurrencyGate(self._limiter.effective_rate, burst=1, ceiling=1),
            claims=claims,
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
