"""`run_bench`: the input, the endpoint, the three runs, the report; in that order, nothing shared but files.

Run 1 (old flow) and run 2 (ours, cold) each start from their own copy of the pre-filled index; run 3 (ours,
warm) reuses run 2's index, since being warm is the point of it.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from eqc_enrich._durations import RateLimit, format_duration, parse_range, parse_rate_limit
from eqc_enrich._errors import ConfigError
from eqc_enrich.bench._config import DEFAULT_TIME_SCALE, STORY_LATENCY_S, STORY_RATE, BenchConfig
from eqc_enrich.bench._input import NAME_COLUMN, BenchInput, copy_index, prepare_input
from eqc_enrich.bench._jobs import several_jobs
from eqc_enrich.bench._measure import RunMeasure, from_old_flow, from_ours
from eqc_enrich.bench._old_flow import NameDone, OldFlowSettings, run_old_flow
from eqc_enrich.bench._ours import run_ours
from eqc_enrich.bench._projection import month_shape
from eqc_enrich.bench._report import Endpoint, build_report, write_report
from eqc_enrich.bench._simproc import SimulatorProcess, SimulatorSpec
from eqc_enrich.config import EqcOptions
from eqc_enrich.store import IndexStore

Echo = Callable[[str], None]
OLD_BACKOFF_S = 1.0  # the old client's first retry delay, in story seconds
_PROGRESS_STEPS = 10


def require_charts() -> None:
    """The report's charts need matplotlib (the `bench` extra): say so before the benchmark, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "the benchmark draws its charts with matplotlib, which is not installed: pip install 'eqc-enrich[bench]'"
        ) from exc


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_bench(
    *,
    names: int = 1000,
    eqc_url: str | None = None,
    time_scale: float | None = None,
    rate_limit: RateLimit | str = STORY_RATE,
    latency: tuple[float, float] | str = STORY_LATENCY_S,
    cached_share: float = 0.3,
    out: str | Path = "bench-report",
    seed: int = 7,
    token: str | None = None,
    echo: Echo | None = None,
    workers: int = 1,
    jobs_time_scale: float | None = None,
    db: str | None = None,
    retries: int = 3,
    timeout_s: float | None = None,
    proxy: str | None = None,
    pac_url: str | None = None,
    ca_bundle: str | None = None,
) -> dict[str, Any]:
    """Baseline (old flow), ours cold and warm; writes report.json, report.md and charts to `out`.

    Without `eqc_url` a simulated EQC is started (time scale 1000 unless given); with it, the real endpoint
    is measured at time scale 1, by the way a run takes (`proxy`, `pac_url`, `ca_bundle` and the `WDH_*`
    settings: PAC file, proxy credentials, trust). With `workers` >= 2, also one `eqc-enrich run` process over
    the whole input and `workers` of them at once over slices of its rows, sharing one quota through one index (`db`, a
    PostgreSQL URL, or a SQLite file), at `jobs_time_scale` (default: the time scale, at most 100).
    Returns the report dict (what report.json holds).
    """
    config = BenchConfig(
        names=names,
        eqc_url=eqc_url,
        time_scale=time_scale if time_scale is not None else (1.0 if eqc_url else DEFAULT_TIME_SCALE),
        rate_limit=parse_rate_limit(rate_limit) if isinstance(rate_limit, str) else rate_limit,
        latency=parse_range(latency) if isinstance(latency, str) else latency,
        cached_share=cached_share,
        out=Path(out),
        seed=seed,
        token=token,
        workers=workers,
        jobs_time_scale=jobs_time_scale,
        db=db,
        retries=retries,
        timeout_override_s=timeout_s,
        proxy=proxy,
        pac_url=pac_url,
        ca_bundle=ca_bundle,
    )
    return execute(config, echo or _stderr)


def execute(config: BenchConfig, echo: Echo) -> dict[str, Any]:
    require_charts()
    with tempfile.TemporaryDirectory(prefix="eqc-bench-") as tmp:
        work = Path(tmp)
        data = prepare_input(config, work)
        echo(f"bench: {len(data.names):,} names ({data.unknown:,} unknown to EQC) on {data.rows:,} rows; "
             f"{len(data.cached):,} pre-cached; time scale 1/{config.time_scale:g}")  # fmt: skip
        with endpoint_for(config) as endpoint:
            echo(f"bench: EQC at {endpoint.url} ({'simulated, own process' if endpoint.simulated else 'REAL'})")
            runs = asyncio.run(three_runs(config, data, endpoint, work, echo))
        jobs = several_jobs(config, data, work, echo) if config.workers > 1 else None
    report = build_report(config, endpoint, data, runs, month_shape(config.seed), jobs)
    files = write_report(report, runs, config)
    _conclude(report, files, echo)
    return report


@contextmanager
def endpoint_for(config: BenchConfig) -> Iterator[Endpoint]:
    """The simulated EQC (started here, stopped on any exit) or the real one named by `eqc_url`."""
    if config.eqc_url is not None:
        yield Endpoint(config.eqc_url, config.token or "", simulated=False)
        return
    token = f"bench-{secrets.token_hex(8)}"  # never a real token: the simulator needs none
    spec = SimulatorSpec(config.seed, config.time_scale, config.rate_limit, config.latency, token)
    with SimulatorProcess(spec) as sim:
        yield Endpoint(sim.url, token, simulated=True)


