"""The standing worker: the quota works all month, settling the names runs leave open, always yielding to runs.

    from eqc_enrich.worker import WorkerOptions, run_worker
    report = run_worker(WorkerOptions(db="postgresql+psycopg://etl@db/dw", db_schema="enterprise"), once=True)

Layout: `_options` (the knobs), `_queue` (what is due, most valuable first), `_ledger` (quota slots that
yield to runs), `_loop` (passes of the EQC stage), `_status` (`worker status`), `_remap` (`index remap`).
"""

from eqc_enrich.worker._ledger import WORKER_PREFIX, YieldingLedger, quota_busy
from eqc_enrich.worker._loop import WorkerControl, WorkerReport, run_worker, run_worker_async
from eqc_enrich.worker._options import WorkerOptions
from eqc_enrich.worker._queue import KIND_ORDER, Queue, QueueItem, build_queue
from eqc_enrich.worker._remap import remap_frame, write_remap
from eqc_enrich.worker._status import WorkerStatus, worker_status

__all__ = [
    "KIND_ORDER",
    "WORKER_PREFIX",
    "Queue",
    "QueueItem",
    "WorkerControl",
    "WorkerOptions",
    "WorkerReport",
    "WorkerStatus",
    "YieldingLedger",
    "build_queue",
    "quota_busy",
    "remap_frame",
    "run_worker",
    "run_worker_async",
    "worker_status",
    "write_remap",
]
