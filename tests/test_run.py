"""The enrichment run end to end against the simulated EQC over loopback, time-scaled 1000x."""

from __future__ import annotations

import asyncio
import math
import random
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import sqlalchemy as sa
from tests.options import run_options

from eqc_enrich import (
    EnrichResult,
    RateLimit,
    RunControl,
    RunOptions,
    RunProgress,
    enrich,
    enrich_async,
    temp_company_id,
)
from eqc_enrich._policies import ConfidencePolicy, OutagePolicy
from eqc_enrich.cli import exit_code
from eqc_enrich.eqc import SEARCH, EqcClient
from eqc_enrich.eqc_stage import EqcLookup, EqcStats, LookupSettings, StageResult, TokenKeeper
from eqc_enrich.keys import normalize_name
from eqc_enrich.model import Latency
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_month
from eqc_enrich.store import IndexStore

SCALE = 1000.0
STORY_LIMIT = RateLimit(10, 60.0)
TOKEN = "run-test-token"
SALT = "test_salt"


@pytest.fixture(scope="module")
def month() -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_month(seed=11, rows=4_000, companies=400)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        seed=11,
        latency=(20.0, 60.0),
        time_scale=SCALE,
        rate_limit=STORY_LIMIT,
        tokens=(TOKEN,),
        token_ttl=10 * 86_400.0,
    )
    with Simulator(config) as simulator:
        yield simulator


def most_arrivals_within(sim: Simulator, span_s: float) -> int:
    """The most requests (accepted or refused) that reached the simulator within any `span_s` seconds."""
    times = sorted(at for at, _ in sim.state.stats.arrivals)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= span_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def options(sim: Simulator, db: Path, **changes: object) -> RunOptions:
    base = run_options(
        db=db,
        eqc_url=sim.url,
        token=TOKEN,
        rate_limit=STORY_LIMIT.scaled(SCALE),
        timeout_s=2.0,
        salt=SALT,
        latency_hint=Latency(0.04, 0.06),
    )
    return run_options(base, **changes)


def test_every_known_row_gets_its_true_id_and_unknown_names_stable_temp_ids(
    month: tuple[pl.DataFrame, pl.DataFrame], sim: Simulator, tmp_path: Path
) -> None:
    data, truth = month
    result = enrich(data, options=options(sim, tmp_path / "index.db"))
    frame = result.frame.with_row_index("row").join(truth.rename({"company_id": "expected"}), on="row")

    known = frame.filter(pl.col("expected").is_not_null())
    wrong = known.filter(pl.col("company_id") != pl.col("expected"))
    assert wrong.height == 0, wrong.select("客户名称", "company_id", "company_id_source", "expected").head()

    unknown = frame.filter(pl.col("expected").is_null() & pl.col("客户名称").is_not_null())
    assert unknown.height > 0
    assert set(unknown["company_id_source"].unique()) == {"temp"}
    for raw, company_id in unknown.select("客户名称", "company_id").unique().iter_rows():
        assert company_id == temp_company_id(raw, SALT)
    # the same unknown name always gets the same id, however it was written
    per_key = unknown.with_columns(pl.col("客户名称").map_elements(normalize_name, return_dtype=pl.String).alias("k"))
    assert per_key.group_by("k").agg(pl.col("company_id").n_unique().alias("n"))["n"].max() == 1

    collective = frame.filter(pl.col("客户名称").is_null())
    assert collective["company_id"].null_count() == collective.height

    assert result.frame.columns == [*data.columns, "company_id", "company_id_source"]
    assert result.frame.height == data.height


