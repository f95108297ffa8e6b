"""A synthetic annuity_performance month whose customers come from the simulator's universe.

Names are written the messy ways real files write them (status markers, half-width brackets, full-width
letters, stray spaces, stems, former names) and a ground truth says which company every row belongs to, so
a run against the simulator can be scored row by row.

`make_realistic` gives two months for the local matcher: last month, and this month, where some of last
month's customers are written another way (`VARIANT_KINDS`: the organisation form spelt otherwise, the
region in brackets, traditional characters, `集团` dropped, a wrong character) and some new customers are
other companies that look like last month's (`CONFUSER_KINDS`: a branch, a one-character twin, the same
trade name in another region or industry). Its truth says which row is which (`variant`) and which of last
month's companies a confuser looks like (`like`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

import polars as pl

from eqc_enrich._errors import ConfigError
from eqc_enrich.output import write_table
from eqc_enrich.simulator._universe import Company, Universe, build_universe, invent_absent_names

SHEET = "规模明细"
COLLECTIVE_SHARE = 0.08
_ZIPF_EXPONENT = 1.05
_ZIPF_OFFSET = 10  # Zipf-Mandelbrot: heavy reuse without one customer owning a tenth of the month
_PLACEHOLDER_SHARE = 0.02
_PLACEHOLDERS = ("N", "NULL", "")
REAL_MONTH_ROWS, REAL_MONTH_COMPANIES = 30_986, 2_500  # about 12 rows a company (2,587 normalized names)

SCHEMA: dict[str, pl.DataType] = {
    "月度": pl.Datetime("ns"),
    **{
        name: pl.String()
        for name in (
            "业务类型", "计划类型", "计划代码", "计划名称", "组合类型", "组合代码", "组合名称", "客户名称",
            "期初资产规模", "期末资产规模", "供款", "流失_含待遇支付", "流失", "待遇支付", "投资收益", "当期收益率",
            "机构代码", "机构名称", "产品线代码", "年金账户名", "公司代码",
        )
    },
}  # fmt: skip
TRUTH_SCHEMA: dict[str, pl.DataType] = {"row": pl.Int64(), "company_id": pl.String(), "name": pl.String()}
REALISTIC_TRUTH_SCHEMA: dict[str, pl.DataType] = {**TRUTH_SCHEMA, "variant": pl.String(), "like": pl.String()}

VARIANT_KINDS: dict[str, str] = {
    "org_form": "equivalent",  # 有限责任公司 for 有限公司, 股份公司 for 股份有限公司
    "region_bracket": "equivalent",  # 华润（北京）科技 for 北京华润科技, and back
    "traditional": "equivalent",  # 華潤科技
    "dropped_group": "similar",  # 华润科技有限公司 for 华润科技集团有限公司
    "typo": "similar",  # one character written as one that sounds alike
}
"""How this month writes one of last month's customers, and what a local match should make of it."""
CONFUSER_KINDS: tuple[str, ...] = ("branch", "one_char", "other_region", "other_industry")
"""Other companies that look like one of last month's customers: none may get its id."""

_BRANCHES = (
    ("G00", "湖北"), ("G01", "北京"), ("G02", "上海"), ("G03", "广东"), ("G04", "深圳"), ("G05", "江苏"),
    ("G06", "浙江"), ("G07", "山东"), ("G08", "四川"), ("G09", "河南"), ("G10", "福建"), ("G11", "湖南"),
    ("G12", "天津"), ("G13", "重庆"), ("G14", "辽宁"), ("G15", "广西"), ("G16", "安徽"), ("G17", "陕西"),
    ("G18", "河北"), ("G19", "江西"), ("G20", "云南"), ("G21", "山西"), ("G22", "黑龙江"), ("G23", "新疆"),
)  # fmt: skip
_PORTFOLIO_TYPES = (None, None, None, "固定收益型", "含权益型")
_COLLECTIVE_PLANS = tuple(
    (f"AN{i:03d}", f"平安{name}集合企业年金计划")
    for i, name in enumerate(("盛世", "富盈", "鑫享", "如意", "福满", "长青", "安康", "金色人生", "稳健", "聚财",
                              "瑞祥", "丰泰", "恒升", "优选", "卓越", "同心", "和谐", "智远", "汇利", "安心"), 1)
)  # fmt: skip


