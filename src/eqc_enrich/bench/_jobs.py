"""Several jobs at once: N `eqc-enrich run` processes over slices of the input, one index, one quota.

Real processes of the command line, started as a scheduler would start them, against one simulated EQC in
its own process; beside them, one process over the whole input from the same pre-filled index. Both runs are
timed on the simulator's clock, from the first request that reached it to the last answer it gave
(`/__stats`), because that one clock sees every process's sends; the benchmark's own clock, which also
counts each process's start-up, gives their wall time beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from eqc_enrich._durations import format_duration
from eqc_enrich._errors import ConfigError
from eqc_enrich.bench._config import BenchConfig
from eqc_enrich.bench._input import BenchInput, copy_index, prefill_index, row_slices, slice_names
from eqc_enrich.bench._ours import BENCH_SALT
from eqc_enrich.bench._simproc import SimulatorProcess, SimulatorSpec
from eqc_enrich.store import DB_ENV, SCHEMA_ENV, init_index

Echo = Callable[[str], None]
_POLL_S = 0.01  # how often the benchmark looks whether a job has exited (its wall time's resolution)
_STOP_WAIT_S = 10.0
_DEADLINE_FACTOR = 5.0  # a run may take this many times its quota bound before it is stopped ...
_DEADLINE_SLACK_S = 120.0  # ... plus start-up and a loaded machine's slack, on the benchmark's clock
_SETUP_EXITS = (1, 2)  # an unexpected error or bad input: nothing to measure, the setup is broken


@dataclass(frozen=True, slots=True)
class JobIndex:
    """Where one run's processes find the index: a SQLite file, or a fresh schema on PostgreSQL."""

    db: str
    schema: str | None


@dataclass(frozen=True)
class ProcessRun:
    """One `eqc-enrich run` process: its input, exit code, wall time (benchmark clock) and summary."""

    input: Path
    exit_code: int
    wall_s: float
    summary: dict[str, Any]


@dataclass(frozen=True)
class JobsRun:
    """One run of one or several processes, with what the simulator saw of it."""

    key: str
    title: str
    processes: list[ProcessRun]
    wall_s: float  # first process started to last one exited, on the benchmark's clock
    stats: dict[str, Any]  # the simulator's /__stats right after the run


@dataclass(frozen=True)
class JobsSection:
    scale: float
    index_kind: str
    slices: list[Path]
    slice_rows: list[int]
    slice_names: list[int]  # distinct names per slice
    names_union: int
    names_in_several: int
    single: JobsRun
    jobs: JobsRun


def several_jobs(config: BenchConfig, data: BenchInput, work: Path, echo: Echo) -> JobsSection:
    """One process over the whole input, then N at once over its slices; one fresh simulator for both."""
    folder = work / "jobs"
    slices = row_slices(data.month_path, config.workers, folder / "input")
    facts = [slice_names(path) for path in slices]
    per_slice = [names for _, names in facts]
    union: set[str] = set().union(*per_slice)
    several = sum(1 for name in union if sum(name in names for names in per_slice) > 1)
    scale = config.jobs_scale
    token = f"bench-{secrets.token_hex(8)}"
    spec = SimulatorSpec(config.seed, scale, config.rate_limit, config.latency, token)
    echo(f"several jobs: {config.workers} slices of {data.rows:,} rows, {several:,} of {len(union):,} names in "
         f"more than one; time scale 1/{scale:g} for these runs")  # fmt: skip
    with SimulatorProcess(spec) as sim, httpx.Client(base_url=sim.url, timeout=10.0, trust_env=False) as admin:
        runner = _Runner(config, data, sim.url, token, admin, echo)
        single = runner.run("single", "one process, whole input", [data.month_path], folder / "single")
        time.sleep(config.rate_limit.window_s / scale)  # the server's window empties: the next run starts fresh
        jobs = runner.run("jobs", f"{config.workers} processes at once, a slice each", slices, folder / "jobs")
    kind = "sqlite" if config.db is None else "postgresql"
    rows = [count for count, _ in facts]
    return JobsSection(scale, kind, slices, rows, [len(n) for n in per_slice], len(union), several, single, jobs)


