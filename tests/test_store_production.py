"""The production index as its users have it, on the real PostgreSQL: the reference DDL, foreign rows under
old key forms, `index init` by the owner, and runs as an ETL role that may only read and write rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
import sqlalchemy as sa
from tests.production_schema import REFERENCE_DDL, WDH_DDL, as_role, catalogue, grant_template

from eqc_enrich.cli import main
from eqc_enrich.simulator import build_universe
from eqc_enrich.store import init_index, init_sql

if TYPE_CHECKING:
    from tests.conftest import SimFactory

pytestmark = pytest.mark.postgres

FOREIGN_ROWS = [
    # (lookup_key, lookup_type, company_id, confidence, source, source_domain, hit_count): written by other tools
    ("平市鑫源煤业有限公司", "customer_name", "600100001", "0.80", "eqc_api", "eqc_sync_lookup", 4),  # 原 cut
    ("某某科技有限公司", "customer_name", "600100002", "0.80", "eqc_api", "eqc_sync_lookup", 2),  # （北京） cut
    ("华夏远航-已转出", "customer_name", "600100003", "0.80", "EQC", None, 0),  # the queue worker's raw key
    ("甲乙丙有限公司", "customer_name", "600100004", "1.00", "yaml", None, 9),  # canonical: found directly
    ("某某账户", "account_name", "600100005", "1.00", "legacy_migration", None, 1),  # an older type, never asked
    ("P0001", "plan_code", "600100006", "1.00", "yaml", None, 3),  # a plan the input does not name
]
LEGACY_NAMES = {  # input name -> the foreign row its old key form finds
    "原平市鑫源煤业有限公司": "600100001",
    "（北京）某某科技有限公司": "600100002",
    "华夏远航-已转出": "600100003",
}
TOOL_TABLES = (
    "eqc_negative_cache",
    "eqc_payload",
    "run_journal",
    "eqc_quota",
    "eqc_quota_slot",
    "eqc_claim",
    "eqc_unsettled",
    "eqc_worker_log",
    "eqc_review_decision",
    "eqc_review_undo",
    "eqc_quota_rate",
    "eqc_former_name_conflict",
    "eqc_match_shadow",
)


@pytest.fixture
def admin(pg_schema: tuple[str, str]) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_schema[0])
    yield engine
    engine.dispose()


def test_init_creates_enrichment_index_exactly_as_the_reference_migration(
    pg_schema: tuple[str, str], admin: sa.Engine
) -> None:
    url, schema = pg_schema
    reference = f"{schema}_ref"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(REFERENCE_DDL.format(s=reference) + WDH_DDL.format(s=reference))
        report = init_index(url, schema=schema)
        assert report.created == ["enrichment_index", "base_info", *TOOL_TABLES]
        with admin.connect() as conn:
            assert catalogue(conn, schema) == catalogue(conn, reference)
            assert catalogue(conn, schema, "base_info") == catalogue(conn, reference, "base_info")
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{reference}" CASCADE')


def test_print_sql_is_what_init_runs(pg_schema: tuple[str, str], admin: sa.Engine) -> None:
    url, schema = pg_schema
    printed = f"{schema}_sql"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(init_sql(printed))  # what a DBA would paste into psql
        init_index(url, schema=schema)
        with admin.connect() as conn:
            for table in ("enrichment_index", "base_info", *TOOL_TABLES):
                assert catalogue(conn, schema, table) == catalogue(conn, printed, table), table
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{printed}" CASCADE')


def test_print_sql_carries_the_grants_a_run_needs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["index", "init", "--print-sql", "--db-schema", "enterprise"])
    assert done.value.code == 0
    sql = capsys.readouterr().out
    assert "CREATE TABLE IF NOT EXISTS enterprise.enrichment_index (" in sql
    assert "CONSTRAINT uq_enrichment_index_key_type UNIQUE (lookup_key, lookup_type)" in sql
    assert "-- GRANT USAGE ON SCHEMA enterprise TO etl_role;" in sql
    assert "-- GRANT SELECT, INSERT, UPDATE ON enterprise.enrichment_index TO etl_role;" in sql
    assert "-- GRANT SELECT, INSERT, UPDATE ON enterprise.base_info TO etl_role;" in sql  # their table: no DELETE
    own = ", ".join(f"enterprise.{table}" for table in TOOL_TABLES)
    assert f"-- GRANT SELECT, INSERT, UPDATE, DELETE ON {own} TO etl_role;" in sql


def seed_production(admin: sa.Engine, schema: str) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql(REFERENCE_DDL.format(s=schema))
        conn.execute(
            sa.text(
                f"INSERT INTO {schema}.enrichment_index (lookup_key, lookup_type, company_id, confidence, source,"
                " source_domain, hit_count, created_at, updated_at) VALUES (:k, :t, :c, CAST(:conf AS numeric),"
                " :src, :dom, :hits, '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')"
            ),
            [dict(zip(("k", "t", "c", "conf", "src", "dom", "hits"), row, strict=True)) for row in FOREIGN_ROWS],
        )


def index_rows(admin: sa.Engine, schema: str) -> dict[tuple[str, str], dict[str, Any]]:
    with admin.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {schema}.enrichment_index")).mappings().all()
    return {(row["lookup_key"], row["lookup_type"]): dict(row) for row in rows}


@pytest.fixture
def etl_role(pg_schema: tuple[str, str], admin: sa.Engine) -> Iterator[str]:
    """A login role with only USAGE on the schema and row privileges (granted once the tables exist)."""
    role = f"eqc_etl_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
    yield role
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{pg_schema[1]}" CASCADE')
        conn.exec_driver_sql(f"DROP OWNED BY {role}")
        conn.exec_driver_sql(f"DROP ROLE {role}")


def cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        main(argv)
    return int(done.value.code or 0)


def test_plan_and_run_as_a_least_privileged_role_find_old_key_forms_and_touch_rows_only_by_the_rule(
    pg_schema: tuple[str, str],
    admin: sa.Engine,
    etl_role: str,
    sim_factory: SimFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, schema = pg_schema
    seed_production(admin, schema)
    assert cli(["index", "init", "--db", url, "--db-schema", schema]) == 0  # the owner, once
    assert "left as they were: enrichment_index" in capsys.readouterr().out
    with admin.begin() as conn:
        for grant in grant_template(schema, etl_role):  # exactly the template's rights
            conn.exec_driver_sql(grant)
        assert not conn.execute(sa.text(f"SELECT has_schema_privilege('{etl_role}', '{schema}', 'CREATE')")).scalar()
    before = index_rows(admin, schema)

    sim = sim_factory()
    companies = build_universe(sim.config.seed, sim.config.universe_size).companies
    known = [companies[0], next(company for company in companies if company.former_names)]
    names = [*LEGACY_NAMES, "甲乙丙有限公司", known[0].name, known[1].name, "回流测试有限公司"]
    month = tmp_path / "month.parquet"
    pl.DataFrame(
        {
            "客户名称": [*names, "原平市鑫源煤业有限公司"],
            "计划代码": ["P7001", "P7002", "P7003", "P7004", "P7005", "P7006", "P7007", "P7001"],
            "公司代码": [None, None, None, None, None, None, "612300001", None],
        }
    ).write_parquet(month)
    role_db = ["--db", as_role(url, etl_role), "--db-schema", schema]
    monkeypatch.setenv("WDH_EQC_TOKEN", "test-token")

    assert cli(["plan", str(month), *role_db, "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["answered_before_eqc"] == 5  # three old forms, one canonical key, one existing id
    assert planned["names_for_eqc"] == 2
    summary_path = tmp_path / "summary.json"
    run = ["run", str(month), *role_db, "--eqc-url", sim.url, "--rate-limit", "1000/1s", "--quiet"]
    assert cli([*run, "-o", str(tmp_path / "out.parquet"), "--summary", str(summary_path)]) == 0, capsys.readouterr()

    summary = json.loads(summary_path.read_text())
    assert summary["index_hits_by_type"]["customer_name_legacy"]["found"] == 3
    assert summary["resolved_by"]["index:legacy"] == 4  # rows, the repeated name twice
    with admin.connect() as conn:  # the rate limit in force, kept with the shared quota for `worker status`
        rates = conn.execute(sa.text(f"SELECT quota_key, requests, window_s FROM {schema}.eqc_quota_rate")).all()
    assert [tuple(row) for row in rates] == [(sim.url, 1000, 1.0)]
    out = pl.read_parquet(tmp_path / "out.parquet")
    by_name = dict(zip(out["客户名称"].to_list(), out["company_id"].to_list(), strict=True))
    assert {name: by_name[name] for name in LEGACY_NAMES} == LEGACY_NAMES
    assert by_name[known[0].name] == known[0].company_id

    after = index_rows(admin, schema)
    used = {("平市鑫源煤业有限公司", "customer_name"), ("某某科技有限公司", "customer_name"),
            ("华夏远航-已转出", "customer_name"), ("甲乙丙有限公司", "customer_name")}  # fmt: skip
    for key, old in before.items():
        new = after[key]
        if key in used:  # a use: hit_count + 1 (once per run, not per row) and last_hit_at; nothing else
            assert new["hit_count"] == old["hit_count"] + 1, key
            assert isinstance(new["last_hit_at"], datetime)
            assert {k: v for k, v in new.items() if k not in ("hit_count", "last_hit_at")} == {
                k: v for k, v in old.items() if k not in ("hit_count", "last_hit_at")
            }
        else:
            assert new == old, key
    added = {key: row for key, row in after.items() if key not in before}
    old_forms = {"平市鑫源煤业有限公司", "某某科技有限公司", "华夏远航-已转出"}
    assert not {key for key, _ in added} & old_forms  # never written under an old form
    provenance = {(kind, row["source"], row["source_domain"]) for (_, kind), row in added.items()}
    assert ("customer_name", "eqc_api", "eqc_sync_lookup") in provenance
    assert ("former_name", "eqc_api", "eqc_sync_former_name") in provenance
    assert added[(known[0].name, "customer_name")]["confidence"] == Decimal("1.00")  # 全称精确匹配
    assert added[("回流测试有限公司", "customer_name")]["source"] == "backflow"
    assert added[("P7007", "plan_code")]["company_id"] == "612300001"  # the plan's only rows agree on one id
    assert {row["source"] for row in added.values()} <= {"eqc_api", "backflow"}


def test_run_without_the_tools_tables_fails_in_one_line_naming_index_init(
    pg_schema: tuple[str, str], admin: sa.Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, schema = pg_schema
    seed_production(admin, schema)  # the shared index is there; the tool's own tables are not
    month = tmp_path / "month.parquet"
    pl.DataFrame({"客户名称": ["甲乙丙有限公司"]}).write_parquet(month)
    assert cli(["run", str(month), "--db", url, "--db-schema", schema, "--no-enrichment", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"eqc-enrich index init --db {url} --db-schema {schema}" in err
    assert not (tmp_path / "month.enriched.parquet").exists()
    with admin.connect() as conn:  # no DDL was issued
        assert set(sa.inspect(conn).get_table_names(schema=schema)) == {"enrichment_index"}


def test_a_missing_grant_is_one_line_pointing_at_the_grants(
    pg_schema: tuple[str, str],
    admin: sa.Engine,
    etl_role: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, schema = pg_schema
    init_index(url, schema=schema)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {etl_role}")
        conn.exec_driver_sql(f"GRANT SELECT, INSERT, UPDATE ON {schema}.enrichment_index TO {etl_role}")
    month = tmp_path / "month.parquet"
    pl.DataFrame({"客户名称": ["甲乙丙有限公司"]}).write_parquet(month)
    db = ["--db", as_role(url, etl_role), "--db-schema", schema]
    assert cli(["run", str(month), *db, "--no-enrichment", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "permission denied" in err
    assert "eqc-enrich index init --print-sql" in err