# --- customer names and how files write them -----------------------------------------------------------------


@dataclass(slots=True)
class _Customer:
    """One customer company of the month (known to the universe or not) and the raw names it appears under."""

    name: str
    company_id: str | None
    stem: str | None = None
    former_names: tuple[str, ...] = ()
    forms: list[str] = field(default_factory=list)
    plan_code: str = ""
    branch: tuple[str, str] = ("G00", "湖北")
    variant: str | None = None  # realistic months: how this month writes the customer, or the confuser's kind
    like: str | None = None  # a confuser: the id of the company it looks like


_MARKERS = ("-已转出", "（已转出）", "(终止)", "-待转出", "(团托)", "及下属子企业", "-养老", "-福利")
_SPACES = (" ", "\u3000", "  ")
_TO_FULLWIDTH = {code: code + 0xFEE0 for code in range(0x21, 0x7F)}


def _with_space(rng: random.Random, name: str) -> str:
    """A space (ASCII or U+3000) inside the name, sometimes around it too."""
    cut = rng.randint(1, len(name) - 1)
    inner = name[:cut] + rng.choice(_SPACES) + name[cut:]
    return rng.choice((inner, inner, f" {inner}", f"{name}\u3000", f"  {name} "))


_Variant = Callable[[random.Random, _Customer], str | None]
_VARIANTS: tuple[tuple[int, _Variant], ...] = (
    (24, lambda rng, c: c.name + rng.choice(_MARKERS)),
    (14, lambda rng, c: _with_space(rng, c.name)),
    (10, lambda rng, c: c.name.replace("（", "(").replace("）", ")") if "（" in c.name else None),
    (10, lambda rng, c: c.name.translate(_TO_FULLWIDTH) if any(ch.isascii() for ch in c.name) else None),
    (5, lambda rng, c: c.stem),
    (5, lambda rng, c: rng.choice(c.former_names) if c.former_names else None),
)
_VARIANT_CUM_WEIGHTS = tuple(accumulate(weight for weight, _ in _VARIANTS))


def _variant(rng: random.Random, customer: _Customer) -> str:
    """A non-plain way to write the customer's name (one that applies to this name)."""
    while True:
        make = rng.choices(_VARIANTS, cum_weights=_VARIANT_CUM_WEIGHTS)[0][1]
        form = make(rng, customer)
        if form is not None:
            return form


def _forms(rng: random.Random, customer: _Customer) -> list[str]:
    """Main raw name first (plain for most customers), then 0-2 other spellings seen on some rows."""
    main = customer.name if rng.random() < 0.72 else _variant(rng, customer)
    extra = 0 if rng.random() < 0.55 else (1 if rng.random() < 0.75 else 2)
    forms = [main]
    for _ in range(extra):
        form = _variant(rng, customer)
        if form not in forms:
            forms.append(form)
    return forms


def _customers(rng: random.Random, universe: Universe, count: int, unknown_share: float) -> list[_Customer]:
    """`count` distinct customers, `unknown_share` of them absent from the universe, in Zipf rank order."""
    unknown = round(count * unknown_share)
    known = [
        _Customer(c.name, c.company_id, c.stem, c.former_names) for c in rng.sample(universe.companies, count - unknown)
    ]
    absent = [_Customer(name, None) for name in invent_absent_names(universe, rng, unknown)]
    customers = known + absent
    rng.shuffle(customers)
    codes = _plan_codes(rng, len(customers))
    for customer, code in zip(customers, codes, strict=True):
        customer.forms = _forms(rng, customer)
        customer.plan_code = code
        customer.branch = rng.choice(_BRANCHES)
    return customers