class _Runner:
    def __init__(
        self, config: BenchConfig, data: BenchInput, url: str, token: str, admin: httpx.Client, echo: Echo
    ) -> None:
        self.config, self.data, self.url, self.token = config, data, url, token
        self.admin, self.echo = admin, echo

    def run(self, key: str, title: str, inputs: list[Path], folder: Path) -> JobsRun:
        folder.mkdir(parents=True, exist_ok=True)
        self.echo(f"  {key}: {title} ...")
        with fresh_index(self.config, self.data, folder) as index:
            self.admin.post("/__reset").raise_for_status()
            processes, wall = self._processes(inputs, index, folder)
            stats: dict[str, Any] = self.admin.get("/__stats").raise_for_status().json()
        scale = self.config.jobs_scale
        span = _span(stats)
        self.echo(f"  {key}: first send to last answer {_fmt(span)} (= {_fmt(span, scale)} at 1x), "
                  f"{stats['accepted']:,} accepted, {stats['rate_limited']:,} refused (429), "
                  f"{stats['search_keys_repeated']:,} names asked twice")  # fmt: skip
        return JobsRun(key, title, processes, wall, stats)

    def _processes(self, inputs: list[Path], index: JobIndex, folder: Path) -> tuple[list[ProcessRun], float]:
        children = []
        started = time.monotonic()
        try:
            for number, path in enumerate(inputs, start=1):
                children.append(_Child.start(self._command(path, folder, number), self._env(index, folder), folder))
            self._wait(children, started)
        finally:
            for child in children:
                child.stop()
        runs = [child.result(path) for child, path in zip(children, inputs, strict=True)]
        return runs, max(child.end for child in children) - started

    def _command(self, path: Path, folder: Path, number: int) -> list[str]:
        config, scale = self.config, self.config.jobs_scale
        timeout = config.jobs_timeout_s
        return [
            sys.executable, "-m", "eqc_enrich.cli", "run", str(path),
            "-o", str(folder / f"job-{number}.enriched.parquet"),
            "--unresolved", str(folder / f"job-{number}.unresolved.csv"),
            "--summary", str(folder / f"job-{number}.summary.json"),
            "--eqc-url", self.url, "--rate-limit", str(config.rate_limit.scaled(scale)),
            "--timeout", f"{timeout:.6f}s", "--retries", str(config.retries), "--quiet",
        ]  # fmt: skip

    def _env(self, index: JobIndex, folder: Path) -> dict[str, str]:
        """The user's WDH_* and EQC_ENRICH_* settings stay out: every knob is on the command line or here.
        The token and the index URL travel in the environment, not on a command line `ps` shows."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("WDH_", "EQC_ENRICH_"))}
        env |= {
            "WDH_EQC_TOKEN": self.token,
            "WDH_ALIAS_SALT": BENCH_SALT,
            "WDH_ENV_FILE": str(folder / "absent.wdh_env"),
            DB_ENV: index.db,
            "PYTHONUNBUFFERED": "1",
        }
        if index.schema:
            env[SCHEMA_ENV] = index.schema
        return env

    def _wait(self, children: list[_Child], started: float) -> None:
        """Until every process has exited; past the deadline the rest are stopped as Ctrl-C stops them."""
        deadline = started + self._deadline_s()
        while [child for child in children if child.running()]:  # each looked at: its exit seen when it happens
            if time.monotonic() > deadline:
                self.echo("  deadline passed: stopping the processes still running (Ctrl-C)")
                break
            time.sleep(_POLL_S)
        broken = [child for child in children if child.code() in _SETUP_EXITS]
        if broken:
            child = broken[0]
            raise ConfigError(f"a benchmark job failed (exit {child.code()}): {child.last_error() or 'no output'}")

    def _deadline_s(self) -> float:
        config = self.config
        names = len(self.data.names) - len(self.data.cached)
        quota_s = names / config.rate_limit.requests * config.rate_limit.window_s / config.jobs_scale
        return _DEADLINE_FACTOR * quota_s + _DEADLINE_SLACK_S


class _Child:
    """One `eqc-enrich run` process, its output in files (a full pipe would stall it), its exit time."""

    def __init__(self, proc: subprocess.Popen[bytes], stderr: IO[bytes], summary: Path) -> None:
        self.proc, self.stderr, self.summary = proc, stderr, summary
        self.started = time.monotonic()
        self.ended: float | None = None  # when this benchmark first saw it exited

    @classmethod
    def start(cls, command: list[str], env: dict[str, str], folder: Path) -> _Child:
        summary = Path(command[command.index("--summary") + 1])
        # Lives as long as the child; closed in stop(), so no `with` block.
        stderr = (folder / f"{summary.stem}.stderr").open("w+b")
        proc = subprocess.Popen(command, env=env, cwd=folder, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        return cls(proc, stderr, summary)

    def running(self) -> bool:
        if self.proc.poll() is None:
            return True
        if self.ended is None:
            self.ended = time.monotonic()
        return False

    def code(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> None:
        """Ctrl-C first (the run keeps what it has), a kill if that does not end it."""
        if self.running():
            self.proc.send_signal(signal.SIGINT if os.name != "nt" else signal.SIGTERM)
            try:
                self.proc.wait(timeout=_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.running()
        self.stderr.close()

    def last_error(self) -> str:
        path = Path(self.stderr.name)
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        return next((line for line in reversed(lines) if line), "")

    def result(self, path: Path) -> ProcessRun:
        summary: dict[str, Any] = json.loads(self.summary.read_text(encoding="utf-8")) if self.summary.is_file() else {}
        return ProcessRun(path, self.proc.returncode, self.end - self.started, summary)

    @property
    def end(self) -> float:
        return self.started if self.ended is None else self.ended


@contextmanager
def fresh_index(config: BenchConfig, data: BenchInput, folder: Path) -> Iterator[JobIndex]:
    """A copy of the pre-filled index for one run: a SQLite file, or a new schema dropped afterwards."""
    if config.db is None:
        yield JobIndex(str(copy_index(data.index_path, folder / "index.db")), None)
        return
    schema = f"eqc_bench_{secrets.token_hex(5)}"
    try:
        init_index(config.db, schema=schema)
        prefill_index(config.db, data.cached, schema=schema)
        yield JobIndex(config.db, schema)
    finally:
        drop_schema(config.db, schema)


def drop_schema(url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with contextlib.suppress(sa.exc.SQLAlchemyError), engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


def _span(stats: dict[str, Any]) -> float | None:
    first, last = stats.get("first_arrival_s"), stats.get("last_response_s")
    return None if first is None or last is None else float(last) - float(first)


def _fmt(seconds: float | None, scale: float = 1.0) -> str:
    return "n/a" if seconds is None else format_duration(seconds * scale)
