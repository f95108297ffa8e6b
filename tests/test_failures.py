"""What survives what: every fault of README's table, each against real parts (simulator, SQLite, processes).

Time runs 1000x faster than the story (latency 20-60 ms, 10 requests per 60 ms), so a fault that takes minutes
in production takes a second here; every loop below is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from tests.options import run_options

from eqc_enrich import RateLimit, RunOptions, RunProgress, enrich, enrich_async
from eqc_enrich.cli import exit_code
from eqc_enrich.model import Latency
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_month
from eqc_enrich.store import IndexStore

SCALE = 1000.0
LIMIT = RateLimit(10, 60.0).scaled(SCALE)
TOKEN = "fault-test-token"
SALT = "test_salt"
CLI = [sys.executable, "-m", "eqc_enrich.cli"]


def sim_config(**changes: Any) -> SimulatorConfig:
    base: dict[str, Any] = {
        "seed": 5,
        "latency": (20.0, 60.0),
        "time_scale": SCALE,
        "rate_limit": RateLimit(10, 60.0),
        "tokens": (TOKEN,),
        "token_ttl": 10 * 86_400.0,
    }
    return SimulatorConfig(**{**base, **changes})


def options(url: str, db: Path, **changes: Any) -> RunOptions:
    base = run_options(
        db=db,
        eqc_url=url,
        token=TOKEN,
        rate_limit=LIMIT,
        timeout_s=2.0,
        salt=SALT,
        latency_hint=Latency(0.04, 0.06),
        grace_s=1.0,
    )
    return run_options(base, **changes)


@pytest.fixture(scope="module")
def month() -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_month(seed=5, rows=1_500, companies=200, existing_id_share=0.0)


@pytest.fixture(autouse=True)
def _state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Side files of index servers go under the test's own folder, never the developer's home."""
    monkeypatch.setenv("EQC_ENRICH_STATE_DIR", str(tmp_path / "state"))


def answered_names(db: Path) -> set[str]:
    """Names the index holds an EQC answer for (found or not found)."""
    con = sqlite3.connect(db)
    try:
        found = {row[0] for row in con.execute("SELECT lookup_key FROM enrichment_index WHERE source = 'eqc_api'")}
        missing = {row[0] for row in con.execute("SELECT lookup_key FROM eqc_negative_cache")}
    finally:
        con.close()
    return found | missing


def run_until(
    frame: pl.DataFrame, opts: RunOptions, when: Callable[[RunProgress], bool], then: Callable[[], None]
) -> tuple[Any, RunProgress]:
    """Run in the background; call `then` once when `when(progress)` holds (polled, bounded)."""
    progress = RunProgress()

    async def main() -> Any:
        task = asyncio.create_task(enrich_async(frame, options=opts, progress=progress))
        for _ in range(4_000):  # at most ~20 s of polling; the runs here end well before
            if task.done() or when(progress):
                break
            await asyncio.sleep(0.005)
        await asyncio.to_thread(then)
        return await task

    return asyncio.run(main()), progress


def every_known_row_right(frame: pl.DataFrame, truth: pl.DataFrame) -> bool:
    joined = frame.with_row_index("row").join(truth.rename({"company_id": "expected"}), on="row")
    return joined.filter(pl.col("expected").is_not_null() & (pl.col("company_id") != pl.col("expected"))).height == 0


# --- EQC goes away ---------------------------------------------------------------------------------------


