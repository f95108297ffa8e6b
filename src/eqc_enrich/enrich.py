"""The run, as a Python API: read -> keys -> index -> EQC -> write-back -> output.

`enrich()` is what the CLI calls and what a pipeline (Dagster, a notebook) can call directly; `enrich_async`
is the same for callers that already run an event loop. Each stage takes values and returns values:
`prepare` (read, keys, index) -> `run_eqc_stage` (EQC and write-back) -> `resolve_rows` -> outputs, with
the summary assembled from what the stages returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa

from eqc_enrich._config import RunConfig, resolve_config
from eqc_enrich._durations import RateLimit
from eqc_enrich._eqc_stage import StageReport, StopHandle, run_eqc_stage
from eqc_enrich._errors import EqcEnrichError, IndexStoreError, InputError
from eqc_enrich._pending import PendingFile, load_pending, pending_dirs
from eqc_enrich._policies import ConfidencePolicy
from eqc_enrich._stats import EqcStats, RunProgress
from eqc_enrich.events import EventSink
from eqc_enrich.followup import unsettled_names
from eqc_enrich.keys import LookupType, is_shortened_key
from eqc_enrich.lookup import LookupOutcome, LookupSettings
from eqc_enrich.model import Latency, Workload, lower_bound, sequential_time, strict_lower_bound
from eqc_enrich.output import ensure_writable, write_tables
from eqc_enrich.read import Table, file_digest, read_table, require_columns
from eqc_enrich.resolve import (
    NAME_KEY,
    NO_TEMP_ID_KEYS,
    Answers,
    Columns,
    LegacyKeys,
    Overrides,
    distinct_keys,
    index_hits,
    index_maps,
    learn_existing_ids,
    learn_existing_plan_ids,
    names_for_eqc,
    onto_rows,
    replaced_columns_note,
    resolve_rows,
    rows_by_source,
    temp_ids,
    unresolved_table,
    wanted_index_keys,
)
from eqc_enrich.settings import Settings, load_settings
from eqc_enrich.store import IndexEntry, IndexStore, WriteBatch, database_url, redact_url, utcnow
from eqc_enrich.summary import NO_NAME_NO_ID, EqcCounts, PhaseTimer, RunSummary

BACKFLOW_SOURCE = "backflow"
BACKFLOW_CONFIDENCE = 1.00
DEFAULT_NEGATIVE_TTL_S = 30 * 86_400.0
_FAILED_NAMES_LISTED = 200  # the summary lists this many failed names; the unresolved export lists all


@dataclass(frozen=True)
class RunOptions:
    """Every knob of a run; None means "from the WDH_* settings"."""

    columns: Columns = field(default_factory=Columns)
    sheet: str | None = None
    db: str | Path | None = None
    db_schema: str | None = None
    eqc_url: str | None = None
    token: str | None = field(default=None, repr=False)
    token_command: str | None = field(default=None, repr=False)
    rate_limit: RateLimit | None = None
    concurrency: int | None = None
    timeout_s: float | None = None
    retries: int | None = None
    budget: int | None = None
    enrichment: bool = True
    details: bool = False
    overrides: Path | None = None
    negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S
    retry_not_found: bool = False
    refresh_s: float | None = None
    salt: str | None = field(default=None, repr=False)
    id_column: str = "company_id"
    source_column: str = "company_id_source"
    margin_s: float | None = None
    grace_s: float = 5.0
    commit_interval_s: float = 0.5
    check_token: bool = False
    eqc_down_wait_s: float | None = None  # how long to wait for an unreachable EQC (OutagePolicy default)
    index_wait_s: float | None = None  # how long answers may wait for an index that cannot be written
    keep_formulas: bool = False  # CSV outputs: no leading ' on text cells starting with = + - @ (output.py)
    max_input_size: int | None = None  # bytes the input may take once read (None: EQC_ENRICH_MAX_INPUT_SIZE, 2 GiB)
    quota_key: str | None = None  # the shared quota's account (default WDH_EQC_QUOTA_KEY, else the EQC URL)
    claim_lease_s: float = 60.0  # how long a claim on a name outlives its process
    latency_hint: Latency | None = None  # for the lower bound in the summary; measured latency otherwise
    confidence: ConfidencePolicy = field(
        default_factory=ConfidencePolicy
    )  # what the index learns from an answer, by its confidence

    def public(self) -> dict[str, Any]:
        """The options as the run journal and `--log-json` record them, as plain JSON values with their real
        types (the rate limit as `10/60s`, durations in seconds); no token, no token command, no salt, and
        no password of a database URL."""
        from eqc_enrich.events import jsonable  # events imports nothing of this module; kept local to the method

        hidden = {"token", "token_command", "salt"}
        shown = {k: jsonable(v) for k, v in self.__dict__.items() if k not in hidden}
        if isinstance(self.db, str) and "://" in self.db:
            shown["db"] = redact_url(self.db)
        return shown


@dataclass(frozen=True)
class EnrichResult:
    frame: pl.DataFrame
    summary: RunSummary
    unresolved: pl.DataFrame

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for this ending (`summary.EXIT_CODES`)."""
        return self.summary.exit_code


