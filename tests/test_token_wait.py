"""A run without a token command does not give up on a missing or rejected token at once: it waits for a
login to save a new one in the env file (what `token login` does), checks it, and goes on; after the wait it
ends `token_unavailable` as before. Here the "login" is the test writing the env file as `token login` does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from tests.conftest import SimFactory

from eqc_enrich import EqcOptions, RateLimit, RunOptions, enrich
from eqc_enrich.enrich import EnrichResult, enrich_async
from eqc_enrich.settings import write_env_token

NAMES = ["等待登录测试甲有限公司", "等待登录测试乙有限公司", "等待登录测试丙有限公司"]


def frame() -> pl.DataFrame:
    return pl.DataFrame({"客户名称": NAMES})


def options(url: str, db: Path, wait_s: float) -> RunOptions:
    return RunOptions(
        db=db, eqc=EqcOptions(url=url, rate_limit=RateLimit(1000, 1.0), token_wait_s=wait_s), check_token=True
    )


def run_with_events(given: RunOptions, events: list[tuple[str, dict[str, Any]]]) -> EnrichResult:
    return asyncio.run(enrich_async(frame(), options=given, events=lambda kind, fields: events.append((kind, fields))))


def once(condition: Callable[[], bool], action: Callable[[], object], *, bound_s: float = 30.0) -> threading.Thread:
    """`action` as soon as `condition()` holds (looked at every 20 ms, for at most `bound_s`): a step that
    waits on the run, not on the clock, so a slow start under load cannot reorder it."""

    def run() -> None:
        deadline = time.monotonic() + bound_s
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_run_without_a_token_waits_for_a_login_then_asks_everything(
    sim_factory: SimFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory()
    env_file = tmp_path / ".wdh_env"
    monkeypatch.setenv("WDH_ENV_FILE", str(env_file))
    events: list[tuple[str, dict[str, Any]]] = []
    # first a token EQC does not know (checked once, passed over), then a good one
    once(
        lambda: any(kind == "token_login_needed" for kind, _ in events),
        lambda: write_env_token(env_file, "not-a-token-eqc-knows"),
    )
    saver = once(  # once the bad one was tried
        lambda: sim.stats()["requests"]["searchAll"] >= 1, lambda: write_env_token(env_file, sim.issue_token())
    )
    result = run_with_events(options(sim.url, tmp_path / "i.db", 30.0), events)
    saver.join()
    assert result.summary.status == "completed"
    assert result.summary.eqc.names_asked == len(NAMES)
    asking = [fields for kind, fields in events if kind == "token_login_needed"]
    assert len(asking) == 1
    line = str(asking[0]["line"])
    assert line.startswith("there is no EQC token: sending paused (answers in flight are kept); log in with ")
    assert f"eqc-enrich token login --env-file {env_file} --eqc-url {sim.url}" in line
    assert [kind for kind, _ in events].count("token_login_done") == 1
    assert sim.stats()["requests"]["searchAll"] == 2  # each new token checked once: the bad one, the good one
    assert sim.stats()["unauthorized"] == 1


def test_no_login_within_the_wait_ends_token_unavailable_naming_the_command(
    sim_factory: SimFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory()
    env_file = tmp_path / ".wdh_env"
    monkeypatch.setenv("WDH_ENV_FILE", str(env_file))
    result = enrich(frame(), options=options(sim.url, tmp_path / "i.db", 0.6))
    assert result.summary.status == "token_unavailable"
    message = str(result.summary.message)
    assert message.startswith(f"there is no EQC token and no new valid token appeared in {env_file} within 600ms")
    assert "log in with `eqc-enrich token login" in message
    assert result.summary.eqc.not_asked == len(NAMES)
    assert sim.stats()["requests"]["search"] == 0


def test_a_token_command_is_used_instead_of_waiting(
    sim_factory: SimFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory()
    monkeypatch.setenv("WDH_ENV_FILE", str(tmp_path / ".wdh_env"))
    failing = RunOptions(
        db=tmp_path / "i.db",
        eqc=EqcOptions(url=sim.url, token_command="exit 7", token_wait_s=60.0, rate_limit=RateLimit(1000, 1.0)),
    )
    events: list[tuple[str, dict[str, Any]]] = []
    result = run_with_events(failing, events)
    assert result.summary.status == "token_unavailable"
    assert "token command failed" in str(result.summary.message)
    assert "token_login_needed" not in [kind for kind, _ in events]  # a command is set: no waiting for a login
