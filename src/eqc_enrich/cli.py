"""The command line: a thin layer over the Python API (parse options, show progress, map outcomes to exit codes).

Exit codes (`EXIT_CODES` for the endings of a run): 0 completed; 1 unexpected failure (a bug: one line,
please report it); 2 bad input, options or configuration; 3 EQC token unusable; 4 some names failed after
every retry; 5 EQC unavailable; 6 the index could not be written (answers kept in a side file); 7 the outputs
could not be written after the work was done (answers in the index); 130 interrupted. In every ending but 1,
2 and 7 the outputs are complete, with temporary ids where needed.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main

# typer 0.29 carries its own copy of click; these are the exceptions its parser raises (pinned in pyproject)
from typer._click.exceptions import ClickException, NoArgsIsHelpError, NoSuchOption, UsageError

from eqc_enrich import _cli_index, _cli_sandbox, _cli_token, _cli_worker, bench
from eqc_enrich._cli_options import DbOpt, SchemaOpt, with_eqc_options
from eqc_enrich._durations import format_duration, format_range, parse_duration, parse_range
from eqc_enrich._errors import EqcEnrichError, IndexStoreError
from eqc_enrich._exit_codes import EXIT_BUG, EXIT_CODES, EXIT_INTERRUPTED, EXIT_USAGE, exit_code, worker_exit_code
from eqc_enrich._input_size import parse_size
from eqc_enrich._policies import MatchPolicy
from eqc_enrich._signals import on_stop_signals
from eqc_enrich.config import EqcAccess, EqcOptions, resolve_access
from eqc_enrich.enrich import EnrichResult, RunControl, enrich_async
from eqc_enrich.events import EventLog
from eqc_enrich.model import EQC_LATENCY_S, Latency, implied_latency
from eqc_enrich.network import RouteError
from eqc_enrich.options import LOCAL_MATCH_MODES, RunOptions
from eqc_enrich.output import default_output_path, ensure_writable, unresolved_path
from eqc_enrich.planning import plan
from eqc_enrich.progress import ProgressDisplay, RunProgress
from eqc_enrich.resolve import Columns
from eqc_enrich.settings import load_settings

app = typer.Typer(
    name="eqc-enrich",
    help="Give every row a stable company_id: enrichment index first, EQC only for what it cannot answer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_cli_sandbox.register(app)
_cli_index.register(app)
_cli_worker.register(app)
_cli_token.register(app)
bench.register(app)

__all__ = ["EXIT_CODES", "app", "exit_code", "main", "worker_exit_code"]


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _optional_duration(text: str | None) -> float | None:
    return parse_duration(text) if text is not None else None


def _optional_size(text: str | None) -> int | None:
    return parse_size(text) if text is not None else None


InputArg = Annotated[
    Path, typer.Argument(metavar="INPUT", help="CSV, XLSX/XLS or Parquet file of one month.", show_default=False)
]
SheetOpt = Annotated[str | None, typer.Option(help="Excel sheet (default 规模明细, or the only sheet).")]
NameColOpt = Annotated[str, typer.Option(help="Column with the customer name.")]
PlanColOpt = Annotated[str | None, typer.Option(help="Column with the plan code (default 计划代码, if present).")]
IdColOpt = Annotated[str | None, typer.Option(help="Column with an existing id (default 公司代码, if present).")]
DetailsOpt = Annotated[bool, typer.Option(help="Also fetch findDepart and findLabels (3 calls a name).")]
OverridesOpt = Annotated[
    Path | None,
    typer.Option(
        help="YAML with plan_code: and customer_name: maps, or WorkDataHub's mapping folder (its company_id/ "
        "overrides files) [WDH_MAPPINGS_DIR]."
    ),
]
MaxInputOpt = Annotated[
    str | None,
    typer.Option(help="Most the input may take once read, e.g. 4GiB [EQC_ENRICH_MAX_INPUT_SIZE, else 2GiB]."),
]
NameFromPlanOpt = Annotated[
    bool,
    typer.Option(
        "--name-from-plan",
        help="单一计划 rows without 客户名称 take it from 计划名称 (before 企业年金计划); on for the 收入明细 sheet.",
    ),
]


def _columns(name_column: str, plan_column: str | None, id_column: str | None) -> Columns:
    return Columns(
        name=name_column,
        plan=plan_column or "计划代码",
        existing_id=id_column or "公司代码",
        plan_required=plan_column is not None,
        existing_id_required=id_column is not None,
    )


@app.command()
@with_eqc_options
def run(
    input_path: InputArg,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Default <stem>.enriched.<ext>.")] = None,
    sheet: SheetOpt = None,
    name_column: NameColOpt = "客户名称",
    plan_column: PlanColOpt = None,
    id_column: IdColOpt = None,
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Cap on requests in flight (default adapts).")] = None,
    budget: Annotated[
        int | None, typer.Option(min=0, help="At most this many names to EQC (0: none; no cap when not given).")
    ] = None,
    no_enrichment: Annotated[bool, typer.Option("--no-enrichment", help="Do not call EQC.")] = False,
    details: DetailsOpt = False,
    overrides: OverridesOpt = None,
    max_input_size: MaxInputOpt = None,
    name_from_plan: NameFromPlanOpt = False,
    summary: Annotated[Path | None, typer.Option(help="Write the run summary as JSON here.")] = None,
    unresolved: Annotated[Path | None, typer.Option(help="Default <stem>.unresolved.csv.")] = None,
    unknown_names: Annotated[
        Path | None,
        typer.Option(
            help="Also write WorkDataHub's unknown-names CSV (unknown_company_name, a line per temporary id)."
        ),
    ] = None,
    negative_ttl: Annotated[str, typer.Option(help="Trust 'not found' answers this long.")] = "30d",
    retry_not_found: Annotated[bool, typer.Option(help="Ask EQC again about names it did not find.")] = False,
    refresh: Annotated[str | None, typer.Option(help="Ignore index entries older than this (e.g. 90d).")] = None,
    check_token: Annotated[
        bool, typer.Option(help="One token check call (in the quota) before the first EQC request.")
    ] = True,
    eqc_down_wait: Annotated[
        str, typer.Option(help="How long to wait, probing, for an EQC that stopped answering before giving up.")
    ] = "5m",
    index_wait: Annotated[
        str, typer.Option(help="How long answers may wait for an index that cannot be written before the run stops.")
    ] = "2m",
    progress_interval: Annotated[str, typer.Option(help="Interval of plain progress lines off a terminal.")] = "30s",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and the final summary.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print the timing breakdown at the end.")] = False,
    log_json: Annotated[Path | None, typer.Option(help="Write structured events (JSON lines) here.")] = None,
    keep_formulas: Annotated[
        bool, typer.Option("--keep-formulas", help="Write text cells starting with = + - @ as they are (no leading ').")
    ] = False,
    login: Annotated[
        bool,
        typer.Option(
            "--login", help="When the token is missing or rejected and this is a terminal: show the QR login here."
        ),
    ] = False,
    local_match: Annotated[
        str,
        typer.Option(
            help="Names the index knows spelt otherwise: off; shadow (equivalent ones answered locally, similar "
            "ones still asked and recorded); on (similar ones at or above --match-threshold answered too)."
        ),
    ] = "shadow",
    match_threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Score a similar name needs to be answered (with on).")
    ] = None,
    match_review_band: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Scores this far below the threshold go to review.")
    ] = None,
    match_min_gap: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Least lead over another company's best candidate.")
    ] = None,
    *,
    eqc: EqcOptions,
) -> None:
    """Give every row of INPUT a company_id (and company_id_source)."""
    options = RunOptions(
        columns=_columns(name_column, plan_column, id_column),
        sheet=sheet,
        db=db,
        db_schema=db_schema,
        eqc=eqc,
        concurrency=concurrency,
        budget=budget,
        enrichment=not no_enrichment,
        details=details,
        overrides=overrides,
        name_from_plan=True if name_from_plan else None,
        negative_ttl_s=parse_duration(negative_ttl),
        retry_not_found=retry_not_found,
        refresh_s=_optional_duration(refresh),
        check_token=check_token,
        eqc_down_wait_s=parse_duration(eqc_down_wait),
        index_wait_s=parse_duration(index_wait),
        keep_formulas=keep_formulas,
        max_input_size=_optional_size(max_input_size),
        local_match=_local_match_mode(local_match),
        match=_match_policy(match_threshold, match_review_band, match_min_gap),
    )
    out = output or default_output_path(input_path)
    unresolved_out = unresolved or unresolved_path(input_path)
    ensure_writable([p for p in (summary, log_json) if p is not None], check_format=False, input_path=input_path)
    mode = ProgressDisplay.choose_mode(quiet=quiet)
    interval = parse_duration(progress_interval)
    on_terminal = login and sys.stdin.isatty() and sys.stderr.isatty()
    result = _run_with_signals(
        input_path, options, out, unresolved_out, unknown_names, mode, interval, log_json, login_here=on_terminal
    )
    if summary is not None:
        _write_summary(result, summary)
    _report(result, verbose=verbose)
    raise typer.Exit(exit_code(result.summary.status))


def _local_match_mode(mode: str) -> str:
    if mode not in LOCAL_MATCH_MODES:
        raise _fail(f"--local-match must be one of {', '.join(LOCAL_MATCH_MODES)}, not {mode!r}")
    return mode


def _match_policy(threshold: float | None, review_band: float | None, min_gap: float | None) -> MatchPolicy:
    given = {"threshold": threshold, "review_band": review_band, "min_gap": min_gap}
    return replace(MatchPolicy(), **{name: value for name, value in given.items() if value is not None})


def _write_summary(result: EnrichResult, path: Path) -> None:
    """The summary goes where it was asked, unless that fails too (the disk that refused the output, say):
    then it is said on one line, and the figures are still printed below."""
    try:
        result.summary.write(path)
    except EqcEnrichError as exc:
        typer.echo(f"note: the summary was not written: {exc}", err=True)


def _run_with_signals(
    input_path: Path,
    options: RunOptions,
    output: Path,
    unresolved: Path,
    unknown_names: Path | None,
    mode: str,
    interval_s: float,
    log_json: Path | None,
    *,
    login_here: bool = False,
) -> EnrichResult:
    """First Ctrl-C/SIGTERM: stop starting requests, let in-flight ones finish, keep everything. Second: stop now."""
    control = RunControl()
    progress = RunProgress()
    settings = load_settings()

    async def main() -> EnrichResult:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        display = ProgressDisplay(progress, mode=mode, interval_s=interval_s)
        login = _TerminalLogin(resolve_access(options.eqc, settings), options.eqc, display) if login_here else None

        def on_signal() -> None:
            if control.stopped and task is not None:
                task.cancel()
                return
            typer.echo("stopping: letting requests in flight finish (press Ctrl-C again to stop at once)", err=True)
            control.stop()

        restore = on_stop_signals(loop, on_signal)
        events = EventLog(log_json, progress, interval_s=interval_s) if log_json else None
        display.start()
        if events is not None:
            access = resolve_access(options.eqc, settings)  # what is in force: the option, else the WDH_* setting
            shown = {**options.public(), **access.public(), "route": _route(access)}
            events.start(input=str(input_path), output=str(output), options=shown)
        result: EnrichResult | None = None
        try:
            result = await enrich_async(
                input_path,
                options=options,
                output=output,
                unresolved_output=unresolved,
                unknown_names_output=unknown_names,
                settings=settings,
                progress=progress,
                control=control,
                events=_with_notices(events, login),
            )
            return result
        finally:
            if login is not None:
                login.end()
            await display.stop(final_line=result is not None)
            if events is not None:
                await events.finish(**(result.summary.as_dict() if result else {"status": "failed"}))
            restore()

    try:
        return asyncio.run(main())
    except asyncio.CancelledError as exc:
        raise _fail(
            "stopped at once: answers received so far are in the index; rerun to resume", EXIT_INTERRUPTED
        ) from exc


def _route(access: EqcAccess) -> str:
    """The route to EQC as the start event records it (direct, or which proxy from where; no password)."""
    try:
        return access.route().describe()
    except RouteError as exc:
        return f"none: {exc}"


_NOTICES: dict[str, Callable[[dict[str, Any]], str]] = {
    "proxy_fallover": lambda f: f"proxy {f['failed']} cannot be connected to: trying {f['next']}",
    "token_login_needed": lambda f: f["line"],
    "token_login_done": lambda f: "a new EQC token is in force: resuming",
    "eqc_down": lambda f: (
        ""  # waiting cannot fix it (a certificate, proxy credentials): the run's ending says it, once
        if f.get("fatal")
        else f"EQC is not answering ({f['reason']}): sending stopped; probing for up to "
        f"{format_duration(f['wait_s'])} (--eqc-down-wait) before giving up"
    ),
    "eqc_back": lambda f: f"EQC answers again after {format_duration(f['down_s'])}: resuming",
    "index_unwritable": lambda f: (
        f"the index cannot be written ({f['error']}): no new EQC requests; answers in hand go to a side file; "
        f"waiting up to {format_duration(f['wait_s'])} (--index-wait)"
    ),
    "index_back": lambda f: f"the index takes writes again after {format_duration(f['down_s'])}: resuming",
    "name_failed": lambda f: f"name failed: {f['error']}",
}
"""Events a person must see at once, as one line each, whatever the display mode."""


class _TerminalLogin:
    """`run --login` on a terminal: when the run asks for a login, `token login` runs here, its QR code drawn
    in this terminal (the progress display steps aside meanwhile); the run takes the token it saves."""

    def __init__(self, access: EqcAccess, given: EqcOptions, display: ProgressDisplay) -> None:
        self._access = access
        self._given = given
        self._display = display
        self._child: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, fields: dict[str, Any]) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._log_in(str(fields["env_file"]), float(fields["wait_s"])))

    async def _log_in(self, env_file: str, wait_s: float) -> None:
        given = self._given
        words = ["--env-file", env_file, "--eqc-url", self._access.url, "--timeout", f"{wait_s:g}s"]
        for flag, value in (("--pac-url", given.pac_url), ("--ca-bundle", given.ca_bundle)):
            if value:
                words += [flag, value]
        env = {**os.environ, **({"WDH_EQC_PROXY": given.proxy} if given.proxy else {})}  # its URL may hold a password
        await self._display.stop(final_line=False)
        try:
            self._child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "eqc_enrich.cli", "token", "login", *words,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, env=env,
            )  # fmt: skip
            await self._child.wait()
        finally:
            self._child = None
            self._display.start()

    def end(self) -> None:
        if self._child is not None and self._child.returncode is None:
            self._child.terminate()
        if self._task is not None:
            self._task.cancel()


def _with_notices(log: EventLog | None, login: _TerminalLogin | None = None) -> Callable[[str, dict[str, Any]], None]:
    def emit(kind: str, fields: dict[str, Any]) -> None:
        if kind == "token_login_needed" and login is not None:
            login.start(fields)
        notice = _NOTICES.get(kind)
        line = notice(fields) if notice is not None else ""
        if line:
            typer.echo(line, err=True)
        if log is not None:
            log(kind, fields)

    return emit


def _local_match_line(match: dict[str, Any]) -> str:
    sent = match["with_candidate"] - match["answered"]
    return (
        f"local match ({match['mode']}): {match['answered']:,} names answered (equivalent {match['equivalent']:,}, "
        f"similar {match['similar']:,}), {sent:,} sent to EQC with a candidate, in {format_duration(match['stage_s'])}"
    )


def _report(result: EnrichResult, *, verbose: bool) -> None:
    """The summary's figures for a person, each as the summary has it (a test holds them to it)."""
    s = result.summary
    eqc = s.eqc
    asked = (
        f"EQC: {eqc.names_asked:,} of {eqc.names_planned:,} names asked (found {eqc.found:,}, not found "
        f"{eqc.not_found:,}, failed {eqc.failed:,}), not asked {eqc.not_asked:,}"
    )
    if eqc.answered_elsewhere:
        asked += f", found in the index meanwhile {eqc.answered_elsewhere:,}"
    left_out = {"over --budget": eqc.over_budget, "--no-enrichment": eqc.skipped, "too long to send": eqc.too_long}
    left = [f"{why} {n:,}" for why, n in left_out.items() if n]
    elapsed = f"elapsed {format_duration(s.elapsed_s)}"
    if s.lower_bound_s is not None and s.efficiency is not None:
        elapsed += f", lower bound {format_duration(s.lower_bound_s)} (efficiency {s.efficiency:.2f})"
    lines = [
        f"rows {s.rows:,}  distinct names {s.distinct_names:,}  answered before EQC {s.answered_before_eqc:,}  "
        f"index hit rate {s.index_hit_rate:.1%}",
        "resolved by: " + ", ".join(f"{k} {v:,}" for k, v in s.resolved_by.items()),
        *([_local_match_line(s.local_match)] if s.local_match.get("mode", "off") != "off" else []),
        asked,
        *([f"names never planned for EQC: {', '.join(left)}"] if left else []),
        f"EQC calls {s.api_calls.get('total', 0):,} ({s.accepted_requests:,} taken into the quota"
        + (f", {s.unanswered_requests:,} without an answer" if s.unanswered_requests else "")
        + f"), retries {s.retries:,}, 429s {s.rate_limited:,}",
        elapsed,
    ]
    for why, rows in s.rows_without_id.items():
        lines.append(f"rows without company_id: {rows:,} ({why})")
    if s.output:
        lines.append(f"output: {s.output}")
    for line in lines:
        typer.echo(line, err=True)
    for warning in s.warnings:
        typer.echo(f"note: {warning}", err=True)
    if s.message:
        typer.echo(s.message, err=True)
    typer.echo(f"status: {s.status} (exit {exit_code(s.status)})", err=True)
    if verbose:
        typer.echo(json.dumps({"timing": s.timing, "index_hits_by_type": s.index_hits_by_type}, indent=2), err=True)


