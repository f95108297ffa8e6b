"""eqc-enrich inside Dagster: a resource with the index, EQC and quota settings, asset factories, a worker schedule.

Needs the `dagster` extra (`pip install 'eqc-enrich[dagster]'`); nothing else in the package imports this
module, so `import eqc_enrich` never loads Dagster.

- `EqcEnrichResource`: where the index is, which EQC and which quota. The token is not a field: it is read
  from the environment of the run (`token_env`, default `WDH_EQC_TOKEN`) when the step runs, so it never
  lands in run config, the definitions' config schema, metadata or the event log.
- `enrich_frame_asset` / `enrich_file_asset`: an asset that enriches an upstream frame, or a file on disk.
  A run that does not end `completed` fails the step with its status and message; the figures of the
  summary go with the failure as metadata, so they stay true for the run that failed.
- `worker_job` / `worker_schedule`: `eqc-enrich worker --once` as a subprocess on a cron schedule, to spend
  the quota between monthly runs; its output goes to the Dagster log.

This module does not use `from __future__ import annotations`: Dagster reads the annotations of the
functions it wraps (the `context` parameter, the `config` class) as real types.
"""

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import dagster as dg
import polars as pl
from pydantic import Field

from eqc_enrich._durations import parse_duration, parse_rate_limit
from eqc_enrich._errors import ConfigError, EqcEnrichError
from eqc_enrich._exit_codes import EXIT_CODES, EXIT_USAGE, exit_code
from eqc_enrich.config import EqcOptions
from eqc_enrich.enrich import EnrichResult, enrich
from eqc_enrich.options import RunOptions
from eqc_enrich.output import default_output_path, unresolved_path
from eqc_enrich.resolve import Columns
from eqc_enrich.summary import RunSummary

__all__ = [
    "DEFAULT_RESOURCE_KEY",
    "TOKEN_ENV",
    "EnrichFileConfig",
    "EqcEnrichResource",
    "WorkerFailed",
    "enrich_file_asset",
    "enrich_frame_asset",
    "run_worker",
    "summary_metadata",
    "worker_job",
    "worker_schedule",
]

TOKEN_ENV = "WDH_EQC_TOKEN"
DB_ENV = "EQC_ENRICH_DB"  # what the worker command reads its --db from
TOKEN_COMMAND_ENV = "WDH_EQC_TOKEN_COMMAND"  # and its --token-command
DEFAULT_RESOURCE_KEY = "eqc_enrich"
_STOP_GRACE_S = 30.0  # a worker told to stop lets its requests in flight land (they can take a minute at 1x)


