"""The stage after EQC: every answer onto its rows, what the input taught learned back, what stays open kept.

`resolve_rows_stage` takes the index stage's report and the EQC stage's report and returns the rows
(`ResolvedRows`): the input's rows with `company_id` and its source, and the names left with temporary ids
(the unresolved export). `record_in_index` then writes back what the run taught: ids found in the input's
id column (`backflow`), a hit for each index row used, and the names left open, for the review page and
the worker. The rows are right whether or not those writes succeed, so their failures are warnings, not
endings, and the run writes its output while they run. `ResolvedRows.report` joins the two into the
stage's `RowsReport`; `run_resolve_stage` does all three in a row.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import polars as pl

from eqc_enrich._errors import IndexStoreError
from eqc_enrich.eqc_stage import EqcReport, LookupOutcome
from eqc_enrich.followup import unsettled_names
from eqc_enrich.index_stage import IndexReport
from eqc_enrich.keys import LookupType
from eqc_enrich.match_stage import MatchReport, record_eqc_answers
from eqc_enrich.options import RunOptions
from eqc_enrich.read import Table
from eqc_enrich.resolve import (
    KEYED_NAME,
    NAME_KEY,
    SOURCE_OVERRIDE_EMPTY,
    TEMP_ID_PREFIX,
    Answers,
    Columns,
    index_hits,
    learn_existing_plan_ids,
    mark_names_from_plans,
    onto_rows,
    resolve_rows,
    rows_by_source,
    temp_ids,
    unresolved_table,
)
from eqc_enrich.store import IndexEntry, IndexStore, WriteBatch

__all__ = [
    "BACKFLOW_CONFIDENCE",
    "BACKFLOW_SOURCE",
    "LEFT_EMPTY",
    "NO_NAME_NO_ID",
    "IndexRecord",
    "ResolvedRows",
    "RowsCounts",
    "RowsReport",
    "record_in_index",
    "resolve_rows_stage",
    "run_resolve_stage",
]

BACKFLOW_SOURCE = "backflow"
BACKFLOW_CONFIDENCE = 1.00

NO_NAME_NO_ID = "no customer name, and neither its plan code nor an id in the row resolves it"
"""The one reason in `rows_without_id`. A temporary id is made from a name, so a row without one (blank, a
placeholder such as 空白 or N/A, or 0: most 集合计划 rows) gets a company_id only from its plan code (in the
index or the overrides) or from an id in its own 公司代码; a 集合计划 code is shared by many companies, so
nothing is learned from it."""

LEFT_EMPTY = "__EMPTY__ in the overrides: company_id left empty on purpose, nothing else asked"
"""The reason in `rows_without_id` for rows an override (WorkDataHub's `__EMPTY__`) keeps without an id."""


@dataclass(frozen=True, slots=True)
class RowsCounts:
    """The resolve stage's figures."""

    resolved_by: Mapping[str, int] = field(default_factory=dict)  # rows per source of their company_id
    rows_without_id: Mapping[str, int] = field(default_factory=dict)  # reason -> rows left without one
    unresolved_names: int = 0  # names left with temporary ids (the unresolved export)
    unsettled_recorded: int = 0  # names left open for the review page and the worker (`eqc_unsettled`)
    shadow_checked: int = 0  # names of the local matcher's record now with EQC's answer beside the candidate
    index_write_s: float = 0.0
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowsReport:
    frame: pl.DataFrame  # the input, plus the id and source columns
    unresolved: pl.DataFrame  # names left with temporary ids, most rows first, with their status and reason
    counts: RowsCounts
    unknown_names: pl.Series = field(default_factory=lambda: pl.Series("unknown_company_name", [], dtype=pl.String))
    """Per row with a temporary id, in row order, its name as keyed: WorkDataHub's unknown-names export."""


@dataclass(frozen=True, slots=True)
class IndexRecord:
    """What the stage wrote back to the index: names left open recorded, and why any write did not happen."""

    unsettled_recorded: int = 0
    shadow_checked: int = 0
    warnings: tuple[str, ...] = ()
    write_s: float = 0.0


@dataclass(frozen=True)
class ResolvedRows:
    """The rows resolved, before the stage's index writes (`record_in_index`), which need not hold up the
    output: the rows are right whether or not those writes succeed."""

    frame: pl.DataFrame
    unresolved: pl.DataFrame
    resolved: pl.DataFrame  # one row per key combination, with its id and source
    answers: Answers
    resolved_by: Mapping[str, int]
    unknown_names: pl.Series  # per row with a temporary id, its name as keyed (WorkDataHub's export)
    match: MatchReport  # the local matcher's report: its candidates get EQC's answers beside them

    def report(self, record: IndexRecord) -> RowsReport:
        by = self.resolved_by
        without = {NO_NAME_NO_ID: by.get("none", 0), LEFT_EMPTY: by.get(SOURCE_OVERRIDE_EMPTY, 0)}
        counts = RowsCounts(
            resolved_by=by,
            rows_without_id={reason: rows for reason, rows in without.items() if rows},
            unresolved_names=self.unresolved.height,
            unsettled_recorded=record.unsettled_recorded,
            shadow_checked=record.shadow_checked,
            index_write_s=record.write_s,
            warnings=record.warnings,
        )
        return RowsReport(frame=self.frame, unresolved=self.unresolved, counts=counts, unknown_names=self.unknown_names)


def run_resolve_stage(
    store: IndexStore,
    table: Table,
    columns: Columns,
    index: IndexReport,
    eqc: EqcReport,
    options: RunOptions,
    *,
    salt: str,
    run_id: str,
    match: MatchReport | None = None,
) -> RowsReport:
    """`resolve_rows_stage`, then `record_in_index`, one after the other."""
    rows = resolve_rows_stage(table, columns, index, eqc, options, salt=salt, match=match)
    return rows.report(record_in_index(store, table, columns, rows, eqc, options, run_id=run_id))


def resolve_rows_stage(
    table: Table,
    columns: Columns,
    index: IndexReport,
    eqc: EqcReport,
    options: RunOptions,
    *,
    salt: str,
    match: MatchReport | None = None,
) -> ResolvedRows:
    """Every answer onto its rows (no database work): the index's, the local matcher's, EQC's."""
    outcomes = eqc.outcomes
    match = match or MatchReport()
    answers = _with_eqc(index, outcomes, salt, match.answers)
    resolved = resolve_rows(index.keyed, answers, id_column=options.id_column, source_column=options.source_column)
    unresolved = unresolved_table(
        resolved, replace(columns, name=KEYED_NAME), id_column=options.id_column, source_column=options.source_column,
        reasons=_unresolved_reasons(index, outcomes),
    )  # fmt: skip
    shown = mark_names_from_plans(resolved, source_column=options.source_column)
    by_source = rows_by_source(shown, source_column=options.source_column)
    frame = onto_rows(table.frame, shown, columns, new=[options.id_column, options.source_column, NAME_KEY])
    temporary = frame[options.id_column].str.starts_with(TEMP_ID_PREFIX).fill_null(False) & (frame[NAME_KEY] != "")
    unknown = frame.filter(temporary)[NAME_KEY].alias("unknown_company_name")
    return ResolvedRows(
        frame=frame.drop(NAME_KEY), unresolved=unresolved, resolved=resolved, answers=answers,
        resolved_by=by_source, unknown_names=unknown, match=match,
    )  # fmt: skip


def record_in_index(
    store: IndexStore,
    table: Table,
    columns: Columns,
    rows: ResolvedRows,
    eqc: EqcReport,
    options: RunOptions,
    *,
    run_id: str,
) -> IndexRecord:
    """Backflow, hit counts and the names left open, into the index; failures become warnings."""
    started = time.perf_counter()
    if eqc.index_error is not None:
        return IndexRecord(warnings=("backflow and hit counts not recorded: the index could not be written",))
    warnings = _learn_backflow_and_hits(store, rows.resolved, rows.answers, options.source_column)
    checked = 0
    try:
        checked = record_eqc_answers(store, rows.match, eqc.outcomes)
    except IndexStoreError as exc:
        warnings.append(f"EQC's answers were not recorded beside the local candidates: {exc}")
    names = unsettled_names(
        rows.unresolved, eqc.outcomes, rows.resolved, table.frame, columns, source_column=options.source_column
    )
    recorded = 0
    try:
        recorded = store.unsettled.record(names, run_id)
    except IndexStoreError as exc:
        warnings.append(f"the names left unsettled were not recorded for review: {exc}")
    return IndexRecord(
        unsettled_recorded=recorded, shadow_checked=checked, warnings=tuple(warnings),
        write_s=time.perf_counter() - started,
    )  # fmt: skip


def _with_eqc(
    index: IndexReport, outcomes: Mapping[str, LookupOutcome], salt: str, local: Mapping[str, str]
) -> Answers:
    """The index stage's answers, plus the local matches, plus EQC's, plus the names another process answered
    meanwhile (the index answers them now), plus temporary ids for every name still open."""
    eqc_ids = {name: o.hit.company_id for name, o in outcomes.items() if o.status == "found" and o.hit}
    late = {name: o.settled_id for name, o in outcomes.items() if o.status == "elsewhere" and o.settled_id}
    by_type = {**index.answers.index}
    by_type[LookupType.CUSTOMER_NAME] = {**by_type.get(LookupType.CUSTOMER_NAME, {}), **late}
    answered = eqc_ids.keys() | late.keys() | local.keys()
    still_open = [name for name, _ in index.pending if name not in answered]
    return replace(index.answers, index=by_type, local=dict(local), eqc=eqc_ids, temp=temp_ids(still_open, salt))


def _learn_backflow_and_hits(
    store: IndexStore, resolved: pl.DataFrame, answers: Answers, source_column: str
) -> list[str]:
    """Existing ids become index rows (names normalized, plan codes raw) unless the index already says so."""
    learned = (
        (LookupType.CUSTOMER_NAME, answers.learned),
        (LookupType.PLAN_CODE, learn_existing_plan_ids(resolved)),
    )
    batch = WriteBatch(
        entries=[
            IndexEntry(key, kind, company_id, BACKFLOW_CONFIDENCE, BACKFLOW_SOURCE)
            for kind, found in learned
            for key, company_id in found.items()
            if answers.index.get(kind, {}).get(key) != company_id
        ]
    )
    try:
        store.write(batch)
        store.record_hits(index_hits(resolved, answers, source_column=source_column))
    except IndexStoreError as exc:
        return [f"backflow and hit counts not recorded: {exc}"]
    return []


def _unresolved_reasons(index: IndexReport, outcomes: Mapping[str, LookupOutcome]) -> dict[str, tuple[str, str]]:
    reasons: dict[str, tuple[str, str]] = {}
    for name in index.negatives:
        reasons[name] = ("not_found", "EQC did not know it (cached answer)")
    for name in index.too_long:
        reasons[name] = ("too_long", "name too long for an EQC request; never sent")
    for name in index.not_companies:
        reasons[name] = ("not_a_company", "marked as no company on the review page; never asked")
    if not index.eqc_names and index.counts.skipped:
        for name, _ in index.pending:
            reasons.setdefault(name, ("not_asked", "not asked: --no-enrichment"))
    if index.counts.over_budget:
        for name, _ in index.pending:
            reasons.setdefault(name, ("not_asked", "not asked: over --budget"))
    for name, outcome in outcomes.items():
        if outcome.status == "not_found":
            reasons[name] = ("not_found", "EQC did not know it")
        elif outcome.status == "failed":
            reasons[name] = ("failed", outcome.error or "failed")
        elif outcome.status == "skipped":
            reasons[name] = ("not_asked", outcome.error or "not asked")
        elif outcome.status == "elsewhere":
            reasons[name] = ("not_found", "EQC did not know it (in the index before this run asked it)")
    return reasons
