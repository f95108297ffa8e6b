"""The local EQC simulator over real loopback HTTP: shapes, auth, limits, faults, counters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import httpx
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.budget import examples
from typer.testing import CliRunner

from eqc_enrich._cli_sandbox import _describe, register, run_command
from eqc_enrich._durations import RateLimit
from eqc_enrich._errors import ConfigError
from eqc_enrich.simulator import Simulator, SimulatorConfig, Universe, build_universe, canonical_key
from eqc_enrich.simulator._app import retry_after, search_item
from eqc_enrich.simulator._ratelimit import SlidingWindow
from eqc_enrich.simulator._universe import EXACT, FUZZY, generate_universe

SEARCH = "/kg-api-hfd/api/search/"
DEPART = "/kg-api-hfd/api/search/findDepart"
LABELS = "/kg-api-hfd/api/search/findLabels"
SEARCH_ALL = "/kg-api-hfd/api/search/searchAll"


@pytest.fixture(scope="module")
def universe() -> Universe:
    return build_universe(7)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(latency=(0.0, 0.0), rate_limit=RateLimit(100_000, 1.0))
    with Simulator(config) as running:
        yield running


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, headers={"token": "sim-token"}, timeout=10) as http:
        yield http


def search(http: httpx.Client, key: str) -> list[dict[str, object]]:
    response = http.get(SEARCH, params={"key": key})
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == len(body["list"])
    items: list[dict[str, object]] = body["list"]
    return items


# --- the universe -----------------------------------------------------------------------------------------


def test_universe_is_unique_and_deterministic(universe: Universe) -> None:
    first = universe  # the module's (built once, cached for the simulator) against one built from scratch
    again = generate_universe(7, 60_000)
    assert [c.name for c in first.companies] == [c.name for c in again.companies]
    assert [c.company_id for c in first.companies] == [c.company_id for c in again.companies]
    keys = [k for c in first.companies for k in (c.name, c.stem, *c.former_names)]
    assert len(keys) == len(set(keys))
    assert len({c.company_id for c in first.companies}) == 60_000


def test_universe_names_look_real(universe: Universe) -> None:
    companies = universe.companies
    assert all(canonical_key(c.name) == c.name for c in companies)
    assert all(re.fullmatch(r"\d{9}", c.company_id) for c in companies)
    assert all(len(c.unite_code) == 18 for c in companies)
    assert all(c.name.startswith(c.stem) and c.name.endswith("公司") for c in companies)
    share = {
        "former": sum(bool(c.former_names) for c in companies) / len(companies),
        "ascii": sum(any(ch.isascii() for ch in c.name) for c in companies) / len(companies),
        "bracket": sum("（" in c.name for c in companies) / len(companies),
    }
    assert 0.08 < share["former"] < 0.12
    assert 0.01 < share["ascii"] < 0.08
    assert 0.04 < share["bracket"] < 0.12


def test_canonical_key() -> None:
    assert canonical_key(" 华润(北京)\u3000医药 有限公司 ") == "华润（北京）医药有限公司"
    assert canonical_key("ｔｃｌ科技有限公司") == "TCL科技有限公司"
    assert canonical_key("第１建设（集团）") == "第1建设（集团）"


def test_universe_search(universe: Universe) -> None:
    renamed = next(c for c in universe.companies if c.former_names)
    exact = universe.search(renamed.name)
    assert exact[0] == (renamed, EXACT)
    assert 1 <= len(exact) <= 4
    assert all(kind == FUZZY and other.trade_name == renamed.trade_name for other, kind in exact[1:])
    assert universe.search(renamed.stem)[0] == (renamed, FUZZY)
    assert universe.search(renamed.former_names[0])[0] == (renamed, FUZZY)
    assert universe.search(renamed.name + "X") == []


# --- endpoint shapes --------------------------------------------------------------------------------------


def test_search_exact_item_shape(client: httpx.Client, universe: Universe) -> None:
    company = universe.companies[0]
    items = search(client, company.name)
    best = items[0]
    required = {"companyId", "companyFullName", "unite_code", "type", "_score", "rank_score", "name", "province",
                "le_rep", "reg_cap", "est_date", "registeredStatus", "company_former_name"}  # fmt: skip
    assert required <= best.keys()
    assert str(best["companyId"]) == company.company_id
    assert best["companyFullName"] == company.name
    assert best["type"] == EXACT
    assert best["company_former_name"] == ",".join(company.former_names)


def test_search_fuzzy_former_unknown_and_spelling(client: httpx.Client, universe: Universe) -> None:
    renamed = next(c for c in universe.companies if c.former_names)
    by_stem = search(client, renamed.stem)[0]
    assert (str(by_stem["companyId"]), by_stem["type"]) == (renamed.company_id, FUZZY)
    by_former = search(client, renamed.former_names[0])[0]
    assert (by_former["companyFullName"], by_former["type"]) == (renamed.name, FUZZY)
    bracketed = next(c for c in universe.companies if "（" in c.name)
    spelled = f" {bracketed.name[:2]}\u3000{bracketed.name[2:]} ".replace("（", "(").replace("）", ")")
    assert search(client, spelled)[0]["companyFullName"] == bracketed.name
    assert search(client, spelled)[0]["type"] == EXACT
    response = client.get(SEARCH, params={"key": "不存在的某某公司"})
    assert response.json() == {"list": [], "total": 0}


def test_search_without_trailing_slash(client: httpx.Client, universe: Universe) -> None:
    response = client.get(SEARCH.rstrip("/"), params={"key": universe.companies[1].name})
    assert response.status_code == 200
    assert response.json()["list"][0]["companyFullName"] == universe.companies[1].name


def test_company_id_arrives_as_number_and_as_string(client: httpx.Client, universe: Universe) -> None:
    kinds = {type(search(client, c.name)[0]["companyId"]) for c in universe.companies[:40]}
    assert kinds == {int, str}
    company = universe.companies[0]
    assert search_item(company, EXACT, 0, as_number=True)["companyId"] == int(company.company_id)


def test_find_depart(client: httpx.Client, universe: Universe) -> None:
    company = next(c for c in universe.companies if c.former_names)
    info = client.get(DEPART, params={"targetId": company.company_id}).json()["businessInfodto"]
    assert info["company_id"] == company.company_id
    assert info["company_name"] == company.name
    assert info["credit_code"] == company.unite_code
    assert re.fullmatch(r"\d+\.\d{2}万元", info["registerCaptial"])
    assert info["company_former_name"] == ",".join(company.former_names)
    assert all(isinstance(value, str) for value in info.values())
    for key in ("registered_date", "registered_status", "legal_person_name", "address", "company_type",
                "industry_name", "province", "organization_code", "business_scope"):  # fmt: skip
        assert info[key]
    assert client.get(DEPART, params={"targetId": "1"}).json() == {"businessInfodto": None}


def test_find_labels(client: httpx.Client, universe: Universe) -> None:
    company = universe.companies[2]
    groups = client.get(LABELS, params={"targetId": company.company_id}).json()["labels"]
    industry = next(g for g in groups if g["type"] == "行业分类")
    label = industry["labels"][0]
    assert label["companyId"] is None
    assert label["lv1Name"]
    assert label["lv2Name"]
    assert (label["lv3Name"], label["lv4Name"]) == (None, None)
    assert client.get(LABELS, params={"targetId": "nope"}).json() == {"labels": []}


def test_search_all(client: httpx.Client) -> None:
    response = client.get(SEARCH_ALL, params={"keyword": "test", "currentPage": 1, "pageSize": 1})
    assert response.status_code == 200
    assert isinstance(response.json(), dict)


# --- tokens -----------------------------------------------------------------------------------------------


def test_unknown_or_missing_token_is_401(sim: Simulator) -> None:
    for headers in ({"token": "wrong"}, {}):
        response = httpx.get(sim.url + SEARCH, params={"key": "x"}, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "Unauthorized"}


def test_expired_token_search_200_body_others_401() -> None:
    with Simulator(SimulatorConfig(latency=(0.0, 0.0))) as local, httpx.Client(base_url=local.url) as http:
        fresh = http.post("/__token").json()["token"]
        assert http.get(DEPART, params={"targetId": "1"}, headers={"token": fresh}).status_code == 200
        assert http.post("/__expire").status_code == 200
        for token in (fresh, "sim-token"):
            expired = http.get(SEARCH, params={"key": "x"}, headers={"token": token})
            assert expired.status_code == 200
            assert expired.json()["error"] == "TokenExpired"
            assert http.get(DEPART, params={"targetId": "1"}, headers={"token": token}).status_code == 401
        newest = local.issue_token()
        assert http.get(SEARCH, params={"key": "x"}, headers={"token": newest}).status_code == 200
        assert local.stats()["token_expired"] == 4


def test_idle_ttl_is_refreshed_by_use() -> None:
    with (
        Simulator(SimulatorConfig(latency=(0.0, 0.0), token_ttl=0.6)) as local,
        httpx.Client(base_url=local.url, headers={"token": "sim-token"}) as http,
    ):
        for _ in range(4):  # 4 x 0.3 s = 1.2 s: twice the ttl, but never idle for long
            assert "error" not in http.get(SEARCH, params={"key": "x"}).json()
            time.sleep(0.3)
        time.sleep(0.5)
        assert http.get(SEARCH, params={"key": "x"}).json()["error"] == "TokenExpired"


def test_max_age_expires_busy_tokens_again_and_again() -> None:
    config = SimulatorConfig(latency=(0.0, 0.0), token_max_age=400.0, time_scale=1000.0, scale_token_lifetimes=True)
    with Simulator(config) as local, httpx.Client(base_url=local.url) as http:
        for _ in range(2):
            token = local.issue_token()
            first_expired_at = None
            started = time.monotonic()
            while time.monotonic() - started < 2.0:
                body = http.get(SEARCH, params={"key": "x"}, headers={"token": token}).json()
                if "error" in body:
                    first_expired_at = time.monotonic() - started
                    break
                time.sleep(0.05)
            assert first_expired_at is not None
            assert 0.35 <= first_expired_at < 1.0


# --- rate limit -------------------------------------------------------------------------------------------


def test_429_with_whole_seconds_retry_after() -> None:
    config = SimulatorConfig(latency=(0.0, 0.0), rate_limit=RateLimit(3, 60.0))
    with Simulator(config) as local, httpx.Client(base_url=local.url, headers={"token": "sim-token"}) as http:
        statuses = [http.get(SEARCH, params={"key": str(i)}).status_code for i in range(3)]
        assert statuses == [200, 200, 200]
        limited = http.get(SEARCH, params={"key": "3"})
        assert limited.status_code == 429
        assert limited.headers["Retry-After"].isdigit()
        assert 58 <= int(limited.headers["Retry-After"]) <= 60
        other = local.issue_token()  # the limit is per token
        assert http.get(SEARCH, params={"key": "4"}, headers={"token": other}).status_code == 200
        stats = local.stats()
        assert (stats["accepted"], stats["rate_limited"], stats["max_in_window"]) == (4, 1, 3)


def test_429_retry_after_is_decimal_when_time_scaled() -> None:
    config = SimulatorConfig(latency=(0.0, 0.0), rate_limit=RateLimit(2, 100.0), time_scale=1000.0)  # 2 / 0.1 s
    with Simulator(config) as local, httpx.Client(base_url=local.url, headers={"token": "sim-token"}) as http:
        for attempt in range(20):  # bounded: the window is 0.1 s, a slow machine may need another go
            responses = [http.get(SEARCH, params={"key": f"{attempt}-{i}"}) for i in range(3)]
            if responses[2].status_code == 429:
                break
            time.sleep(0.2)
        else:
            pytest.fail("never saw the third request in a window refused")
        wait = responses[2].headers["Retry-After"]
        assert re.fullmatch(r"0\.\d{3}", wait)
        assert 0 < float(wait) <= 0.1
        time.sleep(float(wait) + 0.005)
        assert http.get(SEARCH, params={"key": "after"}).status_code == 200


def test_retry_after_format() -> None:
    assert retry_after(0.2, 1.0) == "1"
    assert retry_after(59.01, 1.0) == "60"
    assert retry_after(0.0421, 1000.0) == "0.043"
    assert retry_after(0.00001, 1000.0) == "0.001"


@settings(max_examples=examples(300), deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=6),
    window=st.floats(min_value=0.01, max_value=10.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=80),
)
def test_sliding_window_property(limit: int, window: float, gaps: list[float]) -> None:
    limiter = SlidingWindow(RateLimit(limit, window))
    now = 0.0
    accepted: list[tuple[float, float | None]] = []
    rejected: list[tuple[float, float | None]] = []
    for gap in gaps:
        now += gap
        wait = limiter.try_acquire(now)
        (accepted if wait is None else rejected).append((now, wait))

    def inside(end: float) -> int:
        return len([t for t, _ in accepted if end - window < t <= end])

    assert all(inside(t) <= limit for t, _ in accepted)  # never more than N in any window
    for t, wait in rejected:  # a refusal only when the window before it was full ...
        assert inside(t) == limit
        assert wait is not None
        assert 0 < wait <= window  # ... and it names when the oldest leaves
    assert limiter.max_in_window == max((inside(t) for t, _ in accepted), default=0)


def test_concurrent_requests_never_exceed_the_window() -> None:
    config = SimulatorConfig(latency=(0.005, 0.03), rate_limit=RateLimit(10, 0.2))

    async def fire(url: str) -> list[int]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=url, headers={"token": "sim-token"}, limits=limits) as http:
            calls = [http.get(SEARCH, params={"key": f"k{i}"}) for i in range(60)]
            responses = await asyncio.wait_for(asyncio.gather(*calls), timeout=30)
        return [r.status_code for r in responses]

    with Simulator(config) as local:
        codes = asyncio.run(fire(local.url))
        stats = local.stats()
    assert set(codes) <= {200, 429}
    assert codes.count(200) == stats["accepted"] >= 10
    assert codes.count(429) == stats["rate_limited"]
    assert 1 <= stats["max_in_window"] <= 10
    assert stats["max_in_flight"] > 1


# --- faults -----------------------------------------------------------------------------------------------


def test_server_errors_injected() -> None:
    with Simulator(SimulatorConfig(latency=(0.0, 0.0), fail_rate=1.0)) as local:
        codes = {httpx.get(local.url + SEARCH, params={"key": str(i)}, headers={"token": "sim-token"}).status_code
                 for i in range(8)}  # fmt: skip
        assert codes <= {500, 502, 503}
        assert local.stats()["faults"]["server_error"] == 8


def test_malformed_body_injected() -> None:
    with Simulator(SimulatorConfig(latency=(0.0, 0.0), malformed_rate=1.0)) as local:
        response = httpx.get(local.url + SEARCH, params={"key": "x"}, headers={"token": "sim-token"})
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)
        assert local.stats()["faults"]["malformed"] == 1


def test_hang_makes_the_client_time_out_and_stop_is_prompt() -> None:
    local = Simulator(SimulatorConfig(latency=(0.0, 0.0), timeout_rate=1.0)).start()  # holds 600 s
    held: list[threading.Thread] = []
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(local.url + SEARCH, params={"key": "x"}, headers={"token": "sim-token"}, timeout=0.3)
        assert local.stats()["faults"]["timeout"] == 1
        for i in range(5):  # requests still held when the server stops
            call = partial(httpx.get, local.url + SEARCH, params={"key": str(i)}, headers={"token": "sim-token"})
            held.append(threading.Thread(target=_swallow(call), daemon=True))
            held[-1].start()
        deadline = time.monotonic() + 5
        while local.stats()["in_flight"] < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert local.stats()["in_flight"] == 5
    finally:
        started = time.monotonic()
        local.stop()
        assert time.monotonic() - started < 3.0
    for thread in held:
        thread.join(timeout=5)
        assert not thread.is_alive()


def _swallow(call: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):
            call()

    return run


# --- counters ---------------------------------------------------------------------------------------------


def test_stats_count_what_happened() -> None:
    config = SimulatorConfig(latency=(0.0, 0.0), rate_limit=RateLimit(6, 60.0))
    with Simulator(config) as local, httpx.Client(base_url=local.url, headers={"token": "sim-token"}) as http:
        for key in ("甲", "乙", "甲", "丙", "甲"):
            http.get(SEARCH, params={"key": key})
        http.get(DEPART, params={"targetId": "1"})
        http.get(SEARCH_ALL, params={"keyword": "test"})  # the 7th: refused
        http.get(LABELS, params={"targetId": "1"}, headers={"token": "bad"})
        stats = http.get("/__stats").json()
        assert stats["requests"] == {"search": 5, "findDepart": 1, "findLabels": 1, "searchAll": 1}
        assert (stats["accepted"], stats["rate_limited"], stats["unauthorized"]) == (6, 1, 1)
        assert (stats["search_keys_distinct"], stats["search_keys_repeated"]) == (3, 1)
        assert stats["max_in_window"] == 6
        assert stats["max_in_flight"] >= 1
        assert stats["faults"] == {"server_error": 0, "timeout": 0, "malformed": 0}
        assert http.post("/__reset").status_code == 200
        cleared = local.stats()
        assert cleared["accepted"] == cleared["max_in_window"] == cleared["search_keys_distinct"] == 0
        assert sum(cleared["requests"].values()) == 0


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        SimulatorConfig(fail_rate=0.6, timeout_rate=0.6)
    with pytest.raises(ConfigError):
        SimulatorConfig(latency=(2.0, 1.0))
    with pytest.raises(ConfigError):
        SimulatorConfig(time_scale=0)


def test_url_has_the_real_port() -> None:
    with Simulator(SimulatorConfig(latency=(0.0, 0.0)), port=0) as local:
        assert local.port > 0
        assert local.url == f"http://127.0.0.1:{local.port}"
        assert httpx.get(local.url + "/__stats").status_code == 200


# --- the command ------------------------------------------------------------------------------------------

_CLI = "import typer; from eqc_enrich._cli_sandbox import register; app = typer.Typer(); register(app); app()"


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts a background job


@pytest.mark.parametrize(
    ("stop_with", "started_as_background_job"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["ctrl-c", "sigterm", "ctrl-c-to-a-background-job"],
)
@pytest.mark.slow
def test_simulate_command_serves_until_interrupted(stop_with: signal.Signals, started_as_background_job: bool) -> None:
    env = {**os.environ, "EQC_SIM_TOKEN": "secret-token-value", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-c", _CLI, "simulate", "--time-scale", "1000", "--latency", "0s", "--seed", "7"]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ignore_sigint if started_as_background_job else None,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no start line within 30 s"
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        assert int(match.group(1)) > 0
        assert "secret-token-value" not in line
        assert "rate limit 10/" in line
        response = httpx.get(match.group(0) + SEARCH, params={"key": "x"}, headers={"token": "secret-token-value"})
        assert response.status_code == 200
        proc.send_signal(stop_with)
        assert proc.wait(timeout=60) == 0  # bounded; a busy machine may be slow to stop it
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--rate-limit=lots", "not a rate limit"),
        ("--fail-rate=2", "must lie in [0, 1]"),
        ("--latency=9-1s", "backwards"),
    ],
)
def test_simulate_command_bad_option_is_one_line(option: str, message: str) -> None:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["simulate", option])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.serial  # its figures follow wall-clock timing that a busy neighbour skews
def test_token_lifetimes_are_wall_clock_at_any_time_scale() -> None:
    """At time scale 1000 a 0.6 s token still lives 0.6 s: only latency and the quota window are scaled."""
    config = SimulatorConfig(latency=(0.0, 0.0), time_scale=1000.0, token_ttl=0.6)
    with Simulator(config) as local, httpx.Client(base_url=local.url, headers={"token": "sim-token"}) as http:
        time.sleep(0.3)  # 300 ms idle: scaled, the ttl would have been 0.6 ms
        assert "error" not in http.get(SEARCH, params={"key": "x"}).json()
        time.sleep(0.9)
        assert http.get(SEARCH, params={"key": "x"}).json()["error"] == "TokenExpired"


def test_simulate_states_its_real_token_lifetime_and_the_run_command() -> None:
    config = SimulatorConfig(time_scale=1000.0)
    banner = _describe("http://127.0.0.1:1234", config)
    assert "token idle 30m00s wall clock" in banner
    assert "rate limit 10/60s per token (at time scale 1000: 20ms-60ms, 10/60ms)" in banner
    assert "sim-token" not in banner
    scaled = _describe("http://127.0.0.1:1234", SimulatorConfig(time_scale=1000.0, scale_token_lifetimes=True))
    assert "token idle 1.8s wall clock" in scaled
    command = run_command("http://127.0.0.1:1234", config, "sim-token")
    assert command == (
        "WDH_EQC_TOKEN=sim-token eqc-enrich run month.xlsx --eqc-url http://127.0.0.1:1234 "
        "--rate-limit 10/60ms --timeout 1s --db eqc_enrich_sim.db"
    )
    real_speed = run_command("http://127.0.0.1:1234", SimulatorConfig(), "sim-token")
    assert "--rate-limit 10/60s --timeout 120s" in real_speed