class RunControl:
    """A handle to stop a run from outside (a signal handler, a scheduler): no new requests after `stop()`."""

    def __init__(self) -> None:
        self._handle = StopHandle()

    @property
    def stopped(self) -> bool:
        return self._handle.stopped

    def stop(self) -> None:
        self._handle.stop()


def enrich(
    source: pl.DataFrame | Any | str | Path,
    *,
    options: RunOptions | None = None,
    output: str | Path | None = None,
    unresolved_output: str | Path | None = None,
    **overrides: Any,
) -> EnrichResult:
    """Give every row a company_id. `source` is a path or a polars/pandas frame; options as keywords or RunOptions.

    Returns the enriched polars frame, the names left with temporary ids, and the run summary. Writes files
    only when `output` (or `unresolved_output`) is given; both are checked before any EQC request, and are
    written all or nothing.
    """
    opts = replace(options or RunOptions(), **overrides)
    return asyncio.run(enrich_async(source, options=opts, output=output, unresolved_output=unresolved_output))


async def enrich_async(
    source: pl.DataFrame | Any | str | Path,
    *,
    options: RunOptions | None = None,
    output: str | Path | None = None,
    unresolved_output: str | Path | None = None,
    settings: Settings | None = None,
    progress: RunProgress | None = None,
    control: RunControl | None = None,
    events: EventSink | None = None,
) -> EnrichResult:
    """`progress` is updated as the run goes (for a display), `control` can stop it, `events` hears retries,
    token refreshes and outages."""
    opts = options or RunOptions()
    config = resolve_config(opts, settings or load_settings())
    run = _Run(opts, config, progress or RunProgress(), control or RunControl(), events)
    return await run.execute(source, output, unresolved_output)


@dataclass
class Prepared:
    """Everything before EQC: keys, what the index and the input already answer, the names left for EQC."""

    rows: int
    keyed: pl.DataFrame
    answers: Answers
    pending: list[tuple[str, int]]  # names nothing answered, with their row counts, most frequent first
    eqc_names: list[str]
    counts: EqcCounts
    too_long: list[str]
    negatives: set[str]
    distinct_names: int
    index_names: int  # distinct names the index answered when the run started (entry or known not-found)
    index_hits_by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # normalize, index_lookup
    entries_since: datetime | None = None  # the cut-offs of this read, for the look again before a name is asked
    negatives_since: datetime = field(default_factory=utcnow)
    not_companies: set[str] = field(default_factory=set)  # marked so by a person: never asked

    @property
    def answered_before_eqc(self) -> int:
        return self.distinct_names - len(self.pending) + self.counts.negative_cache_hits + self.counts.not_a_company

    @property
    def index_hit_rate(self) -> float:
        return round(self.index_names / self.distinct_names, 4) if self.distinct_names else 0.0


