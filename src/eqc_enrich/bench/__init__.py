"""`eqc-enrich bench`: the story's baseline (AC-1) measured against our flow, as a report a person reads.

    from eqc_enrich.bench import run_bench
    report = run_bench(names=1000, time_scale=1000, out="bench-report")   # simulated EQC, own process

Three runs over the same names and the same pre-filled index: the old sequential flow (3 calls a name),
ours cold (search only, paced at the quota), ours warm (no EQC call at all). With `workers=N` (N >= 2), also
N `eqc-enrich run` processes at once over slices of the rows, on one index and one quota, beside one such
process over all of them (`_jobs`), at a time scale of at most 100.

`run_bench` and `match_chart` load on first use, so that registering the command does not load the simulator
(starlette, uvicorn) or matplotlib into every `eqc-enrich` invocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eqc_enrich.bench._cli import register
from eqc_enrich.bench._config import BenchConfig

if TYPE_CHECKING:
    from eqc_enrich.bench._match_chart import match_chart
    from eqc_enrich.bench._run import run_bench

__all__ = ["BenchConfig", "match_chart", "register", "run_bench"]


def __getattr__(name: str) -> Any:
    if name == "run_bench":
        from eqc_enrich.bench._run import run_bench

        return run_bench
    if name == "match_chart":  # `index match-report --chart`: matplotlib only when a chart is drawn
        from eqc_enrich.bench._match_chart import match_chart

        return match_chart
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
