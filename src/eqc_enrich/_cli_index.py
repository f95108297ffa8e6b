"""The `index` commands: create the tables once (or print their SQL for a DBA), inspect, export, import, prune.

Errors are `EqcEnrichError`s, which the console entry point turns into one line and exit code 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from eqc_enrich._durations import format_duration, parse_duration
from eqc_enrich._errors import ConfigError
from eqc_enrich._policies import MatchPolicy
from eqc_enrich.match_stage import MIN_NAMES, TARGET_PRECISION, MatchQuality, match_quality
from eqc_enrich.store import (
    IndexStore,
    export_entries,
    import_entries,
    index_stats,
    init_index,
    init_sql,
    prune_index,
    redact_url,
)

index_app = typer.Typer(
    name="index",
    help="The enrichment index: create its tables (index init), inspect, export, import, prune, match-report.",
    no_args_is_help=True,
)

DbOpt = Annotated[
    str | None, typer.Option(envvar="EQC_ENRICH_DB", help="Index: SQLite path or SQLAlchemy URL [./eqc_enrich.db].")
]
SchemaOpt = Annotated[
    str | None, typer.Option(envvar="EQC_ENRICH_DB_SCHEMA", help="PostgreSQL schema of the index, e.g. enterprise.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
NegativeTtlOpt = Annotated[str, typer.Option(help="How long a 'not found' answer is trusted.")]


def register(app: typer.Typer) -> None:
    """Add the `index` command group to the project's command line."""
    app.add_typer(index_app, name="index")


@contextmanager
def _store(db: str | None, schema: str | None) -> Iterator[IndexStore]:
    store = IndexStore(db, schema=schema)
    try:
        yield store
    finally:
        store.close()


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


@index_app.command("init")
def init(
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    print_sql: Annotated[
        bool, typer.Option("--print-sql", help="Print the PostgreSQL DDL and GRANT template; touch nothing.")
    ] = False,
) -> None:
    """Create the tool's tables (and enrichment_index and the schema, if missing). Run once, as the owner."""
    if print_sql:
        typer.echo(init_sql(db_schema), nl=False)
        return
    report = init_index(db, schema=db_schema)
    where = report.url + (f" (schema {report.schema})" if report.schema else "")
    created = ", ".join(report.created) or "nothing (every table was there)"
    typer.echo(f"index at {where}: created {created}")
    if report.present and report.created:
        typer.echo(f"already there, left as they were: {', '.join(report.present)}")
    if report.conflicts_found:
        typer.echo(
            f"former names the index ties to two companies: {report.conflicts_found:,} "
            f"({report.conflicts_recorded:,} newly recorded in eqc_former_name_conflict; runs keep them out)"
        )


@index_app.command("stats")
def stats(
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    negative_ttl: NegativeTtlOpt = "30d",
    as_json: JsonOpt = False,
) -> None:
    """Rows by lookup type, source and confidence; negative cache; payloads; base_info; former names tied to two
    companies; recent runs; claims; quota."""
    ttl = parse_duration(negative_ttl)
    with _store(db, db_schema) as store:
        figures = index_stats(store, negative_ttl_s=ttl)
    if as_json:
        _print_json(figures)
        return
    for line in _stats_lines(figures, negative_ttl):
        typer.echo(line)


