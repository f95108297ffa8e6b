"""The page as server-rendered HTML: every value escaped, Chinese data marked `lang="zh-CN"`.

Text from the data (names, sample cells, EQC's answers, a typed id) cannot disguise the page: each value
is isolated in a `<bdi>` (a right-to-left name cannot reorder the words around it), and invisible control
characters in it (U+202E and the other bidirectional controls, zero-width and other format characters,
C0/C1 controls) are shown as visible `U+XXXX` marks instead of acting. Attribute values (a form's key, a
link) keep the exact text.

Every link and form points under the page's own path (`base`, which carries the server's id), where its
session cookie lives.

One layout: the queue on the left (a page of it, most rows first), the selected name on the right with
its rows, what EQC answered before, the "search EQC" form and the decisions. Plain forms that POST and
redirect work without JavaScript; `review.js` adds the one-key shortcuts the page lists.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from html import escape
from string import Formatter
from typing import Any
from urllib.parse import urlencode

from eqc_enrich.store import Conflict, Decision, UnsettledName

__all__ = [
    "KEYS_HELP",
    "LOCAL_MATCH",
    "Detail",
    "QueueView",
    "conflicts_page",
    "error_page",
    "review_page",
    "say",
    "shown",
]

KEYS_HELP = (
    ("j / ↓", "next name"),
    ("k / ↑", "previous name"),
    ("1-9", "choose a candidate"),
    ("a", "accept the chosen candidate"),
    ("n", "not a company"),
    ("i", "type a company id (Enter checks it with EQC, then saves)"),
    ("s", "skip"),
    ("u", "undo the last decision made on this page"),
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
    "match_disagreed": "EQC named another company than a local match",
    "several": "several candidates",
    "local": "local candidate",
}
_PLAN_COLUMNS = ("计划代码", "plan_code")
LOCAL_MATCH = "local match"
"""The match column of a candidate only the local matcher offered."""


_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})  # controls, format characters (bidi, zero-width), line breaks


def attr(value: object) -> str:
    """An attribute value: escaped, otherwise exact (a form's key must come back as it was)."""
    return escape("" if value is None else str(value), quote=True)


def shown(value: object) -> str:
    """Text content: escaped, and every invisible control character shown as a visible `U+XXXX` mark."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return escape(text, quote=True)
    return "".join(
        f'<span class="ctl">U+{ord(ch):04X}</span>' if unicodedata.category(ch) in _HIDDEN else escape(ch, quote=True)
        for ch in text
    )


def zh(value: object, cls: str = "") -> str:
    """A value from the data: isolated (it cannot reorder what is around it), in Chinese (the browser picks a
    Chinese font for it), its control characters visible."""
    klass = f' class="{cls}"' if cls else ""
    return f'<bdi lang="zh-CN"{klass}>{shown(value)}</bdi>'


def say(template: str, **values: object) -> str:
    """A sentence of the page's (`{name}` fields) with values from the data: the HTML of a notice."""
    parts = []
    for literal, field, _, _ in Formatter().parse(template):
        parts.append(escape(literal, quote=True))
        if field is not None:
            parts.append(zh(values[field]))
    return "".join(parts)


class QueueView:
    """One page of the queue with the filters that made it, and how to link within it."""

    def __init__(
        self,
        names: Sequence[UnsettledName],
        *,
        counts: Mapping[str, int],
        candidates: Mapping[str, int],
        base: str,
        kind: str,
        status: str,
        search: str,
        page: int,
        page_size: int,
        total: int,
        local: frozenset[str] = frozenset(),
    ) -> None:
        self.names = names
        self.counts = counts
        self.candidates = candidates
        self.local = local  # names of this page with a local candidate for a person
        self.base = base
        self.kind, self.status, self.search = kind, status, search
        self.page, self.page_size, self.total = page, page_size, total

    def link(self, **changes: object) -> str:
        params: dict[str, object] = {"kind": self.kind, "status": self.status, "q": self.search, "page": self.page}
        params.update(changes)
        kept = {k: v for k, v in params.items() if v not in ("", None, 0) or (k == "page" and v)}
        return self.base + ("?" + urlencode(kept) if kept else "")

    def filters(self) -> dict[str, str]:
        return {"kind": self.kind, "status": self.status, "q": self.search, "page": str(self.page)}

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def _head(title: str, base: str = "") -> str:
    assets = (
        f'<link rel="stylesheet" href="{attr(base)}static/review.css">'
        f'<script src="{attr(base)}static/review.js" defer></script>'
        if base
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{shown(title)}</title>{assets}</head>"
    )


def error_page(status: int, message: str) -> str:
    """An error's page: no stylesheet (it may answer a path outside the page's own), the message in the body."""
    body = f'<main class="error"><h1>{status}</h1><p id="error">{shown(message)}</p></main>'
    return f"{_head('eqc-enrich review')}<body>{body}</body></html>"


class Detail:
    """The selected name and what the page shows beside it."""

    def __init__(
        self,
        name: UnsettledName | None,
        *,
        seen: str,
        next_key: str,
        candidates: Sequence[Mapping[str, Any]],
        slot_s: float,
        search_answer: Mapping[str, Any] | None,
        id_check: Mapping[str, Any] | None,
        can_check: bool,
        notice_html: str,
    ) -> None:
        self.name, self.seen, self.next_key = name, seen, next_key
        self.candidates, self.slot_s = candidates, slot_s
        self.search_answer, self.id_check, self.can_check = search_answer, id_check, can_check
        self.notice_html = notice_html


def review_page(
    view: QueueView,
    detail: Detail,
    *,
    decisions: Sequence[Decision],
    page_id: str,
    scope: str,
    conflicts: int = 0,
) -> str:
    """`page_id`: this page's decisions (the only ones it offers to undo); `conflicts`: former names on two
    companies, linked from the header."""
    parts = [
        _head("eqc-enrich review", view.base),
        "<body>",
        _header(view, scope, conflicts),
        '<div class="layout">',
        _queue(view, detail.name),
        _detail(view, detail),
        "</div>",
        _footer(decisions, view.base, page_id),
        "</body></html>",
    ]
    return "".join(parts)


def conflicts_page(conflicts: Sequence[Conflict], base: str) -> str:
    """Former names that point at two companies: no row is answered from them, and none is written again."""
    rows = "".join(
        f"<tr><td>{zh(c.lookup_key)}</td><td>{shown(', '.join(c.company_ids))}</td><td>{shown(c.found_by)}</td>"
        f"<td>{shown(_when(c.first_seen_at))}</td><td>{shown(_when(c.last_seen_at))}</td></tr>"
        for c in conflicts
    )
    body = (
        f'<main class="conflicts"><p><a href="{attr(base)}">back to the names to settle</a></p>'
        "<h1>Former names that point at two companies</h1>"
        "<p>EQC (or the index) gave each of these former names to more than one company. None of them answers "
        "a row any more: a row with such a name goes on to EQC. They are never written to the index again.</p>"
        '<table id="conflicts"><thead><tr><th>former name</th><th>company ids</th><th>found by</th>'
        "<th>first seen</th><th>last seen</th></tr></thead>"
        f"<tbody>{rows or '<tr><td colspan=5>None.</td></tr>'}</tbody></table></main>"
    )
    return f"{_head('eqc-enrich review: former-name conflicts', base)}<body>{body}</body></html>"


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _header(view: QueueView, scope: str, conflicts: int = 0) -> str:
    c = view.counts
    left = sum(n for k, n in c.items() if k.startswith("kind:"))
    badges = "".join(
        f'<a class="count" href="{attr(view.link(kind=k.split(":", 1)[1], status="", page=1))}">'
        f"{shown(WHAT.get(k.split(':', 1)[1], k))} <b>{n:,}</b></a>"
        for k, n in sorted(c.items())
        if k.startswith("kind:")
    ) + "".join(
        f'<a class="count" href="{attr(view.link(status=k.split(":", 1)[1], kind="", page=1))}">'
        f"{shown(WHAT.get(k.split(':', 1)[1], k))} <b>{n:,}</b></a>"
        for k, n in sorted(c.items())
        if k.startswith("status:")
    )
    keys = "".join(f"<li><kbd>{shown(k)}</kbd> {shown(what)}</li>" for k, what in KEYS_HELP)
    return (
        "<header><h1>Names to settle</h1>"
        f'<p class="left" id="left"><b>{left:,}</b> left, {c.get("settled", 0):,} settled'
        f"{' · ' + zh(scope) if scope else ''}</p>"
        f'<nav class="counts"><a class="count" href="{attr(view.base)}">all</a>{badges}'
        f'<a class="count" id="several" href="{attr(view.link(kind="several", status="", page=1))}">'
        "several candidates</a>"
        f'<a class="count" id="local" href="{attr(view.link(kind="local", status="", page=1))}">'
        "local candidate</a>"
        f'<a class="count" id="conflicts-link" href="{attr(view.base)}conflicts">former names on two companies '
        f"<b>{conflicts:,}</b></a>"
        "</nav>"
        f'<form class="filter" method="get" action="{attr(view.base)}">'
        f'<input type="hidden" name="kind" value="{attr(view.kind)}">'
        f'<input type="hidden" name="status" value="{attr(view.status)}">'
        '<input type="search" name="q" id="filter" lang="zh-CN" placeholder="filter names" '
        f'value="{attr(view.search)}">'
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
        if name.lookup_key in view.local:
            several += '<span class="tag local">local candidate</span>'
        rows.append(
            f'<tr class="name{" chosen" if chosen else ""}" data-key="{attr(name.lookup_key)}">'
            f'<td class="rank">{first + i + 1}</td>'
            f'<td><a href="{attr(view.link(key=name.lookup_key))}">{zh(name.display_name or name.lookup_key)}</a></td>'
            f'<td class="rows">{name.rows:,}</td>'
            f'<td><span class="tag {attr(name.kind)}">{zh(what)}</span> '
            f'<span class="tag">{zh(status)}</span>{several}</td>'
            "</tr>"
        )
    pager = ""
    if view.pages > 1:
        prev = f'<a id="prev-page" href="{attr(view.link(page=view.page - 1))}">← previous</a>' if view.page > 1 else ""
        nxt = (
            f'<a id="next-page" href="{attr(view.link(page=view.page + 1))}">next →</a>'
            if view.page < view.pages
            else ""
        )
        pager = f'<p class="pager">{prev} page {view.page:,} of {view.pages:,} {nxt}</p>'
    empty = '<p class="empty">Nothing left to settle here.</p>' if not view.names else ""
    return (
        '<section class="queue"><table id="queue"><thead><tr><th>#</th><th>name</th><th>rows</th><th>what</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>{empty}{pager}</section>"
    )


def _detail(view: QueueView, detail: Detail) -> str:
    name = detail.name
    notice = f'<p class="notice" id="notice">{detail.notice_html}</p>' if detail.notice_html else ""
    if name is None:
        notice = notice or '<p class="notice" id="notice">Nothing left to settle.</p>'
        return f'<section class="detail">{notice}</section>'
    key = name.lookup_key
    hidden = "".join(
        f'<input type="hidden" name="{attr(k)}" value="{attr(v)}">'
        for k, v in {**view.filters(), "key": key, "next": detail.next_key, "seen": detail.seen}.items()
    )
    facts = [
        ("key", zh(key)),
        ("rows", f"{name.rows:,}"),
        ("what", shown(f"{WHAT.get(name.kind, name.kind)} · {WHAT.get(name.status, name.status)}")),
    ]
    if name.temp_id:
        facts.append(("temporary id", shown(name.temp_id)))
    if name.assets is not None:
        facts.append(("assets", f"{name.assets:,.2f}"))
    if name.reason:
        facts.append(("why", zh(name.reason)))
    dl = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
    answer = detail.search_answer
    return (
        f'<section class="detail" id="detail" data-key="{attr(key)}">'
        + notice
        + f'<h2>{zh(name.display_name or key)}</h2><dl class="facts">{dl}</dl>'
        + _candidates(view.base, detail.candidates, name, hidden)
        + _search(view.base, answer["query"] if answer else (name.display_name or key), hidden, detail.slot_s, answer)
        + _decide_forms(view.base, hidden, detail)
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


def _candidates(base: str, candidates: Sequence[Mapping[str, Any]], name: UnsettledName, hidden: str) -> str:
    local = any("local" in c for c in candidates)
    heading = "What EQC answered before" + (", and the local match" if local else "")
    if not candidates:
        return f'<h3>{heading}</h3><p class="empty" id="no-candidates">No stored candidate.</p>'
    rows = []
    for i, c in enumerate(candidates):
        weak = " (the run's weak answer)" if c["company_id"] == name.candidate_id else ""
        former = "、".join(c["former_names"]) or "—"
        confidence = f"{c['confidence']:.2f}" if c["confidence"] is not None else "—"
        if c["match_type"] == LOCAL_MATCH:  # not EQC's answer: its score is in the label
            confidence = ""
        classes = "candidate" + (" local" if "local" in c else "") + (" chosen" if i == 0 else "")
        rows.append(
            f'<tr class="{classes}" data-index="{i + 1}">'
            f'<td class="rank">{i + 1}</td><td>{zh(c["full_name"])}{shown(weak)}{_local_label(c)}</td>'
            f'<td class="cid">{zh(c["company_id"])}</td><td>{zh(c["match_type"])} {confidence}</td>'
            f"<td>{zh(c['unite_code'])}</td><td>{zh(c['registered_status'] or '—')}</td><td>{zh(former)}</td>"
            f'<td><form method="post" action="{attr(base)}decide" class="accept">{hidden}'
            f'<input type="hidden" name="decision" value="accept">'
            f'<input type="hidden" name="company_id" value="{attr(c["company_id"])}">'
            '<button type="submit">accept</button></form></td></tr>'
        )
    return (
        f'<h3>{heading}</h3><table class="candidates" id="candidates"><thead><tr>'
        "<th>#</th><th>company</th>"
        "<th>company id</th><th>match</th><th>unified credit code</th><th>registered status</th><th>former names</th>"
        f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _local_label(candidate: Mapping[str, Any]) -> str:
    """What the local matcher said of this candidate: its kind, score and lead, and the name it knew it by."""
    local = candidate.get("local")
    if not local:
        return ""
    gap = f", {local['gap']:.2f} ahead of the next company" if local.get("gap") is not None else ""
    also = "also " if candidate["match_type"] != LOCAL_MATCH else ""
    kind = "equivalent" if local["kind"] == "equivalent" else "similar"  # our word, not the data's
    said = say(f"{also}the local match: {kind} {local['score']:.2f}{gap}, known here as {{known}}",
               known=local["known_as"])  # fmt: skip
    return f'<span class="local-match">{said}</span>'


def _search(base: str, query: str, hidden: str, slot_s: float, answer: Mapping[str, Any] | None) -> str:
    result = ""
    if answer is not None:
        hits = len(answer.get("hits", []))
        said = {
            "found": say(f"EQC answered {hits} candidate(s) for “{{query}}”", query=answer["query"]),
            "not_found": say("EQC does not know “{query}”", query=answer["query"]),
        }.get(answer["status"], say(f"{answer['status']}: {{message}}", message=answer.get("message") or ""))
        result = f'<p class="answer" id="search-answer">{said}</p>'
    return (
        f'<h3>Search EQC</h3><form method="post" action="{attr(base)}search" class="search" id="search-form">{hidden}'
        f'<input type="text" name="query" id="query" lang="zh-CN" value="{attr(query)}" size="40">'
        f'<button type="submit">search EQC</button>{_slot(slot_s)}</form>{result}'
    )


def _slot(slot_s: float) -> str:
    wait = f"next EQC slot in {slot_s:.0f} s" if slot_s >= 0.5 else "an EQC slot is free now"
    return f'<span class="slot" id="slot" data-seconds="{slot_s:.1f}">{shown(wait)}</span>'


def _id_check(check: Mapping[str, Any]) -> str:
    """What EQC said of a typed id: its company's name, or that it knows none, or why it was not asked."""
    status = check["status"]
    if status == "found":
        said = say("EQC: {id} is {name}", id=check["company_id"], name=check["company_name"])
        if check.get("registered_status"):
            said += " · " + zh(check["registered_status"])
    elif status == "unknown":
        said = say("EQC knows no company {id}: set it only if you are sure of it", id=check["company_id"])
    else:
        said = say("not checked with EQC ({status}): {message}", status=status, message=check.get("message") or "")
    return f'<p class="answer" id="id-check">{said}</p>'


def _decide_forms(base: str, hidden: str, detail: Detail) -> str:
    check = detail.id_check
    typed = check["company_id"] if check else ""
    check_button = (
        f'<button type="submit" formaction="{attr(base)}check" id="check-id">check with EQC</button>'
        if detail.can_check
        else ""
    )  # first in the form: Enter in the id field checks it when EQC can be asked
    return (
        '<h3>Decide</h3><div class="decide">'
        f'<form method="post" action="{attr(base)}decide" id="typed-form">{hidden}'
        '<input type="hidden" name="decision" value="typed">'
        '<input type="text" name="company_id" id="company-id" placeholder="company id" size="16" '
        f'value="{attr(typed)}">'
        f'{check_button}<button type="submit" id="set-id"{" autofocus" if check else ""}>set this id</button></form>'
        f'<form method="post" action="{attr(base)}decide" id="not-company-form">{hidden}'
        '<input type="hidden" name="decision" value="not_a_company"><button type="submit">not a company</button></form>'
        f'<form method="post" action="{attr(base)}decide" id="skip-form">{hidden}'
        '<input type="hidden" name="decision" value="skip"><button type="submit">skip</button></form>'
        "</div>" + (_id_check(check) if check else "")
    )


_DECISION_WORDS = {"accept": "accepted", "typed": "typed", "not_a_company": "not a company", "skip": "skipped"}


def _footer(decisions: Sequence[Decision], base: str, page_id: str) -> str:
    rows = []
    for d in decisions:
        state = "undone" if d.undone_at is not None else ""
        mine = d.undo is not None and d.undo.page == page_id
        undo = (
            f'<form method="post" action="{attr(base)}undo"><input type="hidden" name="decision_id" value="{d.id}">'
            '<button type="submit">undo</button></form>'
            if d.undone_at is None and mine
            else ""
        )
        rows.append(
            f'<li class="decision {state}" data-id="{d.id}">{zh(d.lookup_key)} — '
            f"{shown(_DECISION_WORDS.get(d.decision, d.decision))}{' ' + zh(d.company_id) if d.company_id else ''} · "
            f"{zh(d.os_user)}{'' if mine else ' (another page)'} · "
            f"{shown(d.decided_at.strftime('%Y-%m-%d %H:%M:%S'))}{' · undone' if state else ''} {undo}</li>"
        )
    body = "".join(rows) or '<li class="empty">No decision yet.</li>'
    return (
        "<footer><h3>Recent decisions</h3>"
        f'<form method="post" action="{attr(base)}undo" id="undo-form">'
        '<button type="submit">undo the last decision made here</button></form>'
        f'<ul id="decisions">{body}</ul></footer>'
    )
