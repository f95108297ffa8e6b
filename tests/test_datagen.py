"""The synthetic annuity_performance month: shape, determinism, name variants and ground truth."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from eqc_enrich._cli_sandbox import register
from eqc_enrich._errors import ConfigError, InputError
from eqc_enrich.keys import normalize_name
from eqc_enrich.simulator import build_universe, make_month, write_month
from eqc_enrich.simulator._datagen import SHEET, default_companies, truth_path

SAMPLE = Path(__file__).parent / "data" / "annuity_performance_sample.parquet"  # a copy of shared/data/
MARKERS = ("-已转出", "（已转出）", "(终止)", "-待转出", "(团托)", "及下属子企业", "-养老", "-福利")


@pytest.fixture(scope="module")
def month() -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_month(7)


def strip_marker(raw: str) -> str:
    """What the project's normalizer does to the markers the generator adds (the simulator does not)."""
    return next((raw.removesuffix(m) for m in MARKERS if raw.endswith(m)), raw)


def test_rows_columns_and_dtypes_match_the_sample(month: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    data, truth = month
    assert data.height == truth.height == 30_986
    sample = pl.read_parquet(SAMPLE).drop("company_id", "_source_file")
    expected = dict(sample.schema) | {"组合类型": pl.String(), "公司代码": pl.String()}  # sample's is all-null
    assert list(data.schema.items()) == list(expected.items())
    assert data["月度"].unique().to_list() == [datetime(2025, 1, 1)]
    assert truth.schema == pl.Schema({"row": pl.Int64(), "company_id": pl.String(), "name": pl.String()})
    assert truth["row"].to_list() == list(range(30_986))


def test_deterministic_per_seed() -> None:
    first = make_month(3, rows=2_000, companies=200, universe_size=5_000)
    again = make_month(3, rows=2_000, companies=200, universe_size=5_000)
    other = make_month(4, rows=2_000, companies=200, universe_size=5_000)
    assert first[0].equals(again[0])
    assert first[1].equals(again[1])
    assert not first[0].equals(other[0])


def test_unknown_share_of_distinct_names(month: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    _, truth = month
    named = truth.filter(pl.col("name").is_not_null())
    distinct = named["name"].n_unique()
    unknown = named.filter(pl.col("company_id").is_null())["name"].n_unique()
    assert distinct == 2_500
    assert unknown == 125  # 5 %
    assert named["company_id"].drop_nulls().n_unique() == 2_375


def test_every_raw_name_leads_the_simulator_to_the_truth(month: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    data, truth = month
    universe = build_universe(7)
    rows = pl.concat([data.select("客户名称", "年金账户名"), truth], how="horizontal").filter(
        pl.col("name").is_not_null()
    )
    for raw, account, expected in rows.select("客户名称", "年金账户名", "company_id").iter_rows():
        for name in (raw, account):
            found = universe.search(strip_marker(name))
            assert (found[0][0].company_id if found else None) == expected, name


def test_variants_real_files_have(month: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    data, truth = month
    universe = build_universe(7)
    raw = pl.concat([data.select("客户名称"), truth], how="horizontal").filter(pl.col("company_id").is_not_null())
    names = raw["客户名称"].to_list()
    plain = sum(n == t for n, t in zip(names, raw["name"], strict=True))
    assert plain / len(names) > 0.5
    assert any(n.endswith(m) for n in names for m in MARKERS)
    assert any("\u3000" in n for n in names)
    assert any(" " in n for n in names)
    assert any("(" in n and "（" not in n for n in names)
    assert any(any(0xFF21 <= ord(ch) <= 0xFF3A for ch in n) for n in names)
    ids = raw["company_id"].to_list()
    assert any(universe.by_id[i].stem == n for n, i in zip(names, ids, strict=True))
    assert any(n in universe.by_id[i].former_names for n, i in zip(names, ids, strict=True))


def test_collective_rows_have_no_name(month: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    data, truth = month
    both = pl.concat([data, truth], how="horizontal")
    collective = both.filter(pl.col("计划类型") == "集合计划")
    assert 0.07 < collective.height / both.height < 0.09
    assert collective["客户名称"].null_count() == collective.height
    assert collective["company_id"].null_count() == collective.height
    assert collective["计划代码"].str.contains(r"^AN\d{3}$").all()
    single = both.filter(pl.col("计划类型") == "单一计划")
    assert single["客户名称"].null_count() == 0
    per_plan = single.group_by("计划代码").agg(pl.col("name").n_unique())
    assert per_plan["name"].max() == 1
    per_name = single.group_by("name").agg(pl.col("计划代码").n_unique())
    assert per_name["计划代码"].max() == 1
    assert single["计划代码"].str.contains(r"^[PS]\d{4,}$").all()


def test_heavy_reuse(month: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    _, truth = month
    counts: list[int] = truth.drop_nulls("name").group_by("name").len().sort("len", descending=True)["len"].to_list()
    assert sum(counts[:25]) / sum(counts) > 0.2  # a few customers own many rows
    assert counts[0] > 50 * counts[len(counts) // 2]


def test_existing_company_codes(month: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    data, truth = month
    both = pl.concat([data.select("公司代码"), truth], how="horizontal")
    known = both.filter(pl.col("company_id").is_not_null())
    real = known.filter(pl.col("公司代码").str.contains(r"^\d{9}$"))
    assert (real["公司代码"] == real["company_id"]).all()
    assert 0.12 < real.height / known.height < 0.18
    placeholders = set(both["公司代码"].drop_nulls().to_list()) - set(real["公司代码"].to_list())
    assert placeholders == {"N", "NULL", ""}


@pytest.mark.parametrize("suffix", [".xlsx", ".csv", ".parquet"])
def test_written_and_readable(tmp_path: Path, suffix: str) -> None:
    path = write_month(tmp_path / f"month{suffix}", seed=5, rows=400, companies=50, universe_size=5_000)
    data, truth = make_month(5, rows=400, companies=50, universe_size=5_000)
    if suffix == ".xlsx":
        back = pl.read_excel(path, sheet_name=SHEET)
    elif suffix == ".csv":
        back = pl.read_csv(path, infer_schema=False)
    else:
        back = pl.read_parquet(path)
        assert back.equals(data)
    assert back.columns == data.columns
    assert back.height == 400
    assert pl.read_parquet(truth_path(path)).equals(truth)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, truth_path(path).name])


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="unsupported file type"):
        write_month(Path("month.txt"), rows=10, companies=5)
    with pytest.raises(ConfigError):
        make_month(1, rows=10, companies=5, unknown_share=1.5)


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_make_data_command(tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    result = CliRunner().invoke(cli(), ["make-data", str(out), "--rows", "300", "--seed", "2", "--companies", "40"])
    assert result.exit_code == 0, result.output
    assert "300 rows" in result.output
    assert "40 distinct companies" in result.output
    assert str(truth_path(out)) in result.output
    assert out.is_file()


def test_make_data_command_bad_option_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["make-data", str(tmp_path / "m.txt"), "--rows", "10"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "unsupported file type '.txt'" in result.output


def test_make_data_companies_follow_the_rows_as_in_a_real_month(tmp_path: Path) -> None:
    """About 12 rows a customer, as the story's month (30,986 rows, 2,500 companies, 2,587 normalized names)."""
    out = tmp_path / "m.parquet"
    result = CliRunner().invoke(cli(), ["make-data", str(out), "--rows", "3000"])
    assert result.exit_code == 0, result.output
    assert default_companies(3_000) == 242
    assert "242 distinct companies" in result.output
    data, truth = pl.read_parquet(out), pl.read_parquet(truth_path(out))
    named = truth.filter(pl.col("name").is_not_null())
    assert named["name"].n_unique() == 242
    assert 11 < data.height / named["name"].n_unique() < 14
    keys = {normalize_name(raw) for raw in data["客户名称"].drop_nulls().to_list()} - {""}
    assert 242 <= len(keys) <= 242 * 1.1  # stems and former names add a few, as in the real month
    # the ground truth stays exact: every named row's raw name leads the simulator to its company
    universe = build_universe(7)
    rows = pl.concat([data.select("客户名称"), truth], how="horizontal").filter(pl.col("name").is_not_null())
    for raw, expected in rows.select("客户名称", "company_id").iter_rows():
        found = universe.search(strip_marker(raw))
        assert (found[0][0].company_id if found else None) == expected, raw


def test_default_companies_keep_the_real_month_ratio() -> None:
    assert default_companies(30_986) == 2_500
    assert default_companies(1) == 1
    for rows in (120, 1_000, 10_000, 100_000):
        assert 12 <= rows / default_companies(rows) <= 13