def open_table(source: pl.DataFrame | Any | str | Path, options: RunOptions) -> tuple[Table, Columns, list[str]]:
    """Read the input and settle which columns it offers; a required one missing is an input error."""
    table = _as_table(source, options.sheet, options.max_input_size)
    columns, notes = options.columns.for_frame(table.frame)
    require_columns(table.frame, columns.name, columns.plan, columns.existing_id)
    notes += replaced_columns_note(table.frame, columns, new=[options.id_column, options.source_column])
    return table, columns, notes


def prepare(store: IndexStore, table: Table, columns: Columns, overrides: Overrides, options: RunOptions) -> Prepared:
    """Stages 2 and 3: distinct keys, one bulk index lookup, and the names only EQC can answer."""
    started = time.perf_counter()
    read_at = utcnow()
    keyed = distinct_keys(table.frame, columns)
    normalized = time.perf_counter()
    refresh = options.refresh_s
    since = read_at - timedelta(seconds=refresh) if refresh is not None else None
    # a not-found counts when it is within the TTL; with --retry-not-found, only when another run wrote it
    # after this one read the index
    asked_since = read_at if options.retry_not_found else read_at - timedelta(seconds=options.negative_ttl_s)
    wanted = wanted_index_keys(keyed)
    entries = store.lookup(wanted, updated_since=since)
    # names the canonical keys miss may sit in the index under the old tools' key forms (read, never written)
    legacy = LegacyKeys.for_misses(keyed, columns.name, entries)
    old_forms = store.lookup(legacy.wanted(), updated_since=since)
    negatives: set[str] = set()
    if not options.retry_not_found:
        negatives = store.known_negatives(wanted[LookupType.CUSTOMER_NAME], asked_since=asked_since)
    index = index_maps(entries)
    answers = Answers(
        overrides=overrides, index=index, learned=learn_existing_ids(keyed), legacy=legacy.answers(old_forms)
    )
    pre = resolve_rows(keyed, answers, id_column="__pre_id", source_column="__pre_source")
    pending = names_for_eqc(pre, id_column="__pre_id")
    names = keyed.filter(~pl.col(NAME_KEY).is_in(list(NO_TEMP_ID_KEYS)))[NAME_KEY].unique().to_list()
    by_name = set(index.get(LookupType.CUSTOMER_NAME, {})) | set(index.get(LookupType.FORMER_NAME, {}))
    by_name |= set(answers.legacy)
    counts = EqcCounts()
    not_companies = store.unsettled.not_companies(name for name, _ in pending)
    open_names = [name for name, _ in pending if name not in negatives and name not in not_companies]
    counts.not_a_company = len(not_companies)
    counts.negative_cache_hits = len(pending) - len(open_names) - len(not_companies)
    too_long = [name for name in open_names if is_shortened_key(name)]
    counts.too_long = len(too_long)
    askable = [name for name in open_names if not is_shortened_key(name)]
    eqc_names = _within_budget(askable, options, counts)
    return Prepared(
        rows=table.frame.height,
        keyed=keyed,
        answers=answers,
        pending=pending,
        eqc_names=eqc_names,
        counts=counts,
        too_long=too_long,
        negatives=negatives,
        distinct_names=len(names),
        index_names=sum(1 for name in names if name in by_name or name in negatives or name in not_companies),
        index_hits_by_type={**_index_hits_by_type(wanted, entries), **legacy.counts(old_forms)},
        seconds={"normalize": normalized - started, "index_lookup": time.perf_counter() - normalized},
        entries_since=since,
        negatives_since=asked_since,
        not_companies=not_companies,
    )


def _within_budget(names: list[str], options: RunOptions, counts: EqcCounts) -> list[str]:
    if not options.enrichment:
        counts.skipped = len(names)
        return []
    budget = options.budget
    if budget is not None and budget > 0 and len(names) > budget:
        counts.over_budget = len(names) - budget
        names = names[:budget]
    counts.names_planned = len(names)
    return names


