"""The review page in a real browser: headless Chromium (Debian's package) driven by Playwright, against a real
simulator and a real index. A month is run, a person settles three names with the keyboard and undoes a
decision, and the next run of the month uses every decision without asking EQC about them.

`EQC_ENRICH_SCREENSHOT=1` also saves the page as docs/review.png (the picture in the README).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from tests.options import run_options
from tests.review_pages import access

from eqc_enrich import EnrichResult, RateLimit, enrich
from eqc_enrich.config import EqcOptions, resolve_access
from eqc_enrich.keys import normalize_name
from eqc_enrich.model import Latency
from eqc_enrich.review import ReviewServer
from eqc_enrich.settings import Settings
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_month, make_realistic
from eqc_enrich.store import NOT_A_COMPANY, IndexStore, Payload, UnsettledName, WriteBatch

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
TOKEN = "browser-eqc-token-5d1e"
FAST = RateLimit(10, 0.06)
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "review.png"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"no {CHROMIUM}: apt-get install chromium"
    return None


if (_why := _missing()) is not None:
    if os.environ.get("CI"):  # CI installs both (.ci/run): a skip there would hide a missing install step
        raise RuntimeError(f"CI must provide the browser test's parts: {_why}")
    pytest.skip(_why, allow_module_level=True)

from playwright import sync_api  # noqa: E402


def sim_config() -> SimulatorConfig:
    return SimulatorConfig(seed=11, latency=(0.0, 0.0), time_scale=1000.0, rate_limit=FAST, tokens=(TOKEN,),
                           token_ttl=86_400.0)  # fmt: skip


def run(data: pl.DataFrame, url: str, db: Path, **changes: Any) -> EnrichResult:
    options = run_options(
        db=db, eqc_url=url, token=TOKEN, rate_limit=FAST, timeout_s=2.0, salt="s", latency_hint=Latency(0.0, 0.0),
        **changes,
    )  # fmt: skip
    return enrich(data, options=options)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (never `playwright install`: the system browser, by its path).

    Playwright's sync API runs an event loop in this thread while it is open, so runs (asyncio.run) go
    before and after it, never inside."""
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def queue_keys(page: Any) -> list[str]:
    return [str(key) for key in page.eval_on_selector_all("tr.name", "rows => rows.map(r => r.dataset.key)")]


def chosen(page: Any) -> str:
    return str(page.get_attribute("#detail", "data-key"))


def type_id(page: Any, company_id: str) -> None:
    """`i`, the id, Enter: the page checks the id with EQC and shows what it said."""
    page.keyboard.press("i")
    page.fill("#company-id", company_id)
    with page.expect_navigation():
        page.keyboard.press("Enter")


def press(page: Any, key: str) -> None:
    """One key that submits a form: wait for the page it leads to."""
    with page.expect_navigation():
        page.keyboard.press(key)


@pytest.mark.slow  # a real browser through a whole login or session: make test-all
def test_a_person_settles_names_with_the_keyboard_and_the_next_run_uses_every_decision(tmp_path: Path) -> None:
    data, _ = make_month(seed=11, rows=600, companies=80, unknown_share=0.15, existing_id_share=0.0)
    db = tmp_path / "index.db"
    with Simulator(sim_config()) as sim:
        first = run(data, sim.url, db)
        company = sim.state.universe.companies[5]  # the company the person finds by editing the query
        assert first.unresolved.height >= 4
        store = IndexStore(db)
        try:
            expected = store.unsettled.open_names()
            eqc = resolve_access(EqcOptions(url=sim.url, token=TOKEN, rate_limit=FAST, timeout_s=2.0), Settings())
            asked_before = sim.state.stats.search_keys[company.name]
            with ReviewServer(store, eqc) as server, chromium() as browser:
                page = browser.new_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
                page.goto(server.url)
                decided = _settle(page, company.company_id, company.name, [n.lookup_key for n in expected], tmp_path)
                page.close()
            assert sim.state.stats.search_keys[company.name] == asked_before + 1  # the page's one search
        finally:
            store.close()
    accepted, not_company, typed = decided
    _the_next_run_uses_every_decision(data, db, accepted, not_company, typed, company.company_id, first)