class EqcEnrichResource(dg.ConfigurableResource):  # type: ignore[type-arg]  # Dagster binds it to itself
    """The index, EQC and quota settings every eqc-enrich step of a code location shares.

    Unset fields fall back to the same `WDH_*` / `EQC_ENRICH_*` settings the command line reads. Use
    `dagster.EnvVar("EQC_ENRICH_DB")` for a database URL with a password in it, so the URL stays in the
    environment too.
    """

    db: str | None = Field(default=None, description="Index: SQLite path or SQLAlchemy URL [EQC_ENRICH_DB].")
    db_schema: str | None = Field(default=None, description="PostgreSQL schema of the index, e.g. enterprise.")
    eqc_url: str | None = Field(default=None, description="EQC base URL [WDH_EQC_BASE_URL].")
    rate_limit: str | None = Field(default=None, description="The quota, e.g. 10/60s [WDH_EQC_RATE_LIMIT].")
    quota_key: str | None = Field(
        default=None, description="The EQC account whose quota jobs share [WDH_EQC_QUOTA_KEY, else the URL]."
    )
    token_env: str = Field(
        default=TOKEN_ENV, description="The environment variable the EQC token is read from when a step runs."
    )
    token_command: str | None = Field(
        default=None, description="A command that prints a fresh EQC token [WDH_EQC_TOKEN_COMMAND]."
    )
    timeout: str | None = Field(default=None, description="Per-request timeout, e.g. 30s [WDH_EQC_TIMEOUT].")
    retries: int | None = Field(default=None, description="Retries per request [WDH_EQC_RETRY_MAX].")
    concurrency: int | None = Field(default=None, description="A cap on requests in flight (adapts by default).")
    budget: int | None = Field(
        default=None, description="Ask EQC about at most this many names per run (0: none; unset: no cap)."
    )
    details: bool = Field(default=False, description="Also fetch findDepart and findLabels (3 calls a name).")
    overrides: str | None = Field(
        default=None,
        description="YAML file of plan_code / customer_name overrides, or WorkDataHub's mapping folder "
        "[WDH_MAPPINGS_DIR].",
    )
    check_token: bool = Field(default=False, description="One token check call (in the quota) before a run starts.")
    eqc_down_wait: str | None = Field(default=None, description="How long to wait for an unreachable EQC [5m].")
    index_wait: str | None = Field(default=None, description="How long answers wait for the index [2m].")
    claim_lease: str | None = Field(default=None, description="How long a claim on a name outlives its process [60s].")
    proxy: str | None = Field(default=None, description="A fixed proxy to EQC [WDH_EQC_PROXY].")
    pac_url: str | None = Field(default=None, description="Choose the proxy by this PAC file [WDH_PAC_URL].")
    ca_bundle: str | None = Field(default=None, description="PEM file of more CAs to trust [WDH_EQC_CA_BUNDLE].")
    token_wait: str | None = Field(
        default=None, description="Without a token command: how long to wait for a login [WDH_EQC_TOKEN_WAIT, 10m]."
    )

    def _token(self) -> str | None:
        """The token from the environment, read now; None leaves it to the `WDH_*` settings (`.wdh_env`, the
        token command), which is where the default variable comes from anyway."""
        value = os.environ.get(self.token_env, "").strip()
        if value:
            return value
        if self.token_env == TOKEN_ENV:
            return None
        raise ConfigError(f"{self.token_env} is not set in the environment of this run (token_env names it)")

    def eqc_options(self) -> EqcOptions:
        """How to reach EQC and share its quota: the same value the command line and a run take."""
        return EqcOptions(
            url=self.eqc_url,
            token=self._token(),
            token_command=self.token_command,
            rate_limit=parse_rate_limit(self.rate_limit) if self.rate_limit else None,
            quota_key=self.quota_key,
            timeout_s=_seconds(self.timeout),
            retries=self.retries,
            claim_lease_s=_seconds(self.claim_lease),
            proxy=self.proxy,
            pac_url=self.pac_url,
            ca_bundle=self.ca_bundle,
            token_wait_s=_seconds(self.token_wait),
        )

    def run_options(self, **changes: Any) -> RunOptions:
        """The `RunOptions` of a run with these settings; `changes` are further `RunOptions` fields."""
        options = RunOptions(
            db=self.db,
            db_schema=self.db_schema,
            eqc=self.eqc_options(),
            concurrency=self.concurrency,
            budget=self.budget,
            details=self.details,
            overrides=Path(self.overrides) if self.overrides else None,
            check_token=self.check_token,
            eqc_down_wait_s=_seconds(self.eqc_down_wait),
            index_wait_s=_seconds(self.index_wait),
        )
        return replace(options, **changes)

    def enrich(
        self,
        source: pl.DataFrame | Any | str | Path,
        *,
        output: str | Path | None = None,
        unresolved_output: str | Path | None = None,
        **changes: Any,
    ) -> EnrichResult:
        """`eqc_enrich.enrich` with these settings: a frame (polars or pandas) or a file path."""
        options = self.run_options(**changes)
        return enrich(source, options=options, output=output, unresolved_output=unresolved_output)

    def worker_command(self, *, max_time: str | None = None) -> list[str]:
        """`eqc-enrich worker --once` with the settings it takes.

        The token and the database URL (which may hold a password) go through the environment
        (`worker_env`), never the command line, which any user of the host can read in `ps`.
        `max_time` (e.g. `50m`) ends the pass early, so an hourly schedule's runs do not pile up.
        """
        command = [sys.executable, "-m", "eqc_enrich", "worker", "--once"]
        for option, value in (
            ("--max-time", max_time),
            ("--db-schema", self.db_schema),
            ("--eqc-url", self.eqc_url),
            ("--quota-key", self.quota_key),
            ("--rate-limit", self.rate_limit),
            ("--timeout", self.timeout),
            ("--retries", None if self.retries is None else str(self.retries)),
            ("--claim-lease", self.claim_lease),
        ):
            if value:
                command += [option, value]
        return command

    def worker_env(self) -> dict[str, str]:
        """The run's environment: the token under `WDH_EQC_TOKEN` when `token_env` names another variable, and
        the `db` and `token_command` fields under `EQC_ENRICH_DB` and `WDH_EQC_TOKEN_COMMAND`."""
        env = dict(os.environ)
        if self.db:
            env[DB_ENV] = self.db
        if self.token_command:
            env[TOKEN_COMMAND_ENV] = self.token_command
        if self.token_env != TOKEN_ENV:
            token = self._token()
            if token is not None:
                env[TOKEN_ENV] = token
        return env