def _index_hits_by_type(
    wanted: Mapping[str, list[str]], entries: Mapping[tuple[str, str], IndexEntry]
) -> dict[str, dict[str, int]]:
    found_by_type: dict[str, int] = {}
    for _, kind in entries:
        found_by_type[kind] = found_by_type.get(kind, 0) + 1
    return {str(kind): {"asked": len(keys), "found": found_by_type.get(str(kind), 0)} for kind, keys in wanted.items()}


class _Run:
    """One execution: the stages in order, and the summary assembled from what they return."""

    def __init__(
        self,
        options: RunOptions,
        config: RunConfig,
        progress: RunProgress,
        control: RunControl,
        events: EventSink | None = None,
    ) -> None:
        self.options = options
        self.config = config
        self.events = events
        self.progress = progress
        self.control = control
        self.timer = PhaseTimer()
        self.summary = RunSummary(run_id=str(uuid.uuid4()), rate_limit=str(config.rate_limit))

    async def execute(
        self, source: pl.DataFrame | Any | str | Path, output: str | Path | None, unresolved: str | Path | None
    ) -> EnrichResult:
        started = time.perf_counter()
        targets = [Path(p) for p in (output, unresolved) if p is not None]
        source_path = Path(source) if isinstance(source, str | Path) else None
        ensure_writable(targets, input_path=source_path)  # before anything is asked: a path must not cost quota
        with self.timer.phase("read"):
            table, columns, notes = open_table(source, self.options)
        self.summary.warnings.extend(notes)
        overrides = Overrides.load(self.options.overrides)
        store = await asyncio.to_thread(IndexStore, self.options.db, schema=self.options.db_schema)
        try:
            self.summary.index = redact_url(store.url)
            await asyncio.to_thread(self._load_side_files, store)
            digest = file_digest(table.path) if table.path else ""
            await asyncio.to_thread(
                store.journal_start, self.summary.run_id, str(table.path or "<frame>"), digest, self.options.public()
            )
            result = await self._with_store(store, table, columns, overrides)
            with self.timer.phase("write"):
                self._write_outputs(result, table, columns, output, unresolved)
            self._finish_summary(started)
            self.progress.phase = "done"
            with contextlib.suppress(IndexStoreError):  # the index may be what failed; the journal is not worth a crash
                await asyncio.to_thread(
                    store.journal_finish, self.summary.run_id, self.summary.status, self.summary.as_dict()
                )
        except BaseException:
            await asyncio.to_thread(_journal_failed, store, self.summary.run_id)
            raise
        finally:
            store.close()
        return result

    def _load_side_files(self, store: IndexStore) -> None:
        """Answers earlier runs could not commit go into the index first, so nothing is asked twice."""
        folders = pending_dirs(store.url, self.options.db_schema)
        with load_pending(folders) as (batch, files):
            if not files:
                return
            try:
                store.write(batch)
            except IndexStoreError as exc:
                raise IndexStoreError(
                    f"{exc}; {len(files)} side file(s) of answers from earlier runs wait in {files[0].parent}"
                ) from None
        self.summary.warnings.append(
            f"loaded {len(batch)} saved answer rows from {len(files)} side file(s) of earlier runs into the index"
        )

    async def _with_store(
        self, store: IndexStore, table: Table, columns: Columns, overrides: Overrides
    ) -> EnrichResult:
        progress = self.progress
        progress.rows = table.frame.height
        progress.phase = "index lookup"
        prepared = await asyncio.to_thread(prepare, store, table, columns, overrides, self.options)
        for phase, seconds in prepared.seconds.items():
            self.timer.seconds[phase] += seconds
        self._show_prepared(prepared)
        rows_per_name = dict(prepared.pending)
        progress.rows_resolved = prepared.rows - sum(rows_per_name[name] for name in prepared.eqc_names)
        stage = StageReport()
        if prepared.eqc_names:
            progress.phase = "eqc"
            with self.timer.phase("eqc"):
                stage = await run_eqc_stage(
                    prepared.eqc_names,
                    store=store,
                    config=self.config,
                    settings=self._lookup_settings(),
                    progress=progress,
                    rows_per_name=rows_per_name,
                    side_file=PendingFile(pending_dirs(store.url, self.options.db_schema), self.summary.run_id),
                    owner=self.summary.run_id,
                    entries_since=prepared.entries_since,
                    negatives_since=prepared.negatives_since,
                    handle=self.control._handle,
                    check_token=self.options.check_token,
                    events=self.events,
                )
            self.timer.seconds["index_write"] += stage.write_s
        outcomes = stage.result.outcomes
        eqc_ids = {name: o.hit.company_id for name, o in outcomes.items() if o.status == "found" and o.hit}
        # names another process answered while this one waited: the index answers them now
        late = {name: o.settled_id for name, o in outcomes.items() if o.status == "elsewhere" and o.settled_id}
        index = {**prepared.answers.index}
        index[LookupType.CUSTOMER_NAME] = {**index.get(LookupType.CUSTOMER_NAME, {}), **late}
        still_open = [name for name, _ in prepared.pending if name not in eqc_ids and name not in late]
        answers = replace(prepared.answers, index=index, eqc=eqc_ids, temp=temp_ids(still_open, self.config.salt))
        resolved = resolve_rows(
            prepared.keyed, answers, id_column=self.options.id_column, source_column=self.options.source_column
        )
        if stage.index_error is None:
            with self.timer.phase("index_write"):
                await asyncio.to_thread(self._learn_backflow_and_hits, store, prepared.keyed, answers, resolved)
        else:
            self.summary.warnings.append("backflow and hit counts not recorded: the index could not be written")
        progress.rows_resolved = table.frame.height
        progress.phase = "writing output"
        self._summarize(prepared, stage, resolved)
        reasons = _unresolved_reasons(prepared, outcomes)
        unresolved = unresolved_table(
            resolved,
            columns,
            id_column=self.options.id_column,
            source_column=self.options.source_column,
            reasons=reasons,
        )
        self.summary.unresolved_names = unresolved.height
        if stage.index_error is None:
            with self.timer.phase("index_write"):
                await asyncio.to_thread(self._record_unsettled, store, unresolved, outcomes, resolved, table, columns)
        new = [self.options.id_column, self.options.source_column]
        frame = onto_rows(table.frame, resolved, columns, new=new)
        return EnrichResult(frame=frame, summary=self.summary, unresolved=unresolved)

    def _record_unsettled(
        self,
        store: IndexStore,
        unresolved: pl.DataFrame,
        outcomes: Mapping[str, LookupOutcome],
        resolved: pl.DataFrame,
        table: Table,
        columns: Columns,
    ) -> None:
        """The review page's and the worker's queue: best effort, since the rows themselves are right already."""
        names = unsettled_names(
            unresolved, outcomes, resolved, table.frame, columns, source_column=self.options.source_column
        )
        try:
            self.summary.unsettled_recorded = store.unsettled.record(names, self.summary.run_id)
        except IndexStoreError as exc:
            self.summary.warnings.append(f"the names left unsettled were not recorded for review: {exc}")

    def _show_prepared(self, prepared: Prepared) -> None:
        progress = self.progress
        progress.distinct_names = prepared.distinct_names
        progress.answered_before_eqc = prepared.answered_before_eqc
        progress.names_for_eqc = len(prepared.eqc_names)
        progress.calls_per_name = self.config.calls_per_name
        progress.effective_rate = 0.0

    def _lookup_settings(self) -> LookupSettings:
        return LookupSettings(
            rate_limit=self.config.rate_limit,
            retries=self.config.retries,
            concurrency=self.options.concurrency,
            details=self.options.details,
            margin_s=self.options.margin_s,
            timeout_s=self.config.timeout_s,
            grace_s=self.options.grace_s,
            outage=self.config.outage,
        )

    def _learn_backflow_and_hits(
        self, store: IndexStore, keyed: pl.DataFrame, answers: Answers, resolved: pl.DataFrame
    ) -> None:
        """Existing ids become index rows (names normalized, plan codes raw) unless the index already says so."""
        learned = (
            (LookupType.CUSTOMER_NAME, answers.learned),
            (LookupType.PLAN_CODE, learn_existing_plan_ids(keyed)),
        )
        batch = WriteBatch(
            entries=[
                IndexEntry(key, kind, company_id, BACKFLOW_CONFIDENCE, BACKFLOW_SOURCE)
                for kind, found in learned
                for key, company_id in found.items()
                if answers.index.get(kind, {}).get(key) != company_id
            ]
        )
        try:
            store.write(batch)
            store.record_hits(index_hits(resolved, answers, source_column=self.options.source_column))
        except IndexStoreError as exc:
            self.summary.warnings.append(f"backflow and hit counts not recorded: {exc}")

    def _summarize(self, prepared: Prepared, stage: StageReport, resolved: pl.DataFrame) -> None:
        summary, stats = self.summary, self.progress.eqc
        summary.rows = prepared.rows
        summary.distinct_names = prepared.distinct_names
        summary.answered_before_eqc = prepared.answered_before_eqc
        # the share of names the index held at the start; no names means it held none of them, not all
        summary.index_hit_rate = prepared.index_hit_rate if prepared.distinct_names else 0.0
        summary.index_hits_by_type = prepared.index_hits_by_type
        summary.resolved_by = rows_by_source(resolved, source_column=self.options.source_column)
        summary.rows_without_id = _rows_without_id(summary.resolved_by)
        counts = prepared.counts
        counts.found, counts.not_found, counts.failed = stats.found, stats.not_found, stats.failed
        counts.names_asked = stats.found + stats.not_found + stats.failed
        counts.not_asked = stats.skipped
        counts.answered_elsewhere = stats.elsewhere
        summary.eqc = counts
        failed = [o for o in stage.result.outcomes.values() if o.status == "failed"]
        summary.failed_names = [{"name": o.name, "reason": o.error or ""} for o in failed[:_FAILED_NAMES_LISTED]]
        summary.api_calls = {**{k: int(v) for k, v in sorted(stats.calls.items())}, "total": stats.api_calls}
        summary.accepted_requests, summary.unanswered_requests = stats.accepted_requests, stats.unanswered
        summary.retries = stats.retries
        summary.rate_limited = stats.rate_limited
        summary.token_refreshes = stats.token_refreshes
        summary.concurrency = stage.pacing
        summary.eqc_outages, summary.index_outages = stage.eqc_outages, stage.index_outages
        summary.side_file = stage.side_file
        summary.status, summary.message = _ending(stage, counts, self.control.stopped)

    def _write_outputs(
        self,
        result: EnrichResult,
        table: Table,
        columns: Columns,
        output: str | Path | None,
        unresolved: str | Path | None,
    ) -> None:
        items: list[tuple[pl.DataFrame, Path, Table | None]] = []
        if output is not None:
            items.append((result.frame, Path(output), table))
        if unresolved is not None:
            items.append((result.unresolved, Path(unresolved), None))
        write_tables(items, neutralize=not self.options.keep_formulas)
        if output is not None:
            self.summary.output = str(output)
        self.summary.input = str(table.path) if table.path else None

    def _finish_summary(self, started: float) -> None:
        summary = self.summary
        summary.elapsed_s = round(time.perf_counter() - started, 4)
        summary.phases_s = {name: round(seconds, 4) for name, seconds in self.timer.seconds.items()}
        stats = self.progress.eqc
        summary.timing = _timing(self.timer.seconds, stats)
        # everything outside the EQC stage's wall time is local work (the writer's commits overlap the stage)
        local = max(0.0, summary.elapsed_s - self.timer.seconds.get("eqc", 0.0))
        fastest = min((v for values in stats.latencies.values() for v in values), default=None)
        if self.options.latency_hint is not None:
            fastest = self.options.latency_hint.mean_s if fastest is None else fastest
        if summary.accepted_requests and fastest is not None:
            bound = strict_lower_bound(summary.accepted_requests, self.config.rate_limit, fastest, local_s=local)
            summary.lower_bound_s = round(bound, 4)
            summary.efficiency = round(bound / summary.elapsed_s, 4) if summary.elapsed_s else None