def _settle(page: Any, company_id: str, company_name: str, expected: list[str], tmp: Path) -> tuple[str, str, str]:
    # the queue, most rows first, as the index orders it
    keys = queue_keys(page)
    assert keys == expected
    rows = [int(text.replace(",", "")) for text in page.locator("tr.name td.rows").all_inner_texts()]
    assert rows == sorted(rows, reverse=True)
    assert "left" in page.inner_text("#left")
    assert page.get_attribute("tr.name td a bdi", "lang") == "zh-CN"
    # move with j and k (and the arrows); the page follows
    first = chosen(page)
    assert first == keys[0]
    with page.expect_navigation():
        page.keyboard.press("j")
    assert chosen(page) == keys[1]
    with page.expect_navigation():
        page.keyboard.press("ArrowUp")
    assert chosen(page) == keys[0]
    # 1. search EQC with an edited query, see the candidates, accept the first with `a`
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "query"
    page.fill("#query", company_name)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "EQC answered" in page.inner_text("#search-answer")
    assert company_id in page.inner_text("#candidates")
    assert "next EQC slot in" in page.inner_text("#slot") or "free now" in page.inner_text("#slot")
    if os.environ.get("EQC_ENRICH_SCREENSHOT") == "1":
        shot = tmp / "review.png"
        page.screenshot(path=str(shot), full_page=False)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    accepted = chosen(page)
    press(page, "a")
    assert accepted not in queue_keys(page)
    # 2. the next name is not a company: `n`
    not_company = chosen(page)
    assert not_company != accepted
    press(page, "n")
    assert not_company not in queue_keys(page)
    # 3. type an id: a wrong one first (Enter checks it with EQC, which knows no such company; Enter again
    # saves it anyway), undone with `u` (the name comes back), then the right one
    typed = chosen(page)
    type_id(page, "600000000")
    assert "EQC knows no company 600000000" in page.inner_text("#id-check")
    with page.expect_navigation():
        page.keyboard.press("Enter")  # the "set this id" button has the focus after a check
    assert typed not in queue_keys(page)
    press(page, "u")
    assert typed in queue_keys(page)
    assert chosen(page) == typed
    assert "undone" in page.inner_text("#notice")
    type_id(page, "600999001")
    with page.expect_navigation():
        page.click("#set-id")
    assert typed not in queue_keys(page)
    journal = page.inner_text("#decisions")
    assert journal.count("undone") == 1
    return accepted, not_company, typed


def _the_next_run_uses_every_decision(
    data: pl.DataFrame, db: Path, accepted: str, not_company: str, typed: str, company_id: str, first: EnrichResult
) -> None:
    store = IndexStore(db)
    try:
        index = store.tables.index
        with store.reading() as conn:
            manual = dict(conn.execute(sa.select(index.c.lookup_key, index.c.company_id).where(
                index.c.source == "manual", index.c.source_domain == "eqc_review")).all())  # fmt: skip
    finally:
        store.close()
    assert manual == {accepted: company_id, typed: "600999001"}
    with Simulator(sim_config()) as sim:
        # --retry-not-found: the names EQC did not know are asked again, unless a person settled them
        second = run(data, sim.url, db, retry_not_found=True)
        asked = set(sim.state.stats.search_keys)
    undecided = set(first.unresolved["name"]) - {accepted, not_company, typed}
    assert undecided <= asked  # the test would see a decision ignored: the others are asked
    assert not {accepted, not_company, typed} & asked
    assert second.summary.eqc.not_a_company == 1
    reasons = dict(zip(second.unresolved["name"], second.unresolved["status"], strict=True))
    assert reasons[not_company] == NOT_A_COMPANY
    frame = second.frame
    for key, company in ((accepted, company_id), (typed, "600999001")):
        rows = first.unresolved.filter(pl.col("name") == key)["rows"][0]
        got = frame.filter(pl.col("company_id") == company)
        assert got.height >= rows
        assert set(got["company_id_source"]) == {"index:manual"}  # a person's decision, and the output says so


# --- decisions that hold, sessions of their own, text that cannot disguise the page ---------------------------


def _store_with(db: Path, names: list[tuple[str, int]]) -> IndexStore:
    store = IndexStore(db)
    store.unsettled.record(
        [UnsettledName(lookup_key=key, kind="temporary", status="not_found", rows=rows, display_name=key)
         for key, rows in names],
        "run-1",
    )  # fmt: skip
    return store