async def three_runs(
    config: BenchConfig, data: BenchInput, endpoint: Endpoint, work: Path, echo: Echo
) -> dict[str, RunMeasure]:
    old = await old_run(config, data, endpoint, work, echo)
    ours_db = copy_index(data.index_path, work / "ours-index.db")
    cold = await our_run(config, data, endpoint, ours_db, work, "ours_cold", echo)
    warm = await our_run(config, data, endpoint, ours_db, work, "ours_warm", echo)
    return {"old_flow": old, "ours_cold": cold, "ours_warm": warm}


async def old_run(config: BenchConfig, data: BenchInput, endpoint: Endpoint, work: Path, echo: Echo) -> RunMeasure:
    raw_names = pl.read_parquet(data.month_path)[NAME_COLUMN].to_list()
    store = IndexStore(copy_index(data.index_path, work / "old-index.db"))
    settings = OldFlowSettings(config.scaled_rate, retries=config.retries, backoff_s=OLD_BACKOFF_S / config.time_scale)
    echo("run 1/3: old flow (one name after another, 3 calls a name) ...")
    try:
        result = await run_old_flow(
            raw_names,
            store,
            url=endpoint.url,
            token=endpoint.token,
            timeout_s=config.timeout_s,
            settings=settings,
            on_name=_old_progress(config.time_scale, echo),
            route=EqcOptions(proxy=config.proxy, pac_url=config.pac_url, ca_bundle=config.ca_bundle),
        )
    finally:
        store.close()
    if result.gave_up:
        echo(f"old flow: stopped asking EQC: {result.gave_up}")
    return _announce(from_old_flow(result), config.time_scale, echo)


def _old_progress(scale: float, echo: Echo) -> Callable[[NameDone, int], None]:
    """A progress line every tenth of the names, with an ETA; the old flow takes minutes even at 1/1000."""
    done: list[NameDone] = []

    def on_name(name: NameDone, total: int) -> None:
        done.append(name)
        step = max(1, total // _PROGRESS_STEPS)
        if len(done) % step and len(done) != total:
            return
        asked = sum(1 for d in done if d.how != "index")
        eta = name.at_s / len(done) * (total - len(done))
        echo(f"  old flow: {len(done):,}/{total:,} names ({asked:,} asked EQC), {format_duration(name.at_s)} "
             f"(= {format_duration(name.at_s * scale)} at 1x), ETA {format_duration(eta)}")  # fmt: skip

    return on_name


async def our_run(
    config: BenchConfig, data: BenchInput, endpoint: Endpoint, db: Path, work: Path, key: str, echo: Echo
) -> RunMeasure:
    warm = key == "ours_warm"
    title = "ours, warm (same run again)" if warm else "ours, cold (search only)"
    echo(f"run {3 if warm else 2}/3: {title} ...")
    started = time.monotonic()
    result = await run_ours(
        config, data.month_path, work / f"{key}.parquet", db=db, url=endpoint.url, token=endpoint.token
    )
    if result.summary.status != "completed":
        echo(f"  {key}: {result.summary.status}: {result.summary.message}")
    echo(f"  {key}: done in {format_duration(time.monotonic() - started)}")
    return _announce(from_ours(result, key=key, title=title), config.time_scale, echo)


def _announce(run: RunMeasure, scale: float, echo: Echo) -> RunMeasure:
    echo(f"  {run.key}: {format_duration(run.wall_s)} (= {format_duration(run.wall_s * scale)} at 1x), "
         f"{run.names_asked:,} names asked, {run.attempts:,} calls")  # fmt: skip
    return run


def _conclude(report: dict[str, Any], files: list[Path], echo: Echo) -> None:
    cmp = report["comparison"]
    efficiency = cmp["efficiency_ours"]
    echo(f"bench: speed-up {cmp['speed_up']}x over the old flow, efficiency "
         f"{'n/a' if efficiency is None else f'{efficiency:.2f}'} (against the strict bound "
         f"{_two(cmp['efficiency_strict_ours'])}, of at most {_two(cmp['even_pacing_ceiling'])} for even pacing; "
         f"429s {report['runs']['ours_cold']['rate_limited']}), warm run calls {cmp['warm_calls']}")  # fmt: skip
    if "jobs" in report:
        jobs = report["jobs"]
        single, many = jobs["runs"]["single"], jobs["runs"]["jobs"]
        echo(f"bench: {jobs['workers']} jobs at once (time scale 1/{jobs['time_scale']:g}): efficiency "
             f"{_two(many['efficiency'])} (one process {_two(single['efficiency'])}), 429 share "
             f"{many['rate_limited_share']:.1%}, names asked twice {many['names_asked_twice']}, "
             f"speed-up over one process {jobs['speed_up']}x")  # fmt: skip
    echo(f"bench: wrote {', '.join(str(path) for path in files)}")


def _two(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