def _ending(stage: StageReport, counts: EqcCounts, stopped: bool) -> tuple[str, str | None]:
    """The status and its one-line message: a stop reason first, then failed names, else completed."""
    result = stage.result
    if result.stopped == "token":
        return "token_unavailable", result.message
    if result.stopped == "eqc_down":
        return "eqc_unavailable", f"{result.message}; {counts.not_asked:,} names not asked: rerun to ask them"
    if result.stopped == "index":
        saved = f"; answers saved in {stage.side_file}, which the next run loads first" if stage.side_file else ""
        return "index_unavailable", f"{result.message}{saved}"
    if result.stopped == "interrupted" or stopped:
        return "interrupted", "interrupted: every answer received is in the index; rerun the same command to resume"
    if counts.failed:
        return "names_failed", (
            f"{counts.failed:,} names failed after every retry (listed with their reason in the summary and the "
            "unresolved export); they got temporary ids, and a rerun asks them again"
        )
    if counts.over_budget:
        return "completed", (
            f"budget reached: {counts.over_budget:,} less frequent names were not asked (over --budget); they got "
            "temporary ids, and a rerun asks them"
        )
    return "completed", None


def _unresolved_reasons(prepared: Prepared, outcomes: Mapping[str, LookupOutcome]) -> dict[str, tuple[str, str]]:
    reasons: dict[str, tuple[str, str]] = {}
    for name in prepared.negatives:
        reasons[name] = ("not_found", "EQC did not know it (cached answer)")
    for name in prepared.too_long:
        reasons[name] = ("too_long", "name too long for an EQC request; never sent")
    for name in prepared.not_companies:
        reasons[name] = ("not_a_company", "marked as no company on the review page; never asked")
    if not prepared.eqc_names and prepared.counts.skipped:
        for name, _ in prepared.pending:
            reasons.setdefault(name, ("not_asked", "not asked: --no-enrichment"))
    if prepared.counts.over_budget:
        for name, _ in prepared.pending:
            reasons.setdefault(name, ("not_asked", "not asked: over --budget"))
    for name, outcome in outcomes.items():
        if outcome.status == "not_found":
            reasons[name] = ("not_found", "EQC did not know it")
        elif outcome.status == "failed":
            reasons[name] = ("failed", outcome.error or "failed")
        elif outcome.status == "skipped":
            reasons[name] = ("not_asked", outcome.error or "not asked")
        elif outcome.status == "elsewhere":
            reasons[name] = ("not_found", "EQC did not know it (in the index before this run asked it)")
    return reasons


