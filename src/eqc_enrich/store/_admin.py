"""What the `index` commands do, as functions: stats, export, import (with a conflict report), prune."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from eqc_enrich._errors import InputError
from eqc_enrich.keys import LookupType, clean_company_id, clean_plan_code, normalize_name
from eqc_enrich.output import atomic_write
from eqc_enrich.read import read_table, require_columns
from eqc_enrich.store._engine import redact_url
from eqc_enrich.store._model import IndexEntry, utcnow
from eqc_enrich.store._store import IndexStore

__all__ = ["ImportReport", "export_entries", "import_entries", "index_stats", "prune_index"]

_FILE_TYPES = (".csv", ".parquet")
_LISTED = 100  # conflicts listed by `index stats` (all are counted)
REQUIRED_COLUMNS = ("lookup_key", "lookup_type", "company_id", "confidence", "source")
OPTIONAL_COLUMNS = ("source_domain", "source_table")
_EXPORT_SCHEMA: dict[str, Any] = {
    "lookup_key": pl.String,
    "lookup_type": pl.String,
    "company_id": pl.String,
    "confidence": pl.Float64,
    "source": pl.String,
    "source_domain": pl.String,
    "source_table": pl.String,
    "hit_count": pl.Int64,
    "last_hit_at": pl.Datetime("us", "UTC"),
    "created_at": pl.Datetime("us", "UTC"),
    "updated_at": pl.Datetime("us", "UTC"),
}


def index_stats(store: IndexStore, *, negative_ttl_s: float, runs: int = 5) -> dict[str, Any]:
    """Rows by lookup type, source and confidence band; the negative cache and how much of it is past the
    TTL; payloads; `base_info` (rows, rows without details, the oldest fetch); former names that point at two
    companies (recorded, and found among the index's rows but not recorded yet); recent runs; live claims;
    quota rows."""
    tallies = store.entries.tallies()
    companies = store.base_info.tallies()
    in_index = store.conflicts.in_index()
    known = store.conflicts.known(in_index)
    unrecorded = {key: ids for key, ids in in_index.items() if key not in known}
    expired_before = utcnow() - timedelta(seconds=negative_ttl_s)
    recent = [
        {
            "run_id": run["run_id"],
            "status": run["status"],
            "started_at": _iso(run["started_at"]),
            "finished_at": _iso(run["finished_at"]),
            "input": run["input_path"],
            "rows": (run["counters_json"] or {}).get("rows"),
        }
        for run in store.recent_runs(runs)
    ]
    return {
        "index": describe(store),
        "entries": sum(tallies["by_type"].values()),
        **tallies,
        "negative_cache": {
            "entries": store.negatives.count(),
            "past_ttl": store.negatives.count(asked_before=expired_before),
        },
        "payloads": store.payloads.count(),
        "base_info": {**companies, "oldest_api_fetched_at": _iso(companies["oldest_api_fetched_at"])},
        "former_name_conflicts": {
            "recorded": store.conflicts.count(),
            "unrecorded_in_index": len(unrecorded),  # `index init` records them
            "keys": [conflict.as_dict() for conflict in store.conflicts.listing(limit=_LISTED)],
            "unrecorded_keys": [
                {"lookup_key": key, "company_ids": sorted(ids)} for key, ids in sorted(unrecorded.items())[:_LISTED]
            ],
        },
        "recent_runs": recent,
        "claims": store.claims.live(),
        "quota": store.quota.tallies(),
    }


def describe(store: IndexStore) -> str:
    """The index's URL (password hidden) and schema, for reports."""
    return redact_url(store.url) + (f" (schema {store.schema})" if store.schema else "")


def prune_index(store: IndexStore, *, negative_ttl_s: float, quota_keep_s: float) -> dict[str, int]:
    """Delete negative answers past their TTL, lapsed claims and quota slots older than `quota_keep_s`."""
    asked_before = utcnow() - timedelta(seconds=negative_ttl_s)
    return {
        "negatives": store.negatives.prune(asked_before=asked_before),
        "claims": store.claims.prune_expired(),
        "quota_slots": store.quota.prune(quota_keep_s),
    }


def export_entries(store: IndexStore, path: Path) -> int:
    """Every index row (but the surrogate id) to CSV or Parquet by extension, written atomically."""
    suffix = _file_type(path)
    rows = store.entries.all_rows()
    for row in rows:
        row["confidence"] = float(row["confidence"])
        for name in ("last_hit_at", "created_at", "updated_at"):
            row[name] = _aware(row[name])
    frame = pl.DataFrame(rows, schema=_EXPORT_SCHEMA, orient="row") if rows else pl.DataFrame(schema=_EXPORT_SCHEMA)
    if suffix == ".csv":
        # a BOM, so that Excel shows the Chinese keys; `import` reads it back either way
        atomic_write(path, lambda tmp: frame.write_csv(tmp, include_bom=True))
    else:
        atomic_write(path, lambda tmp: frame.write_parquet(tmp))
    return frame.height


@dataclass
class ImportReport:
    """What `import_entries` did: rows read, distinct keys, what became of them, and every conflict."""

    rows: int = 0
    skipped: int = 0
    keys: int = 0
    inserted: int = 0
    unchanged: int = 0
    replaced: int = 0
    kept: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def import_entries(store: IndexStore, path: Path) -> ImportReport:
    """Upsert a file of index rows (as `export` writes them) under the writers' rule, in one transaction.

    Name keys are normalized (`customer_name`, `former_name`, the name half of `plan_customer`), plan codes
    cleaned; rows without a usable key or id are skipped. A conflict is a key whose company id differs,
    within the file or from the index; the report says which id stays.
    """
    _file_type(path)
    frame = read_table(path).frame
    require_columns(frame, *REQUIRED_COLUMNS)
    report = ImportReport(rows=frame.height)
    chosen: dict[tuple[str, str], IndexEntry] = {}
    for number, record in enumerate(frame.iter_rows(named=True), start=2):
        entry = _entry(record, path, number)
        if entry is None:
            report.skipped += 1
            continue
        key = (entry.lookup_key, entry.lookup_type)
        earlier = chosen.get(key)
        if earlier is not None and earlier.company_id != entry.company_id:
            winner = entry if entry.confidence > earlier.confidence else earlier
            report.conflicts.append(_conflict(key, "file", earlier, entry, winner))
        if earlier is None or entry.confidence > earlier.confidence:
            chosen[key] = entry
    report.keys = len(chosen)
    wanted: dict[str, list[str]] = {}
    for name, kind in chosen:
        wanted.setdefault(kind, []).append(name)
    with store.transaction() as conn:
        existing = store.entries.lookup(wanted, conn=conn)
        for key, entry in chosen.items():
            _tally(report, key, existing.get(key), entry)
        store.entries.upsert(list(chosen.values()), conn=conn)
    return report


def _tally(report: ImportReport, key: tuple[str, str], old: IndexEntry | None, new: IndexEntry) -> None:
    if old is None:
        report.inserted += 1
    elif new.confidence > old.confidence:
        report.replaced += 1
    elif old.company_id == new.company_id:
        report.unchanged += 1
    else:
        report.kept += 1
    if old is not None and old.company_id != new.company_id:
        report.conflicts.append(_conflict(key, "index", old, new, new if new.confidence > old.confidence else old))


def _conflict(
    key: tuple[str, str], against: str, old: IndexEntry, new: IndexEntry, winner: IndexEntry
) -> dict[str, Any]:
    return {
        "lookup_key": key[0],
        "lookup_type": key[1],
        "against": against,  # "index": the id stored; "file": an earlier row of the same file
        "existing_id": old.company_id,
        "existing_confidence": old.confidence,
        "file_id": new.company_id,
        "file_confidence": new.confidence,
        "kept_id": winner.company_id,
    }


def _entry(record: dict[str, Any], path: Path, number: int) -> IndexEntry | None:
    kind = str(record["lookup_type"] or "").strip()
    key = _import_key(kind, record["lookup_key"])
    company_id = clean_company_id(record["company_id"])
    if not kind or not key or company_id is None:
        return None
    try:
        confidence = round(float(record["confidence"]), 2)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: row {number}: confidence {record['confidence']!r} is not a number") from exc
    if not 0.0 <= confidence <= 1.0:
        raise InputError(f"{path}: row {number}: confidence {confidence} is outside 0-1")
    source = str(record["source"] or "").strip()
    if not source:
        raise InputError(f"{path}: row {number}: no source")
    domain, table = (_optional_text(record.get(name)) for name in OPTIONAL_COLUMNS)
    return IndexEntry(key, kind, company_id, confidence, source, source_domain=domain, source_table=table)


def _optional_text(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def _import_key(kind: str, raw: Any) -> str:
    """The key in the form a lookup of this type asks for."""
    text = "" if raw is None else str(raw)
    if kind in (LookupType.CUSTOMER_NAME, LookupType.FORMER_NAME):
        return normalize_name(text)
    if kind == LookupType.PLAN_CODE:
        return clean_plan_code(text)
    if kind == LookupType.PLAN_CUSTOMER:
        plan, _, name = text.partition("|")
        plan_code, name_key = clean_plan_code(plan), normalize_name(name)
        return f"{plan_code}|{name_key}" if plan_code and name_key else ""
    return text.strip()


def _file_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _FILE_TYPES:
        raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use .csv or .parquet")
    return suffix


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    aware = _aware(value)
    return aware.isoformat(timespec="seconds") if aware is not None else None
