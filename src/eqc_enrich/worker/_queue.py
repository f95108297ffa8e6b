"""The worker's queue: what is due now, most valuable first, and when the rest falls due.

Sources, in this order of value: names runs left with temporary ids (not asked), names that failed,
names EQC did not know whose negative TTL ran out, low-confidence answers older than the refresh age, and
the old tools' `enrichment_requests` rows. Within a kind: the most rows affected first, then the assets.
Names a person marked as no company, and names too long for a request, are never queued.

Last of all, `details`: companies in `base_info` whose findDepart or findLabels answer is missing (a run
asks only the search, one call a name). No row waits for them, so they take the quota only when nothing
above is due; a company tried lately waits as a failed name does, or the negative TTL after an answer that
still left something missing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from eqc_enrich.eqc_stage import EQC_SOURCE
from eqc_enrich.keys import is_shortened_key, normalize_name
from eqc_enrich.store import Attempts, IndexStore, LegacyRequest, UnsettledName, aware, utcnow
from eqc_enrich.worker._options import DAY_S, WorkerOptions

__all__ = ["DETAILS", "DETAILS_PREFIX", "KIND_ORDER", "Queue", "QueueItem", "build_queue", "with_legacy"]

KIND_ORDER = (
    "temporary", "failed", "negative_expired", "low_confidence", "legacy_request", "match_check", "details",
)  # fmt: skip
DETAILS = "details"
DETAILS_PREFIX = "details:"
"""The worker log's key of a details fill is this plus the company id: never a name key (those are upper case)."""
_MANY = 100_000


@dataclass(frozen=True, slots=True)
class QueueItem:
    key: str
    kind: str  # one of KIND_ORDER
    rows: int = 0
    assets: float | None = None
    legacy_ids: tuple[int, ...] = ()


@dataclass
class Queue:
    items: list[QueueItem] = field(default_factory=list)  # due now, most valuable first (up to the limit)
    details: list[QueueItem] = field(default_factory=list)  # companies whose details are due (up to the limit)
    details_missing: int = 0  # base_info rows without findDepart or findLabels answer, due or not
    due: Counter[str] = field(default_factory=Counter)  # due now, by kind (all of them)
    waiting: Counter[str] = field(default_factory=Counter)  # open but not due yet, by kind
    next_due: datetime | None = None  # when the first waiting one falls due

    def wait_until(self, when: datetime) -> None:
        if self.next_due is None or when < self.next_due:
            self.next_due = when


def build_queue(
    store: IndexStore,
    options: WorkerOptions,
    *,
    limit: int | None = None,
    now: datetime | None = None,
    every_detail: bool = False,
) -> Queue:
    """What is due now. Details are listed up to a pass's batch unless `every_detail` (a `--once` round, which
    must cover every company due at its start, not the first batch of them)."""
    now = now or utcnow()
    ttl = timedelta(seconds=options.negative_ttl_s)
    refresh = timedelta(seconds=options.refresh_s)
    queue = Queue()
    due: list[QueueItem] = []
    open_names = store.unsettled.open_names()
    temporary = [n for n in open_names if n.kind == "temporary" and _askable(n)]
    weak = [n for n in open_names if n.kind == "low_confidence"]
    asked = store.worker_log.negatives_asked(n.lookup_key for n in temporary)
    tries = store.worker_log.attempts([n.lookup_key for n in temporary + weak])
    for name in temporary:
        key = name.lookup_key
        negative = asked.get(key)
        if negative is not None and negative + ttl > now:
            queue.waiting["negative_expired"] += 1
            queue.wait_until(negative + ttl)
            continue
        later = tried_recently(tries.get(key), options, now)
        if later is not None:
            queue.waiting[later[0]] += 1
            queue.wait_until(later[1])
            continue
        kind = {"failed": "failed", "not_found": "negative_expired"}.get(name.status, "temporary")
        due.append(QueueItem(key, kind, name.rows, name.assets))
    for name in weak:
        stamps = [aware(name.last_seen_at)] if name.last_seen_at is not None else []
        attempt = tries.get(name.lookup_key)
        if attempt is not None:
            stamps.append(attempt.last_at)
        last = max(stamps, default=None)
        if last is not None and last + refresh > now:
            queue.waiting["low_confidence"] += 1
            queue.wait_until(last + refresh)
            continue
        due.append(QueueItem(name.lookup_key, "low_confidence", name.rows, name.assets))
    seen = {item.key for item in due} | {n.lookup_key for n in open_names}
    _add_index_sources(store, options, queue, due, seen, now)
    legacy = store.legacy_requests
    queue.due["legacy_request"] = legacy.due_count()
    waiting_legacy = legacy.counts().get("pending", 0) - queue.due["legacy_request"]
    if waiting_legacy > 0:
        queue.waiting["legacy_request"] = waiting_legacy
    retry = legacy.next_retry()
    if retry is not None and retry > now:
        queue.wait_until(retry)
    due.sort(key=lambda i: (KIND_ORDER.index(i.kind), -i.rows, -(i.assets or 0.0), i.key))
    for item in due:
        queue.due[item.kind] += 1
    queue.items = due if limit is None else due[:limit]
    if options.fill_details:
        _add_details(store, options, queue, None if every_detail else limit or options.batch, now)
    return queue


