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

from eqc_enrich import EnrichResult, RateLimit, RunOptions, enrich
from eqc_enrich.model import Latency
from eqc_enrich.review import EqcAccess, ReviewServer
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_month
from eqc_enrich.store import NOT_A_COMPANY, IndexStore

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
    options = RunOptions(
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


def press(page: Any, key: str) -> None:
    """One key that submits a form: wait for the page it leads to."""
    with page.expect_navigation():
        page.keyboard.press(key)


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
            eqc = EqcAccess(eqc_url=sim.url, token=TOKEN, rate_limit=FAST, timeout_s=2.0)
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
    assert page.get_attribute("tr.name td a span", "lang") == "zh-CN"
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
    # 3. type an id: a wrong one first, undone with `u` (the entry goes, the name comes back), then the right one
    typed = chosen(page)
    page.keyboard.press("i")
    page.fill("#company-id", "600000000")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert typed not in queue_keys(page)
    press(page, "u")
    assert typed in queue_keys(page)
    assert chosen(page) == typed
    assert "undone" in page.inner_text("#notice")
    page.keyboard.press("i")
    page.fill("#company-id", "600999001")
    with page.expect_navigation():
        page.keyboard.press("Enter")
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
