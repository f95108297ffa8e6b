"""README promises that no other test pinned down, each against real parts (simulator or scripted server on
loopback, SQLite files, the CLI as a separate process).

- "not found" is trusted for `--negative-ttl` (default 30 days), no longer and no shorter, from Python and
  from the command line;
- a 429's Retry-After holds every request of the account, not only the one that met it;
- the token stays out of the index database (the run journal included), whether it was given to the Python
  API or printed by `--token-command`;
- every answer is committed within half a second at the story's rate (at least once per quota slot when
  that is shorter), and the writer commits on its own while the run goes on;
- every option of every command is in `--help` and in README.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
import sqlalchemy as sa
import typer.main
from tests.options import run_options
from typer.testing import CliRunner

from eqc_enrich import RateLimit, RunOptions, enrich
from eqc_enrich.cli import app
from eqc_enrich.eqc_stage import IndexWriter, LookupOutcome
from eqc_enrich.keys import normalize_name
from eqc_enrich.options import resolve_config
from eqc_enrich.settings import Settings
from eqc_enrich.simulator import Simulator, SimulatorConfig
from eqc_enrich.store import IndexEntry, IndexStore, utcnow

if TYPE_CHECKING:
    from tests.conftest import ScriptedServer

TOKEN = "promise-secret-token-5e3b1c"
SALT = "promise-salt-pepper"
FAST = RateLimit(1000, 1.0)
UNKNOWN = "全然不存在的某某承诺测试公司"  # a name the simulated EQC does not know
README = Path(__file__).resolve().parent.parent / "README.md"
CLI = [sys.executable, "-m", "eqc_enrich.cli"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(latency=(0.0, 0.0), rate_limit=FAST, tokens=(TOKEN,), token_ttl=86_400.0)
    with Simulator(config) as simulator:
        yield simulator


def options(sim_url: str, db: Path, **changes: Any) -> RunOptions:
    base = run_options(db=db, eqc_url=sim_url, token=TOKEN, rate_limit=FAST, timeout_s=5.0, salt=SALT, retries=0)
    return run_options(base, **changes)


def not_found_asked(db: Path, age: timedelta, name: str = UNKNOWN) -> None:
    """The index says EQC did not know `name` when it was asked `age` ago."""
    store = IndexStore(db)
    try:
        store.negatives.add([normalize_name(name)], now=utcnow() - age)
    finally:
        store.close()


def searches(sim: Simulator) -> int:
    return int(sim.stats()["requests"]["search"])


# --- the negative cache's TTL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "ttl_s", "asked"),
    [
        (timedelta(hours=2), None, False),  # the default 30 days trust a 2-hour-old answer (not 43 minutes)
        (timedelta(days=29), None, False),
        (timedelta(days=31), None, True),  # ... and no older one
        (timedelta(hours=2), 3_600.0, True),  # a 1-hour TTL does not trust it
        (timedelta(minutes=30), 3_600.0, False),
        (timedelta(seconds=5), 0.0, True),  # TTL 0: never trusted
    ],
)
def test_not_found_is_trusted_for_the_negative_ttl_and_no_longer(
    sim: Simulator, tmp_path: Path, age: timedelta, ttl_s: float | None, asked: bool
) -> None:
    db = tmp_path / "index.db"
    not_found_asked(db, age)
    changes = {} if ttl_s is None else {"negative_ttl_s": ttl_s}
    result = enrich(pl.DataFrame({"客户名称": [UNKNOWN, UNKNOWN]}), options=options(sim.url, db, **changes))
    assert searches(sim) == int(asked)
    assert result.summary.eqc.negative_cache_hits == int(not asked)
    assert result.summary.eqc.not_found == int(asked)
    assert result.unresolved["status"].to_list() == ["not_found"]


def test_negative_ttl_on_the_command_line_reaches_the_run(sim: Simulator, tmp_path: Path) -> None:
    month = tmp_path / "month.csv"
    pl.DataFrame({"客户名称": [UNKNOWN]}).write_csv(month)
    db = tmp_path / "index.db"
    not_found_asked(db, timedelta(hours=2))

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        args = ["run", str(month), "--db", str(db), "--eqc-url", sim.url, "--rate-limit", "1000/1s", "--quiet"]
        return subprocess.run(
            [*CLI, *args, *extra], capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "WDH_EQC_TOKEN": TOKEN},
        )  # fmt: skip

    trusted = run("--negative-ttl", "3h")
    assert trusted.returncode == 0, trusted.stderr
    assert searches(sim) == 0
    untrusted = run("--negative-ttl", "1h")  # the 2-hour-old answer is too old now: asked again
    assert untrusted.returncode == 0, untrusted.stderr
    assert searches(sim) == 1


# --- Retry-After ---------------------------------------------------------------------------------------------


def test_retry_after_holds_every_request_of_the_account(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    """One request in flight at a time (`concurrency=1`): the first meets a 429 with `Retry-After: 0.4`. The
    next request to go out, whichever name it is for, goes only after the 0.4 s; the lower bound is the
    server's own, so a busy machine can only make the gap longer."""
    pause = 0.4
    scripted_server.respond_once(429, {"error": "TooManyRequests"}, {"Retry-After": f"{pause}"})
    scripted_server.respond(200, {"list": []})
    frame = pl.DataFrame({"客户名称": ["承诺测试甲公司", "承诺测试乙公司"]})
    result = enrich(frame, options=options(scripted_server.url, tmp_path / "i.db", concurrency=1, retries=2))
    assert result.summary.status == "completed"
    assert result.summary.rate_limited == 1
    arrivals = [request.at for request in scripted_server.requests]
    assert len(arrivals) == 3  # the 429, its retry, the other name
    assert arrivals[1] - arrivals[0] >= pause
    assert arrivals[2] >= arrivals[0] + pause


