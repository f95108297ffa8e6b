"""Progress for long runs: the ETA from the quota model, the plain status line, structured events."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import polars as pl
import pytest
from tests.options import run_options

from eqc_enrich import RateLimit, RunOptions, RunProgress, enrich_async
from eqc_enrich.events import EventLog
from eqc_enrich.model import Latency
from eqc_enrich.progress import eta_seconds, status_line
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_month

SCALE = 1000.0
TOKEN = "progress-token"


def _options(sim: Simulator, db: Path, **changes: object) -> RunOptions:
    base = run_options(
        db=db, eqc_url=sim.url, token=TOKEN, rate_limit=RateLimit(10, 60.0).scaled(SCALE), timeout_s=2.0,
        latency_hint=Latency(0.04, 0.06),
    )  # fmt: skip
    return run_options(base, **changes)


ETA_SCALE = 150.0
"""The ETA test's time scale: a quota slot of 40 ms, so that the quota, not the CPU, sets the pace even with
other processes busy beside the test (at 1000x a slot is 6 ms, about what a loaded machine takes for one
request's local work, and the run then falls behind any quota model)."""


@pytest.mark.serial
def test_eta_at_a_quarter_is_within_20_percent_of_what_remains(tmp_path: Path) -> None:
    data, _ = make_month(seed=3, rows=1_200, companies=140, existing_id_share=0.0)
    config = SimulatorConfig(
        seed=3, latency=(20.0, 60.0), time_scale=ETA_SCALE, rate_limit=RateLimit(10, 60.0), tokens=(TOKEN,),
        token_ttl=86_400.0,
    )  # fmt: skip
    progress = RunProgress()

    async def watch() -> tuple[float, float, float]:
        options = _options(
            sim, tmp_path / "i.db", rate_limit=RateLimit(10, 60.0).scaled(ETA_SCALE), timeout_s=5.0,
            latency_hint=Latency(20 / ETA_SCALE, 60 / ETA_SCALE),
        )  # fmt: skip
        run = asyncio.create_task(enrich_async(data, options=options, progress=progress))
        for _ in range(100_000):  # bounded; the run ends long before
            await asyncio.sleep(0.002)
            needed = progress.names_for_eqc
            if progress.phase == "eqc" and needed and progress.eqc.names_done >= needed / 4:
                quarter_at = time.monotonic()
                eta = eta_seconds(progress, quarter_at)
                assert eta is not None
                break
        else:
            raise AssertionError("the run never reached a quarter of its EQC work")
        await run
        assert progress.eqc.finished_at is not None
        return eta, progress.eqc.finished_at - quarter_at, progress.names_for_eqc

    with Simulator(config) as sim:
        eta, remaining, names = asyncio.run(watch())
    assert names > 100  # long enough for the quarter mark to mean something (about 4 s of quota after it)
    assert abs(eta - remaining) <= 0.2 * remaining, (eta, remaining)


def test_eta_follows_the_quota_not_the_rows() -> None:
    progress = RunProgress(phase="eqc", names_for_eqc=1_000, latency_hint_s=40.0)
    progress.eqc.effective_rate = 10 / 60
    progress.eqc.started_at = time.monotonic()
    # no answer yet: 1,000 calls at 10 per 60 s, plus the last call's latency
    eta = eta_seconds(progress, progress.eqc.started_at)
    assert eta is not None
    assert abs(eta - (1_000 * 6.0 + 40.0)) < 1e-6
    progress.eqc.found = 1_000
    assert eta_seconds(progress) == 0.0
    assert eta_seconds(RunProgress(phase="index lookup")) is None


def test_status_line_carries_every_fact_of_the_display() -> None:
    progress = RunProgress(phase="eqc", rows=30_986, rows_resolved=20_000, distinct_names=3_000,
                           answered_before_eqc=2_000, names_for_eqc=1_000)  # fmt: skip
    progress.eqc.effective_rate = 0.16
    progress.eqc.started_at = time.monotonic()
    progress.eqc.found, progress.eqc.not_found, progress.eqc.failed = 300, 20, 1
    progress.eqc.retries, progress.eqc.rate_limited, progress.eqc.in_flight = 4, 2, 7
    line = status_line(progress)
    for fact in ("[eqc]", "rows 20,000/30,986", "names 3,000 (2,000 answered before EQC)", "eqc 321/1,000", "found 300",
                 "not-found 20", "failed 1", "retries 4", "429s 2", "in-flight 7", "elapsed", "eta"):  # fmt: skip
        assert fact in line, fact


def test_log_json_records_start_retries_progress_and_finish(tmp_path: Path) -> None:
    frame = pl.DataFrame({"客户名称": [f"事件测试公司{i}" for i in range(20)]})
    config = SimulatorConfig(latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(TOKEN,), fail_rate=0.5)
    progress = RunProgress()
    log = tmp_path / "events.jsonl"

    async def run() -> None:
        events = EventLog(log, progress, interval_s=0.01)
        events.start(input="frame")
        result = await enrich_async(
            frame,
            options=_options(sim, tmp_path / "i.db", retries=10, rate_limit=RateLimit(20, 0.1)),
            progress=progress,
            events=events,
        )
        await events.finish(**result.summary.as_dict())

    with Simulator(config) as sim:
        asyncio.run(run())
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    kinds = [record["event"] for record in records]
    assert kinds[0] == "start"
    assert kinds[-1] == "finish"
    assert "retry" in kinds
    assert "progress" in kinds
    assert records[-1]["retries"] == kinds.count("retry")
    assert all("time" in record for record in records)


def test_the_eta_counts_the_local_work_left_after_the_eqc_stage() -> None:
    """While EQC is asked, the ETA is the calls left plus the drain plus the local work after them; once the
    stage is over, it is what is left of that local work (resolving the rows, writing the outputs)."""
    progress = RunProgress(phase="eqc", names_for_eqc=100, latency_hint_s=0.5, local_left_s=8.0)
    progress.eqc.effective_rate = 10.0
    progress.eqc.started_at = 100.0
    assert eta_seconds(progress, 100.0) == 100 / 10.0 + 0.5 + 8.0
    progress.phase, progress.local_from = "writing output", 200.0
    assert eta_seconds(progress, 203.0) == 5.0
    assert eta_seconds(progress, 210.0) == 0.0  # late, but never negative
    progress.phase = "done"
    assert eta_seconds(progress, 210.0) is None


@pytest.mark.slow
def test_the_eta_at_the_end_of_the_eqc_stage_covers_writing_a_big_workbook(tmp_path: Path) -> None:
    """A run that writes a big .xlsx: the local work is most of what is left when the last name is answered,
    and the ETA then says so (measured on a sample of the rows), instead of 0 (issue 18, item 17)."""
    data, _ = make_month(seed=4, rows=12_000, companies=60, existing_id_share=0.0)
    config = SimulatorConfig(seed=4, latency=(20.0, 60.0), time_scale=SCALE, rate_limit=RateLimit(10, 60.0),
                             tokens=(TOKEN,), token_ttl=86_400.0)  # fmt: skip
    progress = RunProgress()
    marks: dict[str, float] = {}

    async def watch() -> float:
        run = asyncio.create_task(
            enrich_async(
                data, options=_options(sim, tmp_path / "i.db"), output=tmp_path / "out.xlsx", progress=progress
            )
        )
        for _ in range(200_000):  # bounded; the run ends long before
            await asyncio.sleep(0.001)
            if progress.phase == "eqc" and progress.eqc.names_done == progress.names_for_eqc > 0 and "eta" not in marks:
                marks["at"] = time.monotonic()
                marks["eta"] = eta_seconds(progress, marks["at"]) or 0.0
            if run.done():
                break
        await run
        return time.monotonic()

    with Simulator(config) as sim:
        ended = asyncio.run(watch())
    assert "eta" in marks, "the last answer came and went unseen"
    left = ended - marks["at"]
    assert progress.local_left_s > 0
    # the estimate and the time really left are of one order (a ratio, so a busy machine slows both alike)
    assert left / 4 <= marks["eta"] <= left * 4, (marks["eta"], left)
