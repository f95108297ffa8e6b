"""Structured events of a run as JSON lines (`--log-json FILE`), for log shippers and schedulers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, TextIO

from eqc_enrich._durations import RateLimit
from eqc_enrich._stats import RunProgress

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


def jsonable(value: Any) -> Any:
    """A value as plain JSON with its real type, so a log shipper can filter on it without parsing reprs.

    Bools, numbers and None stay themselves (a non-finite float becomes None: JSON has no NaN); dataclasses
    become objects; a rate limit becomes the `10/60s` text the options take; durations become seconds;
    paths, dates and anything else become text.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, RateLimit):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    return str(value)
