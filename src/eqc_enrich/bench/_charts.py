"""The report's three charts, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Times are plotted on the benchmark's clock with the story's clock on a second axis, so a reader never has to
multiply by the time scale in their head.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eqc_enrich._durations import RateLimit, format_duration
from eqc_enrich.bench._measure import RunMeasure, time_split
from eqc_enrich.output import atomic_write

COLORS = {"old_flow": "#c0392b", "ours_cold": "#2471a3", "ours_warm": "#7f8c8d"}
SPLIT_COLORS = {"limiter_wait_s": "#f5b041", "network_s": "#5dade2", "backoff_s": "#af7ac5", "local_s": "#58d68d"}
SPLIT_LABELS = {
    "limiter_wait_s": "limiter wait",
    "network_s": "network",
    "backoff_s": "retry backoff",
    "local_s": "local",
}
_DPI = 120


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI))


def _story_axis(ax: Any, scale: float, unit: str, *, axis: str = "x") -> None:
    """A second axis on top (or right) in story units: scaled seconds x scale / unit seconds."""
    factor = scale / {"s": 1.0, "min": 60.0, "h": 3600.0}[unit]
    functions: tuple[Callable[[Any], Any], Callable[[Any], Any]] = (lambda v: v * factor, lambda v: v / factor)
    if axis == "x":
        ax.secondary_xaxis("top", functions=functions).set_xlabel(f"at the story's speed ({unit})")
    else:
        ax.secondary_yaxis("right", functions=functions).set_ylabel(f"at the story's speed ({unit})")


def _story_unit(seconds_scaled: float, scale: float) -> str:
    real = seconds_scaled * scale
    return "h" if real >= 3 * 3600 else ("min" if real >= 180 else "s")


def latency_chart(runs: list[RunMeasure], latency_s: tuple[float, float], scale: float, path: Path) -> Path:
    """Latency distribution per endpoint and flow: box = p25-p75, whiskers = p1-p99, band = configured range."""
    groups = [(f"{run.title.split(' (')[0]}: {endpoint}", run.key, values)
              for run in runs for endpoint, values in sorted(run.latencies.items()) if values]  # fmt: skip
    fig = Figure(figsize=(9, 1.2 + 0.7 * max(1, len(groups))), layout="constrained")
    ax = fig.add_subplot()
    if groups:
        data = [[v * 1000 for v in values] for _, _, values in groups]
        boxes = ax.boxplot(data, orientation="horizontal", whis=(1, 99), patch_artist=True, showfliers=False)
        for patch, (_, key, _) in zip(boxes["boxes"], groups, strict=True):
            patch.set_facecolor(COLORS.get(key, "#999999"))
            patch.set_alpha(0.6)
        ax.set_yticks(range(1, len(groups) + 1), [label for label, _, _ in groups])
        ax.invert_yaxis()  # the old flow on top, in the order the runs happened
    low, high = (1000 * v / scale for v in latency_s)
    ax.axvspan(low, high, color="#dddddd", alpha=0.5, zorder=0, label="configured latency range")
    ax.set_xlabel(f"latency per call, ms on the benchmark's clock (time scale 1/{scale:g})")
    _story_axis(ax, scale / 1000, "s")
    ax.set_title("EQC latency per endpoint (successful calls)")
    fig.legend(loc="outside lower center")
    return _save(fig, path)


def _bound_line(ax: Any, rate_per_s: float, k: int, names: int, until_s: float, color: str) -> None:
    """The best any flow can do: R/W requests per second, k calls a name, up to the names it must ask."""
    reach_s = names * k / rate_per_s
    xs = [0.0, min(reach_s, until_s), until_s]
    ys = [0.0, min(names, until_s * rate_per_s / k), min(names, until_s * rate_per_s / k)]
    ax.plot(
        xs, ys, linestyle="--", color=color, linewidth=1.2, label=f"quota bound, {k} call{'s' if k > 1 else ''}/name"
    )


def _progress_panel(ax: Any, runs: list[RunMeasure], rate_per_s: float, until_s: float) -> None:
    for run in runs:
        xs = [t for t, _ in run.curve]
        ys = [n for _, n in run.curve]
        ax.step(xs, ys, where="post", color=COLORS.get(run.key), linewidth=2, label=run.title)
        _bound_line(ax, rate_per_s, run.calls_per_name, run.names_asked, until_s, COLORS.get(run.key, "#999999"))
    ax.set_xlim(0, until_s)
    ax.set_ylim(0, max((run.names_asked for run in runs), default=1) * 1.05)
    ax.set_ylabel("names resolved by EQC")
    ax.grid(alpha=0.3)


def progress_chart(runs: list[RunMeasure], limit: RateLimit, scale: float, path: Path) -> Path:
    """Names resolved over time, both flows, each beside its quota bound; right panel zooms on ours."""
    rate_per_s = limit.per_second
    fig = Figure(figsize=(13, 5), layout="constrained")
    full, zoom = fig.subplots(1, 2)
    longest = max((run.curve[-1][0] for run in runs if run.curve), default=1.0)
    _progress_panel(full, runs, rate_per_s, longest * 1.02)
    full.set_title("whole run")
    fast = min((run.curve[-1][0] for run in runs if run.curve), default=longest)
    _progress_panel(zoom, runs, rate_per_s, fast * 1.3)
    zoom.set_title("zoom on the faster run")
    for ax in (full, zoom):
        ax.set_xlabel(f"seconds on the benchmark's clock (time scale 1/{scale:g})")
        _story_axis(ax, scale, _story_unit(ax.get_xlim()[1], scale))
    full.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"Names resolved over time; quota {limit} on the benchmark's clock (bound: R/W requests/s, k calls a name)"
    )
    return _save(fig, path)


def time_split_chart(runs: list[RunMeasure], scale: float, path: Path) -> Path:
    """Where each run's wall time went: seconds on the left, shares of the run on the right."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    seconds_ax, share_ax = fig.subplots(1, 2)
    labels = [run.title for run in runs]
    splits = [time_split(run) for run in runs]
    parts = [part for part in SPLIT_LABELS if any(split[part] > 0 for split in splits)]
    _stacked(seconds_ax, labels, splits, parts, lambda split, _part: 1.0)
    seconds_ax.set_xlim(0, max((run.wall_s for run in runs), default=1.0) * 1.45)  # room for the labels
    for position, run in enumerate(runs):  # the wall time at each bar's end: the warm run's bar is a sliver
        seconds_ax.annotate(
            f" {format_duration(run.wall_s)} (= {format_duration(run.wall_s * scale)} at 1x)",
            (run.wall_s, position),
            va="center",
            fontsize=8,
        )
    _stacked(share_ax, labels, splits, parts, lambda split, _part: 100.0 / max(sum(split.values()), 1e-12))
    seconds_ax.set_xlabel(f"seconds on the benchmark's clock (time scale 1/{scale:g})")
    _story_axis(seconds_ax, scale, _story_unit(seconds_ax.get_xlim()[1], scale))
    share_ax.set_xlabel("share of the run's wall time (%)")
    share_ax.set_yticks([])
    fig.legend(*seconds_ax.get_legend_handles_labels(), loc="outside lower center", ncols=len(parts))
    fig.suptitle("Time split per run: waiting for the limiter, on the network, backing off, local work")
    return _save(fig, path)


def _stacked(
    ax: Any,
    labels: list[str],
    splits: list[dict[str, float]],
    parts: list[str],
    factor: Callable[[dict[str, float], str], float],
) -> None:
    left = [0.0] * len(labels)
    positions = list(range(len(labels)))
    for part in parts:
        widths = [split[part] * factor(split, part) for split in splits]
        ax.barh(positions, widths, left=left, color=SPLIT_COLORS[part], label=SPLIT_LABELS[part])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
