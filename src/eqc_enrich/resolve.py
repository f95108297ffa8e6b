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

from eqc_enrich._errors import ConfigError
from eqc_enrich._legacy_keys import legacy_name_keys
from eqc_enrich._mapping_files import EMPTY_ID, load_mapping_folder, read_yaml
from eqc_enrich._text import shown, shown_text
from eqc_enrich.keys import (
    INDEX_PRIORITY,
    LookupType,
    clean_company_id,
    clean_plan_code,
    normalize_name,
    normalize_names,
    temp_company_id,
)
from eqc_enrich.store import IndexEntry

__all__ = [
    "EXISTING_ID",
    "FROM_PLAN",
    "KEYED_NAME",
    "NAME_KEY",
    "NO_TEMP_ID_KEYS",
    "PLAN_KEY",
    "PLAN_NAME_COLUMN",
    "PLAN_NAME_KEY",
    "PLAN_TYPE_COLUMN",
    "ROWS",
    "SINGLE_PLAN",
    "SOURCE_BACKFLOW",
    "SOURCE_EQC",
    "SOURCE_EXISTING",
    "SOURCE_LEGACY",
    "SOURCE_MATCH",
    "SOURCE_OVERRIDE",
    "SOURCE_OVERRIDE_EMPTY",
    "SOURCE_PLAN_NAME",
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
    "mark_names_from_plans",
    "name_from_plan",
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
KEYED_NAME = "__keyed_name"  # the name a row is keyed by: its customer name, or the one taken from its plan name
FROM_PLAN = "__name_from_plan"  # True where the customer name was taken from the plan name

SOURCE_OVERRIDE = "override"
SOURCE_OVERRIDE_EMPTY = "override:empty"  # an override said `__EMPTY__`: the id stays empty, nothing else asked
SOURCE_EXISTING = "existing"
SOURCE_BACKFLOW = "backflow"  # a name whose id another row of this input carries in its id column
SOURCE_LEGACY = "index:legacy"  # an index row found under an old key form only (see LegacyKeys)
SOURCE_MANUAL = "index:manual"  # an index row a person decided, whatever its lookup type
SOURCE_MATCH = "index:match"  # the index knew the company under another spelling (the local match stage)
SOURCE_EQC = "eqc"
SOURCE_TEMP = "temp"
MANUAL_ENTRY_SOURCE = "manual"
"""`enrichment_index.source` of the entries a person decided: the review page's (`review.MANUAL_SOURCE`) and
the old tools' manual edits alike."""
SOURCE_PLAN_NAME = "plan_name"  # the id was found for the customer named in 计划名称 (the row had no 客户名称)
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
    """Which input columns carry the name, the plan code and an id the source already has; with `plan_type`
    and `plan_name`, also where a 单一计划 row without a customer name finds it (`name_from_plan`)."""

    name: str = "客户名称"
    plan: str | None = "计划代码"
    existing_id: str | None = "公司代码"
    plan_required: bool = False  # when False, a missing plan column just means "no plan keys"
    existing_id_required: bool = False
    plan_type: str | None = None
    plan_name: str | None = None

    def raw(self) -> list[str]:
        """The input columns resolution reads."""
        wanted = (self.name, self.plan, self.existing_id, self.plan_type, self.plan_name)
        return [c for c in wanted if c is not None]

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


_SECTIONS = ("plan_code", "plans", "customer_name", "names")


@dataclass(frozen=True, slots=True)
class Overrides:
    """The hand-kept mapping that beats everything else: plan code -> id, then name key -> id. An id of
    `__EMPTY__` leaves the row's id empty and stops its resolution there."""

    plans: Mapping[str, str] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> Overrides:
        """Our YAML file with `plan_code:` and `customer_name:` maps (key -> company id; names normalized), or
        WorkDataHub's mapping folder (`_mapping_files`: their three files, their order, their key matching)."""
        if path is None:
            return cls()
        if path.is_dir():
            folder = load_mapping_folder(path)
            return cls(plans=folder.plan_codes, names=folder.name)
        data = read_yaml(path)
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"overrides {path}: expected a mapping with plan_code and customer_name")
        unknown = [str(key) for key in data if key not in _SECTIONS]
        if unknown:
            raise ConfigError(
                f"overrides {path}: unknown section(s) {', '.join(map(repr, unknown))}: an overrides file has "
                "plan_code: and customer_name: maps (WorkDataHub's flat files are given as their folder)"
            )
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
            shown = f"{shown_text(repr(key), 80)}: {shown_text(repr(value), 80)}"
            raise ConfigError(f"overrides {path}: entry {shown} is not a key and a company id")
        result[cleaned] = company_id
    return result


