"""Stages 2 and 4: lookup keys, then the first answer in resolution order, for every distinct row key.

A month has a million rows but a few thousand distinct (name, plan code, existing id) combinations, so
keys and resolution work on those combinations, each carrying its row count in `ROWS`, and one join
puts the answers back on the rows at the end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from eqc_enrich._errors import ConfigError
from eqc_enrich.index import IndexEntry
from eqc_enrich.keys import (
    INDEX_PRIORITY,
    LookupType,
    clean_company_id,
    clean_plan_code,
    normalize_name,
    temp_company_id,
)

NAME_KEY = "__name_key"
PLAN_KEY = "__plan_key"
PLAN_NAME_KEY = "__plan_name_key"
EXISTING_ID = "__existing_id"
ROWS = "__rows"

SOURCE_OVERRIDE = "override"
SOURCE_EXISTING = "existing"
SOURCE_EQC = "eqc"
SOURCE_TEMP = "temp"
NO_TEMP_ID_KEYS = frozenset({"", "0"})


def index_source(lookup_type: str) -> str:
    return f"index:{lookup_type}"


@dataclass(frozen=True, slots=True)
class Columns:
    """Which input columns carry the name, the plan code and an id the source already has."""

    name: str = "客户名称"
    plan: str | None = "计划代码"
    existing_id: str | None = "公司代码"
    plan_required: bool = False  # when False, a missing plan column just means "no plan keys"
    existing_id_required: bool = False

    def raw(self) -> list[str]:
        """The input columns resolution reads."""
        return [c for c in (self.name, self.plan, self.existing_id) if c is not None]

    def for_frame(self, frame: pl.DataFrame) -> tuple[Columns, list[str]]:
        """These columns with optional ones the frame lacks switched off, and a note for each."""
        notes: list[str] = []
        plan, existing = self.plan, self.existing_id
        if plan is not None and plan not in frame.columns and not self.plan_required:
            notes.append(f"no plan-code column {plan!r}: plan codes not used")
            plan = None
        if existing is not None and existing not in frame.columns and not self.existing_id_required:
            notes.append(f"no existing-id column {existing!r}: existing ids not used")
            existing = None
        return replace(self, plan=plan, existing_id=existing), notes


@dataclass(frozen=True, slots=True)
class Overrides:
    """The hand-kept mapping that beats everything else."""

    plans: Mapping[str, str] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> Overrides:
        """YAML with `plan_code:` and `customer_name:` maps (key -> company id); names are normalized."""
        if path is None:
            return cls()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"overrides {path}: not UTF-8 text (byte {exc.start}); save the YAML as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"overrides {path}: {exc.strerror or exc}") from None
        try:
            data = yaml.safe_load(text) or {}
        except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: e.g. a date like 2024-13-45
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"overrides {path}: not valid YAML: {reason}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"overrides {path}: expected a mapping with plan_code and customer_name")
        plans = _id_map(path, data.get("plan_code") or data.get("plans") or {}, clean_plan_code)
        names = _id_map(path, data.get("customer_name") or data.get("names") or {}, normalize_name)
        return cls(plans=plans, names=names)


def _id_map(path: Path, raw: Any, clean_key: Callable[[str], str]) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ConfigError(f"overrides {path}: each section must map keys to company ids")
    result: dict[str, str] = {}
    for key, value in raw.items():
        company_id = None if isinstance(value, dict | list) else clean_company_id(value)
        cleaned = clean_key(str(key))
        if not cleaned or company_id is None:
            raise ConfigError(f"overrides {path}: entry {key!r}: {value!r} is not a key and a company id")
        result[cleaned] = company_id
    return result


def distinct_keys(frame: pl.DataFrame, columns: Columns) -> pl.DataFrame:
    """One row per distinct (name, plan, existing id) as the input has them, with row count and lookup keys."""
    combos = frame.group_by(columns.raw()).agg(pl.len().alias(ROWS))
    return add_key_columns(combos, columns)


def add_key_columns(frame: pl.DataFrame, columns: Columns) -> pl.DataFrame:
    """Lookup keys per row, computed once per distinct raw value."""
    name_key = _map_distinct(frame[columns.name].cast(pl.String), normalize_name, empty="")
    plan_key = (
        _map_distinct(frame[columns.plan].cast(pl.String), clean_plan_code, empty="")
        if columns.plan
        else pl.Series(values=[""] * frame.height, dtype=pl.String)
    )
    existing = (
        _map_distinct(frame[columns.existing_id], clean_company_id, empty=None)
        if columns.existing_id
        else pl.Series(values=[None] * frame.height, dtype=pl.String)
    )
    keyed = frame.with_columns(name_key.alias(NAME_KEY), plan_key.alias(PLAN_KEY), existing.alias(EXISTING_ID))
    both = (pl.col(PLAN_KEY) != "") & (pl.col(NAME_KEY) != "")
    # The vectorised form of keys.plan_customer_key: "{plan_code}|{normalized name}".
    return keyed.with_columns(
        pl.when(both).then(pl.col(PLAN_KEY) + "|" + pl.col(NAME_KEY)).otherwise(pl.lit("")).alias(PLAN_NAME_KEY)
    )


def _map_distinct(series: pl.Series, fn: Callable[[Any], str | None], *, empty: str | None) -> pl.Series:
    uniques = series.drop_nulls().unique()
    mapped = pl.Series(values=[fn(value) for value in uniques.to_list()], dtype=pl.String)
    result = series.replace_strict(uniques, mapped, default=None, return_dtype=pl.String)
    return result.fill_null(empty) if empty is not None else result


def wanted_index_keys(keyed: pl.DataFrame) -> dict[str, list[str]]:
    """Distinct keys per lookup type: the whole of what the index will be asked."""
    names = _distinct(keyed[NAME_KEY])
    return {
        LookupType.PLAN_CODE: _distinct(keyed[PLAN_KEY]),
        LookupType.CUSTOMER_NAME: names,
        LookupType.PLAN_CUSTOMER: _distinct(keyed[PLAN_NAME_KEY]),
        LookupType.FORMER_NAME: names,
    }


def _distinct(series: pl.Series) -> list[str]:
    return [value for value in series.unique().to_list() if value]


@dataclass(frozen=True, slots=True)
class Answers:
    """Every source of ids for one run, as key -> company id maps, in resolution order."""

    overrides: Overrides = field(default_factory=Overrides)
    index: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # lookup_type -> key -> id
    learned: Mapping[str, str] = field(default_factory=dict)  # names learned from existing ids this run
    eqc: Mapping[str, str] = field(default_factory=dict)
    temp: Mapping[str, str] = field(default_factory=dict)


def index_maps(entries: Mapping[tuple[str, str], IndexEntry]) -> dict[str, dict[str, str]]:
    maps: dict[str, dict[str, str]] = {str(kind): {} for kind in INDEX_PRIORITY}
    for (key, kind), entry in entries.items():
        if kind in maps:
            maps[kind][key] = entry.company_id
    return maps


def learn_existing_ids(keyed: pl.DataFrame) -> dict[str, str]:
    """Name -> id from rows that already carry an id; where rows disagree, the most common id wins."""
    pairs = (
        keyed.filter((pl.col(NAME_KEY) != "") & pl.col(EXISTING_ID).is_not_null())
        .group_by(NAME_KEY, EXISTING_ID)
        .agg(pl.col(ROWS).sum().alias("len"))
        .sort([NAME_KEY, "len", EXISTING_ID], descending=[False, True, False])
        .unique(subset=NAME_KEY, keep="first")
    )
    return dict(zip(pairs[NAME_KEY].to_list(), pairs[EXISTING_ID].to_list(), strict=True))


def _candidates(answers: Answers) -> list[tuple[str, pl.Expr]]:
    """(source, expression) in resolution order; the first non-null per row wins."""

    def lookup(column: str, mapping: Mapping[str, str]) -> pl.Expr:
        if not mapping:
            return pl.lit(None, dtype=pl.String)
        return pl.col(column).replace_strict(
            list(mapping.keys()), list(mapping.values()), default=None, return_dtype=pl.String
        )

    index_columns = {
        LookupType.PLAN_CODE: PLAN_KEY,
        LookupType.CUSTOMER_NAME: NAME_KEY,
        LookupType.PLAN_CUSTOMER: PLAN_NAME_KEY,
        LookupType.FORMER_NAME: NAME_KEY,
    }
    found: list[tuple[str, pl.Expr]] = [
        (SOURCE_OVERRIDE, lookup(PLAN_KEY, answers.overrides.plans)),
        (SOURCE_OVERRIDE, lookup(NAME_KEY, answers.overrides.names)),
    ]
    for kind in INDEX_PRIORITY:
        found.append((index_source(kind), lookup(index_columns[kind], answers.index.get(kind, {}))))
    found.append((SOURCE_EXISTING, pl.col(EXISTING_ID)))
    found.append((index_source(LookupType.CUSTOMER_NAME), lookup(NAME_KEY, answers.learned)))
    found.append((SOURCE_EQC, lookup(NAME_KEY, answers.eqc)))
    found.append((SOURCE_TEMP, lookup(NAME_KEY, answers.temp)))
    return found


def resolve_rows(keyed: pl.DataFrame, answers: Answers, *, id_column: str, source_column: str) -> pl.DataFrame:
    """Adds `id_column` and `source_column` (replacing same-named input columns in place)."""
    candidates = _candidates(answers)
    company_id = pl.coalesce([expr for _, expr in candidates])
    source: Any = pl.lit(None, dtype=pl.String)
    for name, expr in reversed(candidates):
        source = pl.when(expr.is_not_null()).then(pl.lit(name)).otherwise(source)
    return keyed.with_columns(company_id.alias(id_column), source.alias(source_column))


def names_for_eqc(resolved: pl.DataFrame, *, id_column: str) -> list[tuple[str, int]]:
    """Distinct names no earlier source answered, with their row counts, most frequent first."""
    counts = (
        resolved.filter(pl.col(id_column).is_null() & ~pl.col(NAME_KEY).is_in(list(NO_TEMP_ID_KEYS)))
        .group_by(NAME_KEY)
        .agg(pl.col(ROWS).sum().alias("len"))
        .sort(["len", NAME_KEY], descending=[True, False])
    )
    return list(zip(counts[NAME_KEY].to_list(), counts["len"].to_list(), strict=True))


def temp_ids(names: list[str], salt: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for name in names:
        temp = temp_company_id(name, salt)
        if temp is not None:
            result[name] = temp
    return result


def index_hits(resolved: pl.DataFrame, *, source_column: str) -> Counter[tuple[str, str]]:
    """Rows answered per index entry (key, type), for `hit_count`."""
    columns = {
        LookupType.PLAN_CODE: PLAN_KEY,
        LookupType.CUSTOMER_NAME: NAME_KEY,
        LookupType.PLAN_CUSTOMER: PLAN_NAME_KEY,
        LookupType.FORMER_NAME: NAME_KEY,
    }
    hits: Counter[tuple[str, str]] = Counter()
    for kind, column in columns.items():
        rows = (
            resolved.filter(pl.col(source_column) == index_source(kind))
            .group_by(column)
            .agg(pl.col(ROWS).sum().alias("len"))
        )
        for key, count in zip(rows[column].to_list(), rows["len"].to_list(), strict=True):
            hits[(key, str(kind))] += count
    return hits


def unresolved_table(resolved: pl.DataFrame, columns: Columns, *, id_column: str, source_column: str) -> pl.DataFrame:
    """Names that only got a temporary id: what a person should look at, most frequent first."""
    temp = resolved.filter(pl.col(source_column) == SOURCE_TEMP)
    return (
        temp.group_by(NAME_KEY)
        .agg(
            pl.col(columns.name).cast(pl.String).sort_by(ROWS, descending=True).first().alias("example_name"),
            pl.col(id_column).first().alias("temporary_id"),
            pl.col(ROWS).sum().alias("rows"),
        )
        .rename({NAME_KEY: "name"})
        .sort(["rows", "name"], descending=[True, False])
    )


def rows_by_source(resolved: pl.DataFrame, *, source_column: str) -> dict[str, int]:
    """Rows per source (`none` for rows nothing could answer)."""
    counts = resolved.group_by(pl.col(source_column).fill_null("none")).agg(pl.col(ROWS).sum())
    return {str(k): int(v) for k, v in sorted(zip(counts[source_column], counts[ROWS], strict=True))}


def onto_rows(frame: pl.DataFrame, resolved: pl.DataFrame, columns: Columns, *, new: list[str]) -> pl.DataFrame:
    """The input's columns untouched and in order, `new` columns last (or in place where the input has them)."""
    keys = columns.raw()
    answers = resolved.select(*keys, *new)
    joined = frame.select(keys).join(answers, on=keys, how="left", nulls_equal=True, maintain_order="left")
    return frame.with_columns(joined[name] for name in new)
