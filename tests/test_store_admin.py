"""The `index` commands on real databases: stats, export, import (across backends, with conflicts), prune."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest

from eqc_enrich.cli import main
from eqc_enrich.store import IndexEntry, IndexStore, Payload, WriteBatch, init_index, utcnow

if TYPE_CHECKING:
    from tests.conftest import IndexDb

ENTRIES = [
    IndexEntry("中国平安", "customer_name", "600000001", 1.0, "eqc_api", source_domain="eqc_sync_lookup"),
    IndexEntry("平安旧名", "former_name", "600000001", 0.9, "eqc_api", source_domain="eqc_sync_former_name"),
    IndexEntry("P0001", "plan_code", "600000002", 1.0, "yaml"),
    IndexEntry("P0002|华夏公司", "plan_customer", "600000003", 0.8, "domain_learning", source_table="annuity"),
    IndexEntry("某账户", "account_name", "600000004", 0.55, "legacy_migration"),
]


@pytest.fixture
def store(index_db: IndexDb) -> Iterator[IndexStore]:
    opened = index_db.open()
    yield opened
    opened.close()


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(argv)
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def mappings(store: IndexStore) -> set[tuple[Any, ...]]:
    """What an index says, without counters and times."""
    return {
        (r["lookup_key"], r["lookup_type"], r["company_id"], float(r["confidence"]), r["source"],
         r["source_domain"], r["source_table"])
        for r in store.entries.all_rows()
    }  # fmt: skip


def test_stats_counts_rows_caches_runs_claims_and_quota(
    index_db: IndexDb, store: IndexStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store.write(WriteBatch(entries=ENTRIES, payloads=[Payload("600000001", "中国平安", {"companyId": "1"})]))
    store.negatives.add(["旧的不存在公司"], now=utcnow() - timedelta(days=40))
    store.negatives.add(["新的不存在公司"])
    store.journal_start("run-1", "month.xlsx", "00", {})
    store.journal_finish("run-1", "completed", {"rows": 31})
    store.claims.claim(["甲", "乙"], "run-1", 600.0)
    store.quota.reserve("eqc:acct", "run-1", lambda sends, paused, now: now, recent=10, keep_s=600.0)
    code, out, _ = cli(["index", "stats", *index_db.cli(), "--json"], capsys)
    assert code == 0
    stats = json.loads(out)
    assert stats["entries"] == 5
    assert stats["by_type"] == {"account_name": 1, "customer_name": 1, "former_name": 1, "plan_code": 1,
                                "plan_customer": 1}  # fmt: skip
    assert stats["by_source"]["eqc_api"] == 2
    assert stats["by_confidence"] == {"1.00": 2, "0.90-0.99": 1, "0.80-0.89": 1, "<0.60": 1}
    assert stats["negative_cache"] == {"entries": 2, "past_ttl": 1}
    assert stats["payloads"] == 1
    assert [(r["run_id"], r["status"], r["rows"]) for r in stats["recent_runs"]] == [("run-1", "completed", 31)]
    assert [(c["owner"], c["claims"]) for c in stats["claims"]] == [("run-1", 2)]
    assert [(q["quota_key"], q["slots"]) for q in stats["quota"]] == [("eqc:acct", 1)]
    code, out, _ = cli(["index", "stats", *index_db.cli()], capsys)
    assert code == 0
    assert "entries: 5" in out
    assert "negative cache: 2 (1 past the 30d TTL)" in out
    assert "run-1: 2" in out


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_then_import_elsewhere_gives_the_same_index(
    index_db: IndexDb, store: IndexStore, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store.write(WriteBatch(entries=ENTRIES))
    exported = tmp_path / f"index{suffix}"
    code, out, _ = cli(["index", "export", str(exported), *index_db.cli()], capsys)
    assert (code, out.split()[:2]) == (0, ["exported", "5"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    target = tmp_path / "copy.db"
    code, out, _ = cli(["index", "import", str(exported), "--db", str(target), "--json"], capsys)
    report = json.loads(out)
    assert (code, report["inserted"], report["conflicts"]) == (0, 5, [])
    copy = IndexStore(target)
    try:
        assert mappings(copy) == mappings(store)
    finally:
        copy.close()


@pytest.mark.postgres
def test_sqlite_to_postgres_and_back(
    pg_schema: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, schema = pg_schema
    init_index(url, schema=schema)
    local = IndexStore(tmp_path / "local.db")
    local.write(WriteBatch(entries=ENTRIES))
    pg = ["--db", url, "--db-schema", schema]
    assert cli(["index", "export", str(tmp_path / "a.parquet"), "--db", str(tmp_path / "local.db")], capsys)[0] == 0
    assert cli(["index", "import", str(tmp_path / "a.parquet"), *pg], capsys)[0] == 0
    assert cli(["index", "export", str(tmp_path / "b.csv"), *pg], capsys)[0] == 0
    assert cli(["index", "import", str(tmp_path / "b.csv"), "--db", str(tmp_path / "back.db")], capsys)[0] == 0
    remote, back = IndexStore(url, schema=schema), IndexStore(tmp_path / "back.db")
    try:
        assert mappings(remote) == mappings(local) == mappings(back)
    finally:
        for opened in (local, remote, back):
            opened.close()


def test_import_normalizes_name_keys_applies_the_rule_and_reports_conflicts(
    index_db: IndexDb, store: IndexStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store.write(WriteBatch(entries=ENTRIES))
    rows = [  # lookup_key, lookup_type, company_id, confidence, source
        ("中国平安-已转出", "customer_name", "600000009", "0.80", "manual"),  # = 中国平安, weaker: index keeps
        ("平安旧名", "former_name", "600000008", "1.00", "manual"),  # stronger: replaces
        (" P0002 |华夏公司（已转出）", "plan_customer", "600000003", "0.80", "manual"),  # = an entry: unchanged
        ("新公司", "customer_name", "700000001", "0.70", "manual"),
        ("新 公司", "customer_name", "700000002", "0.90", "manual"),  # = 新公司 in the same file: stronger
        ("", "customer_name", "700000003", "1.00", "manual"),  # no key: skipped
        ("无编号公司", "customer_name", "N/A", "1.00", "manual"),  # no id: skipped
    ]
    file = tmp_path / "import.csv"
    columns = ["lookup_key", "lookup_type", "company_id", "confidence", "source"]
    pl.DataFrame(rows, schema=columns, orient="row").write_csv(file)
    code, out, _ = cli(["index", "import", str(file), *index_db.cli(), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    summary = {k: report[k] for k in ("rows", "skipped", "keys", "inserted", "unchanged", "replaced", "kept")}
    assert summary == {"rows": 7, "skipped": 2, "keys": 4, "inserted": 1, "unchanged": 1, "replaced": 1, "kept": 1}
    conflicts = {(c["lookup_key"], c["against"], c["kept_id"]) for c in report["conflicts"]}
    assert conflicts == {("中国平安", "index", "600000001"), ("平安旧名", "index", "600000008"),
                         ("新公司", "file", "700000002")}  # fmt: skip
    found = store.lookup({"customer_name": ["中国平安", "新公司"], "former_name": ["平安旧名"]})
    assert found[("中国平安", "customer_name")].company_id == "600000001"
    assert found[("平安旧名", "former_name")].company_id == "600000008"
    assert found[("新公司", "customer_name")].company_id == "700000002"
    code, out, _ = cli(["index", "import", str(file), *index_db.cli()], capsys)
    assert code == 0
    # the same file again: 中国平安 still differs from the index, 新公司 still within the file
    assert "conflicts (same key, different company id): 2" in out
    assert "customer_name 中国平安: index 600000001" in out


def test_prune_drops_old_negatives_lapsed_claims_and_old_quota_slots(
    index_db: IndexDb, store: IndexStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store.negatives.add(["旧"], now=utcnow() - timedelta(days=31))
    store.negatives.add(["新"])
    store.claims.claim(["甲"], "crashed", 0.0)
    store.claims.claim(["乙"], "alive", 600.0)
    store.quota.reserve("k", "a", lambda sends, paused, now: now - 7200.0, recent=1, keep_s=86_400.0)
    store.quota.reserve("k", "a", lambda sends, paused, now: now, recent=1, keep_s=86_400.0)
    code, out, _ = cli(["index", "prune", *index_db.cli(), "--quota-keep", "1h", "--json"], capsys)
    assert code == 0
    assert json.loads(out) == {"negatives": 1, "claims": 1, "quota_slots": 1}
    assert store.negatives.count() == 1
    code, out, _ = cli(["index", "prune", *index_db.cli()], capsys)
    assert out.startswith("deleted 0 negative answers older than 30d, 0 lapsed claims, 0 quota slots")


def test_bad_files_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", str(tmp_path / "i.db")]
    code, _, err = cli(["index", "export", str(tmp_path / "x.xlsx"), *db], capsys)
    assert code == 2
    assert err.startswith("error: ")
    assert "use .csv or .parquet" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("lookup_key,company_id\n甲,1\n", encoding="utf-8")
    code, _, err = cli(["index", "import", str(bad), *db], capsys)
    assert code == 2
    assert "missing column(s) lookup_type, confidence, source" in err
    bad.write_text("lookup_key,lookup_type,company_id,confidence,source\n甲,customer_name,1,high,manual\n", "utf-8")
    code, _, err = cli(["index", "import", str(bad), *db], capsys)
    assert (code, err.count("\n")) == (2, 1)
    assert "row 2: confidence 'high' is not a number" in err