def _plan_codes(rng: random.Random, count: int) -> list[str]:
    """Unique single-plan codes like P0123 / S1234."""
    span = max(10_000, count)
    width = len(str(span - 1))
    return [f"{'PS'[v // span]}{v % span:0{width}d}" for v in rng.sample(range(2 * span), count)]


def _rows_per_customer(rng: random.Random, customers: int, rows: int) -> list[int]:
    """Every customer gets a row; the rest follow a Zipf-like law, so a few customers own many rows."""
    counts = [1] * customers
    weights = accumulate(1.0 / (rank + _ZIPF_OFFSET) ** _ZIPF_EXPONENT for rank in range(customers))
    for index in rng.choices(range(customers), cum_weights=list(weights), k=rows - customers):
        counts[index] += 1
    return counts


# --- rows ------------------------------------------------------------------------------------------------


def _amounts(rng: random.Random) -> dict[str, str]:
    """Money columns as strings, the way the source sheet stores them."""
    begin = round(rng.lognormvariate(16.0, 1.8), 2)
    contribution = round(begin * rng.uniform(0.0, 0.2), 2)
    benefits = 0.0 if rng.random() < 0.7 else round(begin * rng.uniform(0.0, 0.05), 2)
    loss = 0.0 if rng.random() < 0.9 else round(begin * rng.uniform(0.0, 0.1), 2)
    income = round(begin * rng.uniform(-0.02, 0.08), 6)
    end = round(begin + contribution - benefits - loss + income, 2)
    return {
        "期初资产规模": _num(begin), "期末资产规模": _num(end), "供款": _num(contribution),
        "流失_含待遇支付": _num(benefits + loss), "流失": _num(loss), "待遇支付": _num(benefits),
        "投资收益": _num(income), "当期收益率": _num(income / begin if begin else 0.0),
    }  # fmt: skip


def _num(value: float) -> str:
    return "0" if value == 0 else repr(value)


def _company_code(rng: random.Random, company_id: str | None, existing_id_share: float) -> str | None:
    roll = rng.random()
    if company_id is not None and roll < existing_id_share:
        return company_id
    if roll > 1 - _PLACEHOLDER_SHARE:
        return rng.choice(_PLACEHOLDERS)
    return None


@dataclass(slots=True)
class _Table:
    """Rows under construction, column by column, plus the truth of each row."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {name: [] for name in SCHEMA})
    truth_ids: list[str | None] = field(default_factory=list)
    truth_names: list[str | None] = field(default_factory=list)
    truth_variants: list[str | None] = field(default_factory=list)
    truth_likes: list[str | None] = field(default_factory=list)

    def add(self, values: dict[str, Any], customer: _Customer | None) -> None:
        for column, cells in self.columns.items():
            cells.append(values.get(column))
        self.truth_ids.append(customer.company_id if customer else None)
        self.truth_names.append(customer.name if customer else None)
        self.truth_variants.append(customer.variant if customer else None)
        self.truth_likes.append(customer.like if customer else None)


def _single_row(rng: random.Random, customer: _Customer, index: int, existing_id_share: float) -> dict[str, Any]:
    raw = customer.forms[0] if rng.random() < 0.8 else rng.choice(customer.forms)
    business = rng.choice(("企年受托", "企年投资"))
    plan_name = f"{customer.name}企业年金计划"
    return {
        "业务类型": business, "计划类型": "单一计划", "计划代码": customer.plan_code, "计划名称": plan_name,
        "组合类型": rng.choice(_PORTFOLIO_TYPES), "组合代码": f"{customer.plan_code}P{index % 100:02d}",
        "组合名称": f"{plan_name}投资组合{index % 100:02d}", "客户名称": raw,
        "机构代码": customer.branch[0], "机构名称": customer.branch[1],
        "产品线代码": "BUSINESS_001" if business == "企年受托" else "BUSINESS_002",
        "年金账户名": raw if rng.random() < 0.8 else customer.forms[0],
        # a customer written a new way this month (or a look-alike) carries no id the sheet learned before
        "公司代码": _company_code(rng, customer.company_id, 0.0 if customer.variant else existing_id_share),
        **_amounts(rng),
    }  # fmt: skip


def _collective_row(rng: random.Random) -> dict[str, Any]:
    code, plan_name = rng.choice(_COLLECTIVE_PLANS)
    branch = rng.choice(_BRANCHES)
    return {
        "业务类型": rng.choice(("企年受托", "企年投资")), "计划类型": "集合计划", "计划代码": code,
        "计划名称": plan_name, "组合类型": rng.choice(_PORTFOLIO_TYPES), "组合代码": f"{code}P",
        "组合名称": f"{plan_name}投资组合", "客户名称": None, "机构代码": branch[0], "机构名称": branch[1],
        "产品线代码": "BUSINESS_003", "年金账户名": None, "公司代码": None, **_amounts(rng),
    }  # fmt: skip


def default_companies(rows: int) -> int:
    """Distinct customers of a month with `rows` rows, at the real month's ratio (2,500 in 30,986 rows)."""
    return max(1, round(rows * REAL_MONTH_COMPANIES / REAL_MONTH_ROWS))


