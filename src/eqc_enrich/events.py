"""Structured events of a run as JSON lines (`--log-json FILE`), for log shippers and schedulers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from eqc_enrich._jsonable import jsonable
from eqc_enrich.progress import RunProgress

__all__ = ["EventLog", "EventSink", "jsonable", "progress_fields"]

EventSink = Callable[[str, dict[str, Any]], None]


class EventLog:
    """Appends one JSON object per line, flushed at once, so a crash never leaves a partial record behind."""

    def __init__(self, path: Path, progress: RunProgress, *, interval_s: float = 30.0) -> None:
        self._path = path
        self._progress = progress
        self._interval_s = interval_s
        self._handle: TextIO | None = None
        self._task: asyncio.Task[None] | None = None

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        if self._handle is None:
            return
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": kind, **fields}
        self._handle.write(json.dumps(jsonable(record), ensure_ascii=False, allow_nan=False) + "\n")
        self._handle.flush()

    def start(self, **fields: Any) -> None:
        self._handle = self._path.open("a", encoding="utf-8")
        self("start", fields)
        self._task = asyncio.create_task(self._periodic())

    async def finish(self, **fields: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self("finish", fields)
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self("progress", progress_fields(self._progress))


def progress_fields(progress: RunProgress) -> dict[str, Any]:
    """The statistics of one interval: the same facts the progress line shows."""
    stats = progress.eqc
    return {
        "phase": progress.phase,
        "elapsed_s": round(time.monotonic() - progress.started_at, 3),
        "rows": progress.rows,
        "distinct_names": progress.distinct_names,
        "answered_before_eqc": progress.answered_before_eqc,
        "answered_locally": progress.answered_locally,
        "names_for_eqc": progress.names_for_eqc,
        "names_done": stats.names_done,
        "found": stats.found,
        "not_found": stats.not_found,
        "failed": stats.failed,
        "api_calls": stats.api_calls,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
        "in_flight": stats.in_flight,
    }
