"""Helpers of the review page's tests: names in the queue, the page served with a session, decisions as the
page's forms send them."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import sqlalchemy as sa
from tests.options import eqc_options

from eqc_enrich import RateLimit
from eqc_enrich.config import EqcAccess, resolve_access
from eqc_enrich.review import ReviewServer
from eqc_enrich.settings import Settings
from eqc_enrich.store import IndexStore, Payload, UnsettledName, WriteBatch

TOKEN = "eqc-secret-7f3a9c2e"  # the EQC token: must appear in no page and no response
FAST = RateLimit(10, 0.06)


def name(key: str, rows: int, **changes: object) -> UnsettledName:
    base: dict[str, object] = {"kind": "temporary", "status": "not_found", "temp_id": f"IN_{key}",
                               "display_name": key, "sample": [{"计划代码": "P1", "客户名称": key}]}  # fmt: skip
    return UnsettledName(lookup_key=key, rows=rows, **{**base, **changes})  # type: ignore[arg-type]


def access(url: str = "http://127.0.0.1:9", **changes: object) -> EqcAccess:
    settings: dict[str, object] = {"eqc_url": url, "token": TOKEN, "rate_limit": FAST, "timeout_s": 2.0}
    return resolve_access(eqc_options(**{**settings, **changes}), Settings())


@contextmanager
def page_of(
    store: IndexStore,
    eqc: EqcAccess | None = None,
    *,
    session: bool = True,
    scope_keys: frozenset[str] | None = None,
    os_user: str = "tester",
) -> Iterator[tuple[ReviewServer, httpx.Client]]:
    """The page served on loopback, and a client that opened the printed URL (its session cookie set), or that
    did not (a stranger)."""
    with (
        ReviewServer(store, eqc or access(), os_user=os_user, scope_keys=scope_keys) as server,
        httpx.Client(base_url=server.base_url, follow_redirects=False, timeout=30) as http,
    ):
        if session:
            assert http.get(server.url).status_code == 303
            assert http.cookies.get(server.cookie_name)
        yield server, http


def seen_of(page: httpx.Client, key: str) -> str:
    """The state tag the page renders for a name (its forms send it back with a decision)."""
    shown = page.get("/", params={"key": key})
    assert shown.status_code == 200
    return shown.text.split('name="seen" value="', 1)[1].split('"', 1)[0]


def decide(page: httpx.Client, **form: str) -> httpx.Response:
    """A decision as the page's form sends it: against the state the page shows now."""
    return page.post("/decide", data={**form, "seen": seen_of(page, form["key"])})


def with_candidates(store: IndexStore, key: str, *company_ids: str) -> None:
    """Candidates EQC offered for a name (as a search stores them): what `accept` may choose from."""
    items = [
        {"companyId": cid, "companyFullName": f"{key}有限公司{cid[-2:]}", "type": "模糊匹配"} for cid in company_ids
    ]
    store.write(WriteBatch(payloads=[Payload(item["companyId"], key, item) for item in items]))


def entry_of(store: IndexStore, key: str) -> tuple[str, str, str | None, float] | None:
    index = store.tables.index
    query = sa.select(index.c.company_id, index.c.source, index.c.source_domain, index.c.confidence).where(
        index.c.lookup_key == key, index.c.lookup_type == "customer_name"
    )
    with store.reading() as conn:
        row = conn.execute(query).first()
    return None if row is None else (row[0], row[1], row[2], float(row[3]))


def notice_of(page: httpx.Client, response: httpx.Response) -> str:
    """The page a form's redirect leads to (its notice says what became of the form)."""
    assert response.status_code == 303, response.text
    return page.get(page.base_url.join(response.headers["location"])).text


def paragraph_text(page_html: str, element_id: str) -> str:
    """A paragraph of the page as a person reads it (tags dropped, entities decoded); "" when there is none."""
    found = re.search(rf'<p class="[a-z]+" id="{element_id}">(.*?)</p>', page_html, re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))) if found else ""


def notice_text(page_html: str) -> str:
    return paragraph_text(page_html, "notice")