def _rows_without_id(resolved_by: Mapping[str, int]) -> dict[str, int]:
    """Rows left with no company_id, by why (rows `none` of `resolved_by`): only rows without a name can be."""
    empty = resolved_by.get("none", 0)
    return {NO_NAME_NO_ID: empty} if empty else {}


def _journal_failed(store: IndexStore, run_id: str) -> None:
    """Best effort: the journal says the run died, unless the database is what failed."""
    with contextlib.suppress(EqcEnrichError):
        store.journal_finish(run_id, "failed", {})


def _as_table(source: pl.DataFrame | Any | str | Path, sheet: str | None, max_size: int | None) -> Table:
    if isinstance(source, str | Path):
        return read_table(source, sheet=sheet, max_size=max_size)
    if isinstance(source, pl.DataFrame):
        return Table(source, None, "parquet")
    if hasattr(source, "columns") and hasattr(source, "dtypes"):
        return Table(pl.from_pandas(source), None, "parquet")
    raise InputError(f"cannot enrich a {type(source).__name__}: pass a path, a polars or a pandas frame")


def _timing(phases: Mapping[str, float], stats: EqcStats) -> dict[str, Any]:
    """The breakdown that answers "is it the API or the quota?": limiter wait against network time."""
    return {
        "read_s": round(phases.get("read", 0.0), 4),
        "normalize_s": round(phases.get("normalize", 0.0), 4),
        "index_lookup_s": round(phases.get("index_lookup", 0.0), 4),
        "eqc_wall_s": round(phases.get("eqc", 0.0), 4),
        "limiter_wait_s": round(stats.limiter_wait_s, 4),
        "network_s": round(stats.network_s, 4),
        "parse_s": round(stats.parse_s, 4),
        "index_write_s": round(phases.get("index_write", 0.0), 4),
        "write_s": round(phases.get("write", 0.0), 4),
        "latency_s": stats.latency_summary(),
        "note": "limiter_wait_s and network_s are summed over concurrent requests; eqc_wall_s is wall time",
    }


