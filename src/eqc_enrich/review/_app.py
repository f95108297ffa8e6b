"""The review page's web app: the queue, one name, decisions and "search EQC", behind a session token.

Like Jupyter's: the URL printed at start carries a random token once (`?token=...`); the page trades it
for an HttpOnly, SameSite=Strict cookie and drops it from the address bar. Every request needs the
session, so other local users and other pages can neither read nor write; every change is a POST whose
Host and Origin must be this server's (no DNS rebinding, no cross-site form). The EQC token stays in
`EqcAccess`, in this process: nothing the app renders or answers carries it.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from eqc_enrich._errors import EqcEnrichError
from eqc_enrich.config import EqcAccess
from eqc_enrich.review._decide import Decider
from eqc_enrich.review._pages import QueueView, conflicts_page, error_page, review_page
from eqc_enrich.review._queue import candidate_counts, candidates_of, with_several_candidates
from eqc_enrich.review._search import EqcSearcher, seconds_to_next_slot
from eqc_enrich.review._static import CSS, JS
from eqc_enrich.store import KINDS, IndexStore, UnsettledName

__all__ = ["COOKIE", "PAGE_SIZE", "ReviewState", "create_app", "render_queue"]

COOKIE = "eqc_review_session"
SEVERAL = "several"  # the queue filter for names with more than one stored candidate
PAGE_SIZE = 100
_MAX_BODY = 64 * 1024
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


@dataclass
class ReviewState:
    store: IndexStore
    access: EqcAccess
    session_token: str
    allowed_hosts: set[str]
    scope_keys: frozenset[str] | None = None
    scope_label: str = ""
    page_size: int = PAGE_SIZE
    decider: Decider = field(init=False)
    searcher: EqcSearcher = field(init=False)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # the last search per name, shown once
    notice: str = ""
    os_user: str | None = None

    def __post_init__(self) -> None:
        self.decider = Decider(self.store, os_user=self.os_user)
        self.searcher = EqcSearcher(self.store, self.access)

    @property
    def allowed_origins(self) -> set[str]:
        return {f"http://{host}" for host in self.allowed_hosts}


def create_app(
    store: IndexStore,
    access: EqcAccess,
    *,
    session_token: str,
    allowed_hosts: Sequence[str],
    scope_keys: frozenset[str] | None = None,
    scope_label: str = "",
    page_size: int = PAGE_SIZE,
    os_user: str | None = None,
) -> Starlette:
    """The app; `allowed_hosts` are the `host:port` values the Host header may carry (the server's own)."""
    if len(session_token) < 16:
        raise ValueError("a session token needs at least 16 characters")
    state = ReviewState(
        store, access, session_token, set(allowed_hosts), scope_keys, scope_label, page_size, os_user=os_user
    )
    routes = [
        Route("/", _endpoint(state, _index), methods=["GET"]),
        Route("/static/review.css", _static(CSS, "text/css"), methods=["GET"]),
        Route("/static/review.js", _static(JS, "text/javascript"), methods=["GET"]),
        Route("/slot", _endpoint(state, _slot), methods=["GET"]),
        Route("/conflicts", _endpoint(state, _conflicts), methods=["GET"]),
        Route("/decide", _endpoint(state, _decide), methods=["POST"]),
        Route("/search", _endpoint(state, _search), methods=["POST"]),
        Route("/undo", _endpoint(state, _undo), methods=["POST"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Guard, state=state)])
    app.state.review = state
    return app


# --- the guard: host, session, origin ----------------------------------------------------------------------


class _Guard(BaseHTTPMiddleware):
    def __init__(self, app: Any, state: ReviewState) -> None:
        super().__init__(app)
        self._state = state

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await self._check(request, call_next)
        response.headers.update(_HEADERS)
        return response

    async def _check(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        state = self._state
        if request.headers.get("host", "") not in state.allowed_hosts:
            return _refused("this page answers only under the address eqc-enrich review printed")
        given = request.query_params.get("token")
        if given is not None and request.method == "GET":
            if not _same(given, state.session_token):
                return _refused("wrong session token: open the URL eqc-enrich review printed")
            kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(kept)}" if kept else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, state.session_token, httponly=True, samesite="strict", path="/")
            return response
        if not _same(request.cookies.get(COOKIE, ""), state.session_token):
            return _refused("no session: open the URL eqc-enrich review printed (it carries the token)")
        if request.method != "GET":
            origin = request.headers.get("origin")
            if origin is not None and origin not in state.allowed_origins:
                return _refused("a change from another site or address is refused")
            if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return _refused("a change from another site is refused")
        return await call_next(request)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _refused(message: str) -> Response:
    return HTMLResponse(error_page(403, message), status_code=403)


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
        page=_int(params.get("page"), 1),
        key=params.get("key", ""),
    )
    return HTMLResponse(html)


