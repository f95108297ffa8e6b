"""Many jobs, one quota: several `eqc-enrich run` processes on one index and one EQC account.

Three processes run on three files that share most of their names, against one simulator with a strict
sliding window (10 requests per 600 ms: the story's quota at time scale 100, where three processes, the
simulator and a database server on two cores still leave the pacing, not the CPU, in charge). Together they
must stay inside the quota, ask every name once in total, and get every row right; on SQLite and on the
real PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from eqc_enrich import RateLimit
from eqc_enrich.eqc_stage import SlidingWindowLimiter
from eqc_enrich.keys import normalize_name
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_month
from eqc_enrich.store import IndexStore, init_index

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # long, and held to timing that tests beside it would skew

SCALE = 100.0
LIMIT = RateLimit(10, 60.0)
TOKEN = "many-jobs-token"
CLI = [sys.executable, "-m", "eqc_enrich.cli"]
PG_URL = os.environ.get("EQC_ENRICH_TEST_PG_URL")
WORKERS = 3


@pytest.fixture(scope="module")
def month() -> tuple[pl.DataFrame, pl.DataFrame]:
    data, truth = make_month(seed=21, rows=2_100, companies=200, existing_id_share=0.0)
    return data.with_row_index("row"), truth


def slices(month: tuple[pl.DataFrame, pl.DataFrame], folder: Path) -> list[Path]:
    """Three files of 700 rows each: rows of one month repeat names about ten times, so they share most."""
    data, _ = month
    shuffled = data.sample(fraction=1.0, shuffle=True, seed=3)
    paths = []
    for i in range(WORKERS):
        path = folder / f"part{i}.parquet"
        shuffled.slice(i * 700, 700).write_parquet(path)
        paths.append(path)
    return paths


def sim_config() -> SimulatorConfig:
    return SimulatorConfig(
        seed=21, latency=(20.0, 60.0), time_scale=SCALE, rate_limit=LIMIT, tokens=(TOKEN,), token_ttl=86_400.0
    )


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(sim_config()) as simulator:
        yield simulator


def efficiency_alone(paths: list[Path], schema: str | None, folder: Path) -> tuple[float, int]:
    """One process on the union of the files, on a fresh simulator and index of the same kind: the pacing
    the combined stream is held to, measured on this machine at this moment (a busy machine paces both worse),
    and the 429s it met."""
    union = folder / "union.parquet"
    pl.concat([pl.read_parquet(path) for path in paths]).write_parquet(union)
    db, own_schema = str(folder / "alone.db"), None
    if schema is not None:
        assert PG_URL is not None
        db, own_schema = PG_URL, f"{schema}_alone"
        init_index(PG_URL, schema=own_schema)
    try:
        with Simulator(sim_config()) as alone:
            run = start_run(union, alone, db, own_schema)
            _, err = run.communicate(timeout=240)
            assert run.returncode == 0, err
            return pacing_efficiency(alone), alone.stats()["rate_limited"]
    finally:
        if own_schema is not None:
            with sa.create_engine(db).begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{own_schema}" CASCADE'))


@pytest.fixture(params=["sqlite", "postgresql"])
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(db, schema): a SQLite file, or a fresh schema on the PostgreSQL that `.ci/run` starts."""
    if request.param == "sqlite":
        yield str(tmp_path / "index.db"), None
        return
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must provide EQC_ENRICH_TEST_PG_URL (.ci/run starts PostgreSQL)")
        pytest.skip("no PostgreSQL: set EQC_ENRICH_TEST_PG_URL")
    schema = f"jobs_{uuid.uuid4().hex[:10]}"
    init_index(PG_URL, schema=schema)
    try:
        yield PG_URL, schema
    finally:
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def start_run(path: Path, sim: Simulator, db: str, schema: str | None, *extra: str) -> subprocess.Popen[str]:
    window_ms = LIMIT.window_s / SCALE * 1000
    args = [
        "run", str(path), "--db", db, "--eqc-url", sim.url, "--rate-limit", f"{LIMIT.requests}/{window_ms:g}ms",
        "--timeout", "5s",
        "--claim-lease", "2s", "--quiet", "--summary", str(path.with_suffix(".summary.json")), *extra,
    ]  # fmt: skip
    if schema:
        args += ["--db-schema", schema]
    return subprocess.Popen(
        [*CLI, *args],
        env={**os.environ, "WDH_EQC_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def pacing_efficiency(sim: Simulator) -> float:
    """The combined stream against the strict bound: accepted request i cannot go before floor(i / R) W."""
    sent = sorted(at for at, _ in sim.state.stats.arrivals)
    accepted = sum(1 for _, outcome in sim.state.stats.arrivals if outcome == "accepted")
    window = LIMIT.window_s / SCALE
    bound = (accepted - 1) // LIMIT.requests * window
    return bound / (sent[-1] - sent[0])


def every_row_right(output: Path, truth: pl.DataFrame) -> bool:
    frame = pl.read_parquet(output).join(truth.rename({"company_id": "expected"}), on="row")
    known = frame.filter(pl.col("expected").is_not_null())
    return known.height > 0 and known.filter(pl.col("company_id") != pl.col("expected")).height == 0


def test_three_runs_share_one_quota_ask_each_name_once_and_get_every_row_right(
    month: tuple[pl.DataFrame, pl.DataFrame], sim: Simulator, index_url: tuple[str, str | None], tmp_path: Path
) -> None:
    db, schema = index_url
    paths = slices(month, tmp_path)
    runs = [start_run(path, sim, db, schema) for path in paths]
    for run in runs:
        _, err = run.communicate(timeout=240)
        assert run.returncode == 0, err
    stats = sim.stats()
    names = {normalize_name(n) for p in paths for n in pl.read_parquet(p)["客户名称"].drop_nulls().to_list()} - {""}
    total = sum(stats["requests"].values())
    assert stats["rate_limited"] <= 0.02 * total, stats
    assert stats["search_keys_repeated"] == 0  # no name asked twice, across the three processes
    assert stats["search_keys_distinct"] == len(names)  # every name asked once in total
    assert stats["max_in_window"] <= LIMIT.requests
    efficiency = pacing_efficiency(sim)
    alone, alone_429 = efficiency_alone(paths, schema, tmp_path)
    print(f"combined pacing efficiency {efficiency:.3f} over {stats['accepted']} accepted requests, {total} sent,"
          f" {stats['rate_limited']} 429s; one process alone on the union {alone:.3f}, {alone_429} 429s")  # fmt: skip
    # As even as one process alone, and 0.9 where that reaches it. Each 429 beyond the ones alone met widens
    # the margin of the process that met it by one step (`SlidingWindowLimiter.widen`), for the rest of a run this
    # short: the combined stream may fall that much further behind (seen on a busy machine: 0.894 against
    # 0.950 alone, beside 2-3 429s at start-up). The allowance is a share of the window: it holds at any scale.
    step = SlidingWindowLimiter(LIMIT).widen_step_s / LIMIT.window_s
    assert efficiency >= min(0.9, alone - 0.05 - step * max(0, stats["rate_limited"] - alone_429))
    for path in paths:
        assert every_row_right(path.with_name(f"{path.stem}.enriched.parquet"), month[1])
    summaries = [_summary(path) for path in paths]
    # each name was asked by one process; the others took its answer from the index
    assert sum(s["eqc"]["names_asked"] for s in summaries) == len(names)
    assert sum(s["eqc"]["answered_elsewhere"] for s in summaries) > 0
    for eqc in (s["eqc"] for s in summaries):  # each run's figures add up, names answered elsewhere one by one
        assert eqc["names_planned"] == eqc["names_asked"] + eqc["not_asked"] + eqc["answered_elsewhere"]


def _summary(path: Path) -> dict[str, Any]:
    import json

    loaded: dict[str, Any] = json.loads(path.with_suffix(".summary.json").read_text())
    return loaded


def test_a_run_killed_mid_way_leaves_its_names_to_the_others_once_its_lease_expires(
    month: tuple[pl.DataFrame, pl.DataFrame], sim: Simulator, index_url: tuple[str, str | None], tmp_path: Path
) -> None:
    db, schema = index_url
    paths = slices(month, tmp_path)
    runs = [start_run(path, sim, db, schema, "--concurrency", "4") for path in paths]
    deadline = time.monotonic() + 60
    while sim.stats()["requests"]["search"] < 30:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    runs[0].send_signal(signal.SIGKILL)
    runs[0].wait(timeout=10)
    for run in runs[1:]:
        _, err = run.communicate(timeout=240)
        assert run.returncode == 0, err
    stats = sim.stats()
    # only what the killed run had in flight was asked again (its claims expired and the others took them)
    assert stats["search_keys_repeated"] <= 4
    survivors = {normalize_name(n) for p in paths[1:] for n in pl.read_parquet(p)["客户名称"].drop_nulls().to_list()}
    asked = set(sim.state.stats.search_keys)
    assert survivors - {""} <= asked | _answered_before(db, schema)
    for path in paths[1:]:
        assert every_row_right(path.with_name(f"{path.stem}.enriched.parquet"), month[1])


def _answered_before(db: str, schema: str | None) -> set[str]:
    """Names answered without a search of their own (the registered name another answer named)."""
    store = IndexStore(db, schema=schema)
    try:
        with store.transaction() as conn:
            rows = conn.execute(sa.select(store.tables.index.c.lookup_key)).scalars().all()
    finally:
        store.close()
    return set(rows)