def _seconds(text: str | None) -> float | None:
    return parse_duration(text) if text else None


# --- metadata and endings --------------------------------------------------------------------------------


def summary_metadata(summary: RunSummary) -> dict[str, dg.MetadataValue]:
    """The summary's headline figures as Dagster metadata (no token: the summary never holds it)."""
    eqc = summary.eqc
    figures: dict[str, int] = {
        "rows": summary.rows,
        "dagster/row_count": summary.rows,
        "distinct_names": summary.distinct_names,
        "answered_before_eqc": summary.answered_before_eqc,
        "names_planned": eqc.names_planned,
        "names_asked": eqc.names_asked,
        "found": eqc.found,
        "not_found": eqc.not_found,
        "failed": eqc.failed,
        "not_asked": eqc.not_asked,
        "answered_elsewhere": eqc.answered_elsewhere,
        "over_budget": eqc.over_budget,
        "api_calls": summary.api_calls.get("total", 0),
        "accepted_requests": summary.accepted_requests,
        "rate_limited": summary.rate_limited,
        "retries": summary.retries,
        "token_refreshes": summary.token_refreshes,
        "unresolved_names": summary.unresolved_names,
        "rows_without_id": sum(summary.rows_without_id.values()),
        "exit_code": exit_code(summary.status),
    }
    metadata: dict[str, dg.MetadataValue] = {
        "status": dg.MetadataValue.text(summary.status),
        "message": dg.MetadataValue.text(summary.message or ""),
        **{key: dg.MetadataValue.int(value) for key, value in figures.items()},
        "index_hit_rate": dg.MetadataValue.float(summary.index_hit_rate),
        "elapsed_s": dg.MetadataValue.float(summary.elapsed_s),
        "lower_bound_s": _float_or_null(summary.lower_bound_s),
        "efficiency": _float_or_null(summary.efficiency),
        "resolved_by": dg.MetadataValue.json(dict(summary.resolved_by)),
        "rate_limit": dg.MetadataValue.text(summary.rate_limit),
        "index": dg.MetadataValue.text(summary.index),  # the URL with any password hidden
        "run_id": dg.MetadataValue.text(summary.run_id),
    }
    if summary.warnings:
        metadata["warnings"] = dg.MetadataValue.json(list(summary.warnings))
    return metadata


