"""Stages 1 to 3: read the input, key every distinct name, and answer from the index what it can.

`read_input` gives the table and the columns it offers; `run_index_stage` makes one bulk lookup of every
distinct key (and, for misses, the old key forms), reads the negative cache and the names a person marked,
and returns an `IndexReport`: the answers so far, the names left for the stages after it (most frequent
first, within the budget), and its own counts. A stage that answers names locally goes between this one and
the EQC stage (`match_stage`), taking `IndexReport.askable` and handing on what it could not answer
(`leave_for_eqc`).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from eqc_enrich._errors import InputError
from eqc_enrich.keys import LookupType, is_shortened_key
from eqc_enrich.options import RunOptions
from eqc_enrich.read import Table, read_table, require_columns
from eqc_enrich.resolve import (
    KEYED_NAME,
    NAME_KEY,
    NO_TEMP_ID_KEYS,
    PLAN_NAME_COLUMN,
    PLAN_TYPE_COLUMN,
    Answers,
    Columns,
    LegacyKeys,
    Overrides,
    distinct_keys,
    index_maps,
    learn_existing_ids,
    manual_keys,
    names_for_eqc,
    replaced_columns_note,
    resolve_rows,
    wanted_index_keys,
)
from eqc_enrich.store import IndexEntry, IndexStore, utcnow

__all__ = ["IndexCounts", "IndexReport", "leave_for_eqc", "read_input", "run_index_stage"]


@dataclass(frozen=True, slots=True)
class IndexCounts:
    """The index stage's figures. Distinct names: `answered_before_eqc` of them needed no EQC (the index, an
    id in the input, an override, a known not-found or a person's "no company"); of the rest, `too_long`
    cannot be sent, `over_budget` and `skipped` (no enrichment) are left unasked on purpose, and
    `names_planned` go on to EQC."""

    rows: int = 0
    distinct_names: int = 0
    answered_before_eqc: int = 0
    index_names: int = 0  # names the index answered when the run started (an entry or a known not-found)
    index_hits_by_type: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    negative_cache_hits: int = 0
    not_a_company: int = 0
    too_long: int = 0
    over_budget: int = 0
    skipped: int = 0
    names_planned: int = 0
    normalize_s: float = 0.0
    index_lookup_s: float = 0.0

    @property
    def index_hit_rate(self) -> float:
        """The share of names the index held at the start; no names means it held none of them, not all."""
        return round(self.index_names / self.distinct_names, 4) if self.distinct_names else 0.0


@dataclass(frozen=True)
class IndexReport:
    """Everything before EQC: keys, what the index and the input already answer, the names left for EQC."""

    keyed: pl.DataFrame
    answers: Answers
    pending: list[tuple[str, int]]  # names nothing answered, with their row counts, most frequent first
    eqc_names: list[str]
    negatives: frozenset[str]  # known not-found
    too_long: list[str]
    not_companies: frozenset[str]  # marked so by a person: never asked
    counts: IndexCounts
    entries_since: datetime | None = None  # the cut-offs of this read, for the look again before a name is asked
    negatives_since: datetime = field(default_factory=utcnow)
    askable: tuple[str, ...] = ()  # every name EQC could be asked, most frequent first, before the budget

    @property
    def rows_per_name(self) -> dict[str, int]:
        return dict(self.pending)


INCOME_SHEET = "收入明细"
"""The sheet of WorkDataHub's `annuity_income` domain, where a 单一计划 row without a customer name takes it from
its plan name (`resolve.name_from_plan`); `RunOptions.name_from_plan` turns that on for any input."""


def read_input(source: pl.DataFrame | Any | str | Path, options: RunOptions) -> tuple[Table, Columns, list[str]]:
    """Read the input and settle which columns it offers; a required one missing is an input error."""
    table = _as_table(source, options.sheet, options.max_input_size)
    columns, notes = options.columns.for_frame(table.frame)
    require_columns(table.frame, columns.name, columns.plan, columns.existing_id)
    notes += replaced_columns_note(table.frame, columns, new=[options.id_column, options.source_column])
    columns, more = _names_from_plans(table, columns, options.name_from_plan)
    return table, columns, notes + more


def _names_from_plans(table: Table, columns: Columns, wanted: bool | None) -> tuple[Columns, list[str]]:
    """On when asked (`--name-from-plan`), or for the income sheet unless asked not to."""
    if wanted is False or (wanted is None and table.sheet != INCOME_SHEET):
        return columns, []
    needed = (PLAN_TYPE_COLUMN, PLAN_NAME_COLUMN)
    if wanted is None and any(column not in table.frame.columns for column in needed):
        return columns, [
            f"sheet {INCOME_SHEET} without {' and '.join(needed)}: no customer names taken from plan names"
        ]
    require_columns(table.frame, *needed)
    return replace(columns, plan_type=PLAN_TYPE_COLUMN, plan_name=PLAN_NAME_COLUMN), []


def run_index_stage(
    store: IndexStore, table: Table, columns: Columns, overrides: Overrides, options: RunOptions
) -> IndexReport:
    """Distinct keys, one bulk index lookup, and the names only EQC can answer."""
    started = time.perf_counter()
    read_at = utcnow()
    keyed = distinct_keys(table.frame, columns)
    normalized = time.perf_counter()
    since = read_at - timedelta(seconds=options.refresh_s) if options.refresh_s is not None else None
    # a not-found counts when it is within the TTL; with --retry-not-found, only when another run wrote it
    # after this one read the index
    asked_since = read_at if options.retry_not_found else read_at - timedelta(seconds=options.negative_ttl_s)
    wanted = wanted_index_keys(keyed)
    entries = _without_conflicts(store, store.lookup(wanted, updated_since=since))
    # names the canonical keys miss may sit in the index under the old tools' key forms (read, never written)
    legacy = LegacyKeys.for_misses(keyed, KEYED_NAME, entries)
    old_forms = _without_conflicts(store, store.lookup(legacy.wanted(), updated_since=since))
    negatives: set[str] = set()
    if not options.retry_not_found:
        negatives = store.known_negatives(wanted[LookupType.CUSTOMER_NAME], asked_since=asked_since)
    index = index_maps(entries)
    answers = Answers(
        overrides=overrides, index=index, manual=manual_keys(entries), learned=learn_existing_ids(keyed),
        legacy=legacy.answers(old_forms),
    )  # fmt: skip
    pre = resolve_rows(keyed, answers, id_column="__pre_id", source_column="__pre_source")
    pending = names_for_eqc(pre, id_column="__pre_id", source_column="__pre_source")
    not_companies = store.unsettled.not_companies(name for name, _ in pending)
    open_names = [name for name, _ in pending if name not in negatives and name not in not_companies]
    too_long = [name for name in open_names if is_shortened_key(name)]
    askable = [name for name in open_names if not is_shortened_key(name)]
    eqc_names, over_budget, skipped = _within_budget(askable, options)
    names = keyed.filter(~pl.col(NAME_KEY).is_in(list(NO_TEMP_ID_KEYS)))[NAME_KEY].unique().to_list()
    by_name = set(index.get(LookupType.CUSTOMER_NAME, {})) | set(index.get(LookupType.FORMER_NAME, {}))
    by_name |= set(answers.legacy)
    negative_hits = len(pending) - len(open_names) - len(not_companies)
    counts = IndexCounts(
        rows=table.frame.height,
        distinct_names=len(names),
        answered_before_eqc=len(names) - len(pending) + negative_hits + len(not_companies),
        index_names=sum(1 for name in names if name in by_name or name in negatives or name in not_companies),
        index_hits_by_type={**_index_hits_by_type(wanted, entries), **legacy.counts(old_forms)},
        negative_cache_hits=negative_hits,
        not_a_company=len(not_companies),
        too_long=len(too_long),
        over_budget=over_budget,
        skipped=skipped,
        names_planned=len(eqc_names),
        normalize_s=normalized - started,
        index_lookup_s=time.perf_counter() - normalized,
    )
    return IndexReport(
        keyed=keyed,
        answers=answers,
        pending=pending,
        eqc_names=eqc_names,
        negatives=frozenset(negatives),
        too_long=too_long,
        not_companies=frozenset(not_companies),
        counts=counts,
        entries_since=since,
        negatives_since=asked_since,
        askable=tuple(askable),
    )


def _without_conflicts(
    store: IndexStore, entries: dict[tuple[str, str], IndexEntry]
) -> dict[tuple[str, str], IndexEntry]:
    """A former name recorded as pointing at two companies answers no row: the name goes on to the next source."""
    former = [key for key, kind in entries if kind == LookupType.FORMER_NAME]
    blocked = store.conflicts.known(former) if former else set()
    return {k: e for k, e in entries.items() if not (k[1] == LookupType.FORMER_NAME and k[0] in blocked)}


def leave_for_eqc(index: IndexReport, answered: Collection[str], options: RunOptions) -> IndexReport:
    """The report with the names a stage after this one answered (the local matcher) taken out of what is
    left for EQC; the budget then applies to the names still open, so an answer found locally costs none."""
    if not answered:
        return index
    askable = [name for name in index.askable if name not in answered]
    eqc_names, over_budget, skipped = _within_budget(askable, options)
    counts = replace(index.counts, names_planned=len(eqc_names), over_budget=over_budget, skipped=skipped)
    return replace(index, eqc_names=eqc_names, askable=tuple(askable), counts=counts)


def _within_budget(names: list[str], options: RunOptions) -> tuple[list[str], int, int]:
    """The names to ask, and how many are left over the budget or unasked because enrichment is off. A budget
    of 0 asks none (as WorkDataHub's `enrichment_sync_budget` 0 does); no cap is a budget left unset."""
    if not options.enrichment:
        return [], 0, len(names)
    budget = None if options.budget is None else max(options.budget, 0)
    if budget is not None and len(names) > budget:
        return names[:budget], len(names) - budget, 0
    return names, 0, 0


def _index_hits_by_type(
    wanted: Mapping[str, list[str]], entries: Mapping[tuple[str, str], IndexEntry]
) -> dict[str, dict[str, int]]:
    found_by_type: dict[str, int] = {}
    for _, kind in entries:
        found_by_type[kind] = found_by_type.get(kind, 0) + 1
    return {str(kind): {"asked": len(keys), "found": found_by_type.get(str(kind), 0)} for kind, keys in wanted.items()}


def _as_table(source: pl.DataFrame | Any | str | Path, sheet: str | None, max_size: int | None) -> Table:
    if isinstance(source, str | Path):
        return read_table(source, sheet=sheet, max_size=max_size)
    if isinstance(source, pl.DataFrame):
        return Table(source, None, "parquet")
    if hasattr(source, "columns") and hasattr(source, "dtypes"):
        return Table(pl.from_pandas(source), None, "parquet")
    raise InputError(f"cannot enrich a {type(source).__name__}: pass a path, a polars or a pandas frame")