def test_each_name_is_searched_once_within_quota_then_never_again(
    month: tuple[pl.DataFrame, pl.DataFrame], sim: Simulator, tmp_path: Path
) -> None:
    data, _ = month
    db = tmp_path / "index.db"
    cold = enrich(data, options=options(sim, db))
    stats = sim.stats()
    asked = cold.summary.eqc.names_asked
    assert asked > 100
    assert stats["search_keys_repeated"] == 0
    assert stats["accepted"] == asked
    # What the client sent, refused or not (the server's own count of what it let in cannot exceed N by
    # construction). Sends are paced at N per window + margin; on the way to the server they can bunch by
    # the machine's scheduling jitter, which at this time scale (a 6 ms slot) is not small next to a slot.
    # So the check allows a whole window of jitter over ten windows: a limiter that lets requests go
    # unpaced sends hundreds in that span.
    window = STORY_LIMIT.scaled(SCALE).window_s
    span = window * 1.02  # the limiter's default margin: 2% of the window
    allowed = STORY_LIMIT.requests * math.ceil((10 * window + window) / span)
    assert most_arrivals_within(sim, 10 * window) <= allowed
    # 429s come from that jitter only: the exception, never the rule
    assert stats["rate_limited"] <= asked / 4
    assert cold.summary.eqc.failed == 0
    assert cold.summary.api_calls == {"search": stats["requests"]["search"], "total": stats["requests"]["search"]}

    warm = enrich(data, options=options(sim, db))
    assert warm.summary.api_calls == {"total": 0}
    assert sim.stats()["requests"]["search"] == stats["requests"]["search"]
    assert warm.frame.equals(cold.frame.with_columns(warm.frame["company_id_source"]))
    assert warm.summary.index_hit_rate == 1.0


def test_cancel_midway_then_rerun_asks_no_name_twice(
    month: tuple[pl.DataFrame, pl.DataFrame], sim: Simulator, tmp_path: Path
) -> None:
    data, _ = month
    db = tmp_path / "index.db"
    progress = RunProgress()
    control = RunControl()

    async def cancel_after_a_third() -> tuple[EnrichResult, int, int]:
        run = asyncio.create_task(
            enrich_async(data, options=options(sim, db, grace_s=1.0), progress=progress, control=control)
        )
        done_at_cancel = in_flight_at_cancel = 0
        for _ in range(10_000):  # bounded: the run ends long before
            await asyncio.sleep(0.005)
            needed = progress.names_for_eqc
            if needed and progress.eqc.names_done >= needed // 3 and progress.eqc.in_flight:
                done_at_cancel, in_flight_at_cancel = progress.eqc.names_done, progress.eqc.in_flight
                control.stop()
                break
        first = await run
        assert first.summary.status == "interrupted"
        assert exit_code(first.summary.status) == 130
        return first, done_at_cancel, in_flight_at_cancel

    first, done_at_cancel, in_flight_at_cancel = asyncio.run(cancel_after_a_third())
    first_searches = sim.stats()["requests"]["search"]
    assert in_flight_at_cancel > 0  # the stop came with requests in flight: the case this test is about
    # those requests were let land within the grace period and their answers kept; only one that met a 429 or a
    # server error could not go again after the stop
    asked_first = first.summary.eqc.names_asked
    assert asked_first >= done_at_cancel + in_flight_at_cancel - first.summary.retries
    # every request the server accepted was answered, and the answer kept: none was cut off by the stop
    assert sim.stats()["accepted"] == asked_first
    assert first_searches >= asked_first

    second = enrich(data, options=options(sim, db))
    assert second.summary.status == "completed"
    stats = sim.stats()
    # answers in flight at the stop were allowed to land and were committed: nothing is asked twice
    assert stats["search_keys_repeated"] == 0
    assert second.summary.eqc.names_asked < progress.names_for_eqc