def test_eqc_gone_mid_run_stops_sending_keeps_every_answer_and_ends_eqc_unavailable(
    month: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    data, truth = month
    db = tmp_path / "index.db"
    sim = Simulator(sim_config()).start()
    result, _ = run_until(data, options(sim.url, db, eqc_down_wait_s=0.5), lambda p: p.eqc.names_done >= 30, sim.stop)
    summary = result.summary
    assert summary.status == "eqc_unavailable"
    assert exit_code(result.summary.status) == 5
    assert "EQC unreachable" in (summary.message or "")
    eqc = summary.eqc
    assert eqc.failed == 0  # an outage fails no name: they wait, then stay unasked
    assert eqc.not_asked > 0
    assert eqc.names_asked + eqc.not_asked + eqc.answered_elsewhere == eqc.names_planned
    answered = answered_names(db) & set(sim.state.stats.search_keys)
    assert eqc.names_asked == eqc.found + eqc.not_found == len(answered)
    # after EQC went away, only the requests in flight, the few that tell it is down, and the probes went out
    unanswered = summary.api_calls["total"] - summary.accepted_requests - summary.rate_limited
    assert unanswered <= summary.concurrency["peak_in_flight"] + 5 + 12
    # the rerun asks only what was never answered, and gets every row right
    with Simulator(sim_config()) as back:
        again = enrich(data, options=options(back.url, db))
        asked_again = set(back.state.stats.search_keys)
    assert again.summary.status == "completed"
    assert not asked_again & answered
    # the names never asked (fewer where an answer named a company's registered name, which the index now has)
    assert eqc.not_asked - eqc.found <= len(asked_again) <= eqc.not_asked
    assert every_known_row_right(again.frame, truth)


def test_eqc_back_within_the_wait_resumes_and_completes_asking_nothing_answered_twice(
    month: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    data, truth = month
    db = tmp_path / "index.db"
    first = Simulator(sim_config()).start()
    port = first.port
    second: list[Simulator] = []

    def outage() -> None:
        first.stop()
        time.sleep(0.3)
        second.append(Simulator(sim_config(), port=port).start())

    try:
        opts = options(first.url, db, eqc_down_wait_s=20.0)
        result, _ = run_until(data, opts, lambda p: p.eqc.names_done >= 30, outage)
        before, after = set(first.state.stats.search_keys), set(second[0].state.stats.search_keys)
    finally:
        for sim in second:
            sim.stop()
    assert result.summary.status == "completed", result.summary.message
    assert exit_code(result.summary.status) == 0
    assert result.summary.eqc_outages == 1
    assert result.summary.eqc.failed == 0
    # only the requests that were in flight when EQC went away are asked again
    assert len(before & after) <= result.summary.concurrency["peak_in_flight"]
    assert every_known_row_right(result.frame, truth)


def cli_run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "run", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "WDH_EQC_TOKEN": TOKEN, **(env or {})},
        check=False,
    )


@pytest.fixture
def month_file(month: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path) -> Path:
    path = tmp_path / "month.parquet"
    month[0].head(300).write_parquet(path)
    return path


def test_an_unreachable_url_says_so_at_once_and_ends_eqc_unavailable(month_file: Path, tmp_path: Path) -> None:
    done = cli_run(
        month_file, "--db", tmp_path / "i.db", "--eqc-url", "http://127.0.0.1:1", "--rate-limit", "10/60ms",
        "--eqc-down-wait", "0.5s", "--summary", tmp_path / "s.json", "--quiet",
    )  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert "Traceback" not in done.stderr
    notice = [line for line in done.stderr.splitlines() if line.startswith("EQC is not answering")]
    assert len(notice) == 1
    assert "connection refused" in notice[0]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["status"] == "eqc_unavailable"
    assert summary["eqc"]["failed"] == 0
    assert summary["eqc"]["names_asked"] == 0
    assert summary["eqc"]["not_asked"] == summary["eqc"]["names_planned"] > 0
    # the output is complete all the same: temporary ids for the names nobody could ask
    out = pl.read_parquet(tmp_path / "month.enriched.parquet")
    assert out.height == 300
    assert out.filter(pl.col("客户名称").is_not_null())["company_id"].null_count() == 0
    unresolved = pl.read_csv(tmp_path / "month.unresolved.csv")
    assert set(unresolved["status"]) == {"not_asked"}
    assert set(unresolved["reason"]) == {"not asked: EQC unavailable"}


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[str]:
    """An https server on loopback with a self-signed certificate no client trusts."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_self_signed_certificate_is_named_and_ends_the_run_at_once(
    month_file: Path, tls_server: str, tmp_path: Path
) -> None:
    done = cli_run(
        month_file, "--db", tmp_path / "i.db", "--eqc-url", tls_server, "--rate-limit", "10/60ms",
        "--summary", tmp_path / "s.json", "--quiet",
    )  # fmt: skip
    assert done.returncode == 5, done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["status"] == "eqc_unavailable"
    assert "certificate" in summary["message"]
    assert summary["eqc"]["failed"] == 0
    # it does not wait out --eqc-down-wait: a certificate does not heal; one request told it all
    assert summary["api_calls"]["total"] <= summary["concurrency"]["peak_in_flight"] + 1


def test_names_that_fail_after_every_retry_end_names_failed_listed_with_their_reason(tmp_path: Path) -> None:
    data, _ = make_month(seed=8, rows=400, companies=60, existing_id_share=0.0)
    with Simulator(sim_config(seed=8, fail_rate=0.5, latency=(0.0, 0.0))) as flaky:
        result = enrich(
            data, options=options(flaky.url, tmp_path / "i.db", retries=1), unresolved_output=tmp_path / "u.csv"
        )
    summary = result.summary
    assert summary.eqc.failed > 0
    assert summary.status == "names_failed"
    assert exit_code(result.summary.status) == 4
    assert len(summary.failed_names) == summary.eqc.failed
    reasons = [item["reason"] for item in summary.failed_names]
    assert all(r.startswith("EQC search: ") and r.endswith("(after 2 attempts)") for r in reasons), reasons
    assert any("server error (HTTP 50" in r for r in reasons)
    unresolved = pl.read_csv(tmp_path / "u.csv")
    failed = unresolved.filter(pl.col("status") == "failed")
    assert set(failed["name"]) == {item["name"] for item in summary.failed_names}
    assert failed["temporary_id"].null_count() == 0


# --- the index cannot be written ----------------------------------------------------------------------------

_LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
"""


