"""The page as server-rendered HTML: every value escaped, Chinese data marked `lang="zh-CN"`.

One layout: the queue on the left (a page of it, most rows first), the selected name on the right with
its rows, what EQC answered before, the "search EQC" form and the decisions. Plain forms that POST and
redirect work without JavaScript; `review.js` adds the one-key shortcuts the page lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from eqc_enrich.store import Conflict, Decision, UnsettledName

__all__ = ["KEYS_HELP", "QueueView", "conflicts_page", "error_page", "review_page"]

KEYS_HELP = (
    ("j / ↓", "next name"),
    ("k / ↑", "previous name"),
    ("1-9", "choose a candidate"),
    ("a", "accept the chosen candidate"),
    ("n", "not a company"),
    ("i", "type a company id"),
    ("s", "skip"),
    ("u", "undo the last decision"),
    ("/", "search EQC (edit the query)"),
)
"""The shortcuts, as the page lists them (review.js binds the same keys)."""

WHAT = {
    "temporary": "temporary id",
    "low_confidence": "low confidence",
    "not_found": "EQC did not know it",
    "failed": "failed",
    "not_asked": "not asked",
    "too_long": "name too long",
    "weak_match": "weak match",
    "several": "several candidates",
}
_PLAN_COLUMNS = ("计划代码", "plan_code")


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def zh(value: object, tag: str = "span", cls: str = "") -> str:
    """Chinese data in an element of its own language, so the browser picks a Chinese font for it."""
    klass = f' class="{cls}"' if cls else ""
    return f'<{tag} lang="zh-CN"{klass}>{e(value)}</{tag}>'


class QueueView:
    """One page of the queue with the filters that made it, and how to link within it."""

    def __init__(
        self,
        names: Sequence[UnsettledName],
        *,
        counts: Mapping[str, int],
        candidates: Mapping[str, int],
        kind: str,
        status: str,
        search: str,
        page: int,
        page_size: int,
        total: int,
    ) -> None:
        self.names = names
        self.counts = counts
        self.candidates = candidates
        self.kind, self.status, self.search = kind, status, search
        self.page, self.page_size, self.total = page, page_size, total

    def link(self, **changes: object) -> str:
        params: dict[str, object] = {"kind": self.kind, "status": self.status, "q": self.search, "page": self.page}
        params.update(changes)
        kept = {k: v for k, v in params.items() if v not in ("", None, 0) or (k == "page" and v)}
        return "/?" + urlencode(kept) if kept else "/"

    def filters(self) -> dict[str, str]:
        return {"kind": self.kind, "status": self.status, "q": self.search, "page": str(self.page)}

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def _head(title: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{e(title)}</title><link rel="stylesheet" href="/static/review.css">'
        '<script src="/static/review.js" defer></script></head>'
    )


def error_page(status: int, message: str) -> str:
    body = f'<main class="error"><h1>{status}</h1><p>{e(message)}</p></main>'
    return f"{_head('eqc-enrich review')}<body>{body}</body></html>"


def review_page(
    view: QueueView,
    selected: UnsettledName | None,
    *,
    next_key: str,
    candidates: Sequence[Mapping[str, Any]],
    decisions: Sequence[Decision],
    slot_s: float,
    search_answer: Mapping[str, Any] | None,
    notice: str,
    scope: str,
    conflicts: int = 0,
) -> str:
    parts = [
        _head("eqc-enrich review"),
        "<body>",
        _header(view, scope, conflicts),
        '<div class="layout">',
        _queue(view, selected),
        _detail(view, selected, next_key, candidates, slot_s, search_answer, notice),
        "</div>",
        _footer(decisions),
        "</body></html>",
    ]
    return "".join(parts)


def conflicts_page(conflicts: Sequence[Conflict]) -> str:
    """Former names that point at two companies: no row is answered from them, and none is written again."""
    rows = "".join(
        f"<tr><td>{zh(c.lookup_key)}</td><td>{e(', '.join(c.company_ids))}</td><td>{e(c.found_by)}</td>"
        f"<td>{e(_when(c.first_seen_at))}</td><td>{e(_when(c.last_seen_at))}</td></tr>"
        for c in conflicts
    )
    body = (
        '<main class="conflicts"><p><a href="/">back to the names to settle</a></p>'
        "<h1>Former names that point at two companies</h1>"
        "<p>EQC (or the index) gave each of these former names to more than one company. None of them answers "
        "a row any more: a row with such a name goes on to EQC. They are never written to the index again.</p>"
        '<table id="conflicts"><thead><tr><th>former name</th><th>company ids</th><th>found by</th>'
        "<th>first seen</th><th>last seen</th></tr></thead>"
        f"<tbody>{rows or '<tr><td colspan=5>None.</td></tr>'}</tbody></table></main>"
    )
    return f"{_head('eqc-enrich review: former-name conflicts')}<body>{body}</body></html>"


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _header(view: QueueView, scope: str, conflicts: int = 0) -> str:
    c = view.counts
    left = sum(n for k, n in c.items() if k.startswith("kind:"))
    badges = "".join(
        f'<a class="count" href="{e(view.link(kind=k.split(":", 1)[1], status="", page=1))}">'
        f"{e(WHAT.get(k.split(':', 1)[1], k))} <b>{n:,}</b></a>"
        for k, n in sorted(c.items())
        if k.startswith("kind:")
    ) + "".join(
        f'<a class="count" href="{e(view.link(status=k.split(":", 1)[1], kind="", page=1))}">'
        f"{e(WHAT.get(k.split(':', 1)[1], k))} <b>{n:,}</b></a>"
        for k, n in sorted(c.items())
        if k.startswith("status:")
    )
    keys = "".join(f"<li><kbd>{e(k)}</kbd> {e(what)}</li>" for k, what in KEYS_HELP)
    return (
        "<header><h1>Names to settle</h1>"
        f'<p class="left" id="left"><b>{left:,}</b> left, {c.get("settled", 0):,} settled'
        f"{' · ' + e(scope) if scope else ''}</p>"
        f'<nav class="counts"><a class="count" href="/">all</a>{badges}'
        f'<a class="count" id="several" href="{e(view.link(kind="several", status="", page=1))}">several candidates</a>'
        f'<a class="count" id="conflicts-link" href="/conflicts">former names on two companies <b>{conflicts:,}</b></a>'
        "</nav>"
        f'<form class="filter" method="get" action="/"><input type="hidden" name="kind" value="{e(view.kind)}">'
        f'<input type="hidden" name="status" value="{e(view.status)}">'
        f'<input type="search" name="q" id="filter" lang="zh-CN" placeholder="filter names" value="{e(view.search)}">'
        '<button type="submit">filter</button></form>'
        f'<ul class="keys" id="keys">{keys}</ul></header>'
    )


def _queue(view: QueueView, selected: UnsettledName | None) -> str:
    rows = []
    first = (view.page - 1) * view.page_size
    for i, name in enumerate(view.names):
        chosen = selected is not None and name.lookup_key == selected.lookup_key
        what = WHAT.get(name.kind, name.kind)
        status = WHAT.get(name.status, name.status)
        n = view.candidates.get(name.lookup_key, 0)
        several = f'<span class="tag several">{n} candidates</span>' if n > 1 else ""
        rows.append(
            f'<tr class="name{" chosen" if chosen else ""}" data-key="{e(name.lookup_key)}">'
            f'<td class="rank">{first + i + 1}</td>'
            f'<td><a href="{e(view.link(key=name.lookup_key))}">{zh(name.display_name or name.lookup_key)}</a></td>'
            f'<td class="rows">{name.rows:,}</td>'
            f'<td><span class="tag {e(name.kind)}">{e(what)}</span> <span class="tag">{e(status)}</span>{several}</td>'
            "</tr>"
        )
    pager = ""
    if view.pages > 1:
        prev = f'<a id="prev-page" href="{e(view.link(page=view.page - 1))}">← previous</a>' if view.page > 1 else ""
        nxt = (
            f'<a id="next-page" href="{e(view.link(page=view.page + 1))}">next →</a>' if view.page < view.pages else ""
        )
        pager = f'<p class="pager">{prev} page {view.page:,} of {view.pages:,} {nxt}</p>'
    empty = '<p class="empty">Nothing left to settle here.</p>' if not view.names else ""
    return (
        '<section class="queue"><table id="queue"><thead><tr><th>#</th><th>name</th><th>rows</th><th>what</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>{empty}{pager}</section>"
    )


def _detail(
    view: QueueView,
    name: UnsettledName | None,
    next_key: str,
    candidates: Sequence[Mapping[str, Any]],
    slot_s: float,
    answer: Mapping[str, Any] | None,
    notice: str,
) -> str:
    if name is None:
        return f'<section class="detail"><p class="notice">{e(notice)}</p></section>'
    key = name.lookup_key
    hidden = "".join(
        f'<input type="hidden" name="{e(k)}" value="{e(v)}">'
        for k, v in {**view.filters(), "key": key, "next": next_key}.items()
    )
    facts = [
        ("key", zh(key)),
        ("rows", f"{name.rows:,}"),
        ("what", e(f"{WHAT.get(name.kind, name.kind)} · {WHAT.get(name.status, name.status)}")),
    ]
    if name.temp_id:
        facts.append(("temporary id", e(name.temp_id)))
    if name.assets is not None:
        facts.append(("assets", f"{name.assets:,.2f}"))
    if name.reason:
        facts.append(("why", zh(name.reason)))
    dl = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
    return (
        f'<section class="detail" id="detail" data-key="{e(key)}">'
        + (f'<p class="notice" id="notice">{e(notice)}</p>' if notice else "")
        + f'<h2>{zh(name.display_name or key)}</h2><dl class="facts">{dl}</dl>'
        + _candidates(candidates, name, hidden, answer["query"] if answer else "")
        + _search(key, answer["query"] if answer else (name.display_name or key), hidden, slot_s, answer)
        + _decide_forms(hidden)
        + _sample(name.sample)
        + "</section>"
    )


def _sample(sample: Sequence[Mapping[str, Any]]) -> str:
    if not sample:
        return '<h3>Rows</h3><p class="empty">No sample rows recorded.</p>'
    columns = list(sample[0])
    columns.sort(key=lambda c: (c not in _PLAN_COLUMNS,))  # the plan code first: it says whose rows these are
    head = "".join(f"<th>{zh(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{zh(row.get(c))}</td>" for c in columns) + "</tr>" for row in sample)
    return (
        '<h3>Rows (a sample)</h3><div class="scroll"><table class="sample">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _candidates(candidates: Sequence[Mapping[str, Any]], name: UnsettledName, hidden: str, query: str) -> str:
    if not candidates:
        return '<h3>What EQC answered before</h3><p class="empty" id="no-candidates">No stored candidate.</p>'
    rows = []
    for i, c in enumerate(candidates):
        weak = " (the run's weak answer)" if c["company_id"] == name.candidate_id else ""
        former = "、".join(c["former_names"]) or "—"
        confidence = f"{c['confidence']:.2f}" if c["confidence"] is not None else "—"
        rows.append(
            f'<tr class="candidate{" chosen" if i == 0 else ""}" data-index="{i + 1}">'
            f'<td class="rank">{i + 1}</td><td>{zh(c["full_name"])}{e(weak)}</td>'
            f'<td class="cid">{e(c["company_id"])}</td><td>{zh(c["match_type"])} {confidence}</td>'
            f"<td>{e(c['unite_code'])}</td><td>{zh(c['registered_status'] or '—')}</td><td>{zh(former)}</td>"
            f'<td><form method="post" action="/decide" class="accept">{hidden}'
            f'<input type="hidden" name="decision" value="accept">'
            f'<input type="hidden" name="company_id" value="{e(c["company_id"])}">'
            '<button type="submit">accept</button></form></td></tr>'
        )
    return (
        '<h3>What EQC answered before</h3><table class="candidates" id="candidates"><thead><tr>'
        "<th>#</th><th>company</th>"
        "<th>company id</th><th>match</th><th>unified credit code</th><th>registered status</th><th>former names</th>"
        f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _search(key: str, query: str, hidden: str, slot_s: float, answer: Mapping[str, Any] | None) -> str:
    result = ""
    if answer is not None:
        hits = len(answer.get("hits", []))
        said = {
            "found": f"EQC answered {hits} candidate(s) for “{answer['query']}”",
            "not_found": f"EQC does not know “{answer['query']}”",
        }.get(answer["status"], f"{answer['status']}: {answer.get('message') or ''}")
        result = f'<p class="answer" id="search-answer" lang="zh-CN">{e(said)}</p>'
    wait = f"next EQC slot in {slot_s:.0f} s" if slot_s >= 0.5 else "an EQC slot is free now"
    return (
        f'<h3>Search EQC</h3><form method="post" action="/search" class="search" id="search-form">{hidden}'
        f'<input type="text" name="query" id="query" lang="zh-CN" value="{e(query)}" size="40">'
        '<button type="submit">search EQC</button>'
        f'<span class="slot" id="slot" data-seconds="{slot_s:.1f}">{e(wait)}</span></form>{result}'
    )


def _decide_forms(hidden: str) -> str:
    return (
        '<h3>Decide</h3><div class="decide">'
        f'<form method="post" action="/decide" id="typed-form">{hidden}'
        '<input type="hidden" name="decision" value="typed">'
        '<input type="text" name="company_id" id="company-id" placeholder="company id" size="16">'
        '<button type="submit">set this id</button></form>'
        f'<form method="post" action="/decide" id="not-company-form">{hidden}'
        '<input type="hidden" name="decision" value="not_a_company"><button type="submit">not a company</button></form>'
        f'<form method="post" action="/decide" id="skip-form">{hidden}'
        '<input type="hidden" name="decision" value="skip"><button type="submit">skip</button></form>'
        "</div>"
    )


_DECISION_WORDS = {"accept": "accepted", "typed": "typed", "not_a_company": "not a company", "skip": "skipped"}


def _footer(decisions: Sequence[Decision]) -> str:
    rows = []
    for d in decisions:
        state = "undone" if d.undone_at is not None else ""
        undo = (
            f'<form method="post" action="/undo"><input type="hidden" name="decision_id" value="{d.id}">'
            '<button type="submit">undo</button></form>'
            if d.undone_at is None
            else ""
        )
        rows.append(
            f'<li class="decision {state}">{zh(d.lookup_key)} — {e(_DECISION_WORDS.get(d.decision, d.decision))}'
            f"{' ' + e(d.company_id) if d.company_id else ''} · {e(d.os_user)} · "
            f"{e(d.decided_at.strftime('%Y-%m-%d %H:%M:%S'))}{' · undone' if state else ''} {undo}</li>"
        )
    body = "".join(rows) or '<li class="empty">No decision yet.</li>'
    return (
        "<footer><h3>Recent decisions</h3>"
        '<form method="post" action="/undo" id="undo-form"><button type="submit">undo the last decision</button></form>'
        f'<ul id="decisions">{body}</ul></footer>'
    )
