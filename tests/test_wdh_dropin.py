"""A drop-in for WorkDataHub's database, on the real PostgreSQL: their schema (enrichment_index, base_info,
business_info, biz_label) from their migrations, `index init` by the owner, a role with exactly the GRANT
template's rights, and as that role a month's run, the standing worker and a decision on the review page.

`base_info` then holds one row per company EQC answered, with the fields their ETL maps, the details filled
by the worker; their `cleanse` can build `business_info` from it; and a rerun changes no stored value to null.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import polars as pl
import pytest
import sqlalchemy as sa
from tests.options import eqc_options
from tests.production_schema import REFERENCE_DDL, WDH_DDL, as_role, grant_template
from tests.review_pages import decide

from eqc_enrich import RateLimit
from eqc_enrich.cli import main
from eqc_enrich.config import resolve_access
from eqc_enrich.keys import normalize_name
from eqc_enrich.review import ReviewServer
from eqc_enrich.settings import Settings
from eqc_enrich.simulator import Company
from eqc_enrich.store import IndexStore

if TYPE_CHECKING:
    from tests.conftest import SimFactory

    from eqc_enrich.simulator import Simulator

pytestmark = pytest.mark.postgres

TOKEN = "test-token"
UNKNOWN = "全然不存在的示例有限公司"
SEARCH_FIELDS = ("company_full_name", "unite_code", "type", "search_key_word", "data_source")
DETAIL_FIELDS = ("name", "le_rep", "reg_cap", "est_date", "province", "registered_status", "organization_code",
                 "company_former_name")  # fmt: skip
TIMES = ("api_fetched_at", "updated_at")


@pytest.fixture
def admin(pg_schema: tuple[str, str]) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_schema[0])
    yield engine
    engine.dispose()


@pytest.fixture
def role(pg_schema: tuple[str, str], admin: sa.Engine) -> Iterator[str]:
    name = f"eqc_wdh_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN")
    yield name
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{pg_schema[1]}" CASCADE')
        conn.exec_driver_sql(f"DROP OWNED BY {name}")
        conn.exec_driver_sql(f"DROP ROLE {name}")


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(argv)
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def base_info(admin: sa.Engine, schema: str) -> dict[str, dict[str, Any]]:
    with admin.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {schema}.base_info")).mappings().all()
    return {str(row["company_id"]): dict(row) for row in rows}


def expected_search(company: Company, asked: str, match: str) -> dict[str, Any]:
    return {"company_full_name": company.name, "unite_code": company.unite_code, "type": match,
            "search_key_word": asked, "data_source": "search"}  # fmt: skip


def expected_details(company: Company) -> dict[str, Any]:
    return {
        "name": company.name, "le_rep": company.le_rep, "reg_cap": company.reg_cap, "est_date": company.est_date,
        "province": company.province, "registered_status": company.registered_status,
        "organization_code": company.unite_code[8:17], "company_former_name": ",".join(company.former_names) or None,
    }  # fmt: skip


def review_decision(sim: Simulator, url: str, schema: str, key: str, query: str, company_id: str) -> None:
    """As a person does: search EQC with an edited query, then accept the candidate (over HTTP, on loopback)."""
    store = IndexStore(url, schema=schema)
    try:
        store.check_grants()
        access = resolve_access(eqc_options(eqc_url=sim.url, token=TOKEN, rate_limit=RateLimit(1000, 1.0)), Settings())
        with (
            ReviewServer(store, access, os_user="reviewer") as server,
            httpx.Client(base_url=server.base_url, follow_redirects=False, timeout=60) as http,
        ):
            assert http.get(server.url).status_code == 303  # the printed link, traded for the session cookie
            assert http.post("/search", data={"key": key, "query": query}).status_code == 303
            page = http.get("/", params={"key": key}).text
            assert company_id in page  # the candidate EQC found
            decided = decide(http, key=key, decision="accept", company_id=company_id, query=query)
            assert decided.status_code == 303
    finally:
        store.close()


def test_their_schema_a_month_the_worker_and_a_review_as_a_least_privileged_role(
    pg_schema: tuple[str, str],
    admin: sa.Engine,
    role: str,
    sim_factory: SimFactory,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, schema = pg_schema
    with admin.begin() as conn:  # their database, as their migrations left it
        conn.exec_driver_sql(REFERENCE_DDL.format(s=schema) + WDH_DDL.format(s=schema))
    code, out, _ = cli(["index", "init", "--db", url, "--db-schema", schema], capsys)  # the owner, once
    assert code == 0
    assert "left as they were: enrichment_index, base_info" in out
    with admin.begin() as conn:
        for grant in grant_template(schema, role):  # exactly the template's rights, nothing more
            conn.exec_driver_sql(grant)
        privileges = {
            table: conn.execute(
                sa.text("SELECT has_table_privilege(:r, :t, 'DELETE')"), {"r": role, "t": f"{schema}.{table}"}
            ).scalar()
            for table in ("enrichment_index", "base_info", "business_info")
        }
        assert privileges == {"enrichment_index": False, "base_info": False, "business_info": False}
        assert not conn.execute(sa.text(f"SELECT has_schema_privilege('{role}', '{schema}', 'CREATE')")).scalar()

    sim = sim_factory()
    universe = sim.state.universe.companies
    renamed = [c for c in universe if c.former_names][:3]
    plain = [c for c in universe[:40] if not c.former_names][:7]
    asked_first = [*renamed, *plain[:5]]  # two rows each: within the budget
    for_the_worker = plain[5:7]  # one row each: over the budget, left for the worker
    reviewed = universe[100]  # the person finds the unknown name's company by another query
    names = [c.name for c in asked_first for _ in range(2)] + [c.name for c in for_the_worker] + [UNKNOWN] * 3
    month = tmp_path / "month.parquet"
    pl.DataFrame({"客户名称": names, "计划代码": [f"P{n}" for n in range(len(names))]}).write_parquet(month)
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    db = ["--db", as_role(url, role), "--db-schema", schema]
    eqc = ["--eqc-url", sim.url, "--rate-limit", "1000/1s"]

    code, _, err = cli(["run", str(month), *db, *eqc, "--budget", str(len(asked_first) + 1), "--quiet"], capsys)
    assert code == 0, err
    assert sim.stats()["requests"]["findDepart"] == 0  # a run asks one call a name
    code, _, err = cli(["worker", "--once", *db, *eqc, "--quiet"], capsys)
    assert code == 0, err
    review_decision(sim, as_role(url, role), schema, normalize_name(UNKNOWN), reviewed.name, reviewed.company_id)
    code, _, err = cli(["worker", "--once", *db, *eqc, "--quiet"], capsys)  # the reviewed company's details
    assert code == 0, err

    stored = base_info(admin, schema)
    answered = [*asked_first, *for_the_worker, reviewed]
    assert set(stored) == {c.company_id for c in answered}  # one row per company answered, the unknown name none
    for company in answered:
        row = stored[company.company_id]
        asked = normalize_name(company.name)
        assert {k: row[k] for k in SEARCH_FIELDS} == expected_search(company, asked, "全称精确匹配")
        assert isinstance(row["_score"], float)
        assert isinstance(row["rank_score"], float)
        assert str(row["raw_data"]["list"][0]["companyId"]) == company.company_id  # the search body
        assert {k: row[k] for k in DETAIL_FIELDS} == expected_details(company)  # filled by the worker
        assert row["raw_business_info"]["businessInfodto"]["company_id"] == company.company_id
        assert [group["type"] for group in row["raw_biz_label"]["labels"]] == ["行业分类", "企业性质"]
        assert row["api_fetched_at"] is not None
    code, out, _ = cli(["worker", "status", *db, *eqc], capsys)
    assert "base_info without details (findDepart, findLabels): 0" in out
    code, out, _ = cli(["index", "stats", *db], capsys)
    assert f"base_info: {len(answered)} companies, 0 without details" in out
    with admin.connect() as conn:  # the review's decision, as the role wrote it
        manual = conn.execute(
            sa.text(f"SELECT company_id, source FROM {schema}.enrichment_index WHERE lookup_key = :k"),
            {"k": normalize_name(UNKNOWN)},
        ).one()
    assert tuple(manual) == (reviewed.company_id, "manual")

    # their `cleanse` reads the raw columns: business_info from raw_business_info, under its foreign key
    with admin.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {schema}.business_info (company_id, legal_person_name, company_name) "
            f"SELECT company_id, raw_business_info->'businessInfodto'->>'legal_person_name', "
            f"raw_business_info->'businessInfodto'->>'company_name' FROM {schema}.base_info"
        )
        cleansed = conn.execute(sa.text(f"SELECT count(*) FROM {schema}.business_info")).scalar()
    assert cleansed == len(answered)

    # a rerun that asks every name again (search only, one call a name) erases nothing
    before = {cid: {k: v for k, v in row.items() if k not in TIMES} for cid, row in base_info(admin, schema).items()}
    sim.reset_stats()
    code, _, err = cli(["run", str(month), *db, *eqc, "--refresh", "1ms", "--quiet", "-o",
                        str(tmp_path / "again.parquet")], capsys)  # fmt: skip
    assert code == 0, err
    assert sim.stats()["requests"]["search"] >= len(asked_first) + len(for_the_worker)
    after = base_info(admin, schema)
    nulled = [
        (cid, k) for cid, row in before.items() for k, v in row.items() if v is not None and after[cid][k] is None
    ]
    assert nulled == []
    assert all(after[cid]["raw_business_info"] == before[cid]["raw_business_info"] for cid in before)


def test_a_role_without_the_base_info_grant_is_told_so_in_one_line_before_anything_is_asked(
    pg_schema: tuple[str, str], admin: sa.Engine, role: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url, schema = pg_schema
    with admin.begin() as conn:
        conn.exec_driver_sql(REFERENCE_DDL.format(s=schema) + WDH_DDL.format(s=schema))
    assert cli(["index", "init", "--db", url, "--db-schema", schema], capsys)[0] == 0
    with admin.begin() as conn:
        for grant in grant_template(schema, role):
            if ".base_info " not in grant:  # everything the template lists but base_info's line
                conn.exec_driver_sql(grant)
    month = tmp_path / "month.parquet"
    pl.DataFrame({"客户名称": ["甲乙丙有限公司"]}).write_parquet(month)
    db = ["--db", as_role(url, role), "--db-schema", schema]
    for command in (["run", str(month), "--quiet"], ["worker", "--once", "--quiet"]):
        code, _, err = cli([*command, *db, "--eqc-url", "http://127.0.0.1:9"], capsys)
        assert code == 2
        assert len(err.strip().splitlines()) == 1
        assert f"permission denied: the role lacks SELECT, INSERT, UPDATE on {schema}.base_info" in err
    assert not (tmp_path / "month.enriched.parquet").exists()
