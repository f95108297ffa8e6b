"""A newcomer's first hour: the README's commands as typed, every message one can meet on the way.

Separate processes, real files, the simulator on loopback; nothing is mocked (the one missing package of the
bench test is made missing for real, in the child's interpreter).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from tests.options import run_options

from eqc_enrich import RateLimit
from eqc_enrich.model import Latency, implied_latency
from eqc_enrich.resolve import Columns
from eqc_enrich.simulator import Simulator, SimulatorConfig, write_month

README = Path(__file__).parents[1] / "README.md"
TOKEN = "first-hour-secret-token-42"
SCALE = 1000.0
_SCRIPT = Path(sys.executable).with_name("eqc-enrich")
EQC_ENRICH = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "eqc_enrich.cli"]


def cli(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`eqc-enrich ARGS` as a user types it (the installed console script when there is one)."""
    return subprocess.run(
        [*EQC_ENRICH, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_month(tmp_path_factory.mktemp("month") / "month.parquet", seed=5, rows=400)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        seed=5, latency=(20.0, 60.0), time_scale=SCALE, rate_limit=RateLimit(10, 60.0), tokens=(TOKEN,)
    )
    with Simulator(config) as simulator:
        yield simulator


# --- "Try it against the simulator": exactly the README's two commands ---------------------------------------


def _printed_commands(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The commands after "estimate the run:" and "then run against it:", read on a thread (a pipe cannot be
    polled everywhere)."""
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout

    def pump() -> None:
        for line in iter(stdout.readline, ""):
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 60  # it builds its company universe first
    plan = ""
    for _ in range(10):
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line.startswith("estimate the run:"):
            plan = line.removeprefix("estimate the run:").strip()
        if line.startswith("then run against it:"):
            return plan, line.removeprefix("then run against it:").strip()
    raise AssertionError("no run command among the simulator's first lines")


def readme_section_code(title: str) -> list[list[str]]:
    """The code blocks of one README section, each as its lines without comments."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return [[line.split("#")[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


@pytest.mark.slow
def test_simulate_then_the_printed_run_command_works(tmp_path: Path) -> None:
    (make_data, simulate), (readme_plan, readme_run) = readme_section_code("Try it against the simulator")
    assert make_data == "eqc-enrich make-data month.xlsx"
    assert simulate == "eqc-enrich simulate --time-scale 1000"
    made = cli(*shlex.split(make_data)[1:], "--rows", "300", cwd=tmp_path)  # the README's month, smaller
    assert made.returncode == 0, made.stderr
    # a real EQC token in the shell must neither be adopted by the simulator nor printed by it
    # PYTHONFAULTHANDLER: a simulator that will not stop is made to print where each thread is (SIGABRT)
    sim_env = {**os.environ, "WDH_EQC_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    # its stderr goes to a file: a pipe nobody reads until the end would block the simulator once full
    sim_err = (tmp_path / "simulate.err").open("w+", encoding="utf-8")
    proc = subprocess.Popen(
        [*EQC_ENRICH, *shlex.split(simulate)[1:]],
        stdout=subprocess.PIPE,
        stderr=sim_err,
        stdin=subprocess.DEVNULL,
        text=True,
        env=sim_env,
        cwd=tmp_path,
    )
    try:
        plan, command = _printed_commands(proc)
        assert plan == readme_plan  # as the README shows them
        assert re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", command) == readme_run
        words = shlex.split(command)
        assignment, program, *args = words
        name, _, token = assignment.partition("=")
        assert name == "WDH_EQC_TOKEN"
        assert token == "sim-token"  # the simulator's own test token, not the one in the environment
        assert program == "eqc-enrich"
        assert args[:2] == ["run", "month.xlsx"]
        assert "10/60ms" in args
        planned = cli(*shlex.split(plan)[1:], cwd=tmp_path)  # a person reads and pastes: were the 30 min ttl
        time.sleep(2.0)  # scaled too, the token would die in 1.8 s
        done = cli(*args, env={"WDH_EQC_TOKEN": token}, cwd=tmp_path)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)  # bounded; a loaded machine may take a while to stop it
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # the thread dump goes to its stderr, shown below
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        sim_err.seek(0)
        printed = sim_err.read()
        sim_err.close()
    assert proc.returncode == 0, printed[-3000:]  # Ctrl-C is how a person stops it: a clean exit
    assert TOKEN not in command + printed
    assert planned.returncode == 0, planned.stderr
    assert "lower bound " in planned.stdout
    assert done.returncode == 0, done.stderr
    assert "token" not in done.stderr.lower()
    out = pl.read_excel(tmp_path / "month.enriched.xlsx", sheet_name="规模明细")
    truth = pl.read_parquet(tmp_path / "month.truth.parquet")
    assert out.height == truth.height == 300
    named = out.with_row_index("row").join(truth, on="row", suffix="_truth").filter(pl.col("name").is_not_null())
    assert named["company_id"].null_count() == 0  # every customer row has an id (temporary for the unknown)
    known = named.filter(pl.col("company_id_truth").is_not_null())
    assert (known["company_id"] == known["company_id_truth"]).all()
    # rows of collective plans carry no customer; their truth has no company either
    unnamed = out.with_row_index("row").join(truth, on="row", suffix="_truth").filter(pl.col("name").is_null())
    assert unnamed["company_id_truth"].null_count() == unnamed.height
    assert (tmp_path / "eqc_enrich_sim.db").is_file()  # its own index, not the default one


@pytest.mark.slow
@pytest.mark.serial
def test_the_plan_simulate_prints_gives_a_lower_bound_the_run_it_prints_then_meets(tmp_path: Path) -> None:
    """The first estimate a newcomer sees is true: the `plan` line `simulate` prints (its scaled rate limit
    and latency) bounds the run the `run` line then makes from below, by a ratio and not by seconds beside
    it; and `plan` given only the run's rate limit assumes the latency that rate limit implies (once 20-60 s
    beside 10/60ms: a bound of a minute for a run of seconds, and an old flow of hours).

    Time scale 100 (6 slots a second, latency 200-600 ms): at 1000 a slot is 6 ms, and on a loaded machine
    the simulator's own answers slow down by more than that, which a bound cannot foresee."""
    from eqc_enrich._cli_sandbox import SIM_TOKEN, plan_command, run_command

    made = cli("make-data", "month.parquet", "--rows", "4000", "--seed", "5", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    config = SimulatorConfig(seed=5, latency=(20.0, 60.0), time_scale=100.0, rate_limit=RateLimit(10, 60.0),
                             tokens=(SIM_TOKEN,))  # fmt: skip
    with Simulator(config) as sim:
        printed = shlex.split(plan_command(config, month="month.parquet"))
        assert printed[printed.index("--latency") + 1] == "200-600ms"
        planned = cli(*printed[1:], "--json", cwd=tmp_path)
        assert planned.returncode == 0, planned.stderr
        implied = cli("plan", "month.parquet", "--rate-limit", "10/600ms", "--db", "eqc_enrich_sim.db", "--json",
                      cwd=tmp_path)  # fmt: skip
        assert implied.returncode == 0, implied.stderr
        _, _, *run_args = shlex.split(run_command(sim.url, config, SIM_TOKEN, month="month.parquet"))
        done = cli(*run_args, "--summary", "summary.json", "--quiet", env={"WDH_EQC_TOKEN": SIM_TOKEN}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    plan, summary = json.loads(planned.stdout), json.loads((tmp_path / "summary.json").read_text())
    assert summary["eqc"]["names_asked"] == plan["names_for_eqc"] > 100  # the work it planned is the work done
    ratio = plan["lower_bound_s"] / summary["elapsed_s"]
    print(f"plan: lower bound {plan['lower_bound_s']:.2f}s; the run: {summary['elapsed_s']:.2f}s (ratio {ratio:.2f})")
    # a lower bound: never above the run (but for the bound's own rounding of one window), and close below it
    assert 0.5 < ratio <= 1.05
    assumed = json.loads(implied.stdout)
    assert assumed["latency_assumed"]
    assert not plan["latency_assumed"]
    assert (assumed["latency_mean_s"], assumed["latency_max_s"]) == pytest.approx((0.4, 0.6))
    assert assumed["lower_bound_s"] == pytest.approx(plan["lower_bound_s"])
    assert plan["old_flow_s"] == pytest.approx(plan["names_for_eqc"] * 3 * 0.4)  # 3 calls a name, 400 ms each
    text = cli("plan", "month.parquet", "--rate-limit", "10/600ms", "--db", "eqc_enrich_sim.db", cwd=tmp_path).stdout
    assert "(latency 400ms mean, 600ms max, EQC's 20-60s at the rate limit's time scale (200-600ms): --latency " \
           "sets it)" in text  # fmt: skip


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (RateLimit(10, 60.0), (20.0, 60.0)),  # EQC as users configure it
        (RateLimit(10, 3600.0), (20.0, 60.0)),  # a longer window is no time scale: EQC is not slower for it
        (RateLimit(10, 0.06), (0.02, 0.06)),  # simulate --time-scale 1000
        (RateLimit(100, 6.0), (2.0, 6.0)),
    ],
)
def test_plan_assumes_eqcs_latency_at_the_time_scale_the_rate_limit_implies(
    limit: RateLimit, expected: tuple[float, float]
) -> None:
    assert implied_latency(limit) == pytest.approx(expected)


# --- help and usage errors ------------------------------------------------------------------------------------

COMMANDS = ["run", "plan", "demo", "simulate", "make-data", "bench"]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_shows_flags_as_flags(command: list[str]) -> None:
    done = cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: eqc-enrich" in done.stdout
    assert "<bool>" not in done.stdout
    assert re.search(r"--help\s+Show this message", done.stdout)


def test_run_help_names_the_flags_bare(month: Path) -> None:
    text = cli("run", "--help").stdout
    assert re.search(r"--quiet\s+-q\s+Only errors", text)
    assert re.search(r"--details\s+--no-details\s+Also fetch", text)
    assert re.search(r"--no-enrichment\s+Do not call EQC", text)
    for typed in (["--quiet", "true"], ["--details", "yes"]):
        done = cli("run", month, *typed, "--no-enrichment")
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0
        assert done.stderr.startswith("error: Got unexpected extra argument")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["run", "{month}", "--qiuet"], "error: No such option: --qiuet (did you mean --quiet?). "
                                        "See 'eqc-enrich run --help'."),
        (["run"], "error: Missing argument 'INPUT'. See 'eqc-enrich run --help'."),
        (["runn"], "error: No such command 'runn'. Did you mean 'run'? See 'eqc-enrich --help'."),
        (["run", "{month}", "--concurrency", "0"], "error: Invalid value for '--concurrency': "),
        (["plan", "{month}", "--latency"], "error: Option '--latency' requires an argument."),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(month: Path, args: list[str], line: str) -> None:
    done = cli(*(a.format(month=month) for a in args))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.endswith("\n")
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(line), done.stderr
    assert "╭" not in done.stderr


def test_bare_command_prints_the_help() -> None:
    done = cli()
    assert done.returncode == 2  # click's convention: no command is a usage error, answered with the help
    assert "Commands" in done.stdout
    assert "simulate" in done.stdout


# --- settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WDH_EQC_RATE_LIMIT": "10/60s"}, "10/60s"),
        ({"WDH_EQC_RATE_LIMIT": "5", "WDH_EQC_RATE_LIMIT_WINDOW": "30"}, "5/30s"),
        ({"WDH_EQC_RATE_LIMIT": "20/2m"}, "20/120s"),
    ],
)
def test_rate_limit_setting_in_either_form(month: Path, tmp_path: Path, env: dict[str, str], expected: str) -> None:
    done = cli("plan", month, "--db", tmp_path / "i.db", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rate_limit"] == expected


def test_nonsense_rate_limit_setting_is_one_line(month: Path, tmp_path: Path) -> None:
    done = cli("plan", month, "--db", tmp_path / "i.db", env={"WDH_EQC_RATE_LIMIT": "lots"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: WDH_EQC_RATE_LIMIT: not a rate limit: 'lots'")


# --- --log-json ------------------------------------------------------------------------------------------------


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


@pytest.mark.parametrize(
    ("option", "setting"),
    [([], "10/60ms"), (["--rate-limit", "10/60ms"], "3/60s")],
    ids=["from the setting", "the option over the setting"],
)
def test_log_json_events_are_plain_json_with_real_types(
    month: Path, sim: Simulator, tmp_path: Path, option: list[str], setting: str
) -> None:
    log = tmp_path / "events.jsonl"
    done = cli(
        "run", month, "-o", tmp_path / "out.parquet", "--db", tmp_path / "i.db", "--eqc-url", sim.url,
        "--timeout", "2s", "--quiet", "--log-json", log, *option,
        env={"WDH_EQC_TOKEN": TOKEN, "WDH_EQC_RATE_LIMIT": setting},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = log.read_text(encoding="utf-8")
    assert TOKEN not in text
    records = [json.loads(line) for line in text.splitlines()]
    start, finish = records[0], records[-1]
    assert (start["event"], finish["event"]) == ("start", "finish")
    options = start["options"]
    assert options["rate_limit"] == "10/60ms"  # the limit in force, not null
    assert options["columns"] == {
        "name": "客户名称", "plan": "计划代码", "existing_id": "公司代码",
        "plan_required": False, "existing_id_required": False, "plan_type": None, "plan_name": None,
    }  # fmt: skip
    assert options["enrichment"] is True
    assert options["details"] is False
    assert options["retry_not_found"] is False
    assert options["negative_ttl_s"] == 30 * 86_400.0
    assert options["timeout_s"] == 2.0
    assert options["concurrency"] is None
    assert not {"token", "token_command", "salt"} & set(options)
    assert isinstance(finish["rows"], int)
    assert isinstance(finish["eqc"], dict)
    assert isinstance(finish["eqc"]["names_asked"], int)
    assert isinstance(finish["elapsed_s"], float)
    for value in (v for record in records for v in _walk(record)):
        if isinstance(value, str):
            assert value not in {"True", "False", "None"}, value
            assert not re.match(r"^\w+\(", value), value  # no Python repr like Columns(...) or RateLimit(...)


def test_public_options_are_json_and_hide_secrets() -> None:
    options = run_options(
        columns=Columns(plan=None),
        db="postgresql+psycopg://etl:db-password@127.0.0.1/warehouse",
        token=TOKEN,
        token_command="get-token --secret",
        salt="pepper",
        rate_limit=RateLimit(10, 0.06),
        overrides=Path("overrides.yaml"),
        latency_hint=Latency(0.04, 0.06),
    )
    public = options.public()
    assert json.loads(json.dumps(public)) == public
    text = json.dumps(public)
    for secret in (TOKEN, "get-token", "pepper", "db-password"):
        assert secret not in text
    assert public["rate_limit"] == "10/60ms"
    assert public["columns"]["plan"] is None
    assert public["overrides"] == "overrides.yaml"
    assert public["latency_hint"] == {"mean_s": 0.04, "max_s": 0.06}
    assert public["db"] == "postgresql+psycopg://etl:***@127.0.0.1/warehouse"


# --- bench without its extra ---------------------------------------------------------------------------------


def test_bench_without_matplotlib_says_which_extra_before_running(tmp_path: Path) -> None:
    blocked = "import sys; sys.modules['matplotlib'] = None; from eqc_enrich.cli import main; main()"
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-c", blocked, "bench", "--names", "20", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: the benchmark draws its charts with matplotlib, which is not installed: "
        "pip install 'eqc-enrich[bench]'\n"
    )
    assert not out.exists()  # nothing ran, nothing was written


# --- the demo ------------------------------------------------------------------------------------------------

_HUMAN = {
    "rows": re.compile(r"^rows 400   distinct names ([\d,]+)   names asked of EQC ([\d,]+) \(found ([\d,]+), "
                       r"not found ([\d,]+)\)$"),
    "calls": re.compile(r"^EQC calls ([\d,]+)   elapsed \S+   efficiency (\d\.\d\d|- \(no EQC call\))$"),
}  # fmt: skip


def _blocks(stdout: str) -> dict[str, list[str]]:
    """The demo's output per run, keyed by its title."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("== "):
            current = blocks.setdefault(line.strip("= "), [])
        elif line.strip():
            current.append(line)
    return blocks


@pytest.mark.slow
def test_demo_shows_progress_and_a_short_summary_of_each_run(tmp_path: Path) -> None:
    done = cli("demo", "--rows", "400", "--out", tmp_path, "--progress-interval", "100ms")
    assert done.returncode == 0, done.stderr
    assert "{" not in done.stdout  # the JSON summaries only with --json
    blocks = _blocks(done.stdout)
    assert list(blocks) == ["cold run (empty index)", "warm run (same month again)"]
    cold, warm = blocks["cold run (empty index)"], blocks["warm run (same month again)"]
    rows, calls = _HUMAN["rows"].match(cold[0]), _HUMAN["calls"].match(cold[1])
    assert rows is not None, cold
    assert calls is not None, cold
    asked, found, not_found = (int(rows.group(i).replace(",", "")) for i in (2, 3, 4))
    assert asked > 0
    assert found + not_found == asked
    assert int(calls.group(1).replace(",", "")) >= asked
    assert calls.group(2)[0].isdigit()
    assert cold[2].startswith("the EQC stage took ")
    warm_rows, warm_calls = _HUMAN["rows"].match(warm[0]), _HUMAN["calls"].match(warm[1])
    assert warm_rows is not None, warm
    assert warm_rows.group(2) == "0"
    assert warm_calls is not None, warm
    assert (warm_calls.group(1), warm_calls.group(2)) == ("0", "- (no EQC call)")
    # off a terminal, the progress a real run shows: plain status lines on stderr, the last one [done]
    status = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert sum(line.startswith("[done]") for line in status) >= 2  # a tick may land after the end, too
    assert status[-1].startswith("[done]")
    assert "\x1b[" not in done.stderr


@pytest.mark.slow
def test_demo_json_holds_the_same_figures(tmp_path: Path) -> None:
    done = cli("demo", "--rows", "400", "--out", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    decoder = json.JSONDecoder()
    text, summaries = done.stdout, []
    while (start := text.find("\n{")) >= 0:
        summary, end = decoder.raw_decode(text, start + 1)
        summaries.append(summary)
        text = text[end:]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    cold = _HUMAN["rows"].match(_blocks(done.stdout)["cold run (empty index)"][0])
    assert cold is not None
    assert int(cold.group(2)) == summaries[0]["eqc"]["names_asked"]
    assert summaries[1]["api_calls"]["total"] == 0