STORY_LATENCY = Latency(mean_s=40.0, max_s=60.0)  # 20-60 s per call, as the story measured it


@dataclass(frozen=True)
class PlanReport:
    """What a run would cost, answered from the index alone: no EQC call is made."""

    rows: int
    distinct_names: int
    answered_before_eqc: int  # by the index, ids in the input, overrides or a known not-found
    index_names: int  # of those, answered by the index as it is now (an entry, or a known not-found)
    negative_cache_hits: int
    too_long: int
    names_for_eqc: int
    calls_per_name: int
    calls_needed: int
    rate_limit: str
    latency_mean_s: float
    latency_max_s: float
    lower_bound_s: float
    old_flow_s: float

    @property
    def index_hit_rate(self) -> float:
        return self.index_names / self.distinct_names if self.distinct_names else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "index_hit_rate": round(self.index_hit_rate, 4)}


def plan(
    source: pl.DataFrame | Any | str | Path,
    *,
    options: RunOptions | None = None,
    latency: Latency = STORY_LATENCY,
    settings: Settings | None = None,
    **overrides: Any,
) -> PlanReport:
    """Rows, distinct names, index hits, names for EQC, calls needed and the lower bound on time."""
    opts = replace(options or RunOptions(), **overrides)
    return asyncio.run(plan_async(source, options=opts, latency=latency, settings=settings))