def distinct_keys(frame: pl.DataFrame, columns: Columns) -> pl.DataFrame:
    """One row per distinct (name, plan, existing id) as the input has them, with row count and lookup keys.

    Only the key columns are grouped, by the streaming engine: an eager group-by over the whole frame held
    as much memory again as the input (a million rows: 450 MiB on top of 550)."""
    raw = columns.raw()
    combos = frame.lazy().select(raw).group_by(raw).agg(pl.len().alias(ROWS)).collect(engine="streaming")
    return add_key_columns(combos, columns)


PLAN_TYPE_COLUMN = "计划类型"
PLAN_NAME_COLUMN = "计划名称"
SINGLE_PLAN = "单一计划"
_PLAN_SUFFIX = "企业年金计划"
_NO_CUSTOMER = ("", "0")


def name_from_plan(name: pl.Expr, plan_type: pl.Expr, plan_name: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """WorkDataHub's rule for the income sheet (收入明细), as an expression: a row whose customer name is null,
    "" or "0", whose plan type is exactly 单一计划 and whose plan name is not empty takes as its customer the
    plan name's part before a trailing 企业年金计划, trimmed; without that suffix, or with nothing before it,
    the name is null (the plan name itself never is one). 集合计划 rows keep theirs. Returns (the name,
    whether it came from the plan name)."""
    applies = (
        (name.is_null() | name.is_in(list(_NO_CUSTOMER)))
        & (plan_type == SINGLE_PLAN)
        & plan_name.is_not_null()
        & (plan_name != "")
    )
    before = plan_name.str.strip_suffix(_PLAN_SUFFIX).str.strip_chars()
    taken = pl.when(plan_name.str.ends_with(_PLAN_SUFFIX) & (before != "")).then(before).otherwise(None)
    return pl.when(applies).then(taken).otherwise(name), applies


def add_key_columns(frame: pl.DataFrame, columns: Columns) -> pl.DataFrame:
    """Lookup keys per row, computed once per distinct raw value (names as a column: `normalize_names`)."""
    name = pl.col(columns.name).cast(pl.String)
    from_plan: pl.Expr = pl.lit(False)
    if columns.plan_type is not None and columns.plan_name is not None:
        plan_type, plan_name = (pl.col(c).cast(pl.String) for c in (columns.plan_type, columns.plan_name))
        name, from_plan = name_from_plan(name, plan_type, plan_name)
    frame = frame.with_columns(name.alias(KEYED_NAME), from_plan.alias(FROM_PLAN))
    name_key = normalize_names(frame[KEYED_NAME])
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
    manual: Mapping[str, frozenset[str]] = field(default_factory=dict)  # lookup_type -> keys a person decided
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


def manual_keys(entries: Mapping[tuple[str, str], IndexEntry]) -> dict[str, frozenset[str]]:
    """lookup_type -> the keys whose entry a person decided: their rows say `index:manual`, so the output
    tells a person's decision from what EQC or another row said."""
    decided: dict[str, set[str]] = {}
    for (key, kind), entry in entries.items():
        if entry.source == MANUAL_ENTRY_SOURCE:
            decided.setdefault(str(kind), set()).add(key)
    return {kind: frozenset(keys) for kind, keys in decided.items()}


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
        column, known = INDEX_COLUMNS[kind], answers.index.get(kind, {})
        decided = answers.manual.get(kind, frozenset())
        if decided:  # a person's decision keeps its type's rank; only the source it shows differs
            found.append((SOURCE_MANUAL, lookup(column, {k: v for k, v in known.items() if k in decided})))
            known = {k: v for k, v in known.items() if k not in decided}
        found.append((index_source(kind), lookup(column, known)))
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
    resolved = keyed.with_columns(company_id.alias(id_column), source.alias(source_column))
    empty = (pl.col(source_column) == SOURCE_OVERRIDE) & (pl.col(id_column) == EMPTY_ID)
    return resolved.with_columns(
        pl.when(empty).then(None).otherwise(pl.col(id_column)).alias(id_column),
        pl.when(empty).then(pl.lit(SOURCE_OVERRIDE_EMPTY)).otherwise(pl.col(source_column)).alias(source_column),
    )


def names_for_eqc(resolved: pl.DataFrame, *, id_column: str, source_column: str | None = None) -> list[tuple[str, int]]:
    """Distinct names no earlier source answered, with their row counts, most frequent first (rows an
    override left empty on purpose are answered: `source_column` tells them)."""
    open_rows = pl.col(id_column).is_null() & ~pl.col(NAME_KEY).is_in(list(NO_TEMP_ID_KEYS))
    if source_column is not None:
        open_rows &= pl.col(source_column).fill_null("") != SOURCE_OVERRIDE_EMPTY
    counts = (
        resolved.filter(open_rows)
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
    # a row answered by a person's decision: the first type, in resolution order, that holds one for it
    decided = resolved.filter(pl.col(source_column) == SOURCE_MANUAL)
    for kind in INDEX_PRIORITY:
        column, keys = INDEX_COLUMNS[kind], list(answers.manual.get(kind, frozenset()))
        hits.update((key, str(kind)) for key in decided.filter(pl.col(column).is_in(keys))[column].unique().to_list())
        decided = decided.filter(~pl.col(column).is_in(keys))
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

    `example_name` is the spelling most rows have, bounded as `_text.shown` bounds it (the rows
    themselves keep every name whole).

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
        shown(pl.col("example_name")),
        pl.Series("status", [known.get(n, ("not_asked", ""))[0] for n in table["name"]], dtype=pl.String),
        pl.Series("reason", [known.get(n, ("", "not asked"))[1] for n in table["name"]], dtype=pl.String),
    )


def mark_names_from_plans(resolved: pl.DataFrame, *, source_column: str) -> pl.DataFrame:
    """The source `plan_name` where the row's customer was taken from its plan name and its id was found by
    that name (an override, a plan code or the row's own id keep their source)."""
    by_name = [index_source(kind) for kind in INDEX_COLUMNS if INDEX_COLUMNS[kind] in (NAME_KEY, PLAN_NAME_KEY)]
    by_name += [SOURCE_BACKFLOW, SOURCE_LEGACY, SOURCE_EQC, SOURCE_TEMP]
    marked = pl.col(FROM_PLAN) & pl.col(source_column).is_in(by_name)
    return resolved.with_columns(
        pl.when(marked).then(pl.lit(SOURCE_PLAN_NAME)).otherwise(pl.col(source_column)).alias(source_column)
    )


def rows_by_source(resolved: pl.DataFrame, *, source_column: str) -> dict[str, int]:
    """Rows per source (`none` for rows nothing could answer)."""
    counts = resolved.group_by(pl.col(source_column).fill_null("none")).agg(pl.col(ROWS).sum())
    return {str(k): int(v) for k, v in sorted(zip(counts[source_column], counts[ROWS], strict=True))}


def replaced_columns_note(frame: pl.DataFrame, columns: Columns, *, new: list[str]) -> list[str]:
    """A note when the input already has a column the run writes (`company_id`, `company_id_source`).

    The output replaces it in place, as a rerun on an enriched file expects; the note says so, and how
    many rows had a value, so that ids from elsewhere are not replaced unnoticed (the input file itself is
    never written). A column named as the input's existing ids (`--id-column`) is read as such: no note.
    """
    replaced = [name for name in new if name in frame.columns and name != columns.existing_id]
    if not replaced:
        return []
    first = frame[replaced[0]].cast(pl.String).str.strip_chars()
    filled = int((first.is_not_null() & (first != "")).sum())
    return [
        f"the input already has {', '.join(map(repr, replaced))}: the output replaces it with this run's "
        f"({filled:,} rows had a {replaced[0]}); rename it in the input to keep both"
    ]


_ROW_HASH = "__row_hash"


def onto_rows(frame: pl.DataFrame, resolved: pl.DataFrame, columns: Columns, *, new: list[str]) -> pl.DataFrame:
    """The input's columns untouched and in order, `new` columns last (or in place where the input has them).

    Each row finds its key combination by one 64-bit hash of the combination, not by its key columns: the
    join then gathers only the new columns (a join on the key columns copied those too, a million rows of
    three text columns), and hashes a million rows once instead of joining on three text columns. Exact:
    every row's combination is one of `resolved`'s (they came from these rows), so when no two combinations
    share a hash the hash names the combination. When two do (about one input in 10^10), the key columns
    are joined instead.
    """
    keys = columns.raw()
    combos = resolved.select(pl.struct(keys).hash().alias(_ROW_HASH), *new)
    if combos[_ROW_HASH].n_unique() == combos.height:
        rows = frame.select(pl.struct(keys).hash().alias(_ROW_HASH))
        joined = rows.join(combos, on=_ROW_HASH, how="left", maintain_order="left")
    else:
        answers = resolved.lazy().select(*keys, *new)
        on_keys = frame.lazy().select(keys).join(answers, on=keys, how="left", nulls_equal=True, maintain_order="left")
        joined = on_keys.select(new).collect()
    return frame.with_columns(joined[name] for name in new)
