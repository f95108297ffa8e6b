"""The run, as a Python API: read -> keys -> index -> EQC -> resolve (and write-back) -> output.

`enrich()` is what the CLI calls and what a pipeline (Dagster, a notebook) can call directly; `enrich_async`
is the same for callers that already run an event loop. The run is a sequence of stage calls, each taking
values and returning a report; `build_summary` turns the reports into the summary. Between the index and
EQC, `run_match_stage` answers the names the index knows under another spelling (`--local-match`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from eqc_enrich._errors import EqcEnrichError, IndexStoreError, OutputError
from eqc_enrich.eqc_stage import EqcReport, LookupOutcome, PendingFile, StopHandle, load_side_files, pending_dirs
from eqc_enrich.eqc_stage import run_eqc_stage as _run_eqc_stage
from eqc_enrich.events import EventSink
from eqc_enrich.index_stage import IndexReport, leave_for_eqc, read_input, run_index_stage
from eqc_enrich.match_stage import MatchReport, run_match_stage
from eqc_enrich.options import RunConfig, RunOptions, resolve_config
from eqc_enrich.output import FileItem, ensure_writable, estimate_write_s, unknown_names_writer, write_tables
from eqc_enrich.progress import RunProgress, tracking_phase
from eqc_enrich.read import Table, file_digest
from eqc_enrich.resolve import Overrides
from eqc_enrich.resolve_stage import IndexRecord, ResolvedRows, record_in_index, resolve_rows_stage
from eqc_enrich.settings import Settings, load_settings
from eqc_enrich.store import IndexStore, redact_url
from eqc_enrich.summary import OutputReport, RunFacts, RunSummary, build_summary

__all__ = ["EnrichResult", "RunControl", "enrich", "enrich_async"]


@dataclass(frozen=True)
class EnrichResult:
    frame: pl.DataFrame  # the input, plus company_id and company_id_source
    summary: RunSummary  # the figures, and how the run ended (`summary.status`)
    unresolved: pl.DataFrame  # names left with temporary ids


class RunControl:
    """A handle to stop a run from outside (a signal handler, a scheduler): no new requests after `stop()`."""

    def __init__(self) -> None:
        self._handle = StopHandle()

    @property
    def stopped(self) -> bool:
        return self._handle.stopped

    @property
    def handle(self) -> StopHandle:
        """What the EQC stage running now is reached through."""
        return self._handle

    def stop(self) -> None:
        self._handle.stop()


def enrich(
    source: pl.DataFrame | Any | str | Path,
    *,
    options: RunOptions | None = None,
    output: str | Path | None = None,
    unresolved_output: str | Path | None = None,
    unknown_names_output: str | Path | None = None,
    **changes: Any,
) -> EnrichResult:
    """Give every row a company_id. `source` is a path or a polars/pandas frame; options as keywords or RunOptions.

    Returns the enriched polars frame, the names left with temporary ids, and the run summary. Writes files
    only when `output` (or `unresolved_output`, or `unknown_names_output`: WorkDataHub's unknown-names CSV)
    is given; all are checked before any EQC request, and are written all or nothing.
    """
    opts = replace(options or RunOptions(), **changes)
    return asyncio.run(
        enrich_async(
            source, options=opts, output=output, unresolved_output=unresolved_output,
            unknown_names_output=unknown_names_output,
        )
    )  # fmt: skip


async def enrich_async(
    source: pl.DataFrame | Any | str | Path,
    *,
    options: RunOptions | None = None,
    output: str | Path | None = None,
    unresolved_output: str | Path | None = None,
    unknown_names_output: str | Path | None = None,
    settings: Settings | None = None,
    progress: RunProgress | None = None,
    control: RunControl | None = None,
    events: EventSink | None = None,
) -> EnrichResult:
    """`progress` is updated as the run goes (for a display), `control` can stop it, `events` hears retries,
    token refreshes and outages."""
    opts = options or RunOptions()
    config = resolve_config(opts, settings or load_settings())
    progress = progress or RunProgress()
    control = control or RunControl()
    started = time.perf_counter()
    run_id = str(uuid.uuid4())
    targets = [Path(p) for p in (output, unresolved_output, unknown_names_output) if p is not None]
    source_path = Path(source) if isinstance(source, str | Path) else None
    ensure_writable(targets, input_path=source_path)  # before anything is asked: a path must not cost quota
    # the input's digest (for the journal) is taken beside the read: both read the file, each on its own core
    digesting = asyncio.get_running_loop().run_in_executor(None, _input_digest, source)
    digesting.add_done_callback(_retrieved)
    table, columns, notes = read_input(source, opts)
    read_s = time.perf_counter() - started
    overrides = Overrides.load(config.overrides)
    store = await asyncio.to_thread(IndexStore, opts.db, schema=opts.db_schema)
    try:
        await asyncio.to_thread(store.check_grants)  # a missing grant is said now, not at the first answer's commit
        loaded = await asyncio.to_thread(load_side_files, store, opts.db_schema)
        digest = await digesting
        await asyncio.to_thread(store.journal_start, run_id, str(table.path or "<frame>"), digest, opts.public())
        progress.rows, progress.phase = table.frame.height, "index lookup"
        index = await asyncio.to_thread(run_index_stage, store, table, columns, overrides, opts)
        progress.phase = "local match"
        match = await asyncio.to_thread(run_match_stage, store, index, opts, run_id=run_id)
        index = leave_for_eqc(index, match.answers, opts)
        _show_index(progress, index, config, match)
        if output is not None:  # an ETA that covers the output too (a big xlsx takes longer than the EQC stage)
            progress.local_left_s += await asyncio.to_thread(estimate_write_s, table.frame, Path(output), like=table)
        eqc = await _eqc(store, index, config, opts, run_id, progress, control, events)
        progress.local_from, progress.phase = time.monotonic(), "resolving rows"
        resolved = await asyncio.to_thread(
            resolve_rows_stage, table, columns, index, eqc, opts, salt=config.salt, match=match
        )
        progress.rows_resolved, progress.phase = table.frame.height, "writing output"
        # the index writes (backflow, hit counts, names left open) run beside the output, not before it; the
        # output in a thread too, so the display keeps counting down while a big file is written
        recording = asyncio.get_running_loop().run_in_executor(
            None, lambda: record_in_index(store, table, columns, resolved, eqc, opts, run_id=run_id)
        )
        try:
            written = await asyncio.to_thread(
                _write_outputs, resolved, table, output, unresolved_output, unknown_names_output,
                keep_formulas=opts.keep_formulas,
            )  # fmt: skip
        finally:
            record: IndexRecord = await recording
        rows = resolved.report(record)
        facts = RunFacts(
            run_id=run_id, rate_limit=config.access.rate_limit, elapsed_s=time.perf_counter() - started,
            read_s=read_s, input=str(table.path) if table.path else None, index=redact_url(store.url),
            stopped=control.stopped, latency_hint=opts.latency_hint, warnings=(*notes, *([loaded] if loaded else [])),
        )  # fmt: skip
        summary = build_summary(facts, index.counts, eqc, rows.counts, written, match.counts)
        progress.phase = "done"
        with contextlib.suppress(IndexStoreError):  # the index may be what failed; the journal is not worth a crash
            await asyncio.to_thread(store.journal_finish, run_id, summary.status, summary.as_dict())
        return EnrichResult(frame=rows.frame, summary=summary, unresolved=rows.unresolved)
    except BaseException:
        await asyncio.to_thread(_journal_failed, store, run_id)
        raise
    finally:
        store.close()


def _show_index(progress: RunProgress, index: IndexReport, config: RunConfig, match: MatchReport) -> None:
    counts = index.counts
    progress.distinct_names = counts.distinct_names
    progress.answered_before_eqc = counts.answered_before_eqc
    progress.answered_locally = match.counts.answered
    progress.local_match_s = match.counts.stage_s
    progress.local_match_mode = match.counts.mode
    progress.names_for_eqc = len(index.eqc_names)
    progress.calls_per_name = config.stage.calls_per_name
    progress.local_left_s = counts.normalize_s + counts.index_lookup_s  # resolving the rows takes about as long
    rows_per_name = index.rows_per_name
    open_names = (name for name, _ in index.pending if name not in match.answers)
    progress.rows_resolved = counts.rows - sum(rows_per_name[name] for name in open_names)


async def _eqc(
    store: IndexStore,
    index: IndexReport,
    config: RunConfig,
    options: RunOptions,
    run_id: str,
    progress: RunProgress,
    control: RunControl,
    events: EventSink | None,
) -> EqcReport:
    """The EQC stage on the names the index left, showing its counters and the rows each answer settles."""
    if not index.eqc_names:
        return EqcReport()
    rows_per_name = index.rows_per_name

    def settled(outcome: LookupOutcome) -> None:
        # every row of a name EQC has answered is settled now: its id, or a temporary one
        progress.rows_resolved += rows_per_name.get(outcome.name, 0)

    progress.phase = "eqc"
    return await _run_eqc_stage(
        index.eqc_names, store=store, config=config.stage, owner=run_id,
        side_file=PendingFile(pending_dirs(store.url, options.db_schema), run_id),
        entries_since=index.entries_since, negatives_since=index.negatives_since, handle=control.handle,
        check_token=options.check_token, events=tracking_phase(progress, events), stats=progress.eqc,
        on_outcome=settled,
    )  # fmt: skip


def _write_outputs(
    rows: ResolvedRows,
    table: Table,
    output: str | Path | None,
    unresolved: str | Path | None,
    unknown_names: str | Path | None,
    *,
    keep_formulas: bool,
) -> OutputReport:
    """All outputs or none; a failure here comes after the paid work, so it is an ending, not an error."""
    started = time.perf_counter()
    items: list[tuple[pl.DataFrame, Path, Table | None]] = []
    if output is not None:
        items.append((rows.frame, Path(output), table))
    if unresolved is not None:
        items.append((rows.unresolved, Path(unresolved), None))
    files: list[FileItem] = []
    if unknown_names is not None:
        names = rows.unknown_names.to_list()
        files.append((Path(unknown_names), unknown_names_writer(names, neutralize=not keep_formulas)))
    try:
        write_tables(items, neutralize=not keep_formulas, files=files)
    except OutputError as exc:
        return OutputReport(error=str(exc), write_s=time.perf_counter() - started)
    return OutputReport(output=str(output) if output is not None else None, write_s=time.perf_counter() - started)


def _input_digest(source: object) -> str:
    """SHA-256 of an input file, "" for a frame (or a file that cannot be read: `read_input` says why)."""
    if not isinstance(source, str | Path):
        return ""
    try:
        return file_digest(Path(source))
    except OSError:
        return ""


def _retrieved(future: asyncio.Future[str]) -> None:
    """Take the outcome of a digest nobody may wait for (the read failed first)."""
    if not future.cancelled():
        future.exception()


def _journal_failed(store: IndexStore, run_id: str) -> None:
    """Best effort: the journal says the run died, unless the database is what failed."""
    with contextlib.suppress(EqcEnrichError):
        store.journal_finish(run_id, "failed", {})