def test_budget_asks_the_most_frequent_names_only(
    month: tuple[pl.DataFrame, pl.DataFrame], sim: Simulator, tmp_path: Path
) -> None:
    data, _ = month
    result = enrich(data, options=options(sim, tmp_path / "index.db", budget=25))
    assert result.summary.eqc.names_asked == 25
    assert result.summary.eqc.over_budget > 0
    assert sim.stats()["accepted"] == 25
    pending = (
        result.frame.filter(pl.col("company_id_source").is_in(["eqc", "temp"]))
        .with_columns(pl.col("客户名称").map_elements(normalize_name, return_dtype=pl.String).alias("k"))
        .group_by("k")
        .agg(pl.len().alias("rows"), (pl.col("company_id_source") == "eqc").any().alias("found"))
    )
    store = IndexStore(tmp_path / "index.db")
    try:
        not_found = store.known_negatives(pending["k"].to_list(), asked_since=store_epoch())
    finally:
        store.close()
    pending = pending.with_columns((pl.col("found") | pl.col("k").is_in(list(not_found))).alias("asked"))
    assert pending["asked"].sum() == 25
    asked_rows = pending.filter(pl.col("asked"))["rows"].min()
    skipped_rows = pending.filter(~pl.col("asked"))["rows"].max()
    assert isinstance(asked_rows, int)
    assert isinstance(skipped_rows, int)
    assert asked_rows >= skipped_rows  # most frequent first: no skipped name outnumbers an asked one


def test_no_enrichment_makes_no_call_and_still_gives_every_named_row_an_id(
    month: tuple[pl.DataFrame, pl.DataFrame], sim: Simulator, tmp_path: Path
) -> None:
    data, _ = month
    result = enrich(data, options=options(sim, tmp_path / "index.db", enrichment=False))
    assert sim.stats()["requests"]["search"] == 0
    named = result.frame.filter(pl.col("客户名称").is_not_null())
    assert named["company_id"].null_count() == 0
    assert set(named["company_id_source"].unique()) <= {"existing", "backflow", "temp"}


def test_not_found_is_cached_and_only_re_asked_on_request(sim: Simulator, tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "客户名称": ["全然不存在的某某公司", "全然不存在的某某公司", "另一家不存在公司"],
            "计划代码": ["P1", "P1", "P2"],
        }
    )
    db = tmp_path / "index.db"
    first = enrich(frame, options=options(sim, db))
    assert first.summary.eqc.not_found == 2
    again = enrich(frame, options=options(sim, db))
    assert again.summary.api_calls == {"total": 0}
    assert again.summary.eqc.negative_cache_hits == 2
    forced = enrich(frame, options=options(sim, db, retry_not_found=True))
    assert forced.summary.eqc.names_asked == 2
    expired = enrich(frame, options=options(sim, db, negative_ttl_s=0.0))
    assert expired.summary.eqc.names_asked == 2


def test_failures_are_retried_and_exhausted_lookups_are_reported_not_cached(tmp_path: Path) -> None:
    names = [f"重试测试公司{i}" for i in range(6)]
    frame = pl.DataFrame({"客户名称": names})
    config = SimulatorConfig(latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(TOKEN,), fail_rate=1.0)
    with Simulator(config) as broken:
        db = tmp_path / "index.db"
        result = enrich(frame, options=options(broken, db, retries=2, rate_limit=RateLimit(1000, 1.0)))
        assert result.summary.eqc.failed == 6
        assert result.summary.retries == 12
        assert broken.stats()["requests"]["search"] == 18
    store = IndexStore(db)
    try:
        assert store.known_negatives([normalize_name(n) for n in names], asked_since=store_epoch()) == set()
        assert store.count_entries() == 0
    finally:
        store.close()
    assert set(result.frame["company_id_source"].to_list()) == {"temp"}


def test_transient_faults_cost_retries_not_answers(sim: Simulator, tmp_path: Path) -> None:
    data, truth = make_month(seed=11, rows=600, companies=80)
    config = SimulatorConfig(
        seed=11, latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(TOKEN,), fail_rate=0.2, malformed_rate=0.1
    )
    with Simulator(config) as flaky:
        result = enrich(data, options=options(flaky, tmp_path / "index.db", retries=8, rate_limit=RateLimit(1000, 1.0)))
    assert result.summary.eqc.failed == 0
    assert result.summary.retries > 0
    joined = result.frame.with_row_index("row").join(truth.rename({"company_id": "expected"}), on="row")
    assert joined.filter(pl.col("expected").is_not_null() & (pl.col("company_id") != pl.col("expected"))).height == 0