def _stats_lines(figures: dict[str, Any], negative_ttl: str) -> list[str]:
    def tally(counts: dict[str, int]) -> str:
        return ", ".join(f"{name} {n:,}" for name, n in counts.items()) or "-"

    negatives = figures["negative_cache"]
    lines = [
        f"index: {figures['index']}",
        f"entries: {figures['entries']:,}",
        f"  by lookup type: {tally(figures['by_type'])}",
        f"  by source: {tally(figures['by_source'])}",
        f"  by confidence: {tally(figures['by_confidence'])}",
        f"negative cache: {negatives['entries']:,} ({negatives['past_ttl']:,} past the {negative_ttl} TTL)",
        f"payloads: {figures['payloads']:,}",
        *_company_lines(figures["base_info"], figures["former_name_conflicts"]),
        f"recent runs: {len(figures['recent_runs']) or 'none'}",
    ]
    for run in figures["recent_runs"]:
        rows = f"rows {run['rows']:,}" if isinstance(run["rows"], int) else "rows -"
        lines.append(f"  {run['started_at']}  {run['status']:<17} {rows}  {run['input']}  ({run['run_id']})")
    lines.append(f"live claims: {sum(c['claims'] for c in figures['claims']):,}")
    for claim in figures["claims"]:
        lapse = format_duration(claim["expires_in_s"])
        lines.append(f"  {claim['owner']}: {claim['claims']:,}, the last lapsing in {lapse}")
    lines.append(f"quota rows: {len(figures['quota']) or 'none'}")
    for quota in figures["quota"]:
        last = _clock_text(quota["last_slot_at"])
        paused = _clock_text(quota["paused_until"]) if quota["paused_until"] else "no pause"
        lines.append(f"  {quota['quota_key']}: {quota['slots']:,} slots kept, last {last}, {paused}")
    return lines


def _company_lines(companies: dict[str, Any], conflicts: dict[str, Any]) -> list[str]:
    oldest = companies["oldest_api_fetched_at"] or "-"
    lines = [
        f"base_info: {companies['rows']:,} companies, {companies['without_details']:,} without details "
        f"(findDepart, findLabels), oldest fetch {oldest}",
        f"former names tied to two companies: {conflicts['recorded']:,} recorded (no row is answered from them)",
    ]
    lines += [
        f"  {c['lookup_key']}: {', '.join(c['company_ids'])} (found by {c['found_by']})" for c in conflicts["keys"]
    ]
    if conflicts["unrecorded_in_index"]:
        lines.append(
            f"  and {conflicts['unrecorded_in_index']:,} in the index's rows (also a customer_name of another "
            "company), not recorded yet: `eqc-enrich index init` records them"
        )
        lines += [f"  {c['lookup_key']}: {', '.join(c['company_ids'])}" for c in conflicts["unrecorded_keys"]]
    return lines


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@index_app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="Where to write: .csv or .parquet.", show_default=False)],
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
) -> None:
    """Write every index row to FILE (written to a temporary file, then renamed)."""
    with _store(db, db_schema) as store:
        rows = export_entries(store, file)
        where = redact_url(store.url)
    typer.echo(f"exported {rows:,} rows from {where} to {file}")


@index_app.command("remap")
def remap(
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write: .csv or .parquet.")],
    since: Annotated[
        str | None, typer.Option(help="Only ids settled since this date (YYYY-MM-DD, or an ISO time, UTC).")
    ] = None,
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
) -> None:
    """Write (temp_id, company_id, name, settled_at, source) for every temporary id since settled."""
    from eqc_enrich.worker import write_remap  # the worker package imports the run; keep `index` light

    when = _since(since) if since else None
    with _store(db, db_schema) as store:
        rows = write_remap(store, output, since=when)
    typer.echo(f"wrote {rows:,} temporary ids that became company ids to {output}")


def _since(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD) or an ISO time", param_hint="--since") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@index_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A .csv or .parquet file, as export writes.", show_default=False)],
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upsert FILE's rows (name keys normalized; the stronger answer wins) and report conflicting ids."""
    with _store(db, db_schema) as store:
        report = import_entries(store, file)
    if as_json:
        _print_json(report.as_dict())
        return
    typer.echo(
        f"read {report.rows:,} rows ({report.skipped:,} without a usable key or id): {report.keys:,} keys; "
        f"{report.inserted:,} new, {report.replaced:,} replaced by a stronger answer, "
        f"{report.unchanged:,} the same, {report.kept:,} kept against a weaker one"
    )
    typer.echo(f"conflicts (same key, different company id): {len(report.conflicts):,}")
    for c in report.conflicts:
        typer.echo(
            f"  {c['lookup_type']} {c['lookup_key']}: {c['against']} {c['existing_id']} "
            f"({c['existing_confidence']:.2f}) vs file {c['file_id']} ({c['file_confidence']:.2f}) -> {c['kept_id']}"
        )