@app.command("plan")
@with_eqc_options
def plan_command(
    input_path: InputArg,
    sheet: SheetOpt = None,
    name_column: NameColOpt = "客户名称",
    plan_column: PlanColOpt = None,
    id_column: IdColOpt = None,
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    details: DetailsOpt = False,
    overrides: OverridesOpt = None,
    max_input_size: MaxInputOpt = None,
    name_from_plan: NameFromPlanOpt = False,
    latency: Annotated[
        str | None,
        typer.Option(
            help="EQC latency range the bound assumes [20-60s, divided as a rate-limit window under 60s is].",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    *,
    eqc: EqcOptions,
) -> None:
    """What a run would cost, from the index alone (no EQC call)."""
    options = RunOptions(
        columns=_columns(name_column, plan_column, id_column),
        sheet=sheet,
        db=db,
        db_schema=db_schema,
        eqc=eqc,
        details=details,
        overrides=overrides,
        max_input_size=_optional_size(max_input_size),
        name_from_plan=True if name_from_plan else None,
    )
    if latency is None:  # the latency a simulator at the rate limit's time scale has, as EQC's is at 10/60s
        low, high = implied_latency(resolve_access(eqc, load_settings()).rate_limit)
    else:
        low, high = parse_range(latency)
    report = plan(input_path, options=options, latency=Latency(mean_s=(low + high) / 2, max_s=high))
    if as_json:
        shown = {**report.as_dict(), "latency_assumed": latency is None}
        typer.echo(json.dumps(shown, ensure_ascii=False, indent=2))
        return
    assumed = ""
    if latency is None:
        usual = format_range(*EQC_LATENCY_S)
        scaled = "" if (low, high) == EQC_LATENCY_S else f" at the rate limit's time scale ({format_range(low, high)})"
        assumed = f", EQC's {usual}{scaled}: --latency sets it"
    typer.echo(
        f"rows {report.rows:,}; distinct names {report.distinct_names:,}; answered without EQC "
        f"{report.answered_before_eqc:,} (the index {report.index_hit_rate:.1%} of names, "
        f"{report.negative_cache_hits:,} of them known not-found)\n"
        f"names for EQC {report.names_for_eqc:,}; calls needed {report.calls_needed:,} "
        f"({report.calls_per_name} a name) at {report.rate_limit}\n"
        f"lower bound {format_duration(report.lower_bound_s)} "
        f"(latency {format_duration(report.latency_mean_s)} mean, {format_duration(report.latency_max_s)} max"
        f"{assumed}); the old sequential flow: {format_duration(report.old_flow_s)}"
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the generated month, index and outputs.")] = Path("demo-output"),
    rows: Annotated[
        int, typer.Option(min=1, help="Rows of the generated month (the story's month has 30,986).")
    ] = 30_986,
    time_scale: Annotated[float, typer.Option(min=1.0, help="Speed-up of the simulated EQC.")] = 1000.0,
    seed: Annotated[int, typer.Option(help="Seed of the generated month and the simulated companies.")] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Also print each run's full summary as JSON.")] = False,
    progress_interval: Annotated[str, typer.Option(help="Interval of plain progress lines off a terminal.")] = "1s",
) -> None:
    """Simulated EQC (time-scaled), a generated month, a cold run and a warm run, a short summary of each."""
    from eqc_enrich.demo import run_demo

    run_demo(
        out, rows=rows, time_scale=time_scale, seed=seed, as_json=as_json,
        progress_interval_s=parse_duration(progress_interval),
    )  # fmt: skip


@app.command()
@with_eqc_options
def review(
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="FILE_OR_UNRESOLVED_CSV",
            help="Only the names of this file: an unresolved export, or an input file (its names keyed).",
            show_default=False,
        ),
    ] = None,
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    name_column: NameColOpt = "客户名称",
    host: Annotated[
        str, typer.Option(help="The one address to listen on: loopback, or this machine's LAN address or name.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the URL only; open no browser.")] = False,
    *,
    eqc: EqcOptions,
) -> None:
    """A local page to settle the names runs left open: accept a candidate, type an id, not a company, undo."""
    from eqc_enrich.review import review_command

    review_command(
        db=db, db_schema=db_schema, eqc=eqc, file=file, name_column=name_column, host=host, port=port,
        open_browser=not no_browser, echo=typer.echo, warn=lambda line: typer.echo(line, err=True),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error is one line on stderr, never a traceback or a boxed panel.

    Usage errors (a misspelt option, a missing argument) exit 2 like our own input errors; `--help` and a
    bare `eqc-enrich` still print the full help.
    """
    command = typer.main.get_command(app)
    _plain_flags(command)
    try:
        code = command.main(args=argv, prog_name="eqc-enrich", standalone_mode=False)
    except NoArgsIsHelpError:  # the help has been printed already
        sys.exit(EXIT_USAGE)
    except UsageError as exc:
        typer.echo(f"error: {_usage_message(exc)}", err=True)
        sys.exit(EXIT_USAGE)
    except ClickException as exc:
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except IndexStoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        # busy or unreachable is the index being away (like a run that ends index_unavailable); else a setting
        sys.exit(EXIT_CODES["index_unavailable"] if getattr(exc, "transient", False) else EXIT_USAGE)
    except EqcEnrichError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: one line (the token cannot be in it: no request is ever in a message)
        if os.environ.get("EQC_ENRICH_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {first} (a bug; set EQC_ENRICH_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(EXIT_BUG)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_message(exc: UsageError) -> str:
    """Click's message on one line, the closest option named as a suggestion, and where the help is."""
    if isinstance(exc, NoSuchOption) and exc.possibilities:
        best = difflib.get_close_matches(exc.option_name, list(exc.possibilities), n=1, cutoff=0.0)
        message = f"{exc.message} (did you mean {best[0]}?)"
    else:
        message = exc.format_message()
    message = " ".join(message.split())
    if exc.ctx is not None:
        message += ("" if message.endswith((".", "?")) else ".") + f" See '{exc.ctx.command_path} --help'."
    return message


def _plain_flags(command: Any) -> None:
    """typer 0.29 labels every on/off flag `<bool>` in --help, as if it took a value (which it rejects):
    show flags bare, the way they are typed."""
    ctx = command.context_class(command)
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _plain_flags(sub)


if __name__ == "__main__":
    main()