def store_epoch() -> datetime:
    return datetime(2000, 1, 1, tzinfo=UTC)


def test_check_token_replaces_a_stale_token_before_the_run(tmp_path: Path) -> None:
    config = SimulatorConfig(latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(TOKEN,))
    frame = pl.DataFrame({"客户名称": ["令牌检查公司"]})
    with Simulator(config) as sim:
        fresh = f"{sys.executable} -c \"print('{TOKEN}')\""
        base = options(sim, tmp_path / "i.db", token="stale", check_token=True, rate_limit=RateLimit(1000, 1.0))
        checked = enrich(frame, options=run_options(base, token_command=fresh))
        assert checked.summary.status == "completed"
        assert checked.summary.eqc.not_found == 1
        assert sim.stats()["requests"]["searchAll"] == 1
        stuck = enrich(frame, options=options(sim, tmp_path / "j.db", token="stale", check_token=True))
    assert stuck.summary.status == "token_unavailable"
    assert exit_code(stuck.summary.status) == 3
    assert stuck.summary.eqc.not_asked == 1


def test_details_fetches_and_stores_business_info_and_labels(tmp_path: Path) -> None:
    data, truth = make_month(seed=11, rows=300, companies=30, existing_id_share=0.0)
    config = SimulatorConfig(seed=11, latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(TOKEN,))
    db = tmp_path / "index.db"
    with Simulator(config) as sim:
        result = enrich(data, options=options(sim, db, details=True, rate_limit=RateLimit(1000, 1.0)))
        requests = sim.stats()["requests"]
    found = result.summary.eqc.found
    assert found > 0
    assert requests["findDepart"] == requests["findLabels"] == found
    assert result.summary.api_calls["total"] == requests["search"] + 2 * found
    store = IndexStore(db)
    try:
        with store._engine.connect() as conn:
            payloads = conn.execute(sa.select(store.payloads.table)).mappings().all()
    finally:
        store.close()
    assert len(payloads) == len({p["company_id"] for p in payloads}) >= 1
    assert all(p["depart_json"]["businessInfodto"] for p in payloads)
    assert all("labels" in p["labels_json"] for p in payloads)
    joined = result.frame.with_row_index("row").join(truth.rename({"company_id": "expected"}), on="row")
    assert joined.filter(pl.col("expected").is_not_null() & (pl.col("company_id") != pl.col("expected"))).height == 0


# --- the EQC stage's details: what stops or fails there keeps the search answer (found by mutation testing) ---


def _learned_and_kept(db: Path) -> tuple[dict[str, float], int]:
    """The EQC answers' customer-name entries (key -> confidence) and the number of payloads kept."""
    store = IndexStore(db)
    try:
        entries = {
            row["lookup_key"]: float(row["confidence"])
            for row in store.entries.all_rows()
            if row["source"] == "eqc_api" and row["lookup_type"] == "customer_name"
        }
        with store._engine.connect() as conn:
            payloads = len(conn.execute(sa.select(store.payloads.table)).all())
    finally:
        store.close()
    return entries, payloads


