"""The `worker` command: the standing worker (`worker`, `worker --once`) and its state (`worker status`).

A thin layer over `eqc_enrich.worker`: options in, the report out, exit 0 when it drained what was due or
was stopped (SIGTERM, Ctrl-C); a run's exit codes when the token, EQC or the index stopped it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from eqc_enrich._cli_options import DbOpt, SchemaOpt, with_eqc_options
from eqc_enrich._durations import parse_duration
from eqc_enrich._exit_codes import EXIT_INTERRUPTED, worker_exit_code
from eqc_enrich._signals import on_stop_signals
from eqc_enrich.config import EqcOptions, resolve_access
from eqc_enrich.events import EventLog
from eqc_enrich.output import ensure_writable
from eqc_enrich.progress import RunProgress
from eqc_enrich.settings import load_settings
from eqc_enrich.store import IndexStore
from eqc_enrich.worker import WorkerControl, WorkerOptions, WorkerReport, run_worker_async, worker_status

__all__ = ["register", "worker_app"]

worker_app = typer.Typer(
    name="worker",
    help="The standing worker: settles the names runs left open, using only the quota runs leave idle.",
    invoke_without_command=True,
)

NegativeTtlOpt = Annotated[str, typer.Option(help="Ask a name EQC did not know again once this has passed.")]
RefreshOpt = Annotated[str, typer.Option(help="Ask a low-confidence answer again once it is this old.")]


def _saying_logins(log: EventLog | None) -> Callable[[str, dict[str, Any]], None]:
    """Events to the log, and the one line asking for a login (a missing or rejected token) to the person."""

    def emit(kind: str, fields: dict[str, Any]) -> None:
        if kind == "token_login_needed":
            typer.echo(fields["line"], err=True)
        elif kind == "token_login_done":
            typer.echo("a new EQC token is in force: resuming", err=True)
        if log is not None:
            log(kind, fields)

    return emit


def register(app: typer.Typer) -> None:
    """Add the `worker` command (and `worker status`) to the project's command line."""
    app.add_typer(worker_app, name="worker")


@worker_app.callback()
@with_eqc_options
def worker(
    ctx: typer.Context,
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Drain what is due now, then exit (for a scheduler).")] = False,
    max_time: Annotated[
        str | None, typer.Option(help="Stop after this long (a scheduler's slot), e.g. 50m; exit 0.")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Names per pass (the queue is read again between).")] = 200,
    negative_ttl: NegativeTtlOpt = "30d",
    refresh: RefreshOpt = "90d",
    retry_failed: Annotated[str, typer.Option(help="Wait before asking a failed name again (doubles).")] = "1h",
    concurrency: Annotated[int | None, typer.Option(min=1, help="Cap on requests in flight (default adapts).")] = None,
    poll: Annotated[
        str | None, typer.Option(help="How often a worker with nothing due looks again (default: ten rate windows).")
    ] = None,
    no_fill_details: Annotated[
        bool,
        typer.Option(
            "--no-fill-details", help="Do not fetch base_info's missing findDepart/findLabels when nothing else is due."
        ),
    ] = False,
    log_json: Annotated[Path | None, typer.Option(help="Write structured events (JSON lines) here.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    *,
    eqc: EqcOptions,
) -> None:
    """Run until stopped (SIGTERM or Ctrl-C let requests in flight finish, then exit 0)."""
    if ctx.invoked_subcommand is not None:
        return
    options = WorkerOptions(
        db=db, db_schema=db_schema, eqc=eqc, batch=batch, concurrency=concurrency,
        negative_ttl_s=parse_duration(negative_ttl), refresh_s=parse_duration(refresh),
        retry_failed_s=parse_duration(retry_failed), poll_s=parse_duration(poll) if poll else None,
        max_time_s=parse_duration(max_time) if max_time else None, fill_details=not no_fill_details,
    )  # fmt: skip
    if log_json is not None:
        ensure_writable([log_json], check_format=False)
    report = _run_with_signals(options, once=once, log_json=log_json)
    if not quiet:
        _print_report(report)
    raise typer.Exit(worker_exit_code(report.status))


@worker_app.command("status")
@with_eqc_options
def status(
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    negative_ttl: NegativeTtlOpt = "30d",
    refresh: RefreshOpt = "90d",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    *,
    eqc: EqcOptions,
) -> None:
    """The queue by kind, what the workers did today, their share of the quota, and what falls due next.

    The share is of the rate limit the runs recorded with the shared quota; `--rate-limit` (or
    WDH_EQC_RATE_LIMIT, when set) stands in only where none is recorded, and without either it is unknown."""
    settings = load_settings()
    access = resolve_access(eqc, settings)  # the quota is named by the key, else the URL
    given = eqc.rate_limit or (settings.rate_limit if "eqc_rate_limit" in settings.model_fields_set else None)
    options = WorkerOptions(negative_ttl_s=parse_duration(negative_ttl), refresh_s=parse_duration(refresh))
    store = IndexStore(db, schema=db_schema)
    try:
        state = worker_status(store, options, given, access.quota_key, default_window_s=settings.rate_limit.window_s)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(state.as_dict(), ensure_ascii=False, indent=2, default=str))
        return
    for line in state.lines():
        typer.echo(line)


def _run_with_signals(options: WorkerOptions, *, once: bool, log_json: Path | None) -> WorkerReport:
    control = WorkerControl()
    progress = RunProgress()

    async def main() -> WorkerReport:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal() -> None:
            if control.stopped and task is not None:
                task.cancel()
                return
            typer.echo("stopping: letting requests in flight finish (press Ctrl-C again to stop at once)", err=True)
            control.stop()

        restore = on_stop_signals(loop, on_signal)
        events = EventLog(log_json, progress, interval_s=30.0) if log_json else None
        if events is not None:
            events.start(options=options.public(), once=once)
        report: WorkerReport | None = None
        try:
            report = await run_worker_async(
                options, once=once, control=control, events=_saying_logins(events), progress=progress
            )
            return report
        finally:
            if events is not None:
                await events.finish(**(report.as_dict() if report else {"status": "failed"}))
            restore()

    try:
        return asyncio.run(main())
    except asyncio.CancelledError as exc:
        typer.echo("error: stopped at once: answers received so far are in the index", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from exc


def _print_report(report: WorkerReport) -> None:
    o = report.outcomes
    typer.echo(
        f"worker {report.owner}: {report.status}; {report.passes} passes, {report.asked:,} names asked "
        f"({o['found']:,} found, {o['not_found']:,} not found, {o['failed']:,} failed), "
        f"{o['elsewhere']:,} answered by others, {report.yielded} times yielded to a run, {report.elapsed_s:.1f}s",
        err=True,
    )
    if report.message:
        typer.echo(report.message, err=True)
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
