"""`worker status`: the queue by kind, what the workers did today, their share of the quota, what is next."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eqc_enrich._durations import RateLimit
from eqc_enrich.store import IndexStore, utcnow
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
    quota_share_today: float = 0.0  # names the workers asked today / the quota's requests since midnight
    rate_limit: str = ""
    runs_active: bool = False  # a run or review used the quota within the idle span
    workers: list[dict[str, Any]] = field(default_factory=list)  # sessions still marked running
    legacy: dict[str, int] = field(default_factory=dict)  # enrichment_requests by status (when the table exists)
    details_missing: int = 0  # base_info rows still without a findDepart or findLabels answer

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
            f"quota share today: {self.quota_share_today:.1%} of {self.rate_limit} since midnight (UTC)",
            f"runs using the quota now: {'yes (workers wait)' if self.runs_active else 'no'}",
            f"workers running: {len(self.workers)}",
            f"base_info without details (findDepart, findLabels): {self.details_missing:,}, "
            "filled when nothing else is due",
        ]
        if self.legacy:
            out.append("enrichment_requests: " + ", ".join(f"{k} {n:,}" for k, n in sorted(self.legacy.items())))
        return out


def worker_status(store: IndexStore, options: WorkerOptions, rate_limit: RateLimit, quota_key: str) -> WorkerStatus:
    now = utcnow()
    queue = build_queue(store, options, now=now)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    done = store.worker_log.done_since(midnight)
    asked = sum(n for outcome, n in done["outcome"].items() if outcome != "elsewhere")
    capacity = (now - midnight).total_seconds() * rate_limit.requests / rate_limit.window_s
    idle_s = options.idle_s if options.idle_s is not None else rate_limit.window_s
    running = [
        {"owner": r["run_id"], "started_at": str(r["started_at"])}
        for r in store.recent_runs(50)
        if r["status"] == "running" and str(r["run_id"]).startswith(WORKER_PREFIX)
    ]
    return WorkerStatus(
        due={kind: queue.due.get(kind, 0) for kind in KIND_ORDER},
        waiting={kind: queue.waiting.get(kind, 0) for kind in KIND_ORDER},
        next_due=queue.next_due,
        done_today=done["outcome"],
        done_today_by_kind=done["kind"],
        quota_share_today=round(asked / capacity, 6) if capacity > 0 else 0.0,
        rate_limit=str(rate_limit),
        runs_active=quota_busy(store, quota_key, idle_s) > 0,
        workers=running,
        legacy=store.legacy_requests.counts(),
        details_missing=queue.details_missing if options.fill_details else store.base_info.tallies()["without_details"],
    )