def test_the_confidence_policy_decides_what_the_index_learns_and_the_journal_records_it(tmp_path: Path) -> None:
    """A stricter policy (learn only exact matches) still gives the rows the ids EQC answered this run and keeps
    every payload, but leaves the fuzzy answers out of the index, so a person or the worker sees them again."""
    data, _ = make_month(seed=11, rows=600, companies=60, existing_id_share=0.0)
    config = SimulatorConfig(seed=11, latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(TOKEN,))
    strict = ConfidencePolicy(min_learned=0.95)
    with Simulator(config) as sim:
        fast = {"rate_limit": RateLimit(1000, 1.0)}
        default = enrich(data, options=options(sim, tmp_path / "default.db", **fast))
        stricter = enrich(data, options=options(sim, tmp_path / "strict.db", confidence=strict, **fast))
    assert stricter.frame["company_id"].to_list() == default.frame["company_id"].to_list()

    learned, kept = _learned_and_kept(tmp_path / "default.db")
    learned_strict, kept_strict = _learned_and_kept(tmp_path / "strict.db")
    fuzzy = {key for key, confidence in learned.items() if confidence < 0.95}
    assert fuzzy, "the month has no fuzzy answers: the test would prove nothing"
    assert min(learned.values()) >= ConfidencePolicy().min_learned
    assert fuzzy.isdisjoint(learned_strict)
    assert all(confidence >= 0.95 for confidence in learned_strict.values())
    assert kept_strict == kept > len(fuzzy)  # one payload per company answered, learned or not

    store = IndexStore(tmp_path / "strict.db")
    try:
        (journal,) = store.journal.recent()
    finally:
        store.close()
    assert journal["run_id"] == stricter.summary.run_id
    recorded = journal["settings_json"]["confidence"]
    assert recorded == {"min_learned": 0.95, "former_name_factor": 0.9, "refresh_below": 0.8}


def known_name() -> str:
    """A name of the seed-11 universe that EQC finds."""
    data, truth = make_month(seed=11, rows=40, companies=4, existing_id_share=0.0)
    row = truth.filter(pl.col("company_id").is_not_null())["row"][0]
    return str(data["客户名称"][row])


def front(sim: Simulator, on_request: Callable[[str], httpx.Response | None]) -> httpx.MockTransport:
    """A transport that hands each request to the real simulator, unless `on_request(path)` answers it first:
    the simulator has no fault aimed at one endpoint, and these cases need one."""

    async def handle(request: httpx.Request) -> httpx.Response:
        answer = on_request(request.url.path)
        if answer is not None:
            return answer
        async with httpx.AsyncClient() as real:
            forwarded = await real.request(
                request.method, sim.url + request.url.path, params=request.url.params, headers=request.headers
            )
        return httpx.Response(forwarded.status_code, content=forwarded.content, headers=forwarded.headers)

    return httpx.MockTransport(handle)


def one_name_with_details(
    sim: Simulator,
    name: str,
    settings: LookupSettings,
    *,
    transport: httpx.MockTransport | None = None,
    stop_after_arrivals: int | None = None,
    events: list[tuple[str, dict[str, Any]]] | None = None,
    stop_on_event: str | None = None,
    before_run: Callable[[EqcLookup], None] = lambda lookup: None,
) -> StageResult:
    """One name through the EQC stage, details and all; `events` collects what it reports, and the stage is
    stopped after `stop_after_arrivals` requests reached the simulator or at the first `stop_on_event`."""
    heard = events if events is not None else []

    async def main() -> StageResult:
        client = EqcClient(TOKEN, base_url=sim.url, timeout=2.0, transport=transport)
        keeper = TokenKeeper(client, None)

        def hear(kind: str, fields: dict[str, Any]) -> None:
            heard.append((kind, fields))
            if kind == stop_on_event:
                lookup.stop()

        lookup = EqcLookup(
            client, settings, stats=EqcStats(), tokens=keeper, on_outcome=lambda outcome: None, events=hear,
            rng=random.Random(5),
        )  # fmt: skip
        before_run(lookup)
        task = asyncio.create_task(lookup.run([name]))
        if stop_after_arrivals is not None:
            for _ in range(3000):  # 30 s at most
                if len(sim.state.stats.arrivals) >= stop_after_arrivals or task.done():
                    break
                await asyncio.sleep(0.01)
            lookup.stop()
        try:
            return await asyncio.wait_for(task, 60)
        finally:
            await client.aclose()

    return asyncio.run(main())