@index_app.command("prune")
def prune(
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    negative_ttl: NegativeTtlOpt = "30d",
    quota_keep: Annotated[str, typer.Option(help="Delete quota slots older than this.")] = "1d",
    as_json: JsonOpt = False,
) -> None:
    """Delete 'not found' answers past their TTL, lapsed claims and old quota slots."""
    with _store(db, db_schema) as store:
        removed = prune_index(
            store, negative_ttl_s=parse_duration(negative_ttl), quota_keep_s=parse_duration(quota_keep)
        )
    if as_json:
        _print_json(removed)
        return
    typer.echo(
        f"deleted {removed['negatives']:,} negative answers older than {negative_ttl}, "
        f"{removed['claims']:,} lapsed claims, {removed['quota_slots']:,} quota slots older than {quota_keep}"
    )


@index_app.command("match-report")
def match_report(
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    json_out: JsonOpt = False,
    chart: Annotated[
        Path | None, typer.Option(help="Also draw the bands as a PNG chart (needs the bench extra).")
    ] = None,
    min_gap: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Count only names this far ahead of another company's candidate.")
    ] = MatchPolicy().min_gap,
) -> None:
    """How often the local candidate was EQC's answer, per score band, and the threshold that has earned 99.9%."""
    with _store(db, db_schema) as store:
        quality = match_quality(store.shadow.all_rows(), min_gap=min_gap)
    if chart is not None:
        _draw(quality, chart)
    if json_out:
        _print_json(quality.as_dict())
        return
    for line in _quality_lines(quality):
        typer.echo(line)


def _draw(quality: MatchQuality, path: Path) -> None:
    try:
        from eqc_enrich.bench import match_chart
    except ImportError as exc:  # matplotlib is the bench extra's
        raise ConfigError("--chart needs the bench extra: pip install 'eqc-enrich[bench]'") from exc
    match_chart(quality, path)


def _quality_lines(quality: MatchQuality) -> list[str]:
    def row(label: str, names: int, agreed: int, precision: float | None, extra: str) -> str:
        shown = f"{precision:.2%}" if precision is not None else "-"
        return f"{label:<12} {names:>7,} {agreed:>7,} {shown:>9}  {extra}"

    lines = [
        f"{quality.rows:,} names in the shadow record (eqc_match_shadow); names with EQC's answer per score band:",
        f"{'band':<12} {'names':>7} {'agreed':>7} {'precision':>9}  at or above the band's lower edge",
    ]
    eq = quality.equivalent
    lines.append(row(eq.label, eq.names, eq.agreed, eq.precision, f"answered always ({eq.answered_locally:,} locally)"))
    for band in quality.bands:
        above = band.precision_at_or_above
        lines.append(
            row(band.label, band.names, band.agreed, band.precision,
                f"{band.names_at_or_above:,} names, " + (f"{above:.2%}" if above is not None else "-"))
        )  # fmt: skip
    if quality.suggested_threshold is not None:
        lines.append(
            f"lowest threshold with precision >= {TARGET_PRECISION:.1%} over >= {MIN_NAMES} names: "
            f"{quality.suggested_threshold:.2f} (run --local-match on --match-threshold "
            f"{quality.suggested_threshold:.2f})"
        )
    else:
        lines.append(
            f"no threshold yet has precision >= {TARGET_PRECISION:.1%} over >= {MIN_NAMES} names: keep --local-match "
            "shadow (similar names still go to EQC) until the record grows"
        )
    return lines
