"""The match report's chart: per score band, how many names EQC answered and how often with the candidate."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eqc_enrich.match_stage import MatchQuality
from eqc_enrich.output import atomic_write

__all__ = ["match_chart"]


def match_chart(quality: MatchQuality, path: Path) -> Path:
    """Bars: names with EQC's answer per band (agreed and not); a line: precision at or above each band's edge."""
    bands = [quality.equivalent, *quality.bands]
    labels = [band.label for band in bands]
    agreed = [band.agreed for band in bands]
    other = [band.names - band.agreed for band in bands]
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(labels, agreed, color="#2e86c1", label="EQC answered the candidate")
    ax.bar(labels, other, bottom=agreed, color="#c0392b", label="EQC answered another company")
    ax.set_ylabel("names with EQC's answer")
    ax.set_xlabel("score band (equivalent: answered whatever the threshold)")
    ax.tick_params(axis="x", labelrotation=30)
    line = ax.twinx()
    cumulative = [None, *(band.precision_at_or_above for band in quality.bands)]
    line.plot(labels, [p if p is not None else float("nan") for p in cumulative], color="#117a65", marker="o",
              label="precision at or above the band's edge")  # fmt: skip
    line.axhline(quality.target, color="#117a65", linestyle=":", linewidth=1)
    line.set_ylim(0, 1.02)
    line.set_ylabel("precision")
    suggested = quality.suggested_threshold
    ax.set_title(
        "local matches against EQC's answers"
        + (f": suggested threshold {suggested:.2f}" if suggested is not None else ": no threshold suggested yet")
    )
    handles, names = ax.get_legend_handles_labels()
    more, more_names = line.get_legend_handles_labels()
    ax.legend(handles + more, names + more_names, loc="upper right", fontsize=8)
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
