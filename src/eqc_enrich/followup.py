"""What a run leaves for later: the names it could not settle, as `eqc_unsettled` rows.

The review page and the standing worker take their queues from these rows, and `index remap` pairs their
temporary ids with the company ids they later become. Each row carries what a person needs to recognise
the company without opening the input: a few of its rows, the rows and assets it affects.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from eqc_enrich._text import MAX_SHOWN_COLUMNS, shown
from eqc_enrich.eqc_stage import LookupOutcome
from eqc_enrich.resolve import KEYED_NAME, NAME_KEY, ROWS, SOURCE_EQC, Columns
from eqc_enrich.store import SURE, UnsettledName

__all__ = ["ASSET_COLUMNS", "unsettled_names"]

ASSET_COLUMNS = ("期末资产规模", "期初资产规模")  # the first the input has weighs a name in the queues
_SAMPLE_ROWS = 5


def unsettled_names(
    unresolved: pl.DataFrame,
    outcomes: Mapping[str, LookupOutcome],
    resolved: pl.DataFrame,
    frame: pl.DataFrame,
    columns: Columns,
    *,
    source_column: str,
) -> list[UnsettledName]:
    """Names with temporary ids (from the unresolved export) and names EQC answered with less than an exact match."""
    weak = _weak_names(outcomes, resolved, source_column=source_column)
    keys = [str(k) for k in unresolved["name"]] + [key for key, _ in weak]
    if not keys:
        return []
    samples, assets = _samples_and_assets(keys, resolved, frame, columns)
    names = [
        UnsettledName(
            lookup_key=str(row["name"]),
            kind="temporary",
            status=str(row["status"]),
            reason=str(row["reason"]),
            rows=int(row["rows"]),
            display_name=str(row["example_name"] or ""),
            temp_id=row["temporary_id"],
            assets=assets.get(str(row["name"])),
            sample=samples.get(str(row["name"]), []),
        )
        for row in unresolved.iter_rows(named=True)
    ]
    for key, (outcome, rows, display) in weak:
        hit = outcome.hit
        assert hit is not None  # _weak_names keeps only answers with a hit
        names.append(
            UnsettledName(
                lookup_key=key,
                kind="low_confidence",
                status="weak_match",
                reason=f"EQC answered {hit.full_name} ({hit.match_type}, confidence {hit.confidence:.2f})",
                rows=rows,
                display_name=display,
                candidate_id=hit.company_id,
                confidence=hit.confidence,
                assets=assets.get(key),
                sample=samples.get(key, []),
            )
        )
    return names


def _weak_names(
    outcomes: Mapping[str, LookupOutcome], resolved: pl.DataFrame, *, source_column: str
) -> list[tuple[str, tuple[LookupOutcome, int, str]]]:
    """Answers less than sure (a fuzzy or pinyin match: a person should look), with the rows they gave an id."""
    weak = {
        name: outcome
        for name, outcome in outcomes.items()
        if outcome.status == "found" and outcome.hit is not None and outcome.hit.confidence < SURE
    }
    if not weak:
        return []
    used = (
        resolved.filter(pl.col(source_column) == SOURCE_EQC, pl.col(NAME_KEY).is_in(list(weak)))
        .group_by(NAME_KEY)
        .agg(
            pl.col(ROWS).sum().alias("rows"),
            # the name as keyed: a customer taken from the plan name shows as such
            shown(pl.col(KEYED_NAME).sort_by(ROWS, descending=True).first()).alias("example"),
        )
        .sort(["rows", NAME_KEY], descending=[True, False])
    )
    return [(key, (weak[key], int(rows), str(example or ""))) for key, rows, example in used.iter_rows()]


def _samples_and_assets(
    keys: list[str], resolved: pl.DataFrame, frame: pl.DataFrame, columns: Columns
) -> tuple[dict[str, list[dict[str, object]]], dict[str, float]]:
    """A few input rows per name (every column, as text) and the assets its rows carry, where known."""
    raw = columns.raw()
    keyed = resolved.filter(pl.col(NAME_KEY).is_in(keys)).select(*raw, NAME_KEY).unique()
    rows = frame.join(keyed, on=raw, how="inner", nulls_equal=True)
    asset_column = next((c for c in ASSET_COLUMNS if c in frame.columns), None)
    assets: dict[str, float] = {}
    if asset_column is not None and frame.schema[asset_column].is_numeric():
        totals = rows.group_by(NAME_KEY).agg(pl.col(asset_column).sum())
        assets = {str(k): float(v) for k, v in totals.iter_rows() if v is not None}
    # a few rows per name, every cell bounded in polars: a cell of megabytes never becomes a Python string
    kept = [c for c in frame.columns if not c.startswith("__")][:MAX_SHOWN_COLUMNS]
    sampled = rows.group_by(NAME_KEY, maintain_order=True).head(_SAMPLE_ROWS)
    texts = sampled.select(pl.col(NAME_KEY), *(shown(pl.col(c)).alias(c) for c in kept))
    samples: dict[str, list[dict[str, object]]] = {}
    for key, group in texts.group_by(NAME_KEY, maintain_order=True):
        samples[str(key[0])] = group.drop(NAME_KEY).to_dicts()
    return samples, assets
