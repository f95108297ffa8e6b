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
    sections = [_title(report), _headline(report), _setup(report), _runs(report), _jobs(report), _latency(report)]
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
        (
            "efficiency of ours against the strict bound (T_strict / T); the most even pacing can reach",
            f"{_num(cmp.get('efficiency_strict_ours'))}; {_num(cmp.get('even_pacing_ceiling'))}",
            "",
            "",
        ),
        ("EQC calls in the warm run", str(cmp["warm_calls"]), "0", _ok(cmp["warm_calls"] == 0)),
        ("efficiency of the old flow", _num(cmp["efficiency_old"]), "", ""),
        *_jobs_headline(report),
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


def _jobs_headline(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if "jobs" not in report:
        return []
    jobs = report["jobs"]
    many, n, scale = jobs["runs"]["jobs"], jobs["workers"], jobs["time_scale"]
    twice = many["names_asked_twice"]
    return [
        (
            f"efficiency of {n} jobs at once, one quota (T_strict / T, time scale 1/{scale:g})",
            _num(many["efficiency"]),
            f">= {jobs['efficiency_target']:.2f}",
            _ok(jobs["efficiency_met"]),
        ),
        (f"names asked by more than one of the {n} jobs", str(twice), "0", _ok(twice == 0)),
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
        row("requests accepted M", lambda r: f"{r.get('accepted_requests', 0):,}"),
        row("T_strict = floor((M-1)/R) W + L_min + local", lambda r: _dur(r.get("strict_bound_s"))),
        row("T_even = (M-1) W/R + L_min + local", lambda r: _dur(r.get("even_pacing_bound_s"))),
        row(
            "efficiency T_strict / T (even pacing reaches at most T_strict / T_even)",
            lambda r: f"{_num(r.get('efficiency_strict'))} (at most {_num(r.get('even_pacing_ceiling'))})",
        ),
    ]
    note = (
        "T_min = max(M W / R, M L_mean / C) + k L_max + local, with k = 3 for the old flow and 1 for ours, M = every "
        "attempt the server saw (failures included), L = the configured latency range on the benchmark's clock, "
        "local = wall time outside EQC. The warm run asks EQC nothing, so it has no bound."
    )
    return ["## Runs", "", *table(("", *(run["title"] for run in cols)), rows), note, ""]


def _jobs(report: dict[str, Any]) -> list[str]:
    """One process against N at once over slices of the same rows: the N share one quota and one index."""
    if "jobs" not in report:
        return []
    jobs = report["jobs"]
    n = jobs["workers"]
    return [
        f"## Several jobs at once: {n} processes, one quota",
        "",
        *_jobs_intro(jobs),
        *_jobs_table(jobs),
        f"Speed-up of {n} processes at once over one process (T over T): **{_num(jobs['speed_up'])}x**; "
        f"over the old flow (its wall time at 1x over the {n} processes' wall time at 1x): "
        f"{_num(jobs['speed_up_over_old_flow'], 1)}x. The quota bounds both runs alike, so splitting a month into "
        "jobs cannot make it faster; what is measured is that it is not slower and asks no name twice.",
        "",
        f"How it is measured: {jobs['clock']} M = the requests the simulator accepted from all processes "
        "together, R per W its window on this clock, L_min the fastest configured latency: under a strict "
        "sliding window no set of processes with M accepted requests can finish sooner, so efficiency <= 1.",
        "",
        *_jobs_processes(jobs),
    ]


def _jobs_intro(jobs: dict[str, Any]) -> list[str]:
    data, scale = jobs["input"], jobs["time_scale"]
    low, high = jobs["latency_scaled_s"]
    sizes = ", ".join(f"{part['rows']:,}" for part in data["slices"])
    index = "one SQLite file" if jobs["index"] == "sqlite" else "one fresh PostgreSQL schema"
    return [
        f"{jobs['workers']} `eqc-enrich run` processes (the command line, as users start it) begin together, each "
        f"on one slice of the input's {data['rows']:,} rows ({sizes} rows; {data['names_in_several_slices']:,} of "
        f"the {data['names_union']:,} names appear in more than one slice), on {index} filled like the pre-filled "
        "index, against one simulated EQC in its own process; they share the quota through the index and claim "
        "each name before asking it. Beside them: one process over the whole input, from its own copy of the "
        "pre-filled index, against the same simulator (its window left to empty in between). "
        f"**This section runs at time scale 1/{scale:g}** (latency {_dur(low)}-{_dur(high)}, "
        f"{jobs['rate_limit_scaled']}), so that the processes and the simulator on 2 cores leave the pacing, not "
        "the CPU, in charge.",
        "",
    ]


def _jobs_table(jobs: dict[str, Any]) -> list[str]:
    scale, wanted = jobs["time_scale"], jobs["input"]["names_for_eqc"]
    cols = [jobs["runs"]["single"], jobs["runs"]["jobs"]]
    at = f"1/{scale:g}"

    def row(label: str, pick: Any) -> list[str]:
        return [label, *(pick(run) for run in cols)]

    rows = [
        row("processes", lambda r: str(r["processes"])),
        row("names for EQC (the union, less the pre-filled index)", lambda _r: f"{wanted:,}"),
        row("names asked of EQC (distinct searches)", lambda r: f"{r['names_asked']:,}"),
        row("names asked more than once", lambda r: str(r["names_asked_twice"])),
        row("requests sent / accepted", lambda r: f"{r['requests']:,} / {r['accepted']:,}"),
        row("refused with 429 (share)", lambda r: f"{r['rate_limited']:,} ({_pct(r['rate_limited_share'])})"),
        row(f"most accepted in one window (limit {jobs['rate_limit_scaled']})", lambda r: str(r["max_in_window"])),
        row(f"T: first send to last answer, simulator clock ({at})", lambda r: _dur(r["span_s"])),
        row(f"T at 1x (x{scale:g})", lambda r: _dur(r["span_unscaled_s"])),
        row(f"T_strict = floor((M-1)/R) W + L_min ({at})", lambda r: _dur(r["strict_bound_s"])),
        row("**efficiency T_strict / T**", lambda r: f"**{_num(r['efficiency'])}**"),
        row(f"wall: first process started to last exited ({at})", lambda r: _dur(r["wall_s"])),
        row("exit codes", lambda r: ", ".join(str(code) for code in r["exit_codes"])),
    ]
    return table(("", *(run["title"] for run in cols)), rows)


def _jobs_processes(jobs: dict[str, Any]) -> list[str]:
    header = ("run", "input", "rows", "names", "from the index", "asked EQC", "answered by another", "status")
    rows = [
        (run["title"], p["input"], _int(p["rows"]), _int(p["distinct_names"]), _int(p["answered_before_eqc"]),
         _int(p["names_asked"]), _int(p["answered_elsewhere"]), f"{p['status']} (exit {p['exit_code']})",
         f"{_dur(p['wall_s'])} ({_dur(p['wall_unscaled_s'])} at 1x)")
        for run in jobs["runs"].values() for p in run["per_process"]
    ]  # fmt: skip
    return table((*header, f"wall (1/{jobs['time_scale']:g})"), rows)


def _int(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


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
