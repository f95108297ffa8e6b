"""The command line as a user meets it: separate processes, real files, the simulated EQC over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from tests.conftest import IndexDb

from eqc_enrich import RateLimit
from eqc_enrich.simulator import Simulator, SimulatorConfig, write_month

TOKEN = "cli-secret-token-0123456789"
SCALE = 1000.0
STATUS_LINE = re.compile(r"^\[(\w[\w ]*)\] \| rows [\d,]+/[\d,]+ \| names .* \| eta \S+$")


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_month(tmp_path_factory.mktemp("month") / "month.parquet", seed=5, rows=3_000, companies=300)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        seed=5, latency=(20.0, 60.0), time_scale=SCALE, rate_limit=RateLimit(10, 60.0), tokens=(TOKEN,),
        token_ttl=86_400.0 * 30,
    )  # fmt: skip
    with Simulator(config) as simulator:
        yield simulator


def cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eqc_enrich.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "WDH_EQC_TOKEN": TOKEN, **(env or {})},
        check=False,
    )


def run_args(
    month: Path, sim: Simulator, tmp_path: Path, *extra: str | Path, db: Sequence[str | Path] = ()
) -> list[str | Path]:
    """`run` on the test's month; `db` replaces the default index (a SQLite file in tmp_path)."""
    return [
        "run", month, "-o", tmp_path / "out.parquet", *(db or ["--db", tmp_path / "index.db"]), "--eqc-url", sim.url,
        "--rate-limit", "10/60ms", "--timeout", "2s", "--summary", tmp_path / "summary.json", *extra,
    ]  # fmt: skip


def test_run_writes_output_unresolved_and_summary_with_every_documented_field(
    month: Path, sim: Simulator, tmp_path: Path
) -> None:
    done = cli(*run_args(month, sim, tmp_path, "--quiet"))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("rows", "distinct_names", "resolved_by", "index_hit_rate", "eqc", "api_calls", "retries",
                "rate_limited", "elapsed_s", "phases_s", "rate_limit", "concurrency"):  # fmt: skip
        assert key in summary, key
    assert set(summary["eqc"]) >= {"names_asked", "found", "not_found", "failed"}
    assert set(summary["phases_s"]) == {
        "read",
        "normalize",
        "index_lookup",
        "local_match",
        "eqc",
        "index_write",
        "write",
    }
    assert summary["api_calls"]["searchAll"] == 1  # the token check before the first request, by default
    assert summary["api_calls"]["total"] == summary["api_calls"]["search"] + 1
    out = pl.read_parquet(tmp_path / "out.parquet")
    source = pl.read_parquet(month)
    assert out.height == source.height
    assert out.drop("company_id", "company_id_source").equals(source)
    unresolved = pl.read_csv(month.with_name("month.unresolved.csv"))
    assert unresolved.columns == ["name", "example_name", "temporary_id", "rows", "status", "reason"]
    assert unresolved["rows"].to_list() == sorted(unresolved["rows"].to_list(), reverse=True)
    # quiet: no progress lines, just the final report
    assert not any(STATUS_LINE.match(line) for line in done.stderr.splitlines())
    assert "rows 3,000" in done.stderr


def test_the_token_appears_nowhere(month: Path, sim: Simulator, tmp_path: Path) -> None:
    done = cli(
        *run_args(month, sim, tmp_path, "-v", "--progress-interval", "100ms", "--log-json", tmp_path / "e.jsonl")
    )
    assert done.returncode == 0, done.stderr
    places = [done.stdout, done.stderr, (tmp_path / "summary.json").read_text()]
    places += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.iterdir() if p.is_file()]
    for text in places:
        assert TOKEN not in text


