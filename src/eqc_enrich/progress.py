"""Showing a long run: a live display on a terminal, one plain line at an interval elsewhere (CI, cron, Dagster).

The ETA comes from the quota model, not from the rate of rows (cache hits make that meaningless): the calls
still to make over the rate the limiter admits, plus the drain of the last requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from eqc_enrich._durations import format_duration
from eqc_enrich.eqc_stage import EqcStats

__all__ = ["ProgressDisplay", "RunProgress", "eta_seconds", "status_line", "tracking_phase"]

_MIN_OBSERVED_S = 5.0  # before this many seconds of EQC traffic, the measured rate is noise


@dataclass
class RunProgress:
    """Where a run stands, for a live display to poll. The run writes it and displays read it; nothing is
    read back from it (the summary is built from what the stages return)."""

    phase: str = "starting"
    rows: int = 0
    rows_resolved: int = 0
    distinct_names: int = 0
    answered_before_eqc: int = 0
    answered_locally: int = 0  # names the local match stage answered (the index knew them spelt otherwise)
    local_match_s: float | None = None  # how long that stage took (None until it ran)
    local_match_mode: str = ""
    names_for_eqc: int = 0
    calls_per_name: int = 1
    latency_hint_s: float | None = None
    local_left_s: float = 0.0  # the local work after the EQC stage (resolving the rows, writing), estimated
    local_from: float | None = None  # when that work began
    started_at: float = field(default_factory=time.monotonic)
    eqc: EqcStats = field(default_factory=EqcStats)  # the EQC stage's own live counters, handed over to read

    @property
    def effective_rate(self) -> float:
        """Requests per second the stage's limiter admits when saturated (0 before the stage runs)."""
        return self.eqc.effective_rate


_PHASES = {
    "eqc_down": "eqc: waiting for EQC",
    "eqc_back": "eqc",
    "index_unwritable": "eqc: waiting for the index",
    "index_back": "eqc",
    "stopping": "eqc: stopping",
}
"""What the display says while the EQC stage waits: no ETA is given then, since none would be true."""


def tracking_phase(
    progress: RunProgress, events: Callable[[str, dict[str, Any]], None] | None
) -> Callable[[str, dict[str, Any]], None]:
    """The stage's events, passed on, with the display's phase following the waits they announce."""

    def emit(kind: str, fields: dict[str, Any]) -> None:
        phase = _PHASES.get(kind)
        if phase is not None and progress.phase != _PHASES["stopping"]:
            progress.phase = phase
        if events is not None:
            events(kind, fields)

    return emit


def eta_seconds(progress: RunProgress, now: float | None = None) -> float | None:
    """Seconds until the run ends: the EQC calls left at the rate the quota admits, the drain of the last
    requests in flight, and the local work after them (resolving the rows, writing the outputs, measured on a
    sample). None while nothing true can be said (before the EQC stage starts, while it waits for EQC)."""
    now = time.monotonic() if now is None else now
    if progress.phase == "done":
        return None
    if progress.local_from is not None:
        return max(0.0, progress.local_left_s - (now - progress.local_from))
    eqc = _eqc_left(progress, now)
    return None if eqc is None else eqc + progress.local_left_s


def _eqc_left(progress: RunProgress, now: float) -> float | None:
    stats = progress.eqc
    if progress.phase != "eqc" or stats.started_at is None or progress.effective_rate <= 0:
        return None
    remaining_names = max(0, progress.names_for_eqc - stats.names_done - stats.elsewhere)
    if remaining_names == 0:
        return 0.0
    return remaining_names * _calls_per_name(progress) / _rate(progress, now) + _mean_latency(progress)


def _calls_per_name(progress: RunProgress) -> float:
    """Calls per finished name so far (retries included); the nominal k until there is data."""
    stats = progress.eqc
    done = stats.names_done
    if done < 10:
        return float(progress.calls_per_name)
    return max(float(progress.calls_per_name), stats.api_calls / done)


def _rate(progress: RunProgress, now: float) -> float:
    """The limiter's rate, unless something else (latency, a cap, 429s) has held the run below it."""
    stats = progress.eqc
    model = progress.effective_rate
    elapsed = now - (stats.started_at or now)
    if elapsed < _MIN_OBSERVED_S or stats.api_calls < 20:
        return model
    observed = stats.api_calls / elapsed
    return min(model, observed) if observed < 0.9 * model else model


def _mean_latency(progress: RunProgress) -> float:
    samples = [value for values in progress.eqc.latencies.values() for value in values[-200:]]
    if samples:
        return sum(samples) / len(samples)
    return progress.latency_hint_s or 0.0


