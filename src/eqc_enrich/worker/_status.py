"""`worker status`: the queue by kind, what the workers did today, their share of the quota, what is next.

The share is measured against the rate limit the runs and workers recorded with the shared quota (they all
pace one account by one limit); only where none is recorded does a limit the caller gives stand in, and
without either the share is unknown rather than a guess from a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eqc_enrich._durations import RateLimit
from eqc_enrich._errors import IndexStoreError
from eqc_enrich.store import IndexStore, utcnow
from eqc_enrich.worker._checks import MATCH_CHECK
from eqc_enrich.worker._ledger import WORKER_PREFIX, quota_busy
from eqc_enrich.worker._options import WorkerOptions
from eqc_enrich.worker._queue import KIND_ORDER, build_queue

__all__ = ["WorkerStatus", "worker_status"]


@dataclass
class WorkerStatus:
    due: dict[str, int] = field(default_factory=dict)  # by kind
    waiting: dict[str, int] = field(default_factory=dict)  # by kind
    next_due: datetime | None = None
    done_today: dict[str, int] = field(default_factory=dict)  # by outcome
    done_today_by_kind: dict[str, int] = field(default_factory=dict)
    quota_share_today: float | None = None  # names the workers asked today / the quota's requests since midnight
    rate_limit: str | None = None  # what the share is of; None: not known
    rate_limit_from: str | None = None  # "recorded" (by the runs and workers on this quota), "given", or None
    rate_limit_unknown: str | None = None  # why there is no share
    runs_active: bool = False  # a run or review used the quota within the idle span
    workers: list[dict[str, Any]] = field(default_factory=list)  # sessions still marked running
    legacy: dict[str, int] = field(default_factory=dict)  # enrichment_requests by status (when the table exists)
    details_missing: int = 0  # base_info rows still without a findDepart or findLabels answer
    match_checks_due: dict[str, int] = field(default_factory=dict)  # local answers still to check, by kind

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "next_due": self.next_due.isoformat(timespec="seconds") if self.next_due else None,
        }

    def lines(self) -> list[str]:
        queue = ", ".join(f"{kind} {self.due.get(kind, 0):,}" for kind in KIND_ORDER)
        later = ", ".join(f"{k} {n:,}" for k, n in self.waiting.items() if n) or "none"
        done = ", ".join(f"{k} {n:,}" for k, n in sorted(self.done_today.items())) or "nothing"
        nxt = self.next_due.isoformat(timespec="seconds") if self.next_due else "nothing waiting"
        out = [
            f"due now: {queue}",
            f"waiting: {later}; next due: {nxt}",
            f"done today: {done}",
            self._share_line(),
            f"runs using the quota now: {'yes (workers wait)' if self.runs_active else 'no'}",
            f"workers running: {len(self.workers)}",
            self._checks_line(),
            f"base_info without details (findDepart, findLabels): {self.details_missing:,}, "
            "filled when nothing else is due",
        ]
        if self.legacy:
            out.append("enrichment_requests: " + ", ".join(f"{k} {n:,}" for k, n in sorted(self.legacy.items())))
        return out

    def _checks_line(self) -> str:
        by_kind = ", ".join(f"{kind} {n:,}" for kind, n in sorted(self.match_checks_due.items()) if n)
        total = sum(self.match_checks_due.values())
        return (
            f"local answers to check with EQC: {total:,}"
            + (f" ({by_kind})" if by_kind else "")
            + (", asked when nothing above is due")
        )

    def _share_line(self) -> str:
        if self.quota_share_today is None:
            return f"quota share today: unknown ({self.rate_limit_unknown})"
        source = "the rate limit the runs recorded" if self.rate_limit_from == "recorded" else "the rate limit given"
        return f"quota share today: {self.quota_share_today:.1%} of {self.rate_limit} ({source}) since midnight (UTC)"


def worker_status(
    store: IndexStore,
    options: WorkerOptions,
    rate_limit: RateLimit | None,
    quota_key: str,
    *,
    default_window_s: float = 60.0,
) -> WorkerStatus:
    """`rate_limit`: the caller's word for the quota's limit, used only when no run or worker recorded one;
    `default_window_s`: how long runs must leave the quota unused to count as idle when no limit is known."""
    now = utcnow()
    queue = build_queue(store, options, now=now)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    done = store.worker_log.done_since(midnight)
    asked = sum(n for outcome, n in done["outcome"].items() if outcome != "elsewhere")
    limit, source, unknown = _quota_limit(store, quota_key, rate_limit)
    share = None
    if limit is not None:
        capacity = (now - midnight).total_seconds() * limit.requests / limit.window_s
        share = round(asked / capacity, 6) if capacity > 0 else 0.0
    window_s = limit.window_s if limit is not None else default_window_s
    idle_s = options.idle_s if options.idle_s is not None else window_s
    running = [
        {"owner": r["run_id"], "started_at": str(r["started_at"])}
        for r in store.recent_runs(50)
        if r["status"] == "running" and str(r["run_id"]).startswith(WORKER_PREFIX)
    ]
    checks = store.shadow.to_verify_counts()
    due = {kind: queue.due.get(kind, 0) for kind in KIND_ORDER}
    due[MATCH_CHECK] = sum(checks.values())  # not in the queue: the worker takes them from the shadow record
    return WorkerStatus(
        due=due,
        waiting={kind: queue.waiting.get(kind, 0) for kind in KIND_ORDER},
        next_due=queue.next_due,
        done_today=done["outcome"],
        done_today_by_kind=done["kind"],
        quota_share_today=share,
        rate_limit=None if limit is None else str(limit),
        rate_limit_from=source,
        rate_limit_unknown=unknown,
        runs_active=quota_busy(store, quota_key, idle_s) > 0,
        workers=running,
        legacy=store.legacy_requests.counts(),
        details_missing=queue.details_missing if options.fill_details else store.base_info.tallies()["without_details"],
        match_checks_due=checks,
    )


def _quota_limit(
    store: IndexStore, quota_key: str, given: RateLimit | None
) -> tuple[RateLimit | None, str | None, str | None]:
    """(the limit, where it came from, why there is none)."""
    problem: str | None = None
    try:
        recorded = store.quota.rate_of(quota_key)
    except IndexStoreError as exc:
        recorded, problem = None, f"the recorded rate limit cannot be read: {exc}"
    if recorded is not None:
        return RateLimit(recorded.requests, recorded.window_s), "recorded", None
    if given is not None:
        return given, "given", None
    if problem is None and not store.quota.has_rates:
        problem = "this index has no eqc_quota_rate table, where runs record their rate limit: run `index init`"
    if problem is None:
        problem = f"no run or worker has recorded the rate limit of quota {quota_key} yet"
    return None, None, f"{problem}; or give --rate-limit"