def _float_or_null(value: float | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(value)


def _one_line(summary: RunSummary) -> str:
    eqc = summary.eqc
    return (
        f"eqc-enrich {summary.status}: {summary.rows:,} rows, {summary.distinct_names:,} names, "
        f"{summary.answered_before_eqc:,} answered before EQC, {eqc.names_asked:,} asked "
        f"({eqc.found:,} found, {eqc.not_found:,} not found, {eqc.failed:,} failed, {eqc.not_asked:,} not asked), "
        f"{summary.elapsed_s:.1f} s"
    )


def _enrich_in_step(context: dg.AssetExecutionContext, resource_key: str, source: Any, **kwargs: Any) -> EnrichResult:
    """One run inside a step: bad settings or input fail it in one line, and so does any ending but completed."""
    resource: EqcEnrichResource = getattr(context.resources, resource_key)
    try:
        result = resource.enrich(source, **kwargs)
    except EqcEnrichError as exc:
        # a lock held elsewhere or a lost connection may pass: let a retry policy retry those, not a bad setting
        raise dg.Failure(description=f"eqc-enrich: {exc}", allow_retries=getattr(exc, "transient", False)) from exc
    summary = result.summary
    context.log.info(_one_line(summary))
    if summary.message:
        context.log.info(summary.message)
    if summary.status != "completed":
        raise dg.Failure(
            description=(
                f"eqc-enrich run ended {summary.status} (exit code {exit_code(summary.status)}): "
                f"{summary.message or 'no message'}"
            ),
            metadata=summary_metadata(summary),
        )
    return result


# --- asset factories ---------------------------------------------------------------------------------------


def enrich_frame_asset(
    name: str,
    *,
    upstream: str | Sequence[str] | dg.AssetKey,
    resource_key: str = DEFAULT_RESOURCE_KEY,
    columns: Columns | None = None,
    group_name: str | None = None,
    description: str | None = None,
) -> dg.AssetsDefinition:
    """An asset of the `upstream` asset's frame (polars or pandas) with company_id and company_id_source.

    Its value is a polars frame, stored by the code location's IO manager; the run summary's figures are
    its materialization metadata.
    """
    upstream_key = dg.AssetKey.from_coercible(upstream)

    @dg.asset(
        name=name,
        ins={"data": dg.AssetIn(key=upstream_key)},
        required_resource_keys={resource_key},
        group_name=group_name,
        description=description or f"{upstream_key.to_user_string()} with a stable company_id on every row",
        kinds={"polars"},
    )
    def _enriched_frame(context: dg.AssetExecutionContext, data: Any) -> dg.Output[pl.DataFrame]:
        result = _enrich_in_step(context, resource_key, data, **_column_options(columns))
        return dg.Output(result.frame, metadata=summary_metadata(result.summary))

    return _enriched_frame


class EnrichFileConfig(dg.Config):
    """Run config of a file asset: another input (and output) than the ones it was defined with."""

    path: str | None = Field(default=None, description="The input file; default the asset's own.")
    output: str | None = Field(default=None, description="The enriched file; default <stem>.enriched.<ext>.")


def enrich_file_asset(
    name: str,
    *,
    path: str | Path,
    output: str | Path | None = None,
    unresolved_output: str | Path | None = None,
    sheet: str | None = None,
    resource_key: str = DEFAULT_RESOURCE_KEY,
    columns: Columns | None = None,
    deps: Sequence[str | dg.AssetKey] | None = None,
    group_name: str | None = None,
    description: str | None = None,
) -> dg.AssetsDefinition:
    """An asset that enriches the file at `path` into `output` (default `<stem>.enriched.<ext>`), as `run` does.

    The names left with temporary ids go to `unresolved_output` (default `<stem>.unresolved.csv`). Both
    are written whole or not at all; the materialization points at them and carries the summary's figures.
    """

    @dg.asset(
        name=name,
        required_resource_keys={resource_key},
        deps=list(deps or []),
        group_name=group_name,
        description=description or f"{Path(path).name} with a stable company_id on every row",
        kinds={"file"},
    )
    def _enriched_file(context: dg.AssetExecutionContext, config: EnrichFileConfig) -> dg.MaterializeResult[None]:
        source = Path(config.path) if config.path else Path(path)
        target = Path(config.output) if config.output else Path(output) if output else default_output_path(source)
        # another input given in config gets its own unresolved file beside it, never the default input's
        unresolved = Path(unresolved_output) if unresolved_output and not config.path else unresolved_path(source)
        result = _enrich_in_step(
            context,
            resource_key,
            source,
            output=target,
            unresolved_output=unresolved,
            sheet=sheet,
            **_column_options(columns),
        )
        metadata = {
            **summary_metadata(result.summary),
            "input": dg.MetadataValue.path(str(source)),
            "path": dg.MetadataValue.path(str(target)),
            "unresolved": dg.MetadataValue.path(str(unresolved)),
        }
        return dg.MaterializeResult(metadata=metadata)

    return _enriched_file


def _column_options(columns: Columns | None) -> dict[str, Any]:
    return {} if columns is None else {"columns": columns}


# --- the worker on a schedule --------------------------------------------------------------------------------


class WorkerFailed(EqcEnrichError):
    """`eqc-enrich worker --once` exited non-zero; the message has the code, its status and stderr's last line."""

    def __init__(self, code: int, last_error: str | None) -> None:
        self.code = code
        self.last_error = last_error
        super().__init__(
            f"eqc-enrich worker --once exited {code} ({_exit_meaning(code)}): {last_error or 'nothing on stderr'}"
        )


def _exit_meaning(code: int) -> str:
    by_code = {number: status for status, number in EXIT_CODES.items()}
    if code in by_code:
        return by_code[code]
    if code == EXIT_USAGE:
        return "bad input, option or setting"
    if code < 0:
        return f"killed by signal {-code}"
    return "unexpected error"


def run_worker(command: Sequence[str], env: Mapping[str, str], log: Callable[[str, str], None]) -> None:
    """Run the worker and hand each line of its stdout and stderr to `log(stream, line)` as it comes.

    A non-zero exit raises `WorkerFailed`. If this call is interrupted (the Dagster run is terminated), the
    worker gets SIGTERM, which it takes as Ctrl-C: requests in flight land and their answers are kept.
    """
    with _started(command, env) as process:
        last_error = _pump(process, log)
        code = process.wait()
    if code != 0:
        raise WorkerFailed(code, last_error)


@contextmanager
def _started(command: Sequence[str], env: Mapping[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        list(command),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _pump(process: subprocess.Popen[str], log: Callable[[str, str], None]) -> str | None:
    """Both streams read at once (either could fill its pipe), logged from this thread in arrival order."""
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    streams = {"stdout": process.stdout, "stderr": process.stderr}
    readers = [
        threading.Thread(target=_read_lines, args=(name, stream, lines), daemon=True)
        for name, stream in streams.items()
        if stream is not None
    ]
    for reader in readers:
        reader.start()
    open_streams, last_error = len(readers), None
    while open_streams:
        name, line = lines.get()
        if line is None:
            open_streams -= 1
            continue
        log(name, line)
        if name == "stderr" and line.strip():
            last_error = line.strip()
    for reader in readers:
        reader.join()
    return last_error


def _read_lines(name: str, stream: IO[str], lines: "queue.Queue[tuple[str, str | None]]") -> None:
    try:
        for line in stream:
            lines.put((name, line.rstrip("\r\n")))
    finally:
        lines.put((name, None))


def worker_job(
    name: str = "eqc_enrich_worker", *, resource_key: str = DEFAULT_RESOURCE_KEY, max_time: str | None = None
) -> dg.JobDefinition:
    """A job of one op that runs `eqc-enrich worker --once` with the resource's settings (and `--max-time`)."""

    @dg.op(name=f"{name}_once", required_resource_keys={resource_key})
    def _worker_once(context: dg.OpExecutionContext) -> None:
        resource: EqcEnrichResource = getattr(context.resources, resource_key)
        try:
            command, env = resource.worker_command(max_time=max_time), resource.worker_env()
            context.log.info("running eqc-enrich worker --once")
            run_worker(command, env, lambda stream, line: context.log.info(f"{stream}: {line}"))
        except WorkerFailed as exc:
            raise dg.Failure(description=str(exc), metadata={"exit_code": dg.MetadataValue.int(exc.code)}) from exc
        except EqcEnrichError as exc:
            raise dg.Failure(description=f"eqc-enrich: {exc}") from exc
        context.log.info("eqc-enrich worker --once exited 0: everything due is done")

    @dg.job(name=name, description="eqc-enrich worker --once: ask EQC what is due, within the shared quota")
    def _worker() -> None:
        _worker_once()

    return _worker


def worker_schedule(
    cron_schedule: str = "0 * * * *",
    *,
    name: str = "eqc_enrich_worker_schedule",
    job: dg.JobDefinition | None = None,
    resource_key: str = DEFAULT_RESOURCE_KEY,
    max_time: str | None = None,
    execution_timezone: str | None = None,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> dg.ScheduleDefinition:
    """`worker_job` on a cron schedule (hourly by default). Runs that overlap are safe: every worker on one
    index shares the quota and claims each name before asking it; `max_time` (e.g. `50m`) keeps them apart."""
    return dg.ScheduleDefinition(
        name=name,
        cron_schedule=cron_schedule,
        job=job or worker_job(resource_key=resource_key, max_time=max_time),
        execution_timezone=execution_timezone,
        default_status=default_status,
    )