def render_queue(state: ReviewState, *, kind: str, status: str, search: str, page: int, key: str) -> str:
    store, scope = state.store, state.scope_keys
    counts = store.unsettled.counts(keys=scope)
    kinds = [kind] if kind in KINDS else None
    if kind == SEVERAL:  # not a kind of its own: the names with more than one stored candidate
        several = with_several_candidates(store)
        scope = several & scope if scope is not None else several
    statuses = [status] if status else None
    size = state.page_size
    names = store.unsettled.open_names(
        kinds=kinds, statuses=statuses, search=search or None, keys=scope, limit=size + 1, offset=(page - 1) * size
    )
    more = len(names) > size
    names = names[:size]
    total = _total(counts, kinds, statuses, search or (kind == SEVERAL and "several"), page, size, more, len(names))
    view = QueueView(
        names, counts=counts, candidates=candidate_counts(store, [n.lookup_key for n in names]),
        kind=kind if kinds or kind == SEVERAL else "", status=status, search=search, page=page, page_size=size,
        total=total,
    )  # fmt: skip
    selected: UnsettledName | None = store.unsettled.get(key) if key else (names[0] if names else None)
    keys = [n.lookup_key for n in names]
    next_key = ""
    if selected is not None and selected.lookup_key in keys:
        at = keys.index(selected.lookup_key)
        next_key = keys[at + 1] if at + 1 < len(keys) else (keys[at - 1] if at > 0 else "")
    notice, state.notice = state.notice, ""
    if selected is not None and selected.settled and not notice:
        notice = f"settled: {selected.settled_source} {selected.settled_company_id or ''}".strip()
    candidates = candidates_of(store, selected.lookup_key, weak_id=selected.candidate_id) if selected else []
    return review_page(
        view, selected, next_key=next_key, candidates=candidates, decisions=store.decisions.latest(limit=10),
        slot_s=_slot_s(state), search_answer=state.answers.pop(selected.lookup_key, None) if selected else None,
        notice=notice or ("" if selected else "Nothing left to settle."), scope=state.scope_label,
        conflicts=store.conflicts.count(),
    )  # fmt: skip


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
    return HTMLResponse(conflicts_page(listed))


async def _slot(state: ReviewState, request: Request) -> Response:
    return JSONResponse({"seconds": round(await asyncio.to_thread(_slot_s, state), 1)})


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_BODY:
        return {}
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _back(form: dict[str, str], key: str) -> RedirectResponse:
    params = {k: form.get(k, "") for k in ("kind", "status", "q", "page")}
    params["key"] = key
    kept = {k: v for k, v in params.items() if v and not (k == "page" and v == "1")}
    return RedirectResponse("/?" + urlencode(kept) if kept else "/", status_code=303)


async def _decide(state: ReviewState, request: Request) -> Response:
    form = await _form(request)
    key, decision = form.get("key", ""), form.get("decision", "")
    decider = state.decider
    try:
        if decision in ("accept", "typed"):
            query = form.get("query") or None
            await asyncio.to_thread(decider.set_id, key, form.get("company_id", ""), decision=decision, query=query)
            state.notice = f"{key}: {form.get('company_id', '').strip()} saved to the index (manual)"
        elif decision == "not_a_company":
            await asyncio.to_thread(decider.not_a_company, key)
            state.notice = f"{key}: not a company (runs will never ask it)"
        elif decision == "skip":
            await asyncio.to_thread(decider.skip, key)
            state.notice = f"{key}: skipped"
        else:
            return HTMLResponse(error_page(400, f"unknown decision {decision!r}"), status_code=400)
    except EqcEnrichError as exc:
        state.notice = str(exc)
        return _back(form, key)
    return _back(form, form.get("next") or "")


async def _undo(state: ReviewState, request: Request) -> Response:
    form = await _form(request)
    wanted = form.get("decision_id")
    undone = await asyncio.to_thread(state.decider.undo, int(wanted) if wanted and wanted.isdigit() else None)
    if undone is None:
        state.notice = "nothing to undo"
        return _back(form, "")
    d = undone.decision
    state.notice = f"undone: {d.lookup_key} ({d.decision})" + (
        "" if undone.reopened or d.decision == "skip" else "; the name was settled otherwise since, left as it is"
    )
    return _back({}, d.lookup_key)


async def _search(state: ReviewState, request: Request) -> Response:
    form = await _form(request)
    key = form.get("key", "")
    answer = await state.searcher.search(key, form.get("query", "") or key)
    state.answers[key] = answer.as_dict()
    return _back(form, key)


def _int(text: str | None, default: int) -> int:
    try:
        return max(1, int(text or default))
    except ValueError:
        return default