def _check(rows: int, companies: int, unknown_share: float, existing_id_share: float) -> None:
    if rows < 0 or companies < 1:
        raise ConfigError(f"need rows >= 0 and companies >= 1, got rows={rows}, companies={companies}")
    if not 0 <= unknown_share <= 1 or not 0 <= existing_id_share <= 1:
        raise ConfigError("unknown_share and existing_id_share must lie in [0, 1]")


def make_month(
    seed: int,
    rows: int = REAL_MONTH_ROWS,
    companies: int | None = None,
    unknown_share: float = 0.05,
    universe_size: int = 60_000,
    existing_id_share: float = 0.15,
    month: date = date(2025, 1, 1),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(data, truth) for one month; the same arguments always give the same frames.

    `companies` defaults to the real month's share of distinct customers for this many rows.
    """
    companies = default_companies(rows) if companies is None else companies
    _check(rows, companies, unknown_share, existing_id_share)
    rng = random.Random(f"eqc-enrich-datagen:{seed}")
    single = rows - round(rows * COLLECTIVE_SHARE)
    customers = _customers(rng, build_universe(seed, universe_size), min(companies, single), unknown_share)
    return _month_rows(rng, customers, rows, existing_id_share, month)


def make_months(
    seed: int,
    count: int = 3,
    rows: int = REAL_MONTH_ROWS,
    companies: int | None = None,
    overlap: float = 0.85,
    unknown_share: float = 0.05,
    universe_size: int = 60_000,
    existing_id_share: float = 0.15,
    first: date = date(2025, 1, 1),
) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """`count` successive months: each keeps `overlap` of the previous month's customers (a random share of
    them) and adds new ones for the rest, as a real book of business does from month to month."""
    companies = default_companies(rows) if companies is None else companies
    _check(rows, companies, unknown_share, existing_id_share)
    if not 0 <= overlap <= 1 or count < 1:
        raise ConfigError("overlap must lie in [0, 1] and count be at least 1")
    rng = random.Random(f"eqc-enrich-datagen-months:{seed}")
    single = rows - round(rows * COLLECTIVE_SHARE)
    size = min(companies, single)
    fresh = size - round(size * overlap)
    pool = _customers(rng, build_universe(seed, universe_size), size + fresh * (count - 1), unknown_share)
    current, taken = pool[:size], size
    months = []
    for k in range(count):
        if k:
            current = rng.sample(current, size - fresh) + pool[taken : taken + fresh]
            taken += fresh
            rng.shuffle(current)  # the Zipf ranks of a month: old customers can rise or fall
        step = first.month - 1 + k
        months.append(
            _month_rows(rng, current, rows, existing_id_share, date(first.year + step // 12, step % 12 + 1, 1))
        )
    return months


def _month_rows(
    rng: random.Random,
    customers: list[_Customer],
    rows: int,
    existing_id_share: float,
    month: date,
    *,
    realistic: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    single = rows - round(rows * COLLECTIVE_SHARE)
    plan: list[_Customer | None] = [None] * (rows - single)
    for owner, count in zip(customers, _rows_per_customer(rng, len(customers), single), strict=True):
        plan.extend([owner] * count)
    rng.shuffle(plan)
    table, seen = _Table(), dict.fromkeys((c.plan_code for c in customers), 0)
    for customer in plan:
        if customer is None:
            table.add(_collective_row(rng), None)
            continue
        seen[customer.plan_code] += 1
        table.add(_single_row(rng, customer, seen[customer.plan_code], existing_id_share), customer)
    return _frames(table, rows, month, realistic=realistic)


def _frames(table: _Table, rows: int, month: date, *, realistic: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    table.columns["月度"] = [datetime(month.year, month.month, 1)] * rows
    data = pl.DataFrame(table.columns, schema=SCHEMA)
    truth: dict[str, list[Any]] = {"row": list(range(rows)), "company_id": table.truth_ids, "name": table.truth_names}
    if realistic:
        truth |= {"variant": table.truth_variants, "like": table.truth_likes}
    return data, pl.DataFrame(truth, schema=REALISTIC_TRUTH_SCHEMA if realistic else TRUTH_SCHEMA)


# --- two months for the local matcher ------------------------------------------------------------------------


def make_realistic(
    seed: int,
    rows: int = REAL_MONTH_ROWS,
    companies: int | None = None,
    unknown_share: float = 0.05,
    universe_size: int = 60_000,
    existing_id_share: float = 0.15,
    carried: float = 0.85,
    variant_share: float = 0.3,
    confuser_share: float = 0.05,
    variant_seed: int = 0,
) -> tuple[tuple[pl.DataFrame, pl.DataFrame], tuple[pl.DataFrame, pl.DataFrame]]:
    """(last month, this month), each as (data, truth). This month keeps `carried` of last month's customers,
    writes `variant_share` of those a new way (where the universe has such a spelling of them), and adds
    `confuser_share` (of the month's companies) look-alikes of last month's customers. `variant_seed` draws
    another this-month from the same last month (a month to calibrate on, another to measure)."""
    companies = default_companies(rows) if companies is None else companies
    _check(rows, companies, unknown_share, existing_id_share)
    for name, share in (("carried", carried), ("variant_share", variant_share), ("confuser_share", confuser_share)):
        if not 0 <= share <= 1:
            raise ConfigError(f"{name} must lie in [0, 1]")
    universe = build_universe(seed, universe_size)
    rng = random.Random(f"eqc-enrich-datagen-realistic:{seed}")
    size = min(companies, rows - round(rows * COLLECTIVE_SHARE))
    kept = round(size * carried)
    confusers = round(size * confuser_share)
    pool = _customers(rng, universe, 2 * size - kept, unknown_share)
    previous, fresh = pool[:size], pool[size:]
    last = _month_rows(rng, previous, rows, existing_id_share, date(2024, 12, 1), realistic=True)
    this_rng = random.Random(f"eqc-enrich-datagen-realistic:{seed}:{variant_seed}")
    current = [_again(c) for c in this_rng.sample(previous, kept)]
    _write_variants(this_rng, universe, current, variant_share)
    taken = {c.company_id for c in previous} | {c.company_id for c in fresh}
    looks = _confusers(this_rng, universe, previous, confusers, taken)
    current += fresh[: size - kept - len(looks)] + looks
    this_rng.shuffle(current)
    this = _month_rows(this_rng, current, rows, existing_id_share, date(2025, 1, 1), realistic=True)
    return last, this


def _again(customer: _Customer) -> _Customer:
    """Last month's customer in this month: the same company, plan, branch and spellings."""
    return _Customer(customer.name, customer.company_id, customer.stem, customer.former_names, list(customer.forms),
                     customer.plan_code, customer.branch)  # fmt: skip


def _write_variants(rng: random.Random, universe: Universe, customers: list[_Customer], share: float) -> None:
    """Some customers written this month in a spelling the universe resolves to them, and in no other."""
    able = [c for c in customers if c.company_id is not None and universe.variants.get(c.company_id)]
    for customer in rng.sample(able, min(len(able), round(len(customers) * share))):
        spellings = universe.variants[str(customer.company_id)]
        kind = rng.choice(sorted(spellings))
        customer.variant, customer.forms = kind, [spellings[kind]]


def _confusers(
    rng: random.Random, universe: Universe, previous: list[_Customer], count: int, taken: set[str | None]
) -> list[_Customer]:
    """Other companies that look like last month's customers, as many of each kind as can be found."""
    found: list[_Customer] = []
    sources = [universe.by_id[c.company_id] for c in previous if c.company_id is not None]
    rng.shuffle(sources)
    per_kind = -(-count // len(CONFUSER_KINDS))
    for kind in CONFUSER_KINDS:
        made = 0
        for source in sources:
            if made >= per_kind or len(found) >= count:
                break
            other = _lookalike(universe, source, kind)
            if other is None or other.company_id in taken:
                continue
            taken.add(other.company_id)
            customer = _Customer(other.name, other.company_id, other.stem, (), [other.name], variant=kind,
                                 like=source.company_id)  # fmt: skip
            customer.plan_code, customer.branch = f"C{len(found):05d}", rng.choice(_BRANCHES)
            found.append(customer)
            made += 1
    return found


def _lookalike(universe: Universe, source: Company, kind: str) -> Company | None:
    if kind in ("branch", "one_char"):
        other_id = universe.lookalikes.get(source.company_id, {}).get(kind)
        return universe.by_id[other_id] if other_id is not None else None
    for other in universe.namesakes(source):
        same_industry = other.industry == source.industry
        if kind == "other_region" and same_industry and other.city != source.city and other.province != source.province:
            return other
        if kind == "other_industry" and not same_industry and other.city == source.city:
            return other
    return None


def write_realistic(path: Path, seed: int = 7, **options: Any) -> tuple[Path, Path]:
    """`make_realistic` written as this month at `path` and last month at `<stem>.previous<suffix>` beside it,
    each with its truth; returns (this month, last month)."""
    (last, last_truth), (this, this_truth) = make_realistic(seed, **options)
    previous = previous_path(path)
    write_frames(previous, last, last_truth)
    return write_frames(path, this, this_truth), previous


def previous_path(path: Path) -> Path:
    """Where `make-data --variants realistic` puts last month: `<stem>.previous<suffix>` beside this month."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


# --- files ---------------------------------------------------------------------------------------------------


def truth_path(path: Path) -> Path:
    """Where the ground truth of a generated file lives: `<stem>.truth.parquet` beside it."""
    return path.with_name(f"{path.stem}.truth.parquet")


def write_frames(path: Path, data: pl.DataFrame, truth: pl.DataFrame) -> Path:
    """Write the data as .xlsx (sheet 规模明细), .csv or .parquet by extension, and its truth beside it."""
    write_table(data, path)  # atomic, and the format follows the extension, as for the run's own output
    write_table(truth, truth_path(path))
    return path


def write_month(
    path: Path,
    seed: int = 7,
    rows: int = REAL_MONTH_ROWS,
    companies: int | None = None,
    unknown_share: float = 0.05,
    universe_size: int = 60_000,
    existing_id_share: float = 0.15,
) -> Path:
    """`make_month` written to `path` (format by extension) with `<stem>.truth.parquet` beside it."""
    data, truth = make_month(seed, rows, companies, unknown_share, universe_size, existing_id_share)
    return write_frames(path, data, truth)


def summarize(data: pl.DataFrame, truth: pl.DataFrame) -> dict[str, int]:
    """What a generated month holds, for the command line to report."""
    named = truth.filter(pl.col("name").is_not_null())
    return {
        "rows": data.height,
        "companies": named["name"].n_unique(),
        "raw_names": data["客户名称"].drop_nulls().n_unique(),
        "unknown_names": named.filter(pl.col("company_id").is_null())["name"].n_unique(),
        "collective_rows": data.filter(pl.col("计划类型") == "集合计划").height,
    }