async def plan_async(
    source: pl.DataFrame | Any | str | Path,
    *,
    options: RunOptions | None = None,
    latency: Latency = STORY_LATENCY,
    settings: Settings | None = None,
) -> PlanReport:
    """`plan` for callers that already run an event loop."""
    opts = options or RunOptions()
    config = resolve_config(opts, settings or load_settings())
    table, columns, _ = open_table(source, opts)
    overrides = Overrides.load(opts.overrides)
    store = await asyncio.to_thread(IndexStore, _existing_or_empty(opts.db), schema=opts.db_schema)
    try:
        prepared = await asyncio.to_thread(prepare, store, table, columns, overrides, opts)
    finally:
        store.close()
    k = config.calls_per_name
    work = Workload(len(prepared.eqc_names), k)
    old_work = Workload(len(prepared.pending) - prepared.counts.negative_cache_hits, 3)
    return PlanReport(
        rows=prepared.rows,
        distinct_names=prepared.distinct_names,
        answered_before_eqc=prepared.answered_before_eqc,
        index_names=prepared.index_names,
        negative_cache_hits=prepared.counts.negative_cache_hits,
        too_long=prepared.counts.too_long,
        names_for_eqc=len(prepared.eqc_names),
        calls_per_name=k,
        calls_needed=round(work.requests),
        rate_limit=str(config.rate_limit),
        latency_mean_s=latency.mean_s,
        latency_max_s=latency.max_s,
        lower_bound_s=round(lower_bound(work, config.rate_limit, latency), 3),
        old_flow_s=round(sequential_time(old_work, config.rate_limit, latency), 3),
    )


def _existing_or_empty(db: str | Path | None) -> str:
    """A plan only reads: for a SQLite file that does not exist yet it reads an empty index in memory
    rather than leave a new file behind."""
    url = database_url(db)
    parsed = sa.make_url(url)
    on_disk = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    if on_disk and not Path(str(parsed.database)).exists():
        return "sqlite://"
    return url