class Locker:
    """A second process that holds the SQLite write lock of the index for `seconds`."""

    def __init__(self, db: Path, seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def _hold_lock(db: Path, seconds: float) -> None:
    """Take the lock, hold it `seconds`, let go; returns once the lock is gone."""
    Locker(db, seconds).process.wait(timeout=30)


def side_files(db: Path) -> list[Path]:
    return sorted((db.parent / f"{db.name}.pending").glob("*.answers.jsonl"))


@pytest.mark.slow
def test_index_locked_past_the_wait_stops_asking_saves_answers_and_the_next_run_loads_them(
    month: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    data, truth = month
    db = tmp_path / "index.db"
    IndexStore(db).close()
    lockers: list[Locker] = []
    with Simulator(sim_config()) as sim:
        result, _ = run_until(
            data,
            options(sim.url, db, index_wait_s=1.0),
            lambda p: p.eqc.names_done >= 30,
            lambda: lockers.append(Locker(db, 30)),
        )
        asked_first = set(sim.state.stats.search_keys)
    lockers[0].release()
    summary = result.summary
    assert summary.status == "index_unavailable"
    assert exit_code(result.summary.status) == 6
    assert summary.side_file is not None
    assert "which the next run loads first" in (summary.message or "")
    # sending stopped at the lock: what went out after it is at most what was in flight then
    assert summary.eqc.not_asked > 0
    stall_slots = 0.25 / (LIMIT.window_s / LIMIT.requests)  # the stall bound (0.25 s at this scale) in quota slots
    assert summary.eqc.names_asked <= 30 + 2 * summary.concurrency["peak_in_flight"] + stall_slots + 2
    saved = side_files(db)
    assert [str(p) for p in saved] == [summary.side_file]
    # every answer received is in the index or in the side file; the rerun loads the file and asks none again
    with Simulator(sim_config()) as back:
        again = enrich(data, options=options(back.url, db))
        asked_again = set(back.state.stats.search_keys)
    assert again.summary.status == "completed"
    assert any("loaded" in w and "side file" in w for w in again.summary.warnings)
    assert side_files(db) == []
    assert len(asked_first & asked_again) <= summary.concurrency["peak_in_flight"]  # only those cut off unanswered
    # (fewer when an answer of the first run named the registered name of a company still to ask)
    assert 0 < len(asked_again) <= summary.eqc.not_asked + len(asked_first & asked_again)
    assert every_known_row_right(again.frame, truth)


@pytest.mark.serial  # its figures follow wall-clock timing that a busy neighbour skews
def test_index_locked_for_a_while_pauses_then_resumes_and_completes(
    month: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    data, truth = month
    db = tmp_path / "index.db"
    IndexStore(db).close()
    with Simulator(sim_config()) as sim:
        result, _ = run_until(
            data,
            options(sim.url, db, index_wait_s=30.0),
            lambda p: p.eqc.names_done >= 30,
            lambda: _hold_lock(db, 2.5),
        )
        repeated = sim.stats()["search_keys_repeated"]
    assert result.summary.status == "completed"
    assert result.summary.index_outages == 1
    assert repeated == 0
    assert side_files(db) == []  # everything it held went into the index
    assert every_known_row_right(result.frame, truth)


@pytest.mark.slow
def test_sigkill_while_the_index_is_locked_loses_no_answer(month_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    IndexStore(db).close()
    args: list[str | Path] = [
        month_file, "--db", db, "--rate-limit", "10/60ms", "--timeout", "2s", "--index-wait", "60s",
        "--concurrency", "4", "--claim-lease", "0.5s", "--quiet",
    ]  # fmt: skip
    with Simulator(sim_config()) as sim:
        run = start_cli(args, sim)
        wait_while_running(run, lambda: sim.stats()["requests"]["search"] >= 20)
        locker = Locker(db, 60)
        wait_while_running(run, lambda: bool(side_files(db)) and bool(_lines(side_files(db)[0])))
        time.sleep(0.3)  # the answers still in flight at the lock land in the side file too
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        asked_first = set(sim.state.stats.search_keys)
        locker.release()
        assert side_files(db), "the killed run's side file must stay for the next run"
        again = cli_run(*args, "--eqc-url", sim.url, "--summary", tmp_path / "s.json")
        asked_total = sim.state.stats.search_keys
    assert again.returncode == 0, again.stderr
    asked_twice = [key for key in asked_first if asked_total[key] > 1]
    assert len(asked_twice) <= 4  # at most the requests in flight at the kill (--concurrency 4)
    assert side_files(db) == []


def start_cli(args: list[str | Path], sim: Simulator) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "run", *map(str, args), "--eqc-url", sim.url],
        env={**os.environ, "WDH_EQC_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_while_running(run: subprocess.Popen[bytes], until: Callable[[], bool], *, limit_s: float = 60) -> None:
    """Poll until `until()` holds; fails if the run ends first or the limit passes."""
    deadline = time.monotonic() + limit_s
    while not until():
        assert time.monotonic() < deadline
        assert run.poll() is None
        time.sleep(0.002)


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.slow
def test_sigkill_mid_run_repeats_at_most_the_requests_in_flight(month_file: Path, tmp_path: Path) -> None:
    """Commits follow the quota (at least one per slot), so a kill loses no more than the requests in flight.

    At 100x (a 0.6 s window, a 60 ms slot): a slot long next to how late a busy machine schedules the
    writer's thread, as a real slot (6 s) is; at 1000x a late commit alone would hold several answers."""
    db = tmp_path / "index.db"
    args: list[str | Path] = [
        month_file, "--db", db, "--rate-limit", "10/600ms", "--timeout", "2s", "--concurrency", "4",
        "--claim-lease", "0.5s", "--quiet",
    ]  # fmt: skip
    with Simulator(sim_config(time_scale=100.0)) as sim:
        run = start_cli(args, sim)
        wait_while_running(run, lambda: sim.stats()["requests"]["search"] >= 30)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        asked_first = set(sim.state.stats.search_keys)
        again = cli_run(*args, "--eqc-url", sim.url)
        asked_total = sim.state.stats.search_keys
    assert again.returncode == 0, again.stderr
    assert len([key for key in asked_first if asked_total[key] > 1]) <= 4


@pytest.mark.slow
def test_a_full_disk_sends_the_answers_to_the_state_folder_and_the_next_run_loads_them(
    month: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    """The index on a small filesystem that fills up mid-run: the side file beside it cannot be written
    either, so the answers go to the state folder on another filesystem."""
    small = tmp_path / "small"
    small.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)]
    mounted = subprocess.run(mount, capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode().strip()}")
    try:
        data, truth = month
        db = small / "index.db"
        IndexStore(db).close()

        def fill() -> None:
            with contextlib.suppress(OSError), (small / "filler").open("wb", buffering=0) as handle:
                for _ in range(8192):  # bounded: 32 MiB, twice what fills it
                    handle.write(b"\0" * 4096)

        with Simulator(sim_config()) as sim:
            result, _ = run_until(data, options(sim.url, db, index_wait_s=1.0), lambda p: p.eqc.names_done >= 30, fill)
            asked_first = set(sim.state.stats.search_keys)
        assert result.summary.status == "index_unavailable"
        saved = Path(result.summary.side_file or "")
        assert saved.is_file()
        assert saved.is_relative_to(tmp_path / "state")
        (small / "filler").unlink()
        with Simulator(sim_config()) as back:
            again = enrich(data, options=options(back.url, db, index_wait_s=5.0))
            asked_again = set(back.state.stats.search_keys)
        assert again.summary.status == "completed", again.summary.message
        assert not saved.exists()
        assert len(asked_first & asked_again) <= result.summary.concurrency["peak_in_flight"]
        assert every_known_row_right(again.frame, truth)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.slow
def test_a_full_disk_under_the_output_after_the_eqc_stage_is_its_own_ending_and_loses_no_answer(
    month: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    """The output folder passes the check before the run (a probe file fits), then cannot hold the workbook:
    the run ends `output_failed` (exit 7), not "bad input"; the message names the path, the summary is written
    where it was asked, every answer is in the index, and the rerun writes the files asking EQC nothing."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode().strip()}")
    try:
        data, truth = month
        source = tmp_path / "month.parquet"
        data.write_parquet(source)
        db, summary = tmp_path / "index.db", tmp_path / "summary.json"
        env = {**os.environ, "WDH_EQC_TOKEN": TOKEN, "WDH_ALIAS_SALT": SALT}
        with Simulator(sim_config()) as sim:
            common = ["--db", str(db), "--eqc-url", sim.url, "--rate-limit", str(LIMIT), "--timeout", "2s", "-q"]
            target = small / "month.enriched.xlsx"
            done = subprocess.run(
                [*CLI, "run", str(source), "-o", str(target), "--summary", str(summary), *common],
                capture_output=True, text=True, env=env, timeout=300, check=False,
            )  # fmt: skip
            asked = dict(sim.state.stats.search_keys)
        assert done.returncode == 7, done.stderr
        assert "Traceback" not in done.stderr
        figures = json.loads(summary.read_text(encoding="utf-8"))
        assert figures["status"] == "output_failed"
        assert str(target) in figures["message"]
        assert "No space left on device" in figures["message"]
        assert figures["eqc"]["names_asked"] == len(asked) > 0
        assert "status: output_failed (exit 7)" in done.stderr
        assert not target.exists()
        assert [p.name for p in small.iterdir()] == []  # nothing half-written
        assert answered_names(db) >= set(asked)
        with Simulator(sim_config()) as again:
            rerun = subprocess.run(
                [*CLI, "run", str(source), "-o", str(tmp_path / "out.xlsx"), *common[:2], "--eqc-url", again.url,
                 *common[4:]],
                capture_output=True, text=True, env=env, timeout=300, check=False,
            )  # fmt: skip
            assert sum(again.state.stats.search_keys.values()) == 0
        assert rerun.returncode == 0, rerun.stderr
        written = pl.read_excel(tmp_path / "out.xlsx")
        assert every_known_row_right(written, truth)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


# --- tokens ---------------------------------------------------------------------------------------------------


def fresh_token_command(sim: Simulator) -> str:
    fetch = (
        "import json, urllib.request; "
        f"print(json.load(urllib.request.urlopen(urllib.request.Request('{sim.url}/__token', method='POST')))['token'])"
    )
    return f'{sys.executable} -c "{fetch}"'


@pytest.mark.slow
def test_a_token_expiring_under_a_deep_queue_is_refreshed_once_per_expiry(tmp_path: Path) -> None:
    """Tokens die 1 s after issue while requests queue for seconds behind the quota: each expiry costs one
    refresh and at most the requests in flight with the dead token, never a refresh per queued request.

    The lifetime is long next to what a refresh itself takes (a Python process fetching a token: a few
    hundred ms on a loaded machine), or a fresh token could die before its first request and count as
    invalid; the quota (10 per 0.3 s, about 150 names) makes the run last several lifetimes."""
    data, truth = make_month(seed=6, rows=1_200, companies=150, existing_id_share=0.0)
    limit = RateLimit(10, 0.3)
    config = SimulatorConfig(
        seed=6, latency=(0.02, 0.06), time_scale=1.0, rate_limit=limit, tokens=(TOKEN,), token_max_age=1.0,
    )  # fmt: skip
    seen: list[tuple[str, dict[str, Any]]] = []
    with Simulator(config) as sim:
        command = fresh_token_command(sim)
        opts = options(sim.url, tmp_path / "i.db", token_command=command, rate_limit=limit)
        progress = RunProgress()
        result = asyncio.run(
            enrich_async(data, options=opts, progress=progress, events=lambda kind, f: seen.append((kind, f)))
        )
        stats = sim.stats()
    summary = result.summary
    assert summary.status == "completed", summary.message
    assert summary.eqc.failed == 0
    refreshes = summary.token_refreshes
    assert refreshes >= 3  # the run lasted several token lifetimes
    assert [kind for kind, _ in seen].count("token_refresh") == refreshes
    refused = stats["unauthorized"] + stats["token_expired"]
    assert refused <= (refreshes + 1) * (summary.concurrency["peak_in_flight"] + 1)
    assert every_known_row_right(result.frame, truth)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (None, "the EQC token was rejected (invalid or expired, HTTP 401) and no refresh is configured"),
        ("exit 3", "token command failed: it exited with status 3"),
        ("echo not-a-token", "the token printed by the token command was rejected by EQC (invalid)"),
    ],
)
def test_a_token_stop_says_what_is_wrong(command: str | None, expected: str, tmp_path: Path) -> None:
    frame = pl.DataFrame({"客户名称": ["令牌测试公司甲", "令牌测试公司乙"]})
    with Simulator(sim_config(latency=(0.0, 0.0))) as sim:
        result = enrich(frame, options=options(sim.url, tmp_path / "i.db", token="stale", token_command=command))
    assert result.summary.status == "token_unavailable"
    assert exit_code(result.summary.status) == 3
    assert (result.summary.message or "").startswith(expected)
    assert "stale" not in json.dumps(result.summary.as_dict(), default=str)
    assert result.summary.eqc.not_asked == 2
    assert result.summary.eqc.failed == 0


# --- no exception is silent -----------------------------------------------------------------------------------


def test_an_unexpected_error_in_a_worker_fails_that_name_loudly_and_the_stage_goes_on() -> None:
    """A library surprise (here: a transport raising RuntimeError, which no real server can make httpx do)
    becomes a reported failure of that name, never a silent skip."""
    import httpx

    from eqc_enrich.eqc import EqcClient
    from eqc_enrich.eqc_stage import EqcLookup, EqcStats, LookupOutcome, LookupSettings, TokenKeeper

    def explode(request: httpx.Request) -> httpx.Response:
        if "坏" in request.url.params.get("key", ""):
            raise RuntimeError("surprise")
        return httpx.Response(200, json={"list": [], "total": 0})

    async def main() -> tuple[list[LookupOutcome], list[str]]:
        outcomes: list[LookupOutcome] = []
        events: list[str] = []
        client = EqcClient("t", base_url="http://eqc.invalid", timeout=1.0, transport=httpx.MockTransport(explode))
        lookup = EqcLookup(
            client, LookupSettings(rate_limit=RateLimit(1000, 1.0), concurrency=1), stats=EqcStats(),
            tokens=TokenKeeper(client, None), on_outcome=outcomes.append, events=lambda kind, f: events.append(kind),
        )  # fmt: skip
        result = await lookup.run(["好公司", "坏公司", "另一家好公司"])
        await client.aclose()
        assert result.stopped == ""
        return outcomes, events

    outcomes, events = asyncio.run(main())
    by_name = {o.name: o for o in outcomes}
    assert by_name["坏公司"].status == "failed"
    assert by_name["坏公司"].error == "unexpected RuntimeError: surprise"
    assert by_name["好公司"].status == by_name["另一家好公司"].status == "not_found"
    assert events.count("name_failed") == 1


# --- what is checked before EQC is asked -----------------------------------------------------------------------


def test_an_output_that_cannot_be_written_stops_the_run_before_any_request(month_file: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with Simulator(sim_config(latency=(0.0, 0.0))) as sim:
        for target in (blocker / "out.csv", tmp_path / "out.xls", tmp_path):
            done = cli_run(month_file, "--db", tmp_path / "i.db", "--eqc-url", sim.url, "-o", target)
            assert done.returncode == 2, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert "Traceback" not in done.stderr
        assert sim.stats()["requests"]["search"] == 0  # nothing paid for an output that could not be written
    assert not (tmp_path / "month.unresolved.csv").exists()


def test_an_over_long_name_is_never_sent_and_keeps_its_key_across_runs(tmp_path: Path) -> None:
    long_name = "某" * 7_300 + "有限公司"
    frame = pl.DataFrame({"客户名称": [long_name, "短名称公司", long_name]})
    with Simulator(sim_config(latency=(0.0, 0.0))) as sim:
        first = enrich(frame, options=options(sim.url, tmp_path / "i.db", concurrency=1))
        again = enrich(frame, options=options(sim.url, tmp_path / "i.db", concurrency=1))
        asked = set(sim.state.stats.search_keys)
    assert first.summary.status == "completed"
    assert first.summary.eqc.too_long == 1
    assert first.summary.eqc.names_asked == 1  # only the short one: the long one is never in a URL
    assert all(len(key) < 300 for key in asked)
    row = first.unresolved.filter(pl.col("status") == "too_long")
    assert row.height == 1
    assert row["rows"].item() == 2
    # the same bounded key, the same temporary id, on the next run
    assert again.frame["company_id"].to_list() == first.frame["company_id"].to_list()
    assert again.summary.eqc.too_long == 1