# --- the token stays out of the database ---------------------------------------------------------------------


def database_text(db: Path) -> str:
    """Every byte of the index's files (the database and any journal or WAL beside it), as text."""
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in db.parent.iterdir() if p.name.startswith(db.name))


def journal_settings(db: Path) -> list[Any]:
    store = IndexStore(db)
    try:
        with store._engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.select(store.journal.table.c.settings_json))]
    finally:
        store.close()


def test_a_token_given_to_the_python_api_stays_out_of_the_database(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    result = enrich(pl.DataFrame({"客户名称": [UNKNOWN, "另一家承诺测试公司"]}), options=options(sim.url, db))
    assert result.summary.status == "completed"
    settings = journal_settings(db)
    assert len(settings) == 1
    assert settings[0]["eqc_url"] == sim.url  # the journal holds the options ...
    assert not {"token", "token_command", "salt"} & set(settings[0])  # ... but not these
    text = database_text(db)
    assert TOKEN not in text
    assert SALT not in text


def test_a_token_printed_by_the_token_command_stays_out_of_the_database(sim: Simulator, tmp_path: Path) -> None:
    month = tmp_path / "month.csv"
    pl.DataFrame({"客户名称": [UNKNOWN]}).write_csv(month)
    db = tmp_path / "index.db"
    command = f"{sys.executable} -c \"print('{TOKEN}')\""
    env = {key: value for key, value in os.environ.items() if key != "WDH_EQC_TOKEN"}
    done = subprocess.run(
        [*CLI, "run", str(month), "--db", str(db), "--eqc-url", sim.url, "--rate-limit", "1000/1s",
         "--token-command", command, "--summary", str(tmp_path / "s.json"), "--log-json", str(tmp_path / "e.jsonl")],
        capture_output=True, text=True, timeout=120, check=False, env={**env, "WDH_ALIAS_SALT": SALT},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert searches(sim) == 1  # the command's token was used
    assert journal_settings(db)[0]["db"] == str(db)
    for text in (database_text(db), done.stdout, done.stderr, *(p.read_text() for p in tmp_path.glob("*.js*"))):
        assert TOKEN not in text
        assert SALT not in text


# --- commits -----------------------------------------------------------------------------------------------------


def test_every_answer_is_committed_within_half_a_second_at_the_story_rate() -> None:
    story = resolve_config(run_options(rate_limit=RateLimit(10, 60.0)), Settings())
    assert story.stage.commit_interval_s == 0.5
    benchmark = resolve_config(run_options(rate_limit=RateLimit(10, 0.6)), Settings())
    assert benchmark.stage.commit_interval_s == pytest.approx(0.06)  # at least once per quota slot
    fast = resolve_config(run_options(rate_limit=RateLimit(10, 0.06)), Settings())
    assert fast.stage.commit_interval_s == pytest.approx(0.025)  # but a 6 ms slot is too short to pay a commit
    asked = resolve_config(run_options(rate_limit=RateLimit(10, 0.06), commit_interval_s=0.002), Settings())
    assert asked.stage.commit_interval_s == pytest.approx(0.002)  # unless asked for
    assert resolve_config(RunOptions(commit_interval_s=0.2), Settings()).stage.commit_interval_s == 0.2


def test_the_writer_commits_while_the_run_goes_on(tmp_path: Path) -> None:
    """An answer added to a running writer is in the index long before the writer is closed: within a few
    intervals (bounded at 100 of them, so only a writer that does not commit on its own can fail this)."""
    interval = 0.05
    db = tmp_path / "index.db"
    store = IndexStore(db)

    async def main() -> tuple[bool, int]:
        writer = IndexWriter(store, interval_s=interval)
        writer.start()
        writer.add(LookupOutcome(normalize_name(UNKNOWN), "not_found"))
        deadline = time.monotonic() + 100 * interval
        seen = False
        # the row is visible the moment the thread commits; the writer counts the commit when the loop resumes it
        while not (seen and writer.commits) and time.monotonic() < deadline:
            await asyncio.sleep(interval / 5)
            seen = await asyncio.to_thread(store.negatives.count) == 1
        commits = writer.commits
        await writer.close()
        return seen, commits

    try:
        seen, commits = asyncio.run(main())
    finally:
        store.close()
    assert seen, "the answer was not committed while the writer ran"
    assert commits >= 1


# --- every option is documented ----------------------------------------------------------------------------


def commands() -> list[tuple[list[str], Any]]:
    """Every leaf command of the CLI with its path (`["index", "prune"]`, ...)."""
    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*path, name])
        else:
            found.append((path, command))

    walk(typer.main.get_command(app), [])
    return found