def _add_details(store: IndexStore, options: WorkerOptions, queue: Queue, limit: int | None, now: datetime) -> None:
    """Companies lacking details, those the worker did not try too lately, up to `limit` (None: all of them)."""
    queue.details_missing = store.base_info.tallies()["without_details"]
    if not queue.details_missing:
        return
    limit = queue.details_missing if limit is None else limit
    missing = store.base_info.missing_details(limit=max(limit * 4, limit + 100))
    tries = store.worker_log.attempts(DETAILS_PREFIX + company_id for company_id in missing)
    ttl = timedelta(seconds=options.negative_ttl_s)
    for company_id in missing:
        attempt = tries.get(DETAILS_PREFIX + company_id)
        later = tried_recently(attempt, options, now) if attempt is not None and attempt.failures else None
        when = later[1] if later is not None else None
        if when is None and attempt is not None and not attempt.failures and attempt.last_at + ttl > now:
            when = attempt.last_at + ttl  # EQC answered, and still left something missing: ask after the TTL
        if when is not None:
            queue.waiting[DETAILS] += 1
            queue.wait_until(when)
        elif len(queue.details) < limit:
            queue.details.append(QueueItem(company_id, DETAILS))
    queue.due[DETAILS] = max(0, queue.details_missing - queue.waiting[DETAILS])


def _add_index_sources(
    store: IndexStore, options: WorkerOptions, queue: Queue, due: list[QueueItem], seen: set[str], now: datetime
) -> None:
    """Expired negatives and stale low-confidence entries that no open name stands for already."""
    ttl_cut = now - timedelta(seconds=options.negative_ttl_s)
    refresh_cut = now - timedelta(seconds=options.refresh_s)
    expired = [key for key, _ in store.worker_log.expired_negatives(ttl_cut, limit=_MANY) if key not in seen]
    expired = [key for key in expired if not is_shortened_key(key)]
    decided = store.unsettled.not_companies(expired) if expired else set()
    found = [QueueItem(key, "negative_expired") for key in expired if key not in decided]
    seen.update(expired)
    stale = store.worker_log.stale_low_confidence(
        refresh_cut, below=options.confidence.refresh_below, source=EQC_SOURCE, limit=_MANY
    )
    found += [QueueItem(key, "low_confidence") for key, _, _ in stale if key not in seen]
    # a name the worker tried lately waits as its try says (a failure backs off, a weak answer waits to refresh)
    tries = store.worker_log.attempts(item.key for item in found)
    for item in found:
        later = tried_recently(tries.get(item.key), options, now)
        if later is None:
            due.append(item)
        else:
            queue.waiting[later[0]] += 1
            queue.wait_until(later[1])
    first = store.worker_log.first_negative_expiry(ttl_cut)
    if first is not None:
        queue.wait_until(first + timedelta(seconds=options.negative_ttl_s))
    refresh = store.worker_log.first_low_confidence_refresh(
        refresh_cut, below=options.confidence.refresh_below, source=EQC_SOURCE
    )
    if refresh is not None:
        queue.wait_until(refresh + timedelta(seconds=options.refresh_s))


def with_legacy(items: list[QueueItem], taken: list[LegacyRequest]) -> tuple[list[QueueItem], dict[int, str]]:
    """The pass's items plus the old queue's rows taken for it (by our key of their raw name); returns the
    rows whose name cannot be asked at all (no usable key) with why."""
    by_key = {item.key: item for item in items}
    unusable: dict[int, str] = {}
    extra: dict[str, list[int]] = {}
    for row in taken:
        key = normalize_name(row.raw_name)
        if not key or is_shortened_key(key):
            unusable[row.id] = "no usable name for an EQC request"
            continue
        extra.setdefault(key, []).append(row.id)
    result = list(items)
    for key, ids in extra.items():
        if key in by_key:
            old = by_key[key]
            result[result.index(old)] = QueueItem(old.key, old.kind, old.rows, old.assets, (*old.legacy_ids, *ids))
        else:
            result.append(QueueItem(key, "legacy_request", legacy_ids=tuple(ids)))
    return result, unusable


def tried_recently(attempt: Attempts | None, options: WorkerOptions, now: datetime) -> tuple[str, datetime] | None:
    """(the kind it waits as, when it falls due) for a name the worker tried too lately to try again; None
    when it is due. A failure backs off (`retry_failed_s`, doubled with each failure, at most a day and the
    TTL); an answer too weak to settle the name waits the refresh age, as any low-confidence answer does."""
    if attempt is None:
        return None
    if attempt.failures:
        backoff = min(options.retry_failed_s * 2 ** min(attempt.failures - 1, 20), options.negative_ttl_s, DAY_S)
        if attempt.last_at + timedelta(seconds=backoff) > now:
            return "failed", attempt.last_at + timedelta(seconds=backoff)
    if attempt.found and attempt.last_at + timedelta(seconds=options.refresh_s) > now:
        return "low_confidence", attempt.last_at + timedelta(seconds=options.refresh_s)
    return None


def _askable(name: UnsettledName) -> bool:
    return name.status != "too_long" and not is_shortened_key(name.lookup_key)
