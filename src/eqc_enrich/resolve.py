"""Stages 2 and 4: lookup keys, then the first answer in resolution order, for every distinct row key.

A month has a million rows but a few thousand distinct (name, plan code, existing id) combinations, so
keys and resolution work on those combinations, each carrying its row count in `ROWS`, and one join
puts the answers back on the rows at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import yaml

from eqc_enrich._errors import ConfigError
from eqc_enrich._legacy_keys import legacy_name_keys
from eqc_enrich.keys import (
    INDEX_PRIORITY,
    LookupType,
    clean_company_id,
    clean_plan_code,
    normalize_name,
    temp_company_id,
)
from eqc_enrich.store import IndexEntry

__all__ = [
    "EXISTING_ID",
    "NAME_KEY",
    "NO_TEMP_ID_KEYS",
    "PLAN_KEY",
    "PLAN_NAME_KEY",
    "ROWS",
    "SOURCE_BACKFLOW",
    "SOURCE_EQC",
    "SOURCE_EXISTING",
    "SOURCE_LEGACY",
    "SOURCE_MATCH",
    "SOURCE_OVERRIDE",
    "SOURCE_TEMP",
    "TEMP_ID_PREFIX",
    "Answers",
    "Columns",
    "LegacyKeys",
    "Overrides",
    "add_key_columns",
    "distinct_keys",
    "index_hits",
    "index_maps",
    "index_source",
    "learn_existing_ids",
    "learn_existing_plan_ids",
    "names_for_eqc",
    "onto_rows",
    "resolve_rows",
    "rows_by_source",
    "temp_ids",
    "unresolved_table",
    "wanted_index_keys",
]

NAME_KEY = "__name_key"
PLAN_KEY = "__plan_key"
PLAN_NAME_KEY = "__plan_name_key"
EXISTING_ID = "__existing_id"
ROWS = "__rows"

SOURCE_OVERRIDE = "override"
SOURCE_EXISTING = "existing"
SOURCE_BACKFLOW = "backflow"  # a name whose id another row of this input carries in its id column
SOURCE_LEGACY = "index:legacy"  # an index row found under an old key form only (see LegacyKeys)
SOURCE_MATCH = "index:match"  # the index knew the company under another spelling (the local match stage)
SOURCE_EQC = "eqc"
SOURCE_TEMP = "temp"
NO_TEMP_ID_KEYS = frozenset({"", "0"})
TEMP_ID_PREFIX = "IN"  # temporary ids (keys.temp_company_id) are never learned back into the index

INDEX_COLUMNS: Mapping[str, str] = {
    LookupType.PLAN_CODE: PLAN_KEY,
    LookupType.CUSTOMER_NAME: NAME_KEY,
    LookupType.PLAN_CUSTOMER: PLAN_NAME_KEY,
    LookupType.FORMER_NAME: NAME_KEY,
}
"""The key column each index lookup type is asked with."""


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
            raise ConfigError(f"overrides {path}: not UTF-8 text (byte {exc.start}); save the YAML as UTF-8") from exc
        except OSError as exc:
            raise ConfigError(f"overrides {path}: {exc.strerror or exc}") from exc
        try:
            data = yaml.safe_load(text) or {}
        except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: e.g. a date like 2024-13-45
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"overrides {path}: not valid YAML: {reason}") from exc
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
    return {str(kind): _distinct(keyed[column]) for kind, column in INDEX_COLUMNS.items()}


def _distinct(series: pl.Series) -> list[str]:
    return [value for value in series.unique().to_list() if value]


@dataclass(frozen=True, slots=True)
class Answers:
    """Every source of ids for one run, as key -> company id maps, in resolution order."""

    overrides: Overrides = field(default_factory=Overrides)
    index: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # lookup_type -> key -> id
    learned: Mapping[str, str] = field(default_factory=dict)  # names learned from existing ids this run
    legacy: Mapping[str, IndexEntry] = field(default_factory=dict)  # name key -> entry found under an old form
    local: Mapping[str, str] = field(default_factory=dict)  # name key -> id the local match stage answered
    eqc: Mapping[str, str] = field(default_factory=dict)
    temp: Mapping[str, str] = field(default_factory=dict)


def index_maps(entries: Mapping[tuple[str, str], IndexEntry]) -> dict[str, dict[str, str]]:
    maps: dict[str, dict[str, str]] = {str(kind): {} for kind in INDEX_PRIORITY}
    for (key, kind), entry in entries.items():
        if kind in maps:
            maps[kind][key] = entry.company_id
    return maps


def _real_existing_id() -> pl.Expr:
    """An existing id worth learning: present, and not a temporary id some earlier run handed out."""
    return pl.col(EXISTING_ID).is_not_null() & ~pl.col(EXISTING_ID).str.starts_with(TEMP_ID_PREFIX)


def learn_existing_ids(keyed: pl.DataFrame) -> dict[str, str]:
    """Name -> id from rows that already carry a real id; where rows disagree, the most common id wins."""
    pairs = (
        keyed.filter((pl.col(NAME_KEY) != "") & _real_existing_id())
        .group_by(NAME_KEY, EXISTING_ID)
        .agg(pl.col(ROWS).sum().alias("len"))
        .sort([NAME_KEY, "len", EXISTING_ID], descending=[False, True, False])
        .unique(subset=NAME_KEY, keep="first")
    )
    return dict(zip(pairs[NAME_KEY].to_list(), pairs[EXISTING_ID].to_list(), strict=True))


def learn_existing_plan_ids(keyed: pl.DataFrame) -> dict[str, str]:
    """Plan code -> id, only where every row of the plan code carries the same real id.

    集合计划 codes are shared by many companies: one row without an id, or with another id, means the code
    does not name one company, so nothing is learned from it.
    """
    plans = (
        keyed.filter(pl.col(PLAN_KEY) != "")
        .group_by(PLAN_KEY)
        .agg(
            _real_existing_id().all().alias("real"),
            pl.col(EXISTING_ID).n_unique().alias("ids"),
            pl.col(EXISTING_ID).first().alias("id"),
        )
        .filter(pl.col("real") & (pl.col("ids") == 1))
        .sort(PLAN_KEY)
    )
    return dict(zip(plans[PLAN_KEY].to_list(), plans["id"].to_list(), strict=True))


@dataclass(frozen=True, slots=True)
class LegacyKeys:
    """Old key forms (name key -> forms) for names whose canonical key neither `customer_name` nor
    `former_name` has; both types are asked for them.

    A name the index knows under its canonical key resolves before an old form could, so only the misses
    are worth a second query. The forms come from the raw names as the input spells them
    (`_legacy_keys.legacy_name_keys`). Nothing is ever written under an old form.
    """

    forms: Mapping[str, list[str]] = field(default_factory=dict)

    TYPES: ClassVar[tuple[str, ...]] = (LookupType.CUSTOMER_NAME, LookupType.FORMER_NAME)

    @classmethod
    def for_misses(
        cls, keyed: pl.DataFrame, name_column: str, found: Mapping[tuple[str, str], IndexEntry]
    ) -> LegacyKeys:
        known = {key for key, kind in found if kind in cls.TYPES}
        names = keyed.filter((pl.col(NAME_KEY) != "") & ~pl.col(NAME_KEY).is_in(list(known)))
        forms: dict[str, list[str]] = {}
        for raw, key in names.select(pl.col(name_column).cast(pl.String), NAME_KEY).unique().iter_rows():
            if raw is not None:
                collected = forms.setdefault(key, [])
                collected.extend(form for form in legacy_name_keys(raw) if form not in collected)
        return cls({key: collected for key, collected in forms.items() if collected})

    def wanted(self) -> dict[str, list[str]]:
        """What to ask the index: every old form, under each name type."""
        keys = self._all_forms()
        return dict.fromkeys(self.TYPES, keys) if keys else {}

    def answers(self, found: Mapping[tuple[str, str], IndexEntry]) -> dict[str, IndexEntry]:
        """Name key -> the entry of its first old form found (`customer_name` before `former_name`)."""
        result: dict[str, IndexEntry] = {}
        for key, forms in self.forms.items():
            entry = next((found[(f, kind)] for kind in self.TYPES for f in forms if (f, kind) in found), None)
            if entry is not None:
                result[key] = entry
        return result

    def counts(self, found: Mapping[tuple[str, str], IndexEntry]) -> dict[str, dict[str, int]]:
        """`{"customer_name_legacy": {"asked": keys, "found": keys}, ...}` for the summary."""
        keys = self._all_forms()
        return {
            f"{kind}_legacy": {"asked": len(keys), "found": sum(1 for key in keys if (key, kind) in found)}
            for kind in self.TYPES
        }

    def _all_forms(self) -> list[str]:
        return list(dict.fromkeys(form for forms in self.forms.values() for form in forms))


def _candidates(answers: Answers) -> list[tuple[str, pl.Expr]]:
    """(source, expression) in resolution order; the first non-null per row wins."""

    def lookup(column: str, mapping: Mapping[str, str]) -> pl.Expr:
        if not mapping:
            return pl.lit(None, dtype=pl.String)
        return pl.col(column).replace_strict(
            list(mapping.keys()), list(mapping.values()), default=None, return_dtype=pl.String
        )

    found: list[tuple[str, pl.Expr]] = [
        (SOURCE_OVERRIDE, lookup(PLAN_KEY, answers.overrides.plans)),
        (SOURCE_OVERRIDE, lookup(NAME_KEY, answers.overrides.names)),
    ]
    for kind in INDEX_PRIORITY:
        found.append((index_source(kind), lookup(INDEX_COLUMNS[kind], answers.index.get(kind, {}))))
    found.append((SOURCE_EXISTING, pl.col(EXISTING_ID)))
    found.append((SOURCE_BACKFLOW, lookup(NAME_KEY, answers.learned)))
    # an old-form hit is weaker evidence than the row's own id or one learned from rows of the same name
    legacy = {key: entry.company_id for key, entry in answers.legacy.items()}
    found.append((SOURCE_LEGACY, lookup(NAME_KEY, legacy)))
    found.append((SOURCE_MATCH, lookup(NAME_KEY, answers.local)))
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


def index_hits(resolved: pl.DataFrame, answers: Answers, *, source_column: str) -> set[tuple[str, str]]:
    """The index entries (lookup_key, lookup_type) that answered at least one row: each counts one use.

    Rows answered by an id learned this run carry an index source too, but no index entry answered them.
    """
    hits: set[tuple[str, str]] = set()
    for kind, column in INDEX_COLUMNS.items():
        known = answers.index.get(kind, {})
        used = resolved.filter(pl.col(source_column) == index_source(kind))[column].unique().to_list()
        hits.update((key, str(kind)) for key in used if key in known)
    used = resolved.filter(pl.col(source_column) == SOURCE_LEGACY)[NAME_KEY].unique().to_list()
    hits.update((answers.legacy[key].lookup_key, answers.legacy[key].lookup_type) for key in used)
    return hits


def unresolved_table(
    resolved: pl.DataFrame,
    columns: Columns,
    *,
    id_column: str,
    source_column: str,
    reasons: Mapping[str, tuple[str, str]] | None = None,
) -> pl.DataFrame:
    """Names that only got a temporary id, most frequent first, with why: what a person should look at.

    `reasons` maps a name key to (status, reason): not_found, failed, not_asked, too_long, ...
    """
    temp = resolved.filter(pl.col(source_column) == SOURCE_TEMP)
    table = (
        temp.group_by(NAME_KEY)
        .agg(
            pl.col(columns.name).cast(pl.String).sort_by(ROWS, descending=True).first().alias("example_name"),
            pl.col(id_column).first().alias("temporary_id"),
            pl.col(ROWS).sum().alias("rows"),
        )
        .rename({NAME_KEY: "name"})
        .sort(["rows", "name"], descending=[True, False])
    )
    known = reasons or {}
    return table.with_columns(
        pl.Series("status", [known.get(n, ("not_asked", ""))[0] for n in table["name"]], dtype=pl.String),
        pl.Series("reason", [known.get(n, ("", "not asked"))[1] for n in table["name"]], dtype=pl.String),
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
