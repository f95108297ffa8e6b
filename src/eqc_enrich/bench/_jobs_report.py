"""The several-jobs part of report.json: one process and N at once, measured against the strict bound.

    T_strict = floor((M - 1) / R) W + L_min     (M = requests the simulator accepted, from all processes)

Under a strict sliding window no set of processes that had M requests accepted could have had its last
answer sooner after its first send, so efficiency = T_strict / T never exceeds 1, however many processes
shared the quota.
"""

from __future__ import annotations

from typing import Any

from eqc_enrich._durations import RateLimit
from eqc_enrich.bench._config import BenchConfig
from eqc_enrich.bench._input import BenchInput
from eqc_enrich.bench._jobs import JobsRun, JobsSection, ProcessRun
from eqc_enrich.model import strict_lower_bound

EFFICIENCY_TARGET = 0.9
CLOCK = (
    "T: the simulated EQC's own monotonic clock, from the first request that reached it (any process, any "
    "outcome) to the moment it finished the last answer, read from its /__stats (first_arrival_s, "
    "last_response_s) after the run; wall: the benchmark's monotonic clock, from starting the first process to "
    "seeing the last one exit (Python start-up included). Seconds at this section's time scale."
)


def jobs_report(section: JobsSection, config: BenchConfig, data: BenchInput, old_wall_1x_s: float) -> dict[str, Any]:
    scale = section.scale
    limit = config.rate_limit.scaled(scale)
    fastest = config.latency[0] / scale
    single = run_figures(section.single, limit, fastest, scale)
    jobs = run_figures(section.jobs, limit, fastest, scale)
    return {
        "workers": config.workers,
        "time_scale": scale,
        "clock": CLOCK,
        "rate_limit_scaled": str(limit),
        "latency_scaled_s": [v / scale for v in config.latency],
        "timeout_s": config.jobs_timeout_s,
        "retries": config.retries,
        "index": section.index_kind,
        "input": {
            "rows": data.rows,
            "slices": [
                {"file": path.name, "rows": rows, "distinct_names": names}
                for path, rows, names in zip(section.slices, section.slice_rows, section.slice_names, strict=True)
            ],
            "names_union": section.names_union,
            "names_in_several_slices": section.names_in_several,
            "names_for_eqc": len(data.names) - len(data.cached),
        },
        "runs": {"single": single, "jobs": jobs},
        "speed_up": _ratio(single["span_s"], jobs["span_s"]),
        "speed_up_over_old_flow": _ratio(old_wall_1x_s, jobs["wall_unscaled_s"]),
        "efficiency_target": EFFICIENCY_TARGET,
        "efficiency_met": None if jobs["efficiency"] is None else jobs["efficiency"] >= EFFICIENCY_TARGET,
    }


def run_figures(run: JobsRun, limit: RateLimit, fastest_s: float, scale: float) -> dict[str, Any]:
    """One run as the simulator saw it, with its bound; times at the section's scale and at 1x."""
    stats = run.stats
    requests = sum(stats["requests"].values())
    accepted = int(stats["accepted"])
    first, last = stats.get("first_arrival_s"), stats.get("last_response_s")
    span = None if first is None or last is None else float(last) - float(first)
    bound = strict_lower_bound(accepted, limit, fastest_s) if accepted else None
    efficiency = bound / span if bound is not None and span else None
    return {
        "title": run.title,
        "processes": len(run.processes),
        "exit_codes": [p.exit_code for p in run.processes],
        "span_s": _round(span),
        "span_unscaled_s": _round(span, scale, 1),
        "wall_s": round(run.wall_s, 4),
        "wall_unscaled_s": round(run.wall_s * scale, 1),
        "requests": requests,
        "accepted": accepted,
        "rate_limited": int(stats["rate_limited"]),
        "rate_limited_share": round(stats["rate_limited"] / requests, 4) if requests else 0.0,
        "names_asked": int(stats["search_keys_distinct"]),
        "names_asked_twice": int(stats["search_keys_repeated"]),
        "max_in_window": int(stats["max_in_window"]),
        "max_in_flight": int(stats["max_in_flight"]),
        "strict_bound_s": _round(bound),
        "efficiency": None if efficiency is None else round(efficiency, 4),
        "per_process": [process_figures(p, scale) for p in run.processes],
    }


def process_figures(process: ProcessRun, scale: float) -> dict[str, Any]:
    """What one process's own summary says (names, not requests), beside its exit code and wall time."""
    s = process.summary
    eqc = s.get("eqc", {})
    return {
        "input": process.input.name,
        "exit_code": process.exit_code,
        "status": s.get("status"),
        "rows": s.get("rows"),
        "distinct_names": s.get("distinct_names"),
        "answered_before_eqc": s.get("answered_before_eqc"),
        "names_asked": eqc.get("names_asked"),
        "answered_elsewhere": eqc.get("answered_elsewhere"),
        "accepted_requests": s.get("accepted_requests"),
        "rate_limited": s.get("rate_limited"),
        "elapsed_s": s.get("elapsed_s"),
        "wall_s": round(process.wall_s, 4),
        "wall_unscaled_s": round(process.wall_s * scale, 1),
    }


def _round(value: float | None, factor: float = 1.0, digits: int = 6) -> float | None:
    return None if value is None else round(value * factor, digits)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if not numerator or not denominator else round(numerator / denominator, 2)
