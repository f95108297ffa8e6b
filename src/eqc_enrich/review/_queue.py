"""What the page lists: the open names of the index, or only those of one file, and what is known of each.

A file narrows the queue to its names: an unresolved export (`<stem>.unresolved.csv`, its `name` column
holds the keys) or an input file, whose names are keyed the way a run keys them. Names of the file that no
run has recorded and the index does not answer are recorded now (status not_asked), with their rows and a
sample, so they are on the page too.

Beside EQC's candidates a name shows the local matcher's, where the shadow record keeps one for a person: a
name in the review band (sent to EQC, which left it open: not known, not asked, a weak answer), or a local
answer EQC named another company for. It is one of the candidates `accept` takes, so a person settles such a
name without a search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa

from eqc_enrich._errors import InputError
from eqc_enrich.followup import ASSET_COLUMNS
from eqc_enrich.keys import normalize_name
from eqc_enrich.read import read_table, require_columns
from eqc_enrich.review._pages import LOCAL_MATCH
from eqc_enrich.review._search import candidate_view
from eqc_enrich.store import IndexStore, UnsettledName

__all__ = [
    "UNRESOLVED_COLUMNS", "FileScope", "candidate_counts", "candidates_of", "local_candidates", "scope_of_file",
    "with_local_candidate", "with_several_candidates",
]  # fmt: skip

UNRESOLVED_COLUMNS = ("name", "temporary_id", "rows", "status")
_SAMPLE_ROWS = 5
FILE_RUN_ID = "review-file"


@dataclass(frozen=True, slots=True)
class FileScope:
    path: Path
    keys: frozenset[str]
    recorded: int = 0  # names of the file recorded now (no run had)


def scope_of_file(store: IndexStore, path: Path, *, name_column: str = "客户名称") -> FileScope:
    """The keys of the file's names; records those no run recorded and the index does not answer."""
    frame = read_table(path).frame
    if set(UNRESOLVED_COLUMNS) <= set(frame.columns):
        names = _from_unresolved(frame)
    else:
        require_columns(frame, name_column)
        names = _from_input(frame, name_column)
    if not names:
        raise InputError(f"{path}: no names to review")
    keys = frozenset(n.lookup_key for n in names)
    known = store.unsettled.known(keys)
    recorded = store.unsettled.record([n for n in names if n.lookup_key not in known], FILE_RUN_ID)
    return FileScope(path, keys, recorded)


def _from_unresolved(frame: pl.DataFrame) -> list[UnsettledName]:
    names = []
    for row in frame.iter_rows(named=True):
        key = normalize_name(str(row["name"] or ""))  # a run's keys are fixed points; an edited one is keyed anew
        if key:
            names.append(
                UnsettledName(
                    lookup_key=key,
                    kind="temporary",
                    status=str(row.get("status") or "not_asked"),
                    reason=str(row.get("reason") or ""),
                    rows=int(row.get("rows") or 0),
                    display_name=str(row.get("example_name") or key),
                    temp_id=row.get("temporary_id") or None,
                )
            )
    return names


def _from_input(frame: pl.DataFrame, name_column: str) -> list[UnsettledName]:
    shown = [c for c in frame.columns if not c.startswith("__")]
    text = frame.select(pl.col(shown).cast(pl.String))
    keys = [normalize_name(v) for v in text[name_column]]
    asset_column = next((c for c in ASSET_COLUMNS if c in frame.columns), None)
    assets: list[float | None] = (
        frame[asset_column].cast(pl.String).str.replace_all(",", "").cast(pl.Float64, strict=False).to_list()
        if asset_column is not None
        else [None] * frame.height
    )  # CSV cells arrive as text: "1,234.5" is a number too
    by_key: dict[str, dict[str, Any]] = {}
    for i, key in enumerate(keys):
        if not key:
            continue
        seen = by_key.setdefault(key, {"rows": 0, "sample": [], "assets": None, "display": text[name_column][i]})
        seen["rows"] += 1
        if len(seen["sample"]) < _SAMPLE_ROWS:
            seen["sample"].append(text.row(i, named=True))
        amount = assets[i]
        if amount is not None:
            seen["assets"] = (seen["assets"] or 0.0) + float(amount)
    return [
        UnsettledName(
            lookup_key=key,
            kind="temporary",
            status="not_asked",
            reason="in the file given to the review page",
            rows=seen["rows"],
            display_name=str(seen["display"] or key),
            assets=seen["assets"],
            sample=seen["sample"],
        )
        for key, seen in by_key.items()
    ]


