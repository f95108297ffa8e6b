"""What survives what: every fault of README's table, each against real parts (simulator, SQLite, processes).

Time runs 1000x faster than the story (latency 20-60 ms, 10 requests per 60 ms), so a fault that takes minutes
in production takes a second here; every loop below is bounded in count and time.
"""

from __future__ import annotations

import asyncio
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

from eqc_enrich import RateLimit, RunControl, RunOptions, RunProgress, enrich, enrich_async
from eqc_enrich.index import IndexStore
from eqc_enrich.model import Latency
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_month

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
    base = RunOptions(
        db=db,
        eqc_url=url,
        token=TOKEN,
        rate_limit=LIMIT,
        timeout_s=2.0,
        salt=SALT,
        latency_hint=Latency(0.04, 0.06),
        grace_s=1.0,
    )
    return RunOptions(**{**base.__dict__, **changes})


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
    result, progress = run_until(
        data, options(sim.url, db, eqc_down_wait_s=0.5), lambda p: p.eqc.names_done >= 30, sim.stop
    )
    summary = result.summary
    assert summary.status == "eqc_unavailable"
    assert result.exit_code == 5
    assert "EQC unreachable" in (summary.message or "")
    eqc = summary.eqc
    assert eqc.failed == 0  # an outage fails no name: they wait, then stay unasked
    assert eqc.not_asked > 0
    assert eqc.names_asked + eqc.not_asked == eqc.names_planned
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
    assert len(asked_again) == eqc.not_asked
    assert every_known_row_right(again.frame, truth)