def test_off_a_terminal_progress_is_plain_lines_at_the_interval(month: Path, sim: Simulator, tmp_path: Path) -> None:
    done = cli(*run_args(month, sim, tmp_path, "--progress-interval", "150ms"))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if STATUS_LINE.match(line)]
    assert len(lines) >= 3
    assert "\x1b[" not in done.stderr  # no terminal control codes in a log
    assert lines[-1].startswith("[done]")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-file.csv"], "no such file"),
        (["run", "{month}", "--sheet", "x"], "Excel input only"),
        (["run", "{month}", "--rate-limit", "ten/min"], "not a rate limit"),
        (["run", "{month}", "--timeout", "soon"], "not a duration"),
        (["run", "{month}", "--name-column", "客户"], "missing column"),
        (["run", "{month}", "--db", "nosuchdriver://x"], "index"),
        (["run", "{month}", "--overrides", "{missing}"], "overrides"),
        (["run", "{bad}"], "cannot read"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(month: Path, tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet")
    filled = [a.format(month=month, missing=tmp_path / "missing.yaml", bad=bad) for a in args]
    # --no-enrichment: should a bad case slip through, it must not reach for the real EQC (loopback only)
    extra = ["--no-enrichment"] + ([] if "--db" in filled else ["--db", str(tmp_path / "i.db")])
    done = cli(*filled, *extra)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in done.stderr


def test_plan_answers_without_calling_eqc(month: Path, sim: Simulator, tmp_path: Path) -> None:
    done = cli("plan", month, "--db", tmp_path / "index.db", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == 3_000
    assert report["names_for_eqc"] > 100
    assert report["calls_needed"] == report["names_for_eqc"]
    # the bound at 10/60 s and 20-60 s: the quota term plus one slowest call
    assert report["lower_bound_s"] == pytest.approx(report["names_for_eqc"] * 6.0 + 60.0, rel=1e-6)
    assert report["old_flow_s"] > 3 * report["lower_bound_s"]
    assert sim.stats()["requests"]["search"] == 0


@pytest.mark.slow  # a whole run stopped by a signal and resumed, on both databases: make test-all
def test_sigint_stops_cleanly_and_a_rerun_resumes(
    month: Path, sim: Simulator, tmp_path: Path, index_db: IndexDb
) -> None:
    """End to end on each index: SQLite, and the PostgreSQL `.ci/run` starts (tables made by `index init`)."""
    index_db.open().close()
    args = run_args(month, sim, tmp_path, "--progress-interval", "50ms", db=index_db.cli())
    process = subprocess.Popen(
        [sys.executable, "-m", "eqc_enrich.cli", *map(str, args)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "WDH_EQC_TOKEN": TOKEN},
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    for line in process.stderr:  # bounded by the deadline and by the run's own end
        match = re.search(r"eqc (\d+)/(\d+)", line)
        if line.startswith("[eqc]") and match and int(match.group(1)) >= 20:
            process.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130, rest
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert 0 < summary["eqc"]["found"] + summary["eqc"]["not_found"] == summary["eqc"]["names_asked"]
    assert summary["eqc"]["names_asked"] + summary["eqc"]["not_asked"] == summary["eqc"]["names_planned"]
    assert summary["eqc"]["not_asked"] > 0
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out.height == 3_000  # complete: what EQC did not answer got temporary ids

    again = cli(*run_args(month, sim, tmp_path, "--quiet", db=index_db.cli()))
    assert again.returncode == 0, again.stderr
    resumed = json.loads((tmp_path / "summary.json").read_text())
    assert resumed["status"] == "completed"
    # the rerun asks exactly what the first run left unasked, and nothing twice
    assert resumed["eqc"]["names_asked"] == summary["eqc"]["not_asked"]
    assert sim.stats()["search_keys_repeated"] == 0


def token_command(sim: Simulator, log: Path) -> str:
    """A command printing a fresh simulator token and noting each call, as a QR-login script would."""
    code = (
        "import json,sys,urllib.request;"
        f"r=urllib.request.Request({sim.url + '/__token'!r},method='POST');"
        "t=json.load(urllib.request.urlopen(r))['token'];"
        f"open({str(log)!r},'a').write('x\\n');print(t)"
    )
    return f'{sys.executable} -c "{code}"'


@pytest.mark.serial  # its figures follow wall-clock timing that a busy neighbour skews
def test_token_expiring_repeatedly_costs_one_refresh_per_expiry(month: Path, tmp_path: Path) -> None:
    config = SimulatorConfig(
        seed=5, latency=(20.0, 60.0), time_scale=SCALE, rate_limit=RateLimit(10, 60.0), tokens=(TOKEN,),
        token_ttl=86_400.0, token_max_age=400.0, scale_token_lifetimes=True,  # 0.4 s: several expiries
    )  # fmt: skip
    log = tmp_path / "refreshes.log"
    with Simulator(config) as sim:
        done = cli(*run_args(month, sim, tmp_path, "--quiet", "--token-command", token_command(sim, log)))
        stats = sim.stats()
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    refreshes = summary["token_refreshes"]
    assert refreshes >= 2
    assert len(log.read_text().splitlines()) == refreshes  # the command ran once per refresh, never more
    eqc_s = summary["phases_s"]["eqc"]
    assert refreshes <= eqc_s / 0.4 + 2  # one per expiry, not one per request that saw it
    assert stats["token_expired"] >= refreshes
    assert summary["eqc"]["failed"] == 0
    assert summary["eqc"]["skipped"] == 0
    truth = pl.read_parquet(month.with_name("month.truth.parquet"))
    out = pl.read_parquet(tmp_path / "out.parquet").with_row_index("row").join(truth, on="row", suffix="_expected")
    wrong = out.filter(
        pl.col("company_id_expected").is_not_null() & (pl.col("company_id") != pl.col("company_id_expected"))
    )
    assert wrong.height == 0


def test_without_a_refresh_command_the_run_completes_with_exit_3(month: Path, tmp_path: Path) -> None:
    config = SimulatorConfig(
        seed=5, latency=(20.0, 60.0), time_scale=SCALE, rate_limit=RateLimit(10, 60.0), tokens=(TOKEN,),
        token_ttl=86_400.0, token_max_age=400.0, scale_token_lifetimes=True,
    )  # fmt: skip
    with Simulator(config) as sim:
        done = cli(*run_args(month, sim, tmp_path, "--quiet"), env={"WDH_EQC_TOKEN_COMMAND": ""})
    assert done.returncode == 3, done.stderr
    assert "--token-command" in done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "token_unavailable"
    assert summary["eqc"]["not_asked"] > 0
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out.height == 3_000
    named = out.filter(pl.col("客户名称").is_not_null())
    assert named["company_id"].null_count() == 0


def test_stop_signals_fall_back_to_the_signal_module_where_the_loop_has_none() -> None:
    """Windows has no loop signal handlers: the fallback must still route SIGINT to the run, then undo itself."""
    from eqc_enrich._signals import on_stop_signals

    class WindowsLikeLoop(asyncio.SelectorEventLoop):
        def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:  # type: ignore[override]
            raise NotImplementedError

    loop = WindowsLikeLoop()
    seen: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    try:
        restore = on_stop_signals(loop, lambda: seen.append("stop"))
        signal.raise_signal(signal.SIGINT)
        loop.run_until_complete(asyncio.sleep(0.05))
        restore()
    finally:
        loop.close()
    assert seen == ["stop"]
    assert signal.getsignal(signal.SIGINT) is before


# --- the EQC options, declared once ---------------------------------------------------------------------------

TALKS_TO_EQC = ("run", "plan", "review", "bench", "worker", "worker status")
IS_EQC = ("simulate",)  # the simulator's --rate-limit is the quota it enforces, not one a client keeps


def _commands() -> dict[str, Any]:
    """Every command of the command line by its path (`worker status`), with the group callbacks."""
    import typer.main

    from eqc_enrich.cli import app

    found: dict[str, Any] = {}

    def walk(command: Any, path: str) -> None:
        if path:
            found[path] = command
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def _flags(command: Any) -> set[str]:
    return {flag for param in command.params for flag in getattr(param, "opts", ())}


def eqc_option_gaps(commands: dict[str, Any], must: Sequence[str]) -> dict[str, set[str]]:
    """What each command lacks of the EQC options: every command named in `must`, and any command that takes
    one of them (a command half-way there has drifted)."""
    from eqc_enrich._cli_options import EQC_OPTION_FLAGS

    every = set(EQC_OPTION_FLAGS.values())
    gaps: dict[str, set[str]] = {}
    for path, command in commands.items():
        if path in IS_EQC:
            continue
        flags = _flags(command)
        if path in must or flags & every:
            missing = every - flags
            if missing:
                gaps[path] = missing
    return gaps


def test_every_command_that_talks_to_eqc_takes_every_eqc_option() -> None:
    commands = _commands()
    assert set(TALKS_TO_EQC) <= set(commands)
    assert eqc_option_gaps(commands, TALKS_TO_EQC) == {}
    from eqc_enrich.config import EqcOptions

    assert len(EqcOptions.__dataclass_fields__) == 12  # a new field needs its option (see _cli_options._OPTIONS)


def test_the_check_sees_a_command_that_lacks_an_eqc_option() -> None:
    import typer
    import typer.main

    lacking = typer.Typer()

    @lacking.command()
    def ask(eqc_url: str | None = None, rate_limit: str | None = None) -> None:
        """A command that talks to EQC but declared two options of its own."""

    @lacking.command()
    def other(rows: int = 1) -> None:
        """A command that does not."""

    commands = dict(typer.main.get_command(lacking).commands.items())  # type: ignore[attr-defined]
    gaps = eqc_option_gaps(commands, ())
    assert set(gaps) == {"ask"}
    assert "--quota-key" in gaps["ask"]
    assert "--eqc-url" not in gaps["ask"]


@pytest.mark.parametrize("command", ["run", "worker", "review"])
def test_help_lists_the_same_eqc_options(command: str) -> None:
    from eqc_enrich._cli_options import EQC_OPTION_FLAGS

    shown = cli(*command.split(), "--help")
    assert shown.returncode == 0, shown.stderr
    for flag in EQC_OPTION_FLAGS.values():
        assert flag in shown.stdout, (command, flag)