def documented(spelling: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(spelling)}(?![\w-])", text) is not None


def test_every_option_of_every_command_is_in_the_help_and_in_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    listed = commands()
    assert {" ".join(path) for path, _ in listed} >= {"run", "plan", "demo", "simulate", "make-data", "bench"}
    missing: list[str] = []
    runner = CliRunner()
    for path, command in listed:
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
        assert shown.exit_code == 0, shown.output
        for param in command.get_params(command.context_class(command)):
            if param.param_type_name != "option" or param.name == "help":
                continue
            spellings = [*param.opts, *param.secondary_opts]
            where = " ".join(path)
            if getattr(param, "hidden", False) or not any(documented(s, shown.output) for s in spellings):
                missing.append(f"{where} {spellings[0]}: not in --help")
            if not any(documented(s, readme) for s in spellings):
                missing.append(f"{where} {spellings[0]}: not in README.md")
    assert not missing, "\n".join(missing)


# --- options that no other test passes on a command line ---------------------------------------------------


def test_column_details_check_token_budget_and_refresh_options_reach_the_run(tmp_path: Path) -> None:
    config = SimulatorConfig(latency=(0.0, 0.0), rate_limit=FAST, tokens=(TOKEN,), token_ttl=86_400.0)
    with Simulator(config) as sim:
        first, second = (company.name for company in sim.state.universe.companies[:2])
        month = tmp_path / "month.csv"
        pl.DataFrame(
            {"名称": [first, second, UNKNOWN], "代码": ["P1", "P2", "P3"], "编号": ["", "", "X123"]}
        ).write_csv(month)
        db = tmp_path / "index.db"
        store = IndexStore(db)
        try:  # an answer for the first name, two hours old
            store.entries.upsert([IndexEntry(normalize_name(first), "customer_name", "OLD1", 0.95, "eqc_api")],
                                 now=utcnow() - timedelta(hours=2))  # fmt: skip
        finally:
            store.close()
        summary = tmp_path / "s.json"
        args = [
            "run", month, "-o", tmp_path / "out.csv", "--db", db, "--eqc-url", sim.url, "--rate-limit", "1000/1s",
            "--name-column", "名称", "--plan-column", "代码", "--id-column", "编号", "--details", "--check-token",
            "--budget", "2", "--refresh", "1h", "--retries", "0", "--summary", summary, "--quiet",
        ]  # fmt: skip
        done = subprocess.run(
            [*CLI, *map(str, args)], capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "WDH_EQC_TOKEN": TOKEN},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        requests = sim.stats()["requests"]
    report = json.loads(summary.read_text(encoding="utf-8"))
    # --id-column: the third row's own id answers it; --refresh 1h: the 2-hour-old entry does not count;
    # --budget 2: both names asked
    assert report["eqc"]["names_planned"] == report["eqc"]["names_asked"] == 2
    assert report["eqc"]["found"] == 2
    assert requests["searchAll"] == 1  # --check-token
    assert requests["findDepart"] == requests["findLabels"] == 2  # --details
    assert report["api_calls"]["total"] == 7  # 2 searches, 2 x 2 details, the token check
    out = pl.read_csv(tmp_path / "out.csv", infer_schema=False)
    assert out["company_id_source"].to_list() == ["eqc", "eqc", "existing"]
    assert out["company_id"][2] == "X123"
    assert out["company_id"][0] != "OLD1"


def test_retries_and_a_budget_on_the_command_line(tmp_path: Path) -> None:
    config = SimulatorConfig(latency=(0.0, 0.0), rate_limit=FAST, tokens=(TOKEN,), fail_rate=1.0)
    month = tmp_path / "month.csv"
    names = ["预算测试甲公司", "预算测试甲公司", "预算测试乙公司", "预算测试丙公司"]
    pl.DataFrame({"客户名称": names}).write_csv(month)
    with Simulator(config) as sim:
        args = ["run", month, "--db", tmp_path / "i.db", "--eqc-url", sim.url, "--rate-limit", "1000/1s",
                "--retries", "2", "--budget", "2", "--summary", tmp_path / "s.json", "--quiet"]  # fmt: skip
        done = subprocess.run(
            [*CLI, *map(str, args)], capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "WDH_EQC_TOKEN": TOKEN},
        )  # fmt: skip
        searched = sim.stats()["requests"]["search"]
    assert done.returncode == 4, done.stderr  # names failed after every retry
    report = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert report["eqc"]["names_planned"] == 2  # the two most frequent of three
    assert report["eqc"]["over_budget"] == 1
    assert searched == 2 * (1 + 2)  # each asked once and retried twice
    assert report["retries"] == 4
