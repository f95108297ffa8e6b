"""The review page over HTTP: the session guard, decisions and undo, "search EQC" through the runs' quota,
token keeper and claims, the EQC token kept out of every response, a file's names, a queue of 10,000.

Real parts throughout: a SQLite file (and PostgreSQL where `index_db` runs), the simulator on loopback, the
page served by uvicorn on loopback.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
import sqlalchemy as sa
from tests.conftest import IndexDb
from tests.review_pages import FAST, TOKEN, access, decide, entry_of, name, notice_of, page_of, seen_of, with_candidates

from eqc_enrich import RateLimit
from eqc_enrich.keys import temp_company_id
from eqc_enrich.review import (
    KEYS_HELP,
    PAGE_SIZE,
    Decider,
    ReviewServer,
    scope_of_file,
    seconds_to_next_slot,
)
from eqc_enrich.simulator import Simulator, SimulatorConfig
from eqc_enrich.store import IndexStore, Payload, WriteBatch


def state_of(store: IndexStore) -> tuple[object, ...]:
    index = store.tables.index
    with store.reading() as conn:
        rows = conn.execute(sa.select(index.c.lookup_key, index.c.company_id, index.c.source)).all()
    names = [(n.lookup_key, n.settled_at, n.settled_source) for n in store.unsettled.open_names()]
    return (sorted(map(tuple, rows)), names, store.decisions.latest(), store.unsettled.counts())


# --- the session guard -------------------------------------------------------------------------------------


def test_without_the_session_token_nothing_changes_and_nothing_is_shown(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("甲公司", 5), name("乙公司", 3)], "run-1")
        before = state_of(store)
        change = {"key": "甲公司", "decision": "typed", "company_id": "600000001"}
        with page_of(store) as (server, session), httpx.Client(base_url=server.base_url) as stranger:
            assert stranger.post("/decide", data=change).status_code == 403
            assert stranger.post("/decide", data={"key": "甲公司", "decision": "not_a_company"}).status_code == 403
            assert stranger.post("/undo", data={}).status_code == 403
            assert stranger.post("/search", data={"key": "甲公司", "query": "甲公司"}).status_code == 403
            assert stranger.get("/").status_code == 403  # other local users cannot read the queue either
            assert "甲公司" not in stranger.get("/").text
            stranger.cookies.set(server.cookie_name, "x" * 43)
            assert stranger.post("/decide", data=change).status_code == 403
            assert stranger.get("/?token=" + "x" * 43).status_code == 403
            # a page of another site (or a DNS name rebound to loopback) with the cookie sent along: refused too
            for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                            {"Host": "evil.example:80"}):  # fmt: skip
                assert session.post("/decide", data=change, headers=headers).status_code == 403
            assert session.get("/", headers={"Host": "rebound.example"}).status_code == 403
            assert state_of(store) == before
            # the same change with the session goes through
            change["seen"] = seen_of(session, "甲公司")
            assert session.post("/decide", data=change, headers={"Origin": server.origin}).status_code == 303
        assert entry_of(store, "甲公司") == ("600000001", "manual", "eqc_review", 1.0)
    finally:
        store.close()


def test_the_token_in_the_url_becomes_an_httponly_strict_cookie_and_leaves_the_address(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("甲公司", 5)], "run-1")
        with page_of(store, session=False) as (server, visitor):
            first = visitor.get(f"/?token={server.token}&kind=temporary")
            assert first.status_code == 303
            base = f"/{server.server_id}/"
            assert first.headers["location"] == f"{base}?kind=temporary"  # the token is gone from the address bar
            cookie = first.headers["set-cookie"]
            assert cookie.startswith(f"{server.cookie_name}=")
            assert server.token not in cookie  # a new secret: the URL's token is spent, not reused
            assert "httponly" in cookie.lower()
            assert "samesite=strict" in cookie.lower()
            assert f"path={base}" in cookie.lower()
            page = visitor.get("/?kind=temporary")
            assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert 'lang="zh-CN"' in page.text
        assert "甲公司" in page.text
        assert server.token not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for key, what in KEYS_HELP:  # the page says which key does what
            assert f"<kbd>{key}</kbd> {what}" in page.text
    finally:
        store.close()


def test_the_printed_link_opens_the_page_once(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("甲公司", 5)], "run-1")
        with page_of(store, session=False) as (server, first), httpx.Client(base_url=server.base_url) as second:
            assert first.get(server.url).status_code == 303
            assert first.get("/").status_code == 200
            # the same browser again (a reload of the first address): its session stands, the spent token is dropped
            assert first.get(server.url).headers["location"] == f"/{server.server_id}/"
            again = second.get(server.url)  # anyone else with the link (a terminal's scrollback, a history)
            assert again.status_code == 403
            assert "this link has been used (it opens the page once)" in again.text
            assert second.get("/").status_code == 403
            assert "甲公司" not in again.text
    finally:
        store.close()


def test_each_review_server_has_a_cookie_and_a_path_of_its_own(tmp_path: Path) -> None:
    """Two review servers on one host (two people, or two indexes): opening the second does not log the first
    out, and neither one's cookie is sent to the other."""
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("甲公司", 5)], "run-1")
        with (
            ReviewServer(store, access()) as one, ReviewServer(store, access()) as two,
            httpx.Client(follow_redirects=True) as browser,  # one cookie jar for both, as a browser has
        ):  # fmt: skip
            assert browser.get(one.url).status_code == 200
            assert browser.get(two.url).status_code == 200
            assert browser.get(one.base_url + "/").status_code == 200  # still in
            assert one.cookie_name != two.cookie_name
            jar = {(cookie.name, cookie.path) for cookie in browser.cookies.jar}
            assert jar == {(one.cookie_name, f"/{one.server_id}/"), (two.cookie_name, f"/{two.server_id}/")}
            sent = browser.build_request("GET", two.base_url + "/")
            browser.cookies.set_cookie_header(sent)
            assert one.cookie_name not in sent.headers.get("cookie", "")  # the first server's cookie stays home
            secret = browser.cookies.get(one.cookie_name, path=f"/{one.server_id}/")
            assert httpx.get(two.base_url + "/", cookies={two.cookie_name: secret or ""}).status_code == 403
    finally:
        store.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_the_command_refuses_an_address_that_means_every_interface(tmp_path: Path, host: str) -> None:
    """The page answers only under the address it prints: listening on all of them would print one nobody can
    open and refuse the LAN address (403), so the command asks for the address people will use."""
    db = tmp_path / "index.db"
    done = subprocess.run(
        [sys.executable, "-m", "eqc_enrich.cli", "review", "--db", str(db), "--no-browser", "--host", host],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "LAN address" in done.stderr
    assert "Traceback" not in done.stderr
    assert not db.exists()  # refused before anything was opened


# --- requests that are merely wrong ---------------------------------------------------------------------------

WRONG_REQUESTS: list[tuple[str, str, dict[str, str] | None, int]] = [
    ("GET", "/?page=99999999999999999999", None, 400),
    ("GET", "/?page=0", None, 400),
    ("GET", "/?page=-1", None, 400),
    ("GET", "/?page=abc", None, 400),
    ("GET", "/?page=２", None, 400),
    ("GET", "/?key=%00", None, 400),
    ("GET", "/?q=a%00b", None, 400),
    ("GET", "/?kind=%00", None, 400),
    ("GET", "/?status=%00", None, 400),
    ("GET", "/?%00=1", None, 400),
    ("POST", "/decide", {"key": "甲\x00", "decision": "skip"}, 400),
    ("POST", "/decide", {"key": "甲", "decision": "typed", "company_id": "600000001\x00"}, 400),
    ("POST", "/decide", {"key": "甲", "decision": "drop"}, 400),
    ("POST", "/search", {"key": "甲", "query": "甲\x00"}, 400),
    ("POST", "/check", {"key": "甲", "company_id": "\x00"}, 400),
    ("POST", "/undo", {"decision_id": "99999999999999999999999"}, 400),
    ("POST", "/undo", {"decision_id": "²"}, 400),
    ("POST", "/undo", {"decision_id": "-1"}, 400),
    ("POST", "/decide", {"key": "甲" * 40_000, "decision": "skip"}, 413),
    ("GET", "/decide", None, 405),
    ("GET", "/no-such-page", None, 404),
]


def assert_guarded(response: httpx.Response) -> None:
    """Every answer, errors included, with the page's security headers."""
    for header, value in (("content-security-policy", "default-src 'none'"), ("x-frame-options", "DENY"),
                          ("x-content-type-options", "nosniff"), ("cache-control", "no-store")):  # fmt: skip
        assert value in response.headers.get(header, ""), (response.request.url, header)


def test_requests_that_are_merely_wrong_get_4xx_with_the_security_headers(index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        store.unsettled.record([name("甲", 2)], "run-1")
        with page_of(store) as (server, page):
            for method, path, form, status in WRONG_REQUESTS:
                response = page.request(method, path, data=form)
                assert response.status_code == status, (path, form and list(form.values())[:2], response.text[-300:])
                assert_guarded(response)
                assert "Traceback" not in response.text
            outside = httpx.get(server.origin + "/")  # the host's root, outside the page's own path
            assert outside.status_code == 404
            assert_guarded(outside)
            assert page.get("/").status_code == 200  # the page goes on
        assert store.decisions.latest() == []
    finally:
        store.close()


def test_an_error_of_the_page_itself_is_a_500_page_with_the_headers_and_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug no real part produces on purpose, so it is planted: the answer is still the page's own."""
    store = IndexStore(tmp_path / "index.db")

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("planted bug")

    monkeypatch.setattr("eqc_enrich.review._app.render_queue", broken)
    try:
        with page_of(store) as (_, page):
            response = page.get("/")
        assert response.status_code == 500
        assert_guarded(response)
        assert "planted bug" not in response.text
        assert "the terminal running it says why" in response.text
        assert "planted bug" in caplog.text  # said where the person running the page sees it
    finally:
        store.close()


# --- decisions ---------------------------------------------------------------------------------------------


def test_decisions_are_saved_at_once_journaled_and_undone(index_db: IndexDb) -> None:
    store = index_db.open()
    try:
        store.unsettled.record([name("甲", 9), name("乙", 7), name("丙", 5), name("丁", 3)], "run-1")
        with_candidates(store, "甲", "600000001", "600000003")
        with page_of(store) as (server, page):
            accepted = decide(page, key="甲", decision="accept", company_id="600000001", next="乙")
            assert accepted.headers["location"] == f"/{server.server_id}/?key=%E4%B9%99"
            decide(page, key="乙", decision="typed", company_id=" 600000002 ")
            decide(page, key="丙", decision="not_a_company")
            decide(page, key="丁", decision="skip")
            assert entry_of(store, "甲") == ("600000001", "manual", "eqc_review", 1.0)
            assert entry_of(store, "乙") == ("600000002", "manual", "eqc_review", 1.0)
            assert [n.lookup_key for n in store.unsettled.open_names()] == ["丁"]  # skipped: still open
            assert store.unsettled.not_companies(["丙"]) == {"丙"}
            journal = store.decisions.latest()
            assert [(d.lookup_key, d.decision, d.company_id) for d in journal] == [
                ("丁", "skip", None), ("丙", "not_a_company", None), ("乙", "typed", "600000002"),
                ("甲", "accept", "600000001"),
            ]  # fmt: skip
            assert {d.os_user for d in journal} == {"tester"}
            assert all(d.undone_at is None for d in journal)
            # a decided name takes no second decision
            assert "already settled" in notice_of(page, decide(page, key="甲", decision="not_a_company"))
            # undo, newest first: the skip, then not-a-company (the name is open again), then the typed id
            page.post("/undo", data={})
            page.post("/undo", data={})
            assert store.unsettled.not_companies(["丙"]) == set()
            page.post("/undo", data={})
            # 乙 had no entry: the row cannot be deleted, so it stays withdrawn (no id) and lookups pass over it
            assert entry_of(store, "乙") == ("", "manual_undone", "eqc_review", 0.0)
            assert store.lookup({"customer_name": ["乙"]}) == {}
            assert {n.lookup_key for n in store.unsettled.open_names()} == {"乙", "丙", "丁"}
            # an entry something else has replaced since stays, and the name stays settled
            index = store.tables.index
            with store.transaction() as conn:
                conn.execute(sa.update(index).where(index.c.lookup_key == "甲").values(company_id="600000009",
                                                                                       source="eqc_api"))  # fmt: skip
            page.post("/undo", data={})
            undone = store.decisions.latest(key="甲")[0]
            assert (undone.lookup_key, undone.undone_at is not None) == ("甲", True)
            assert entry_of(store, "甲") == ("600000009", "eqc_api", "eqc_review", 1.0)
            assert store.unsettled.get("甲").settled  # type: ignore[union-attr]
            assert "nothing to undo" in notice_of(page, page.post("/undo", data={}))
            assert all(d.undone_at is not None for d in store.decisions.latest())
            assert Decider(store).os_user == getpass.getuser()
    finally:
        store.close()


def test_a_typed_id_must_be_an_id_and_the_name_must_be_in_the_queue(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("甲", 2)], "run-1")
        with page_of(store) as (_, page):
            assert "not a company id" in notice_of(page, decide(page, key="甲", decision="typed", company_id="N/A"))
            temp = temp_company_id("甲", "salt")
            assert temp is not None
            assert "not a company id" in notice_of(page, decide(page, key="甲", decision="typed", company_id=temp))
            assert "neither a candidate EQC offered for it nor a company id" in notice_of(
                page, decide(page, key="甲", decision="accept", company_id="<b>1</b>")
            )  # a forged accept cannot bring what a typed id could not
            assert "no such name" in notice_of(page, page.post("/decide", data={"key": "无", "decision": "skip"}))
            assert decide(page, key="甲", decision="drop").status_code == 400
            assert store.decisions.latest() == []
            assert entry_of(store, "甲") is None
    finally:
        store.close()


# --- search EQC: the runs' quota, token keeper and claims; the EQC token nowhere ---------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(seed=11, latency=(0.0, 0.0), time_scale=1000.0, rate_limit=FAST, tokens=(TOKEN,),
                             token_ttl=86_400.0)  # fmt: skip
    with Simulator(config) as simulator:
        yield simulator


