"""The review page's web app: the queue, one name, decisions and "search EQC", behind a session.

Like Jupyter's, but stricter: the URL printed at start carries a random token that works once. The first
visit trades it for a new session secret in an HttpOnly, SameSite=Strict cookie and drops it from the
address bar; the link then opens nothing (a second browser, a leaked terminal line, a browser history).
The page lives under a path of its own (`/<server id>/`), and the cookie is named after that id and sent
only under that path: a second review server on the same host neither logs the first out nor receives its
cookie. Every request needs the session, so other local users and other pages can neither read nor write;
every change is a POST whose Host and Origin must be this server's (no DNS rebinding, no cross-site form).
The EQC token stays in `EqcAccess`, in this process: nothing the app renders or answers carries it.

A request that is merely wrong (a page number out of range, a NUL byte, an unknown decision) gets a 4xx
page, an error of ours a 500 page; all of them carry the same security headers as the page itself.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from eqc_enrich._errors import EqcEnrichError, IndexStoreError
from eqc_enrich.config import EqcAccess
from eqc_enrich.review._decide import Decider, DecisionRefused, eqc_company_id
from eqc_enrich.review._pages import Detail, QueueView, conflicts_page, error_page, review_page, say
from eqc_enrich.review._queue import (
    candidate_counts,
    candidates_of,
    local_candidates,
    with_local_candidate,
    with_several_candidates,
)
from eqc_enrich.review._search import EqcSearcher, seconds_to_next_slot
from eqc_enrich.review._static import CSS, JS
from eqc_enrich.store import KINDS, IndexStore, UnsettledName

__all__ = ["COOKIE_PREFIX", "MAX_PAGE", "PAGE_SIZE", "ReviewState", "create_app", "render_queue"]

_log = logging.getLogger(__name__)

COOKIE_PREFIX = "eqc_review_"  # + the server's id: one cookie per review server
SEVERAL = "several"  # the queue filter for names with more than one stored candidate
LOCAL = "local"  # the queue filter for names with a local candidate (the review band, overruled local answers)
PAGE_SIZE = 100
MAX_PAGE = 1_000_000  # a page number beyond this is a wrong request, not an empty page
_MAX_BODY = 64 * 1024
_DECISION_ID = re.compile(r"[0-9]{1,18}")
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" would turn the Origin of our own POSTs into "null"
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class BadRequest(Exception):
    """A request that is merely wrong: answered with `status` and the message, never a 500."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ReviewState:
    store: IndexStore
    access: EqcAccess
    url_token: str | None  # the printed URL's token, until its first use
    server_id: str
    allowed_hosts: set[str]
    scope_keys: frozenset[str] | None = None
    scope_label: str = ""
    page_size: int = PAGE_SIZE
    decider: Decider = field(init=False)
    searcher: EqcSearcher = field(init=False)
    session: str | None = None  # the cookie's secret, made when the URL's token is used
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # the last search per name, shown once
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)  # the last typed-id check per name
    notice_html: str = ""
    os_user: str | None = None

    def __post_init__(self) -> None:
        self.decider = Decider(self.store, os_user=self.os_user, page=self.server_id)
        self.searcher = EqcSearcher(self.store, self.access)

    @property
    def base(self) -> str:
        """The page's own path: every route, link and the cookie live under it."""
        return f"/{self.server_id}/"

    @property
    def cookie_name(self) -> str:
        return COOKIE_PREFIX + self.server_id

    @property
    def allowed_origins(self) -> set[str]:
        return {f"http://{host}" for host in self.allowed_hosts}

    def take_url_token(self, given: str) -> bool:
        """True once: for the printed URL's token on its first use (then it is spent)."""
        if self.url_token is None or not _same(given, self.url_token):
            return False
        self.url_token = None
        self.session = secrets.token_urlsafe(32)
        return True

    def in_session(self, request: Request) -> bool:
        return self.session is not None and _same(request.cookies.get(self.cookie_name, ""), self.session)


