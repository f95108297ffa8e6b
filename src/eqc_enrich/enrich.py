"""The run, as a Python API: read -> keys -> index -> EQC -> write-back -> output.

`enrich()` is what the CLI calls and what a pipeline (Dagster, a notebook) can call directly; `enrich_async`
is the same for callers that already run an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from eqc_enrich._durations import RateLimit
from eqc_enrich._errors import EqcEnrichError, InputError
from eqc_enrich._stats import EqcStats, RunProgress
from eqc_enrich._tokens import TokenKeeper, run_token_command
from eqc_enrich.eqc import SEARCH, EqcClient
from eqc_enrich.events import EventSink
from eqc_enrich.index import IndexEntry, IndexStore, WriteBatch, redact_url, utcnow
from eqc_enrich.keys import LookupType
from eqc_enrich.lookup import EqcLookup, LookupOutcome, LookupSettings, StageResult
from eqc_enrich.model import Latency, Workload, lower_bound, sequential_time
from eqc_enrich.output import write_table
from eqc_enrich.read import Table, file_digest, read_table, require_columns
from eqc_enrich.resolve import (
    NAME_KEY,
    Answers,
    Columns,
    Overrides,
    distinct_keys,
    index_hits,
    index_maps,
    learn_existing_ids,
    names_for_eqc,
    onto_rows,
    resolve_rows,
    rows_by_source,
    temp_ids,
    unresolved_table,
    wanted_index_keys,
)
from eqc_enrich.settings import Settings, load_settings
from eqc_enrich.summary import EqcCounts, PhaseTimer, RunSummary
from eqc_enrich.writeback import IndexWriter

BACKFLOW_SOURCE = "backflow"
BACKFLOW_CONFIDENCE = 0.90
DEFAULT_NEGATIVE_TTL_S = 30 * 86_400.0


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
    latency_hint: Latency | None = None  # for the lower bound in the summary; measured latency otherwise

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
        return {"completed": 0, "interrupted": 130, "token_unavailable": 3}.get(self.summary.status, 1)


class RunControl:
    """A handle to stop a run from outside (a signal handler, a scheduler): no new requests after `stop()`."""

    def __init__(self) -> None:
        self._lookup: EqcLookup | None = None
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        if self._lookup is not None:
            self._lookup.stop()

    def _attach(self, lookup: EqcLookup) -> None:
        self._lookup = lookup
        if self.stopped:
            lookup.stop()


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
    only when `output` is given.
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
    """`progress` is updated as the run goes (for a display), `control` can stop it, `events` hears retries
    and token refreshes."""
    run = _Run(options or RunOptions(), settings or load_settings(), progress or RunProgress(), control, events)
    return await run.execute(source, output, unresolved_output)


class _Run:
    """One execution; holds the per-run state the stages share, nothing more."""

    def __init__(
        self,
        options: RunOptions,
        settings: Settings,
        progress: RunProgress,
        control: RunControl | None,
        events: EventSink | None = None,
    ) -> None:
        self.options = options
        self.events = events
        self.settings = settings
        self.progress = progress
        self.control = control or RunControl()
        self.timer = PhaseTimer()
        self.summary = RunSummary(run_id=str(uuid.uuid4()))
        self.rate_limit = options.rate_limit or settings.rate_limit
        self.columns = options.columns
        self._rows_per_name: dict[str, int] = {}

    def use_columns(self, frame: pl.DataFrame) -> None:
        """Settle which columns this frame offers; a required one missing is an input error."""
        self.columns, notes = self.options.columns.for_frame(frame)
        require_columns(frame, self.columns.name, self.columns.plan, self.columns.existing_id)
        self.summary.warnings.extend(notes)

    async def execute(
        self, source: pl.DataFrame | Any | str | Path, output: str | Path | None, unresolved: str | Path | None
    ) -> EnrichResult:
        started = time.perf_counter()
        with self.timer.phase("read"):
            table = _as_table(source, self.options.sheet)
        self.use_columns(table.frame)
        overrides = Overrides.load(self.options.overrides)
        store = await asyncio.to_thread(IndexStore, self.options.db, schema=self.options.db_schema)
        try:
            result = await self._with_store(store, table, overrides)
            with self.timer.phase("write"):
                self._write_outputs(result, table, output, unresolved)
            self._finish_summary(started)
            self.progress.phase = "done"
            await asyncio.to_thread(
                store.journal_finish, self.summary.run_id, self.summary.status, self.summary.as_dict()
            )
        except BaseException:
            await asyncio.to_thread(_journal_failed, store, self.summary.run_id)
            raise
        finally:
            store.close()
        return result

    async def _with_store(self, store: IndexStore, table: Table, overrides: Overrides) -> EnrichResult:
        self.summary.index = redact_url(store.url)
        digest = file_digest(table.path) if table.path else ""
        await asyncio.to_thread(
            store.journal_start, self.summary.run_id, str(table.path or "<frame>"), digest, self.options.public()
        )
        keyed, answers, pending, eqc_names, counts = await self.prepare(store, table, overrides)
        progress = self.progress
        stage = await self._eqc_stage(store, eqc_names) if eqc_names else StageResult()
        eqc_ids = {name: o.hit.company_id for name, o in stage.outcomes.items() if o.status == "found" and o.hit}
        still_open = [name for name, _ in pending if name not in eqc_ids]
        salt = self.options.salt if self.options.salt is not None else self.settings.alias_salt.get_secret_value()
        answers = replace(answers, eqc=eqc_ids, temp=temp_ids(still_open, salt))
        resolved = resolve_rows(
            keyed, answers, id_column=self.options.id_column, source_column=self.options.source_column
        )
        with self.timer.phase("index_write"):
            await asyncio.to_thread(self._learn_backflow_and_hits, store, keyed, answers, resolved)
        progress.rows_resolved = table.frame.height
        progress.phase = "writing output"
        self._summarize_resolution(resolved, stage, counts, rows=table.frame.height)
        unresolved = unresolved_table(
            resolved, self.columns, id_column=self.options.id_column, source_column=self.options.source_column
        )
        self.summary.unresolved_names = unresolved.height
        new = [self.options.id_column, self.options.source_column]
        frame = onto_rows(table.frame, resolved, self.columns, new=new)
        return EnrichResult(frame=frame, summary=self.summary, unresolved=unresolved)

    async def prepare(
        self, store: IndexStore, table: Table, overrides: Overrides
    ) -> tuple[pl.DataFrame, Answers, list[tuple[str, int]], list[str], EqcCounts]:
        """Everything before EQC: keys, the bulk index lookup, and the names only EQC can answer."""
        progress = self.progress
        progress.rows = table.frame.height
        progress.phase = "normalize"
        with self.timer.phase("normalize"):
            keyed = distinct_keys(table.frame, self.columns)
        progress.phase = "index lookup"
        with self.timer.phase("index_lookup"):
            answers, negatives = await asyncio.to_thread(self._index_answers, store, keyed, overrides)
        pre = resolve_rows(keyed, answers, id_column="__pre_id", source_column="__pre_source")
        pending = names_for_eqc(pre, id_column="__pre_id")
        eqc_names, counts = self._select_eqc_names(pending, negatives)
        self._count_before_eqc(keyed, pending, counts)
        self._rows_per_name = dict(pending)
        progress.rows_resolved = table.frame.height - sum(self._rows_per_name[name] for name in eqc_names)
        return keyed, answers, pending, eqc_names, counts

    def _index_answers(self, store: IndexStore, keyed: pl.DataFrame, overrides: Overrides) -> tuple[Answers, set[str]]:
        refresh = self.options.refresh_s
        since = utcnow() - timedelta(seconds=refresh) if refresh is not None else None
        wanted = wanted_index_keys(keyed)
        entries = store.lookup(wanted, updated_since=since)
        self._record_index_hits(wanted, entries)
        negatives: set[str] = set()
        if not self.options.retry_not_found:
            asked_since = utcnow() - timedelta(seconds=self.options.negative_ttl_s)
            negatives = store.known_negatives(wanted[LookupType.CUSTOMER_NAME], asked_since=asked_since)
        answers = Answers(overrides=overrides, index=index_maps(entries), learned=learn_existing_ids(keyed))
        return answers, negatives

    def _record_index_hits(
        self, wanted: Mapping[str, list[str]], entries: Mapping[tuple[str, str], IndexEntry]
    ) -> None:
        found_by_type: dict[str, int] = {}
        for _, kind in entries:
            found_by_type[kind] = found_by_type.get(kind, 0) + 1
        self.summary.index_hits_by_type = {
            str(kind): {"asked": len(keys), "found": found_by_type.get(str(kind), 0)} for kind, keys in wanted.items()
        }

    def _select_eqc_names(self, pending: list[tuple[str, int]], negatives: set[str]) -> tuple[list[str], EqcCounts]:
        counts = EqcCounts()
        names = [name for name, _ in pending if name not in negatives]
        counts.negative_cache_hits = len(pending) - len(names)
        if not self.options.enrichment:
            counts.skipped = len(names)
            return [], counts
        budget = self.options.budget
        if budget is not None and budget > 0 and len(names) > budget:
            counts.over_budget = len(names) - budget
            names = names[:budget]
        counts.names_asked = len(names)
        return names, counts

    def _count_before_eqc(self, keyed: pl.DataFrame, pending: list[tuple[str, int]], counts: EqcCounts) -> None:
        distinct = keyed.filter(pl.col(NAME_KEY) != "")[NAME_KEY].n_unique()
        needing = len(pending) - counts.negative_cache_hits
        self.summary.distinct_names = distinct
        self.summary.index_hit_rate = round(1.0 - needing / distinct, 4) if distinct else 1.0
        progress = self.progress
        progress.distinct_names = distinct
        progress.answered_before_eqc = distinct - needing
        progress.names_for_eqc = counts.names_asked
        progress.calls_per_name = 3 if self.options.details else 1
        progress.effective_rate = 0.0
        self.summary.eqc = counts

    async def _eqc_stage(self, store: IndexStore, names: list[str]) -> StageResult:
        self.progress.phase = "eqc"
        with self.timer.phase("eqc"):
            client = self._client()
            writer = IndexWriter(store, interval_s=self.options.commit_interval_s)
            try:
                return await self._ask(client, writer, names)
            finally:
                await client.aclose()
                self.timer.seconds["index_write"] += writer.write_s

    async def _ask(self, client: EqcClient, writer: IndexWriter, names: list[str]) -> StageResult:
        stats = self.progress.eqc
        client_token_ok = await self._ensure_token(client)
        keeper = TokenKeeper(client, self._token_command())
        if not client_token_ok:
            return _all_skipped(names, keeper.unavailable_reason or _NO_TOKEN_MESSAGE, stats)

        def on_outcome(outcome: LookupOutcome) -> None:
            writer.add(outcome)
            # every row of a name EQC has answered is settled now: its id, or a temporary one
            self.progress.rows_resolved += self._rows_per_name.get(outcome.name, 0)

        settings = LookupSettings(
            rate_limit=self.rate_limit,
            retries=self.options.retries if self.options.retries is not None else self.settings.eqc_retry_max,
            concurrency=self.options.concurrency,
            details=self.options.details,
            margin_s=self.options.margin_s,
            timeout_s=self._timeout(),
            grace_s=self.options.grace_s,
        )
        lookup = EqcLookup(client, settings, stats=stats, tokens=keeper, on_outcome=on_outcome, events=self.events)
        self.progress.effective_rate = lookup.limiter.effective_rate
        self.control._attach(lookup)
        writer.start()
        try:
            result = await lookup.run(names)
        finally:
            await writer.close()
        stats.token_refreshes = keeper.refreshes
        self.summary.concurrency = {
            "cap": self.options.concurrency,
            "peak_in_flight": lookup.gate.peak_in_flight,
            "final_target": lookup.gate.target,
            "limiter_margin_s": lookup.limiter.margin_s,
            "limiter_margin_widened": lookup.limiter.widened,
        }
        return result

    async def _ensure_token(self, client: EqcClient) -> bool:
        """A token to start with: given, or from the token command; optionally checked with one call."""
        if not client.has_token:
            command = self._token_command()
            if not command:
                return False
            client.set_token(await asyncio.to_thread(run_token_command, command))
        if self.options.check_token and not await client.check_token():
            command = self._token_command()
            if not command:
                return False
            client.set_token(await asyncio.to_thread(run_token_command, command))
        return True

    def _client(self) -> EqcClient:
        token = self.options.token if self.options.token is not None else self.settings.token_value()
        return EqcClient(
            token,
            base_url=self.options.eqc_url or self.settings.eqc_base_url,
            timeout=self._timeout(),
            observer=self.progress.eqc.record_call,
        )

    def _timeout(self) -> float:
        return self.options.timeout_s if self.options.timeout_s is not None else self.settings.eqc_timeout

    def _token_command(self) -> str | None:
        return self.options.token_command or self.settings.eqc_token_command

    def _learn_backflow_and_hits(
        self, store: IndexStore, keyed: pl.DataFrame, answers: Answers, resolved: pl.DataFrame
    ) -> None:
        known = answers.index.get(LookupType.CUSTOMER_NAME, {})
        batch = WriteBatch(
            entries=[
                IndexEntry(name, LookupType.CUSTOMER_NAME, company_id, BACKFLOW_CONFIDENCE, BACKFLOW_SOURCE)
                for name, company_id in answers.learned.items()
                if name not in known
            ]
        )
        store.write(batch)
        store.record_hits(index_hits(resolved, source_column=self.options.source_column))

    def _summarize_resolution(
        self, resolved: pl.DataFrame, stage: StageResult, counts: EqcCounts, *, rows: int
    ) -> None:
        stats = self.progress.eqc
        self.summary.resolved_by = rows_by_source(resolved, source_column=self.options.source_column)
        self.summary.rows = rows
        counts.found, counts.not_found, counts.failed = stats.found, stats.not_found, stats.failed
        counts.skipped += stats.skipped
        self.summary.api_calls = {**{k: int(v) for k, v in sorted(stats.calls.items())}, "total": stats.api_calls}
        self.summary.retries = stats.retries
        self.summary.rate_limited = stats.rate_limited
        self.summary.token_refreshes = stats.token_refreshes
        self.summary.rate_limit = str(self.rate_limit)
        if stage.stopped == "token":
            self.summary.status = "token_unavailable"
            self.summary.message = stage.token_message or _NO_TOKEN_MESSAGE
        elif stage.stopped == "interrupted" or self.control.stopped:
            self.summary.status = "interrupted"
            self.summary.message = (
                "interrupted: every answer received is in the index; rerun the same command to resume"
            )

    def _write_outputs(
        self, result: EnrichResult, table: Table, output: str | Path | None, unresolved: str | Path | None
    ) -> None:
        if output is not None:
            path = Path(output)
            write_table(result.frame, path, like=table)
            self.summary.output = str(path)
        if unresolved is not None:
            write_table(result.unresolved, Path(unresolved))
        self.summary.input = str(table.path) if table.path else None

    def _finish_summary(self, started: float) -> None:
        summary = self.summary
        summary.elapsed_s = round(time.perf_counter() - started, 4)
        summary.phases_s = {name: round(seconds, 4) for name, seconds in self.timer.seconds.items()}
        stats = self.progress.eqc
        summary.timing = _timing(self.timer.seconds, stats)
        latency = self.options.latency_hint or _measured_latency(stats)
        if latency is not None and summary.eqc.names_asked:
            k = 3 if self.options.details else 1
            local = sum(v for name, v in self.timer.seconds.items() if name != "eqc")
            # M counts every attempt the server saw, retries and 429s included, as the model defines it
            extra = max(0, stats.api_calls - k * summary.eqc.names_asked)
            work = Workload(summary.eqc.names_asked, k, extra_calls=extra)
            bound = lower_bound(work, self.rate_limit, latency, local_s=local)
            summary.lower_bound_s = round(bound, 4)
            summary.efficiency = round(bound / summary.elapsed_s, 4) if summary.elapsed_s else None


_NO_TOKEN_MESSAGE = (
    "no usable EQC token: set WDH_EQC_TOKEN, or --token-command / WDH_EQC_TOKEN_COMMAND to a command that prints one; "
    "names not asked got temporary ids, which a later run replaces"
)


def _journal_failed(store: IndexStore, run_id: str) -> None:
    """Best effort: the journal says the run died, unless the database is what failed."""
    with contextlib.suppress(EqcEnrichError):
        store.journal_finish(run_id, "failed", {})


def _all_skipped(names: list[str], message: str, stats: EqcStats) -> StageResult:
    result = StageResult(stopped="token", token_message=message)
    for name in names:
        result.outcomes[name] = LookupOutcome(name, "skipped")
    stats.skipped += len(names)
    return result


def _as_table(source: pl.DataFrame | Any | str | Path, sheet: str | None) -> Table:
    if isinstance(source, str | Path):
        return read_table(source, sheet=sheet)
    if isinstance(source, pl.DataFrame):
        return Table(source, None, "parquet")
    if hasattr(source, "columns") and hasattr(source, "dtypes"):
        return Table(pl.from_pandas(source), None, "parquet")
    raise InputError(f"cannot enrich a {type(source).__name__}: pass a path, a polars or a pandas frame")


def _measured_latency(stats: Any) -> Latency | None:
    samples = stats.latencies.get(SEARCH)
    if not samples:
        return None
    return Latency(mean_s=sum(samples) / len(samples), max_s=max(samples))


def _timing(phases: Mapping[str, float], stats: Any) -> dict[str, Any]:
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
    answered_before_eqc: int
    negative_cache_hits: int
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
        return self.answered_before_eqc / self.distinct_names if self.distinct_names else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "index_hit_rate": round(self.index_hit_rate, 4)}


def plan(
    source: pl.DataFrame | Any | str | Path,
    *,
    options: RunOptions | None = None,
    latency: Latency = STORY_LATENCY,
    **overrides: Any,
) -> PlanReport:
    """Rows, distinct names, index hits, names for EQC, calls needed and the lower bound on time."""
    opts = replace(options or RunOptions(), **overrides)
    return asyncio.run(_plan_async(source, opts, latency))


async def _plan_async(source: pl.DataFrame | Any | str | Path, options: RunOptions, latency: Latency) -> PlanReport:
    run = _Run(options, load_settings(), RunProgress(), None)
    table = _as_table(source, options.sheet)
    run.use_columns(table.frame)
    store = await asyncio.to_thread(IndexStore, options.db, schema=options.db_schema)
    try:
        _, _, pending, names, counts = await run.prepare(store, table, Overrides.load(options.overrides))
    finally:
        store.close()
    k = 3 if options.details else 1
    work = Workload(len(names), k)
    old_work = Workload(len(pending) - counts.negative_cache_hits, 3)
    return PlanReport(
        rows=table.frame.height,
        distinct_names=run.summary.distinct_names,
        answered_before_eqc=run.progress.answered_before_eqc,
        negative_cache_hits=counts.negative_cache_hits,
        names_for_eqc=len(names),
        calls_per_name=k,
        calls_needed=round(work.requests),
        rate_limit=str(run.rate_limit),
        latency_mean_s=latency.mean_s,
        latency_max_s=latency.max_s,
        lower_bound_s=round(lower_bound(work, run.rate_limit, latency), 3),
        old_flow_s=round(sequential_time(old_work, run.rate_limit, latency), 3),
    )