def test_two_reviewers_in_two_browsers_one_decision_holds_and_each_undoes_only_their_own(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    first, second = _store_with(db, [("两人同时有限公司", 9), ("另一家有限公司", 3)]), IndexStore(db)
    first.write(WriteBatch(payloads=[Payload("600700001", "两人同时有限公司", {
        "companyId": "600700001", "companyFullName": "两人同时科技有限公司", "type": "模糊匹配"})]))  # fmt: skip
    eqc = access("http://127.0.0.1:9", token=TOKEN)
    try:
        with (
            ReviewServer(first, eqc, os_user="alice") as one, ReviewServer(second, eqc, os_user="bob") as two,
            chromium() as browser,
        ):  # fmt: skip
            alice, bob = browser.new_context().new_page(), browser.new_context().new_page()
            alice.goto(one.url)
            bob.goto(two.url)
            assert chosen(alice) == chosen(bob) == "两人同时有限公司"  # both look at the same name
            press(alice, "a")  # alice accepts EQC's candidate
            press(bob, "n")  # bob, on the page as it was, says it is not a company
            assert bob.inner_text("#notice") == (
                "两人同时有限公司: changed since this page showed it: it is settled now: 600700001 (manual), "
                "decided by alice; nothing saved"
            )
            assert first.unsettled.not_companies(["两人同时有限公司"]) == set()
            press(bob, "u")  # bob's undo has nothing of bob's to undo: alice's decision stands
            assert "nothing to undo" in bob.inner_text("#notice")
            assert "(another page)" in bob.inner_text("#decisions")
            assert bob.locator("#decisions form").count() == 0  # no undo button for someone else's decision
            found = first.lookup({"customer_name": ["两人同时有限公司"]})
            assert found[("两人同时有限公司", "customer_name")].company_id == "600700001"
            press(alice, "u")
            assert "undone: 两人同时有限公司 (accept)" in alice.inner_text("#notice")
            assert first.lookup({"customer_name": ["两人同时有限公司"]}) == {}
    finally:
        first.close()
        second.close()


def test_a_typed_id_is_refused_unless_it_has_an_ids_form_and_is_named_by_eqc_before_saving(tmp_path: Path) -> None:
    with Simulator(sim_config()) as sim:
        company = sim.state.universe.companies[12]
        store = _store_with(tmp_path / "index.db", [("手工键入有限公司", 4)])
        eqc = access(sim.url, token=TOKEN)
        dialogs: list[str] = []
        try:
            with ReviewServer(store, eqc) as server, chromium() as browser:
                page = browser.new_page(locale="zh-CN")
                page.on("dialog", lambda dialog: dialogs.append(dialog.message))
                page.goto(server.url)
                for careless in ("<script>alert(1)</script>", "=1+1", "1 OR 1=1", "-1", "空白"):
                    type_id(page, careless)
                    assert page.inner_text("#notice") == f"手工键入有限公司: not a company id: {careless}"
                assert sim.state.stats.requests["findDepart"] == 0  # none of them was sent to EQC
                wide = company.company_id.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
                type_id(page, wide)
                assert page.inner_text("#id-check").startswith(f"EQC: {company.company_id} is {company.name}")
                assert page.input_value("#company-id") == company.company_id
                assert page.evaluate("document.activeElement.id") == "set-id"
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                assert "saved to the index" in page.inner_text("#notice")
            assert sim.state.stats.requests["findDepart"] == 1
            assert dialogs == []  # no script of the data ran
            found = store.lookup({"customer_name": ["手工键入有限公司"]})[("手工键入有限公司", "customer_name")]
            assert (found.company_id, found.source) == (company.company_id, "manual")
        finally:
            store.close()


def test_a_second_review_page_neither_logs_the_first_out_nor_receives_its_cookie(tmp_path: Path) -> None:
    store = _store_with(tmp_path / "index.db", [("会话测试有限公司", 2)])
    eqc = access("http://127.0.0.1:9", token=TOKEN)
    try:
        with ReviewServer(store, eqc) as one, ReviewServer(store, eqc) as two, chromium() as browser:
            context = browser.new_context()
            first, second = context.new_page(), context.new_page()
            first.goto(one.url)
            second.goto(two.url)
            first.reload()
            assert queue_keys(first) == queue_keys(second) == ["会话测试有限公司"]  # both still in
            assert {c["name"] for c in context.cookies([two.base_url + "/"])} == {two.cookie_name}
            assert {c["name"] for c in context.cookies([one.base_url + "/"])} == {one.cookie_name}
            stranger = browser.new_context().new_page()  # another browser with the same link: spent
            stranger.goto(one.url)
            assert "this link has been used" in stranger.inner_text("#error")
    finally:
        store.close()


BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_text_from_the_data_cannot_reverse_the_page(tmp_path: Path) -> None:
    """A name with U+202E (right-to-left override) and friends: shown isolated, the controls as visible marks;
    the decision line and the notice read left to right as the page wrote them."""
    disguised = "甲\u202eABC科技有限公司"
    nested = "乙\u2067隔离\u2069\u202d公司\u200f"
    store = _store_with(tmp_path / "index.db", [(disguised, 9), (nested, 3)])
    eqc = access("http://127.0.0.1:9", token=TOKEN)
    try:
        with ReviewServer(store, eqc) as server, chromium() as browser:
            page = browser.new_page(locale="zh-CN")
            page.goto(server.url)
            assert chosen(page) == disguised
            press(page, "n")
            shown = page.evaluate("document.body.innerText")
            assert not [ch for ch in BIDI_CONTROLS if ch in shown]  # none acts on the text any more
            assert page.inner_text("#notice") == "甲U+202EABC科技有限公司: not a company (runs will never ask it)"
            assert "乙U+2067隔离U+2069U+202D公司U+200F" in page.inner_text("#queue")
            for holder in ("#notice", "#decisions li.decision"):
                name_right, rest_left = page.evaluate(_ORDER, holder)
                assert name_right <= rest_left + 1, holder  # the page's words stay to the right of the name
    finally:
        store.close()


_ORDER = """holder => {
  const line = document.querySelector(holder);
  const name = line.querySelector("bdi");
  const rest = document.createRange();
  rest.setStartAfter(name);
  rest.setEndAfter(line.lastChild);
  return [name.getBoundingClientRect().right, rest.getBoundingClientRect().left];
}"""


def test_a_name_in_the_local_matchers_review_band_is_accepted_with_one_key_without_a_search(tmp_path: Path) -> None:
    """Last month in the index, this month in shadow with no EQC call (--budget 0): the names the matcher kept
    for review are on the page with its candidate, and `a` accepts it."""
    (last, _), (data, truth) = make_realistic(seed=11, rows=3_000, variant_share=0.5, confuser_share=0.0)
    db = tmp_path / "index.db"
    with Simulator(sim_config()) as sim:
        run(last, sim.url, db, local_match="off")
        month = run(data, sim.url, db, budget=0)
        assert month.summary.local_match["review"] > 0
        store = IndexStore(db)
        try:
            kept = {r.lookup_key: r for r in store.shadow.all_rows() if r.action == "review"}
            requests = sum(sim.stats()["requests"].values())
            with ReviewServer(store, access(sim.url, token=TOKEN)) as server, chromium() as browser:
                page = browser.new_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
                page.goto(server.url)
                page.click("#local")  # the queue's filter: names with a local candidate
                assert set(queue_keys(page)) == set(kept)
                key = chosen(page)
                candidate = kept[key]
                local_row = page.locator("tr.candidate.local")
                assert local_row.count() == 1
                assert "chosen" in str(local_row.get_attribute("class"))  # the only candidate: `a` takes it
                label = local_row.inner_text()
                assert f"the local match: similar {candidate.score:.2f}" in label
                assert candidate.candidate_id in label
                press(page, "a")
                assert key not in queue_keys(page)
                assert "saved to the index" in page.inner_text("#notice")
            assert sum(sim.stats()["requests"].values()) == requests  # no search was needed
            entry = store.lookup({"customer_name": [key]})[(key, "customer_name")]
            assert (entry.company_id, entry.source) == (candidate.candidate_id, "manual")
        finally:
            store.close()
    names = data["客户名称"].map_elements(normalize_name, return_dtype=pl.String)
    assert set(truth.filter(names == key)["company_id"]) == {candidate.candidate_id}  # and it was the right one
