"""The three-month scenario: month after month with and without the standing worker, one quota.

Measured against the simulator: month 1's run is cut short (`budget`, as a run stopped at the end of a
working day), months 2 and 3 run in full; with the worker, `worker --once` drains the queue between the
months. The chart places the measured request counts on the story's calendar: each run on the first day
of its month, the worker's requests right after it at the quota's pace (what the 29 idle days offer).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eqc_enrich._durations import RateLimit, format_duration
from eqc_enrich.config import EqcOptions
from eqc_enrich.enrich import enrich
from eqc_enrich.options import RunOptions
from eqc_enrich.output import atomic_write, write_text
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_months
from eqc_enrich.worker import WorkerOptions, run_worker

__all__ = ["MonthsResult", "months_chart", "run_months"]

_TOKEN = "bench-months-token"
_DAY_S = 86_400.0
_WEEKS = 13


@dataclass
class MonthsResult:
    """Per scenario and month: names the run asked, its seconds, and the worker's names after it."""

    rate_limit: str
    time_scale: float
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"rate_limit": self.rate_limit, "time_scale": self.time_scale, "runs": self.runs}


def run_months(
    out: Path,
    *,
    seed: int = 7,
    rows: int = 1_200,
    companies: int = 200,
    budget: int = 80,
    time_scale: float = 1000.0,
    echo: Callable[[str], None] = print,
) -> MonthsResult:
    story = RateLimit(10, 60.0)
    limit = RateLimit(story.requests, story.window_s / time_scale)
    months = make_months(seed, rows=rows, companies=companies, existing_id_share=0.0)
    config = SimulatorConfig(seed=seed, time_scale=time_scale, rate_limit=story, tokens=(_TOKEN,), token_ttl=86_400.0)
    result = MonthsResult(str(story), time_scale)
    out.mkdir(parents=True, exist_ok=True)
    with Simulator(config) as sim, tempfile.TemporaryDirectory(prefix="eqc-months-") as folder:
        for label in ("without the worker", "with the worker"):
            db = Path(folder) / f"months-{label.split()[0]}.db"
            rows_of: list[dict[str, float]] = []
            for number, (data, _) in enumerate(months):
                eqc = EqcOptions(url=sim.url, token=_TOKEN, rate_limit=limit, timeout_s=5.0)
                options = RunOptions(db=str(db), eqc=eqc, budget=budget if number == 0 else None)
                started = time.perf_counter()
                summary = enrich(data, options=options).summary
                seconds = time.perf_counter() - started
                worker = 0
                if label == "with the worker":
                    # names only: the scenario counts one request a name (base_info's details are not its subject)
                    report = run_worker(WorkerOptions(db=str(db), eqc=eqc, fill_details=False), once=True)
                    worker = report.asked
                rows_of.append({"month": number + 1, "names_asked": summary.eqc.names_asked,
                                "seconds": round(seconds, 3), "worker_names": worker})  # fmt: skip
                echo(f"{label}: month {number + 1} asked {summary.eqc.names_asked} names in {seconds:.2f}s"
                     + (f"; the worker then settled {worker}" if worker else ""))  # fmt: skip
            result.runs[label] = rows_of
    write_text(out / "months.json", json.dumps(result.as_dict(), indent=2) + "\n")
    months_chart(result, story, out / "months.png")
    write_text(out / "months.md", _markdown(result))
    return result


def weekly_requests(rows: list[dict[str, float]], story: RateLimit) -> tuple[list[float], list[float]]:
    """(run requests, worker requests) per story week: runs on days 0, 30, 60; the worker right after, at pace."""
    per_s = story.requests / story.window_s
    runs, workers = [0.0] * _WEEKS, [0.0] * _WEEKS
    for row in rows:
        start_s = (int(row["month"]) - 1) * 30 * _DAY_S
        run_end = start_s + row["names_asked"] / per_s
        _spread(runs, start_s, row["names_asked"], per_s)
        _spread(workers, run_end, row["worker_names"], per_s)
    return runs, workers


def _spread(weeks: list[float], start_s: float, requests: float, per_s: float) -> None:
    """Place `requests` at the quota's pace from `start_s`, week by week."""
    at, left = start_s, requests
    while left > 0:
        week = int(at // (7 * _DAY_S))
        if week >= len(weeks):
            return
        room = ((week + 1) * 7 * _DAY_S - at) * per_s
        used = min(left, room)
        weeks[week] += used
        left -= used
        at = (week + 1) * 7 * _DAY_S


def months_chart(result: MonthsResult, story: RateLimit, path: Path) -> Path:
    fig = Figure(figsize=(9, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (label, rows) in zip(axes, result.runs.items(), strict=True):
        runs, workers = weekly_requests(rows, story)
        weeks = list(range(1, _WEEKS + 1))
        ax.bar(weeks, runs, color="#2471a3", label="monthly runs")
        ax.bar(weeks, workers, bottom=runs, color="#58d68d", label="standing worker")
        ax.set_title(label)
        ax.set_xlabel("story week")
        ax.set_yscale("symlog")
    axes[0].set_ylabel("EQC requests in the week")
    axes[1].legend(loc="upper right")
    fig.suptitle(f"Quota use over three months ({story}: {int(story.requests * 7 * _DAY_S / story.window_s):,} a week)")
    fig.tight_layout()
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def _markdown(result: MonthsResult) -> str:
    lines = [
        "# Three months, with and without the standing worker",
        "",
        f"Simulated EQC at time scale {result.time_scale:g} ({result.rate_limit} in story units). Month 1's run",
        "is cut short by a budget; months 2 and 3 share about 85% of their customers with the month before.",
        "",
        "| scenario | month | names the run asked | run seconds | in story time | worker names after it |",
        "|---|---|---|---|---|---|",
    ]
    for label, rows in result.runs.items():
        for row in rows:
            story = format_duration(row["seconds"] * result.time_scale)
            lines.append(f"| {label} | {int(row['month'])} | {int(row['names_asked'])} | {row['seconds']:.2f} | "
                         f"{story} | {int(row['worker_names'])} |")  # fmt: skip
    lines += [
        "",
        "Made with `eqc-enrich bench --months --names N` (customers a month; rows twelve times that; month 1's",
        "budget two fifths of them). The chart places the measured counts on the story's calendar: each run on",
        "the first day of its month, the worker's requests right after it at the quota's pace.",
        "",
        "![quota use per story week](months.png)",
        "",
    ]
    return "\n".join(lines)