def assert_search_answer_kept(result: StageResult, name: str, *, lost_at: str) -> None:
    """The search answer stays; the details stop at the call that was lost (findLabels always comes after)."""
    outcome = result.outcomes[name]
    assert outcome.status == "found"
    assert outcome.hit is not None
    assert (outcome.business is None) == (lost_at == "findDepart")
    assert outcome.labels is None


@pytest.fixture
def quick_sim() -> Iterator[Simulator]:
    config = SimulatorConfig(seed=11, latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(TOKEN,))
    with Simulator(config) as simulator:
        yield simulator


@pytest.mark.parametrize("sends_before_the_wait", [1, 2])
def test_a_stop_while_details_wait_for_the_quota_keeps_the_search_answer(
    quick_sim: Simulator, sends_before_the_wait: int
) -> None:
    """The quota lets `sends_before_the_wait` requests through (search, then findDepart), then holds the next
    for ten minutes; the stop comes during that wait."""
    name = known_name()
    settings = LookupSettings(rate_limit=RateLimit(sends_before_the_wait, 600.0), details=True, grace_s=10.0)
    result = one_name_with_details(quick_sim, name, settings, stop_after_arrivals=sends_before_the_wait)
    outcome = result.outcomes[name]
    assert (outcome.status, result.stopped) == ("found", "interrupted")
    assert outcome.hit is not None
    assert (outcome.business is not None) == (sends_before_the_wait == 2)
    assert outcome.labels is None


@pytest.mark.parametrize("failing", ["findDepart", "findLabels"])
def test_a_details_call_that_fails_every_attempt_keeps_the_search_answer(quick_sim: Simulator, failing: str) -> None:
    name = known_name()
    transport = front(quick_sim, lambda path: httpx.Response(500) if path.endswith(failing) else None)
    settings = LookupSettings(rate_limit=RateLimit(1000, 1.0), retries=1, details=True)
    result = one_name_with_details(quick_sim, name, settings, transport=transport)
    outcome = result.outcomes[name]
    assert (outcome.status, result.stopped) == ("found", "")
    assert (outcome.business is None, outcome.labels is None) == (failing == "findDepart", failing == "findLabels")


@pytest.mark.parametrize("expiring", ["findDepart", "findLabels"])
def test_a_token_lost_during_the_details_keeps_the_search_answer(quick_sim: Simulator, expiring: str) -> None:
    """The token expires as a details call goes out, and no command can renew it: the answer in hand is kept,
    the call comes back empty."""
    name = known_name()

    def expire_then_pass(path: str) -> None:
        if path.endswith(expiring):
            quick_sim.state.tokens.expire_all()

    settings = LookupSettings(rate_limit=RateLimit(1000, 1.0), details=True)
    result = one_name_with_details(quick_sim, name, settings, transport=front(quick_sim, expire_then_pass))
    assert_search_answer_kept(result, name, lost_at=expiring)


def test_each_retry_is_an_event_and_a_retry_after_is_its_floor(quick_sim: Simulator) -> None:
    """The `retry` events of --log-json: which endpoint, which attempt, why, and the delay; a 429's Retry-After
    is the least the next try waits."""
    name = known_name()
    refusals = iter([httpx.Response(500), httpx.Response(429, headers={"Retry-After": "0.3"})])
    transport = front(quick_sim, lambda path: next(refusals, None) if path.endswith("/search/") else None)
    events: list[tuple[str, dict[str, Any]]] = []
    settings = LookupSettings(rate_limit=RateLimit(1000, 1.0), retries=3)
    result = one_name_with_details(quick_sim, name, settings, transport=transport, events=events)
    assert result.outcomes[name].status == "found"
    retries = [fields for kind, fields in events if kind == "retry"]
    assert [(f["endpoint"], f["attempt"], f["error"]) for f in retries] == [
        (SEARCH, 1, "TransientError"),
        (SEARCH, 2, "RateLimitedError"),
    ]
    assert retries[0]["delay_s"] < 0.3 <= retries[1]["delay_s"]
    assert retries[0]["delay_s"] == round(retries[0]["delay_s"], 4) > 0  # the jitter, to 0.1 ms


