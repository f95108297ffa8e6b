"""The report dict (report.json) from the three measured runs, and the files written from it."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from eqc_enrich.bench._config import BenchConfig
from eqc_enrich.bench._input import BenchInput
from eqc_enrich.bench._jobs import JobsSection
from eqc_enrich.bench._jobs_report import jobs_report
from eqc_enrich.bench._markdown import render
from eqc_enrich.bench._measure import RunMeasure, efficiency, run_report, strict_bounds
from eqc_enrich.bench._projection import Measured, MonthShape, projection
from eqc_enrich.output import write_text

EFFICIENCY_TARGET = 0.9
SPEED_UP_TARGET = 15.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    token: str
    simulated: bool


def build_report(
    config: BenchConfig,
    endpoint: Endpoint,
    data: BenchInput,
    runs: dict[str, RunMeasure],
    shape: MonthShape,
    jobs: JobsSection | None = None,
) -> dict[str, Any]:
    limit, latency, scale = config.scaled_rate, config.scaled_latency, config.time_scale
    fastest = config.latency[0] / scale  # L_min: the fastest configured latency on the benchmark's clock
    old, cold, warm = runs["old_flow"], runs["ours_cold"], runs["ours_warm"]
    comparison = _comparison(config, old, cold, warm)
    measured = Measured(
        hit_rate=cold.hit_rate,
        efficiency=comparison["efficiency_ours"],
        failure_share=cold.failure_share,
        old_failure_share=old.failure_share,
    )
    report = {
        "tool": "eqc-enrich bench",
        "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "setup": _setup(config, endpoint, data),
        "runs": {key: run_report(run, limit, latency, scale, fastest_s=fastest) for key, run in runs.items()},
        "comparison": comparison,
        "projection": projection(shape, measured),
    }
    if jobs is not None:
        report["jobs"] = jobs_report(jobs, config, data, old.wall_s * scale)
    return report


def _comparison(config: BenchConfig, old: RunMeasure, cold: RunMeasure, warm: RunMeasure) -> dict[str, Any]:
    limit, latency = config.scaled_rate, config.scaled_latency
    ours = efficiency(cold, limit, latency)
    speed_up = old.wall_s / cold.wall_s if cold.wall_s > 0 else None
    strict = strict_bounds(cold, limit, config.latency[0] / config.time_scale)
    return {
        "speed_up": None if speed_up is None else round(speed_up, 2),
        "efficiency_ours": None if ours is None else round(ours, 4),
        "efficiency_strict_ours": None if strict is None else round(strict[0] / cold.wall_s, 4),
        "even_pacing_ceiling": None if strict is None else round(strict[0] / strict[1], 4),
        "efficiency_old": _rounded(efficiency(old, limit, latency)),
        "warm_calls": warm.attempts,
        "speed_up_target": SPEED_UP_TARGET,
        "efficiency_target": EFFICIENCY_TARGET,
        "speed_up_met": None if speed_up is None else speed_up >= SPEED_UP_TARGET,
        "efficiency_met": None if ours is None else ours >= EFFICIENCY_TARGET,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _setup(config: BenchConfig, endpoint: Endpoint, data: BenchInput) -> dict[str, Any]:
    return {
        "endpoint": "simulated" if endpoint.simulated else "real",
        "eqc_url": public_url(endpoint.url),
        "time_scale": config.time_scale,
        "clock": "seconds on the benchmark's clock; multiply by time_scale for the story's clock",
        "rate_limit": str(config.rate_limit),
        "rate_limit_scaled": str(config.scaled_rate),
        "latency_s": list(config.latency),
        "latency_scaled_s": [v / config.time_scale for v in config.latency],
        "timeout_s": config.timeout_s,
        "retries": config.retries,
        "names": len(data.names),
        "known_names": len(data.known),
        "unknown_names": data.unknown,
        "rows": data.rows,
        "cached_share": config.cached_share,
        "cached_names": len(data.cached),
        "seed": config.seed,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpus": os.cpu_count(),
        "command": command_line(config),
    }


def public_url(url: str) -> str:
    """The URL without user, password or query: a report gets shared, credentials must not travel with it."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else (parts.hostname or "")
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def command_line(config: BenchConfig) -> str:
    """The command that reproduces this benchmark."""
    limit, (low, high) = config.rate_limit, config.latency
    where = "--simulate" if config.simulated else f"--eqc-url {public_url(config.eqc_url or '')}"
    jobs = ""
    if config.workers > 1:
        jobs = f" --workers {config.workers} --jobs-time-scale {config.jobs_scale:g}"
        jobs += f" --db {public_url(config.db)}" if config.db else ""
    return (
        f"eqc-enrich bench {where} --names {config.names} --time-scale {config.time_scale:g} "
        f"--rate-limit {limit.requests}/{limit.window_s:g}s --latency {low:g}-{high:g}s "
        f"--cached-share {config.cached_share:g} --seed {config.seed}{jobs} --out {config.out}"
    )


def write_report(report: dict[str, Any], runs: dict[str, RunMeasure], config: BenchConfig) -> list[Path]:
    """report.json, report.md and the three charts in `config.out`, each written whole or not at all."""
    import eqc_enrich.bench._charts as _charts  # matplotlib loads only when charts are drawn

    out = config.out
    scale = config.time_scale
    ordered = [runs["old_flow"], runs["ours_cold"], runs["ours_warm"]]
    return [
        write_text(out / "report.json", json.dumps(report, ensure_ascii=False, indent=2) + "\n"),
        write_text(out / "report.md", render(report)),
        _charts.latency_chart(ordered, config.latency, scale, out / "latency.png"),
        _charts.progress_chart(ordered[:2], config.scaled_rate, scale, out / "progress.png"),
        _charts.time_split_chart(ordered, scale, out / "time_split.png"),
    ]