def candidates_of(store: IndexStore, key: str, *, weak_id: str | None = None) -> list[dict[str, Any]]:
    """Every payload stored under this name's key (runs store the best hit, the page every hit), exact
    matches first; the run's weak answer, if any, among them; then the local matcher's candidate kept for a
    person (`local` says its kind and score; on EQC's own candidate when EQC offered the same company)."""
    views = _eqc_candidates(store, key, weak_id)
    row = store.shadow.for_a_person([key]).get(key)
    if row is None:
        return views
    local = {"kind": row.kind, "score": row.score, "gap": row.gap, "known_as": row.candidate_key,
             "origin": row.candidate_origin}  # fmt: skip
    same = next((view for view in views if view["company_id"] == row.candidate_id), None)
    if same is not None:
        same["local"] = local
        return views
    return [*views, {**_company_view(store, row.candidate_id, row.candidate_key), "local": local}]


def _company_view(store: IndexStore, company_id: str, known_as: str) -> dict[str, Any]:
    """The local candidate's company as the page shows a candidate: from a stored EQC answer about it (any
    name's) or its base_info row; its match is the local one, never what EQC said of another name."""
    p = store.tables.payloads
    query = sa.select(p.c.search_json, p.c.depart_json).where(p.c.company_id == company_id).limit(1)
    with store.reading() as conn:
        stored = conn.execute(query).first()
    if stored is not None and isinstance(stored[0], dict):
        view = candidate_view(stored[0], stored[1])
    else:
        record = store.base_info.get(company_id) or {}
        view = {
            "full_name": str(record.get("company_full_name") or known_as),
            "unite_code": str(record.get("unite_code") or ""),
            "registered_status": str(record.get("registered_status") or ""),
            "former_names": [],
        }
    return {**view, "company_id": company_id, "match_type": LOCAL_MATCH, "confidence": None}


def _eqc_candidates(store: IndexStore, key: str, weak_id: str | None) -> list[dict[str, Any]]:
    p = store.tables.payloads
    query = sa.select(p.c.company_id, p.c.search_json, p.c.depart_json).where(p.c.search_key == key)
    if weak_id:
        query = sa.select(p.c.company_id, p.c.search_json, p.c.depart_json).where(
            sa.or_(p.c.search_key == key, p.c.company_id == weak_id)
        )
    with store.reading() as conn:
        rows = conn.execute(query).all()
    views = [candidate_view(search or {"companyId": cid}, depart) for cid, search, depart in rows]
    return sorted(views, key=lambda v: (-(v["confidence"] or 0.0), v["company_id"]))


def local_candidates(store: IndexStore, keys: Sequence[str]) -> frozenset[str]:
    """Which of these names have a local candidate for a person (the queue tags them)."""
    return frozenset(store.shadow.for_a_person(keys)) if keys else frozenset()


def with_local_candidate(store: IndexStore) -> frozenset[str]:
    """Every name with a local candidate for a person (read only when that filter is on)."""
    return frozenset(store.shadow.for_a_person())


def candidate_counts(store: IndexStore, keys: Sequence[str]) -> dict[str, int]:
    """How many stored candidates each of these names has (one query for a page of the queue)."""
    if not keys:
        return {}
    p = store.tables.payloads
    query = sa.select(p.c.search_key, sa.func.count()).where(p.c.search_key.in_(list(keys))).group_by(p.c.search_key)
    with store.reading() as conn:
        return {str(key): int(n) for key, n in conn.execute(query)}


def with_several_candidates(store: IndexStore) -> frozenset[str]:
    """Names with more than one stored candidate: a person has to choose (read only when that filter is on)."""
    p = store.tables.payloads
    query = (
        sa.select(p.c.search_key)
        .where(p.c.search_key.is_not(None))
        .group_by(p.c.search_key)
        .having(sa.func.count() > 1)
    )
    with store.reading() as conn:
        return frozenset(str(row[0]) for row in conn.execute(query))