def test_a_stop_cuts_a_back_off_short(quick_sim: Simulator) -> None:
    """EQC says to come back in ten minutes; a stop during that back-off ends the stage within the test's
    patience (a minute), though the grace for requests in flight is ten minutes too: nothing is in flight."""
    name = known_name()

    def come_back_later(path: str) -> httpx.Response | None:
        return httpx.Response(429, headers={"Retry-After": "600"}) if path.endswith("/search/") else None

    transport = front(quick_sim, come_back_later)
    settings = LookupSettings(rate_limit=RateLimit(1000, 1.0), retries=3, grace_s=600.0)
    result = one_name_with_details(quick_sim, name, settings, transport=transport, stop_on_event="retry")
    assert (result.outcomes[name].status, result.stopped) == ("skipped", "interrupted")
    assert result.outcomes[name].error == "not asked: the run was interrupted"


def test_a_stop_before_the_run_sends_nothing_and_the_first_reason_sticks(quick_sim: Simulator) -> None:
    name = known_name()

    def stop_twice(lookup: EqcLookup) -> None:
        lookup.stop("token", "no usable token")
        lookup.stop("eqc_down", "EQC unavailable")

    events: list[tuple[str, dict[str, Any]]] = []
    settings = LookupSettings(rate_limit=RateLimit(1000, 1.0))
    result = one_name_with_details(quick_sim, name, settings, events=events, before_run=stop_twice)
    assert (result.stopped, result.message) == ("token", "no usable token")
    assert (result.outcomes[name].status, result.outcomes[name].error) == ("skipped", "not asked: no usable EQC token")
    assert events == [("stopping", {"reason": "token"})]
    assert quick_sim.state.stats.arrivals == []


@pytest.mark.parametrize("unreachable", ["findDepart", "findLabels"])
def test_eqc_gone_during_the_details_keeps_the_search_answer(quick_sim: Simulator, unreachable: str) -> None:
    """A details call gets no answer at all, and the outage policy gives EQC no time to come back: the answer
    in hand is kept; nothing more was asked, so the stage just ends."""
    name = known_name()

    def refuse(path: str) -> None:
        if path.endswith(unreachable):
            raise httpx.ConnectError("connection refused")

    no_patience = OutagePolicy(unreachable_in_a_row=1, wait_s=0.0)
    settings = LookupSettings(rate_limit=RateLimit(1000, 1.0), retries=0, details=True, outage=no_patience)
    result = one_name_with_details(quick_sim, name, settings, transport=front(quick_sim, refuse))
    assert_search_answer_kept(result, name, lost_at=unreachable)


def test_every_request_that_left_feeds_the_margin_how_late_it_left(quick_sim: Simulator) -> None:
    """The limiter hears of every request sent, 429s and failed attempts included: its send timing (what the
    margin follows) counts exactly the requests the server saw."""
    name = known_name()
    transport = front(quick_sim, lambda path: httpx.Response(500) if path.endswith("findLabels") else None)
    settings = LookupSettings(rate_limit=RateLimit(1000, 1.0), retries=1, details=True)
    lookups: list[EqcLookup] = []
    arrivals_before = len(quick_sim.state.stats.arrivals)
    result = one_name_with_details(quick_sim, name, settings, transport=transport, before_run=lookups.append)
    assert result.outcomes[name].status == "found"
    sent = len(quick_sim.state.stats.arrivals) - arrivals_before + 2  # the two findLabels the front refused
    assert lookups[0].limiter.timing.sends == sent == 4  # search, findDepart, findLabels twice
