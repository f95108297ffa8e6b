"""report.md: the report dict as tables a person reads, with every absolute time beside its time scale."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from eqc_enrich._durations import format_duration

RUN_KEYS = ("old_flow", "ours_cold", "ours_warm")
ENDPOINT_ORDER = ("search", "findDepart", "findLabels", "searchAll")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return [*lines, ""]


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _dur(seconds: float | None) -> str:
    return "n/a" if seconds is None else format_duration(seconds)


def render(report: dict[str, Any]) -> str:
    """The whole report, top to bottom: headline, setup, runs, latency, time split, projection, charts."""
    sections = [_title(report), _headline(report), _setup(report), _runs(report), _latency(report)]
    sections += [_split(report), _projection(report), _charts(), _reproduce(report)]
    return "\n".join(line for section in sections for line in section)


def _title(report: dict[str, Any]) -> list[str]:
    setup = report["setup"]
    lines = [f"# EQC enrichment benchmark ({report['created_at']})", ""]
    if setup["endpoint"] == "real":
        lines += [
            f"> **Measured against a real EQC endpoint** ({setup['eqc_url']}) at time scale 1. Keep `--names` small:",
            "> the old flow costs about 3 x 40 s a name. The names are the simulator's fictitious companies, so a",
            '> real EQC answers most of them "not found" and the old flow then makes one call a name, not three.',
            "",
        ]
    return lines


def _headline(report: dict[str, Any]) -> list[str]:
    cmp, scale = report["comparison"], report["setup"]["time_scale"]
    rows = [
        (
            "speed-up of ours (cold) over the old flow",
            f"{_num(cmp['speed_up'], 1)}x",
            ">= 15x",
            _ok(cmp["speed_up_met"]),
        ),
        (
            "efficiency of ours (T_min / T_measured)",
            _num(cmp["efficiency_ours"]),
            ">= 0.90",
            _ok(cmp["efficiency_met"]),
        ),
        ("EQC calls in the warm run", str(cmp["warm_calls"]), "0", _ok(cmp["warm_calls"] == 0)),
        ("efficiency of the old flow", _num(cmp["efficiency_old"]), "", ""),
    ]
    return [
        "## Result",
        "",
        f"All times are seconds on the benchmark's clock, which runs **{scale:g}x** faster than the story's (EQC "
        f'latency and rate-limit window divided by {scale:g}); "at 1x" columns multiply by {scale:g}. Ratios '
        "(speed-up, efficiency) do not depend on the scale.",
        "",
        *table(("figure", "measured", "target", ""), rows),
    ]


def _ok(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "**missed**")


def _setup(report: dict[str, Any]) -> list[str]:
    s = report["setup"]
    low, high = s["latency_s"]
    rows = [
        ("EQC", f"{s['endpoint']} ({s['eqc_url']})"),
        ("time scale", f"1/{s['time_scale']:g} (benchmark clock = story clock / {s['time_scale']:g})"),
        ("rate limit", f"{s['rate_limit']} (story) = {s['rate_limit_scaled']} on the benchmark's clock"),
        ("latency", f"{low:g}-{high:g} s (story) = {_dur(low / s['time_scale'])}-{_dur(high / s['time_scale'])}"),
        ("per-request timeout / retries", f"{_dur(s['timeout_s'])} / {s['retries']}"),
        ("names", f"{s['names']:,} distinct ({s['known_names']:,} known to EQC, {s['unknown_names']:,} unknown)"),
        ("input rows", f"{s['rows']:,} (several rows a name)"),
        ("pre-filled index", f"{s['cached_names']:,} names (cached share {s['cached_share']:.0%}, legacy_migration)"),
        ("seed", str(s["seed"])),
        ("machine", f"{s['platform']}, Python {s['python']}, {s['cpus']} CPUs"),
    ]
    return ["## Setup", "", *table(("", ""), rows)]


def _runs(report: dict[str, Any]) -> list[str]:
    runs, scale = report["runs"], report["setup"]["time_scale"]
    cols = [runs[key] for key in RUN_KEYS]

    def row(label: str, pick: Any) -> list[str]:
        return [label, *(pick(run) for run in cols)]

    rows = [
        row("wall time (benchmark clock)", lambda r: _dur(r["wall_s"])),
        row(f"wall time at 1x (x{scale:g})", lambda r: _dur(r["wall_unscaled_s"])),
        row("distinct names", lambda r: f"{r['distinct_names']:,}"),
        row("answered by the index", lambda r: f"{r['index_hits']:,} ({_pct(r['index_hit_rate'])})"),
        row("names asked of EQC", lambda r: f"{r['names_asked']:,}"),
        row("found / not found / failed", lambda r: f"{r['found']:,} / {r['not_found']:,} / {r['failed']:,}"),
        *(row(f"calls: {ep}", lambda r, ep=ep: f"{r['calls'].get(ep, 0):,}") for ep in _endpoints(cols)),
        row("calls: total", lambda r: f"{r['calls']['total']:,}"),
        row("failed attempts (of which 429)", lambda r: f"{r['failed_attempts']:,} ({r['rate_limited']:,})"),
        row("lower bound T_min", lambda r: _dur(r["lower_bound_s"])),
        row("efficiency T_min / T", lambda r: _num(r["efficiency"])),
    ]
    note = (
        "T_min = max(M W / R, M L_mean / C) + k L_max + local, with k = 3 for the old flow and 1 for ours, M = every "
        "attempt the server saw (failures included), L = the configured latency range on the benchmark's clock, "
        "local = wall time outside EQC. The warm run asks EQC nothing, so it has no bound."
    )
    return ["## Runs", "", *table(("", *(run["title"] for run in cols)), rows), note, ""]


def _endpoints(runs: list[dict[str, Any]]) -> list[str]:
    seen = {ep for run in runs for ep in run["calls"] if ep != "total"}
    return [ep for ep in ENDPOINT_ORDER if ep in seen] + sorted(seen - set(ENDPOINT_ORDER))


def _latency(report: dict[str, Any]) -> list[str]:
    scale = report["setup"]["time_scale"]
    rows = []
    for key in RUN_KEYS:
        run = report["runs"][key]
        for endpoint, stats in run["latency_s"].items():
            rows.append([run["title"], endpoint, f"{int(stats['count']):,}",
                         *(_num(stats[q] * 1000, 1) for q in ("mean", "p50", "p95", "p99", "max"))])  # fmt: skip
    return [
        "## Latency per endpoint",
        "",
        f"Milliseconds on the benchmark's clock (multiply by {scale / 1000:g} for seconds at the story's speed); "
        "successful calls, time to the parsed response as the client saw it.",
        "",
        *table(("run", "endpoint", "calls", "mean", "p50", "p95", "p99", "max"), rows),
    ]


def _split(report: dict[str, Any]) -> list[str]:
    rows = []
    for key in RUN_KEYS:
        run = report["runs"][key]
        split, wall = run["time_split_s"], run["wall_s"] or 1e-12
        rows.append([run["title"], *(f"{_dur(split[p])} ({split[p] / wall:.0%})" for p in _SPLIT), _dur(wall)])
    return [
        "## Where the time went",
        "",
        *table(("run", "limiter wait", "network", "retry backoff", "local", "wall"), rows),
        "The old flow is sequential, so its sums are wall time. Our requests overlap, so our EQC stage is shared "
        "out in proportion to the request-seconds spent waiting for the limiter and on the network (totals in "
        "report.json, `request_seconds`); our retry sleeps are not timed separately. Local = wall time outside EQC "
        "(read, normalize, index, write).",
        "",
    ]


_SPLIT = ("limiter_wait_s", "network_s", "backoff_s", "local_s")


def _projection(report: dict[str, Any]) -> list[str]:
    p = report["projection"]
    rows = [(r["flow"], f"{r['calls']:,}", _num(r["hours"])) for r in p["table"]]
    low, high = p["latency_s"]
    return [
        f"## Projection: the story's month ({p['rows']:,} rows, {p['rate_limit']}, {low:g}-{high:g} s a call)",
        "",
        f"{p['distinct_names']:,} distinct normalized names ({p['raw_names']:,} raw spellings); index hit rate "
        f"{_pct(p['index_hit_rate'])}; {p['names_for_eqc']:,} names for EQC.",
        "",
        *table(("flow", "calls", "hours"), rows),
        "Assumptions:",
        "",
        *(f"- {text}" for text in p["assumptions"]),
        "",
    ]


def _charts() -> list[str]:
    return [
        "## Charts",
        "",
        "![names resolved over time](progress.png)",
        "",
        "![latency per endpoint](latency.png)",
        "",
        "![time split per run](time_split.png)",
        "",
    ]


def _reproduce(report: dict[str, Any]) -> list[str]:
    return ["## Reproduce", "", "```", report["setup"]["command"], "```", ""]