def create_app(
    store: IndexStore,
    access: EqcAccess,
    *,
    session_token: str,
    allowed_hosts: Sequence[str],
    server_id: str | None = None,
    scope_keys: frozenset[str] | None = None,
    scope_label: str = "",
    page_size: int = PAGE_SIZE,
    os_user: str | None = None,
) -> Starlette:
    """The app; `session_token` is the printed URL's one-time token, `allowed_hosts` the `host:port` values the
    Host header may carry (the server's own), `server_id` names the page's path and cookie."""
    if len(session_token) < 16:
        raise ValueError("a session token needs at least 16 characters")
    state = ReviewState(
        store, access, session_token, server_id or secrets.token_hex(8), set(allowed_hosts), scope_keys,
        scope_label, page_size, os_user=os_user,
    )  # fmt: skip
    base = state.base
    routes = [
        Route(base, _endpoint(state, _index), methods=["GET"]),
        Route(f"{base}static/review.css", _static(CSS, "text/css"), methods=["GET"]),
        Route(f"{base}static/review.js", _static(JS, "text/javascript"), methods=["GET"]),
        Route(f"{base}slot", _endpoint(state, _slot), methods=["GET"]),
        Route(f"{base}conflicts", _endpoint(state, _conflicts), methods=["GET"]),
        Route(f"{base}decide", _endpoint(state, _decide), methods=["POST"]),
        Route(f"{base}check", _endpoint(state, _check), methods=["POST"]),
        Route(f"{base}search", _endpoint(state, _search), methods=["POST"]),
        Route(f"{base}undo", _endpoint(state, _undo), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, state=state)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.review = state
    return app


# --- the guard: host, path, session, origin; every answer with the headers ---------------------------------


class _Guard(BaseHTTPMiddleware):
    def __init__(self, app: Any, state: ReviewState) -> None:
        super().__init__(app)
        self._state = state

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        try:
            response = await self._check(request, call_next)
        except BadRequest as exc:
            response = _error(exc.status, str(exc))
        except IndexStoreError as exc:
            response = _error(503, f"the index cannot be used now: {exc}")
        except Exception:  # an error of ours: logged in full, answered like any other page (headers included)
            _log.exception("review page: %s %s failed", request.method, request.url.path)
            response = _error(500, "the review page failed on this request; the terminal running it says why")
        response.headers.update(_HEADERS)
        return response

    async def _check(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        state = self._state
        if request.headers.get("host", "") not in state.allowed_hosts:
            return _error(403, "this page answers only under the address eqc-enrich review printed")
        if not request.url.path.startswith(state.base):
            return _error(404, "nothing here: open the URL eqc-enrich review printed")
        if any("\x00" in k or "\x00" in v for k, v in request.query_params.multi_items()):
            raise BadRequest("a NUL character in the address")
        given = request.query_params.get("token")
        if given is not None and request.method == "GET":
            return self._trade(request, given)
        if not state.in_session(request):
            return _error(403, "no session: open the URL eqc-enrich review printed (it carries the token)")
        if request.method != "GET":
            origin = request.headers.get("origin")
            if origin is not None and origin not in state.allowed_origins:
                return _error(403, "a change from another site or address is refused")
            if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return _error(403, "a change from another site is refused")
        return await call_next(request)

    def _trade(self, request: Request, given: str) -> Response:
        """The URL's token, once, for a session cookie; the address then loses the token."""
        state = self._state
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        response = RedirectResponse(request.url.path + (f"?{urlencode(kept)}" if kept else ""), status_code=303)
        if state.take_url_token(given):
            assert state.session is not None
            response.set_cookie(state.cookie_name, state.session, httponly=True, samesite="strict", path=state.base)
            return response
        if state.in_session(request):
            return response  # this browser has the session already: the spent token is only dropped
        if state.url_token is None:
            return _error(403, "this link has been used (it opens the page once): start eqc-enrich review again")
        return _error(403, "wrong session token: open the URL eqc-enrich review printed")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _error(status: int, message: str) -> Response:
    return HTMLResponse(error_page(status, message), status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405, as our error page."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "error"
    return _error(status, str(detail))


# --- endpoints -------------------------------------------------------------------------------------------------

Handler = Callable[[ReviewState, Request], Awaitable[Response]]


def _endpoint(state: ReviewState, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(state, request)

    return endpoint


def _static(text: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return Response(text, media_type=f"{media_type}; charset=utf-8")

    return endpoint


async def _index(state: ReviewState, request: Request) -> Response:
    params = request.query_params
    html = await asyncio.to_thread(
        render_queue,
        state,
        kind=params.get("kind", ""),
        status=params.get("status", ""),
        search=params.get("q", "").strip(),
        page=page_number(params.get("page")),
        key=params.get("key", ""),
    )
    return HTMLResponse(html)


def page_number(text: str | None) -> int:
    """The queue's page from the address: 1 when absent; a BadRequest unless a number from 1 to MAX_PAGE."""
    if not text:
        return 1
    if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_PAGE)) or not 1 <= int(text) <= MAX_PAGE:
        raise BadRequest(f"no such page of the queue: {text[:20]!r} (pages are numbered 1 to {MAX_PAGE:,})")
    return int(text)


def render_queue(state: ReviewState, *, kind: str, status: str, search: str, page: int, key: str) -> str:
    store, scope = state.store, state.scope_keys
    counts = store.unsettled.counts(keys=scope)
    kinds = [kind] if kind in KINDS else None
    if kind in (SEVERAL, LOCAL):  # not kinds of their own: names with several candidates, or a local one
        chosen = with_several_candidates(store) if kind == SEVERAL else with_local_candidate(store)
        scope = chosen & scope if scope is not None else chosen
    statuses = [status] if status else None
    size = state.page_size
    names = store.unsettled.open_names(
        kinds=kinds, statuses=statuses, search=search or None, keys=scope, limit=size + 1, offset=(page - 1) * size
    )
    more = len(names) > size
    names = names[:size]
    narrowed = search or (kind in (SEVERAL, LOCAL) and kind)
    total = _total(counts, kinds, statuses, narrowed, page, size, more, len(names))
    view = QueueView(
        names, counts=counts, candidates=candidate_counts(store, [n.lookup_key for n in names]), base=state.base,
        kind=kind if kinds or kind in (SEVERAL, LOCAL) else "", status=status, search=search, page=page,
        page_size=size, total=total, local=local_candidates(store, [n.lookup_key for n in names]),
    )  # fmt: skip
    selected: UnsettledName | None = store.unsettled.get(key) if key else (names[0] if names else None)
    notice, state.notice_html = state.notice_html, ""
    if selected is not None and selected.settled and not notice:
        notice = say("settled: {how}", how=f"{selected.settled_source} {selected.settled_company_id or ''}".strip())
    detail = Detail(
        selected, seen=state.decider.state(selected.lookup_key).tag if selected else "",
        next_key=_next_key(names, selected),
        candidates=candidates_of(store, selected.lookup_key, weak_id=selected.candidate_id) if selected else [],
        slot_s=_slot_s(state), search_answer=state.answers.pop(selected.lookup_key, None) if selected else None,
        id_check=state.checks.pop(selected.lookup_key, None) if selected else None, can_check=state.access.can_ask,
        notice_html=notice,
    )  # fmt: skip
    decisions = store.decisions.latest(limit=10)
    return review_page(
        view, detail, decisions=decisions, page_id=state.decider.page, scope=state.scope_label,
        conflicts=store.conflicts.count(),
    )  # fmt: skip


def _next_key(names: Sequence[UnsettledName], selected: UnsettledName | None) -> str:
    """Where the page goes once the selected name is decided: the next one in the queue (else the previous)."""
    keys = [n.lookup_key for n in names]
    if selected is None or selected.lookup_key not in keys:
        return ""
    at = keys.index(selected.lookup_key)
    return keys[at + 1] if at + 1 < len(keys) else (keys[at - 1] if at > 0 else "")


def _total(
    counts: dict[str, int], kinds: list[str] | None, statuses: list[str] | None, search: str | bool, page: int,
    size: int, more: bool, shown: int,
) -> int:  # fmt: skip
    """How many names match, from the counts where they say it; else as far as this page shows."""
    if not search and not (kinds and statuses):
        if kinds:
            return counts.get(f"kind:{kinds[0]}", 0)
        if statuses:
            return counts.get(f"status:{statuses[0]}", 0)
        return sum(n for k, n in counts.items() if k.startswith("kind:"))
    return (page - 1) * size + shown + (1 if more else 0)


def _slot_s(state: ReviewState) -> float:
    try:
        return seconds_to_next_slot(state.store, state.access)
    except EqcEnrichError:
        return 0.0


async def _conflicts(state: ReviewState, request: Request) -> Response:
    listed = await asyncio.to_thread(state.store.conflicts.listing)
    return HTMLResponse(conflicts_page(listed, state.base))


async def _slot(state: ReviewState, request: Request) -> Response:
    return JSONResponse({"seconds": round(await asyncio.to_thread(_slot_s, state), 1)})


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise BadRequest(f"a form of more than {_MAX_BODY // 1024} KiB", status=413)
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    form = {k: v[0] for k, v in parsed.items()}
    if any("\x00" in k or "\x00" in v for k, v in form.items()):
        raise BadRequest("a NUL character in the form")
    return form


def _back(state: ReviewState, form: dict[str, str], key: str) -> RedirectResponse:
    params = {k: form.get(k, "") for k in ("kind", "status", "q", "page")}
    params["key"] = key
    kept = {k: v for k, v in params.items() if v and not (k == "page" and v == "1")}
    return RedirectResponse(state.base + ("?" + urlencode(kept) if kept else ""), status_code=303)


async def _decide(state: ReviewState, request: Request) -> Response:
    form = await _form(request)
    key, decision, seen = form.get("key", ""), form.get("decision", ""), form.get("seen", "")
    decider = state.decider
    try:
        if decision in ("accept", "typed"):
            typed = form.get("company_id", "")
            query = form.get("query") or None
            await asyncio.to_thread(decider.set_id, key, typed, decision=decision, query=query, seen=seen)
            company_id = (eqc_company_id(typed) or typed) if decision == "typed" else typed
            state.notice_html = say("{key}: {id} saved to the index (manual)", key=key, id=company_id)
        elif decision == "not_a_company":
            await asyncio.to_thread(decider.not_a_company, key, seen=seen)
            state.notice_html = say("{key}: not a company (runs will never ask it)", key=key)
        elif decision == "skip":
            await asyncio.to_thread(decider.skip, key, seen=seen)
            state.notice_html = say("{key}: skipped", key=key)
        else:
            raise BadRequest(f"unknown decision {decision[:40]!r}")
    except DecisionRefused as exc:
        state.notice_html = say("{key}: {reason}; nothing saved", key=exc.key, reason=exc.reason)
        return _back(state, form, key)
    except IndexStoreError as exc:
        state.notice_html = say("{message}", message=str(exc))
        return _back(state, form, key)
    state.checks.pop(key, None)
    return _back(state, form, form.get("next") or "")


async def _check(state: ReviewState, request: Request) -> Response:
    """Ask EQC about a typed id (one call, the shared quota): the page shows the company's name before saving."""
    form = await _form(request)
    key, typed = form.get("key", ""), form.get("company_id", "")
    company_id = eqc_company_id(typed)
    if await asyncio.to_thread(state.store.unsettled.get, key) is None:
        state.notice_html = say("{key}: no such name in the queue", key=key)
        return _back(state, form, "")
    if company_id is None:
        state.notice_html = say("{key}: not a company id: {typed}", key=key, typed=typed[:40])
        return _back(state, form, key)
    state.checks[key] = (await state.searcher.confirm(company_id)).as_dict()
    return _back(state, form, key)


async def _undo(state: ReviewState, request: Request) -> Response:
    form = await _form(request)
    wanted = form.get("decision_id", "")
    if wanted and not _DECISION_ID.fullmatch(wanted):
        raise BadRequest(f"no such decision: {wanted[:20]!r}")
    try:
        undone = await asyncio.to_thread(state.decider.undo, int(wanted) if wanted else None)
    except DecisionRefused as exc:
        state.notice_html = say("{key}: {reason}", key=exc.key, reason=exc.reason)
        return _back(state, {}, "")
    if undone is None:
        state.notice_html = say("nothing to undo: this page has no decision left that it made")
        return _back(state, form, "")
    d = undone.decision
    state.notice_html = say("undone: {key} ({what})", key=d.lookup_key, what=d.decision) + say(_UNDONE[undone.entry])
    if d.decision == "not_a_company" and not undone.reopened:
        state.notice_html += say("; the name was settled otherwise since, left as it is")
    return _back(state, {}, d.lookup_key)


_UNDONE = {
    "restored": "; the index entry it had replaced is back",
    "withdrawn": "; the name had no index entry before: its entry is withdrawn (no company id) and runs ask EQC again",
    "kept": "; its index entry was replaced since, left as it is",
    "": "",
}


async def _search(state: ReviewState, request: Request) -> Response:
    form = await _form(request)
    key = form.get("key", "")
    answer = await state.searcher.search(key, form.get("query", "") or key)
    state.answers[key] = answer.as_dict()
    return _back(state, form, key)