def status_line(progress: RunProgress, now: float | None = None) -> str:
    """Every fact of the live display in one line, for logs."""
    now = time.monotonic() if now is None else now
    stats = progress.eqc
    eta = eta_seconds(progress, now)
    parts = [
        f"[{progress.phase}]",
        f"rows {progress.rows_resolved:,}/{progress.rows:,}",
        f"names {progress.distinct_names:,} ({progress.answered_before_eqc:,} answered before EQC)",
        *([_local_line(progress)] if progress.local_match_s is not None else []),
        f"eqc {stats.names_done + stats.elsewhere:,}/{progress.names_for_eqc:,}"
        + (f" ({stats.elsewhere:,} found in the index meanwhile)" if stats.elsewhere else ""),
        f"found {stats.found:,} not-found {stats.not_found:,} failed {stats.failed:,}",
        f"retries {stats.retries} 429s {stats.rate_limited}",
        f"rate {stats.recent_rate(_rate_window(progress), now):.3g}/s of {progress.effective_rate:.3g}/s",
        f"in-flight {stats.in_flight}",
        f"elapsed {format_duration(now - progress.started_at)}",
        f"eta {format_duration(eta) if eta is not None else '-'}",
    ]
    return " | ".join(parts)


def _local_line(progress: RunProgress) -> str:
    """How many names the local match stage answered, and how long it took."""
    return (
        f"local match {progress.answered_locally:,} answered in {format_duration(progress.local_match_s or 0.0)}"
        f" ({progress.local_match_mode})"
    )


def _rate_window(progress: RunProgress) -> float:
    """Measure the current rate over about thirty requests' worth of time: three quota windows."""
    if progress.effective_rate <= 0:
        return 1.0
    return max(0.05, 30.0 / progress.effective_rate)


def _table(progress: RunProgress) -> Table:
    now = time.monotonic()
    stats = progress.eqc
    eta = eta_seconds(progress, now)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    done, needed = stats.names_done + stats.elsewhere, progress.names_for_eqc
    share = done / needed if needed else 1.0
    bar_width = 30
    filled = min(bar_width, math.floor(share * bar_width))
    table.add_row("phase", progress.phase)
    table.add_row("rows", f"{progress.rows_resolved:,} of {progress.rows:,} resolved")
    # answered before EQC: by the index, a known not-found, an id in the input or an override (not only the index)
    before = f"{progress.answered_before_eqc:,} answered before EQC"
    table.add_row("distinct names", f"{progress.distinct_names:,} ({before})")
    if progress.local_match_s is not None:
        table.add_row("local match", _local_line(progress).removeprefix("local match "))
    table.add_row("EQC", f"[{'#' * filled}{'.' * (bar_width - filled)}] {done:,} / {needed:,} names")
    table.add_row("", f"found {stats.found:,}   not found {stats.not_found:,}   failed {stats.failed:,}")
    table.add_row("retries / 429s", f"{stats.retries} / {stats.rate_limited}")
    rate = stats.recent_rate(_rate_window(progress), now)
    table.add_row("request rate", f"{rate:.3g}/s (limit {progress.effective_rate:.3g}/s)   in flight {stats.in_flight}")
    table.add_row("elapsed", format_duration(now - progress.started_at))
    table.add_row("ETA", format_duration(eta) if eta is not None else "-")
    return table


class ProgressDisplay:
    """Runs beside the run; `mode` is live (a redrawn panel), plain (a line per interval) or quiet."""

    def __init__(
        self, progress: RunProgress, *, mode: str, interval_s: float = 30.0, stream: TextIO | None = None
    ) -> None:
        self.progress = progress
        self.mode = mode
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def choose_mode(*, quiet: bool, stream: TextIO | None = None) -> str:
        if quiet:
            return "quiet"
        target = stream or sys.stderr
        return "live" if target.isatty() else "plain"

    def start(self) -> None:
        if self.mode == "live":
            self._task = asyncio.create_task(self._live())
        elif self.mode == "plain":
            self._task = asyncio.create_task(self._plain())

    async def stop(self, *, final_line: bool = True) -> None:
        """End the display; in plain mode the last state is printed once more, unless the run failed."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self.mode == "plain" and final_line:
            self._print_line()

    def _print_line(self) -> None:
        print(status_line(self.progress), file=self.stream, flush=True)

    async def _plain(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self._print_line()

    async def _live(self) -> None:
        console = Console(file=self.stream)
        with Live(_table(self.progress), console=console, refresh_per_second=4, transient=False) as live:
            while True:
                await asyncio.sleep(0.25)
                live.update(_table(self.progress))