class Recorder:
    """Every response of a session, redirects included: bodies and headers, to search for the token."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        self.seen.append(response.text)
        self.seen.extend(f"{k}: {v}" for k, v in response.headers.multi_items())


def test_a_whole_session_never_shows_the_eqc_token_and_searches_share_the_runs_quota(
    sim: Simulator, tmp_path: Path
) -> None:
    store = IndexStore(tmp_path / "index.db")
    company = sim.state.universe.companies[3]
    try:
        store.unsettled.record([name("查无此公司甲", 8), name("查无此公司乙", 4), name("查无此公司丙", 2)], "run-1")
        # a token the command must replace (the first one is refused): the refresh the runs do
        eqc = access(sim.url, token="stale-token", token_command=f"echo {TOKEN}", rate_limit=RateLimit(2, 3.0))
        recorder = Recorder()
        with ReviewServer(store, eqc) as server, httpx.Client(event_hooks={"response": [recorder]},
                                                             follow_redirects=True) as http:  # fmt: skip
            assert http.get(server.url).status_code == 200
            for path in ("/static/review.js", "/static/review.css", "/slot", "/?key=查无此公司乙", "/?q=乙"):
                assert http.get(server.base_url + path).status_code == 200
            found = http.post(server.base_url + "/search", data={"key": "查无此公司甲", "query": company.name})
            assert "EQC answered" in found.text
            assert company.company_id in found.text  # the candidate, with its match type and credit code
            assert company.unite_code in found.text
            assert http.post(server.base_url + "/search", data={"key": "查无此公司乙"}).status_code == 200
            searches = sim.state.stats.search_keys
            assert searches[company.name] == 1  # asked once (the refused token's try is not a search)
            assert searches["查无此公司乙"] == 1
            slots = store.quota.slots_of(eqc.quota_key)
            assert len(slots) >= 2
            assert all(owner.startswith("review-") for owner, _ in slots)
            assert store.claims.live() == []  # every claim released
            # the shared window is full (2 per 3 s): the page says how long until the next slot
            assert seconds_to_next_slot(store, eqc) > 0.5
            assert "next EQC slot in" in http.get(server.base_url + "/?key=查无此公司丙").text
            with httpx.Client(base_url=server.base_url, cookies=http.cookies) as page:
                accept = {"key": "查无此公司甲", "decision": "accept", "company_id": company.company_id}
                assert "saved to the index" in notice_of(page, decide(page, **accept))
                decide(page, key="查无此公司乙", decision="not_a_company")
            http.post(server.base_url + "/undo", data={})
            assert http.get(server.base_url + "/", headers={"Host": "evil.example"}).status_code == 403
            assert httpx.post(server.base_url + "/undo").status_code == 403
        assert entry_of(store, "查无此公司甲") == (company.company_id, "manual", "eqc_review", 1.0)
        assert len(recorder.seen) > 20
        assert not [text for text in recorder.seen if TOKEN in text or "stale-token" in text]
        # every candidate is kept under the reviewed name: the page shows them next time, with no new search
        payloads = store.tables.payloads
        with store.reading() as conn:
            kept = conn.execute(sa.select(payloads.c.company_id).where(payloads.c.search_key == "查无此公司甲")).all()
        assert company.company_id in {row[0] for row in kept}
    finally:
        store.close()


def test_a_search_without_a_token_says_why_and_asks_nothing(sim: Simulator, tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("甲", 2)], "run-1")
        with page_of(store, access(sim.url, token=None)) as (_, page):
            for _ in range(2):  # and the second time too
                shown = notice_of(page, page.post("/search", data={"key": "甲", "query": "甲"}))
                assert "no EQC token" in shown
            assert sum(sim.state.stats.search_keys.values()) == 0
    finally:
        store.close()


# --- what the queue lists ----------------------------------------------------------------------------------


def test_a_file_narrows_the_queue_to_its_names(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("甲公司", 9), name("乙公司", 7)], "run-1")
        unresolved = tmp_path / "month.unresolved.csv"
        pl.DataFrame({"name": ["乙公司"], "example_name": ["乙公司"], "temporary_id": ["IN_乙"], "rows": [7],
                      "status": ["not_found"], "reason": [""]}).write_csv(unresolved)  # fmt: skip
        scope = scope_of_file(store, unresolved)
        assert (scope.keys, scope.recorded) == (frozenset({"乙公司"}), 0)
        month = tmp_path / "month.csv"
        pl.DataFrame({"计划代码": ["P1", "P2", "P2"], "客户名称": ["甲公司", "丙公司", "丙公司 "],
                      "期末资产规模": [1.0, 2.0, 3.0]}).write_csv(month)  # fmt: skip
        scope = scope_of_file(store, month)
        assert scope.keys == {"甲公司", "丙公司"}
        assert scope.recorded == 1  # 丙公司: no run had it, so it is listed now (not asked)
        fresh = store.unsettled.get("丙公司")
        assert fresh is not None
        assert (fresh.rows, fresh.status, fresh.assets, len(fresh.sample)) == (2, "not_asked", 5.0, 2)
        with page_of(store, scope_keys=scope.keys) as (_, http):
            page = http.get("/")
        assert "甲公司" in page.text
        assert "丙公司" in page.text
        assert "乙公司" not in page.text
    finally:
        store.close()


def _fill(store: IndexStore, count: int) -> None:
    names = [name(f"测试公司{i:05d}", rows=(i * 7919) % 997 + 1, assets=float(i)) for i in range(count)]
    store.unsettled.record(names, "run-big")


def _fastest(page: httpx.Client, path: str, tries: int = 5) -> float:
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        response = page.get(path)
        best = min(best, time.perf_counter() - started)
        assert response.status_code == 200
    return best


def test_a_queue_of_ten_thousand_names_is_paged_and_as_quick_as_a_small_one(tmp_path: Path) -> None:
    """The bound is relative: the page for 10,000 names against the same page for 100, on this machine now."""
    small, big = IndexStore(tmp_path / "small.db"), IndexStore(tmp_path / "big.db")
    try:
        _fill(small, PAGE_SIZE)
        _fill(big, 10_000)
        with page_of(small) as (_, small_page), page_of(big) as (_, big_page):
            baseline = _fastest(small_page, "/")
            queue = _fastest(big_page, "/")
            searched = _fastest(big_page, "/?q=公司0999")
            print(f"queue page: 100 names {baseline * 1000:.1f} ms, 10,000 names {queue * 1000:.1f} ms, "
                  f"search {searched * 1000:.1f} ms")  # fmt: skip
            assert queue < 5 * baseline  # paged: what a page costs does not grow with the queue
            assert searched < 20 * baseline  # a search reads every name once: 100 times the rows, far less time
            text = big_page.get("/?page=3").text
            assert text.count('<tr class="name') == PAGE_SIZE
            assert "page 3 of 100" in text
            rows = [n.rows for n in big.unsettled.open_names(limit=PAGE_SIZE)]
            assert rows == sorted(rows, reverse=True)
            assert "10,000</b> left" in text
    finally:
        small.close()
        big.close()


# --- the command -------------------------------------------------------------------------------------------


def test_the_command_prints_a_url_that_opens_the_page_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    store = IndexStore(db)
    store.unsettled.record([name("甲公司", 3)], "run-1")
    store.close()
    env = {**os.environ, "WDH_EQC_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "eqc_enrich.cli", "review", "--db", str(db), "--no-browser", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        assert "1 names to settle" in lines[0]
        url = lines[1].split("review page: ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert "?token=" in url
        page = httpx.get(url, follow_redirects=True)
        assert page.status_code == 200
        assert "甲公司" in page.text
        assert TOKEN not in page.text
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert TOKEN not in out + err
    assert "Traceback" not in err


def test_the_command_with_eqc_url_searches_that_eqc(sim: Simulator, tmp_path: Path) -> None:
    """`review --eqc-url` (and the rest of the EQC options, as for `run`) reach the page's search: a page
    opened beside a simulator asks the simulator, not the WDH_EQC_BASE_URL of the environment."""
    db = tmp_path / "index.db"
    store = IndexStore(db)
    company = sim.state.universe.companies[3]
    store.unsettled.record([name(company.name, 3)], "run-1")
    store.close()
    env = {**os.environ, "WDH_EQC_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}  # WDH_EQC_BASE_URL: a closed port
    eqc = ["--eqc-url", sim.url, "--rate-limit", "1000/1s", "--timeout", "5s", "--quota-key", "review-test"]
    command = [sys.executable, "-m", "eqc_enrich.cli", "review", "--db", str(db), "--no-browser", "--port", "0", *eqc]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        url = [process.stdout.readline() for _ in range(2)][1].split("review page: ", 1)[1].strip()
        with httpx.Client(follow_redirects=True, timeout=30) as page:
            assert page.get(url).status_code == 200  # trades the URL's token for the session cookie
            base = url.split("/?", 1)[0]
            found = page.post(base + "/search", data={"key": company.name, "query": company.name})
        assert found.status_code == 200
        assert company.company_id in found.text
        assert sim.state.stats.search_keys[company.name] == 1
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert TOKEN not in out + err
    store = IndexStore(db)
    try:
        assert {owner for owner, _ in store.quota.slots_of("review-test")} != set()  # the quota key it was given
    finally:
        store.close()


def test_the_printed_url_takes_connections_before_the_page_serves(tmp_path: Path) -> None:
    """The command prints the URL and opens the browser before the server runs: a connection made then waits in
    the backlog and gets the page once it serves, instead of a refusal (seen on a busy machine)."""
    store = IndexStore(tmp_path / "index.db")
    store.unsettled.record([name("甲公司", 3)], "run-1")
    server = ReviewServer(store, access())
    try:
        early = socket.create_connection(("127.0.0.1", server.port), timeout=5)  # refused without the listen
        early.close()
        with server, httpx.Client(follow_redirects=True) as page:
            assert "甲公司" in page.get(server.url).text
    finally:
        server.stop()
        store.close()


def test_the_command_refuses_a_missing_file_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "eqc_enrich.cli", "review", str(tmp_path / "none.csv"), "--db", str(tmp_path / "i.db"),
         "--no-browser"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "no such file" in done.stderr


def test_one_name_shows_its_rows_and_every_stored_candidate(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        sample = [{"客户名称": "弱匹配公司", "计划代码": "P0042", "期末资产规模": "12.5"}]
        weak = name("弱匹配公司", 6, kind="low_confidence", status="weak_match", candidate_id="700000003",
                    confidence=0.5, sample=sample)  # fmt: skip
        store.unsettled.record([weak, name("乙公司", 2)], "run-1")
        items: list[dict[str, object]] = [
            {"companyId": 700000003, "companyFullName": "弱匹配科技有限公司", "type": "其他", "unite_code": "91AAA",
             "registeredStatus": "注销", "company_former_name": "旧名甲，旧名乙"},
            {"companyId": "700000004", "companyFullName": "弱匹配有限公司", "type": "全称精确匹配",
             "unite_code": "91BBB", "registeredStatus": "存续"},
        ]  # fmt: skip
        store.write(WriteBatch(payloads=[Payload(str(i["companyId"]), "弱匹配公司", i) for i in items]))
        with page_of(store) as (_, page):
            shown = page.get("/?key=弱匹配公司").text
            queue = page.get("/").text
            several = page.get("/?kind=several").text
        candidates = shown[shown.index('id="candidates"') : shown.index("Search EQC")]
        # best first, each with match type, unified credit code, registered status and former names
        assert candidates.index("700000004") < candidates.index("700000003")
        for text in ("全称精确匹配", "91BBB", "存续", "91AAA", "注销", "旧名甲、旧名乙", "the run&#x27;s weak answer"):
            assert text in candidates
        rows = shown[shown.index("Rows (a sample)") :]
        assert rows.index("计划代码") < rows.index("客户名称")  # the plan code first
        assert "P0042" in rows
        assert "low confidence" in shown
        assert "2 candidates" in queue  # several candidates: said in the queue, and a filter of its own
        assert "乙公司" in queue
        assert "弱匹配公司" in several
        assert "乙公司" not in several
    finally:
        store.close()


def test_a_search_while_eqc_is_away_says_so_and_the_page_goes_on(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    try:
        store.unsettled.record([name("甲", 2)], "run-1")
        eqc = access("http://127.0.0.1:9", retries=1, rate_limit=RateLimit(100, 1.0), timeout_s=1.0)
        with page_of(store, eqc) as (_, page):
            for _ in range(2):  # twice: the second search reuses the first one's client, keeper and limiter
                shown = notice_of(page, page.post("/search", data={"key": "甲", "query": "甲"}))
                assert 'id="search-answer"' in shown
                assert "connection refused" in shown or "EQC unavailable" in shown
            assert page.get("/?key=甲").status_code == 200
        assert store.claims.live() == []
    finally:
        store.close()
