"""`eqc-enrich bench --local ROWS`: a warm month's local work against the least any tool could do with it.

A generated month of ROWS rows whose names are all in the index (`run --no-enrichment`, to Parquet) against
a bare polars read + left join of name to id + write of the same file. Each is a whole process (start-up,
imports and all, as a person or a scheduler runs it), the two alternated round after round so that a busy
moment of the machine falls on both; the report gives the median wall time and the median peak memory
(the process's maximum resident set) of each, and their ratios.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from eqc_enrich._errors import ConfigError
from eqc_enrich.keys import LookupType, normalize_name
from eqc_enrich.output import write_text
from eqc_enrich.simulator import make_month
from eqc_enrich.store import IndexEntry, IndexStore, WriteBatch

__all__ = ["LOCAL_MEMORY_TARGET", "LOCAL_TIME_TARGET", "LocalRound", "local_report", "run_local"]

LOCAL_TIME_TARGET = 1.5  # ours within 1.5x the bare polars wall time ...
LOCAL_MEMORY_TARGET = 1.3  # ... and 1.3x its peak memory
ROWS_PER_NAME = 50  # 1,000,000 rows: 20,000 customers, about 21,000 distinct names once spelling varies
NAME_COLUMN = "客户名称"
_STAND_IN_SOURCE = "bench"

_REFERENCE = """
import sys
import polars as pl
month, mapping, out = sys.argv[1:4]
pl.read_parquet(month).join(pl.read_parquet(mapping), on={name!r}, how="left").write_parquet(out)
"""

Echo = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LocalRound:
    """One whole-process run: wall seconds and peak resident memory (MiB; None where the OS cannot say)."""

    wall_s: float
    peak_mib: float | None


def run_local(rows: int, *, out: Path, rounds: int = 3, seed: int = 7, echo: Echo | None = None) -> dict[str, Any]:
    """Prepare the month and its index, alternate `rounds` runs of each, write local.json and local.md."""
    if rows < 1 or rounds < 1:
        raise ConfigError(f"--local needs rows >= 1 and --rounds >= 1, got {rows} and {rounds}")
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="eqc-bench-local-") as tmp:
        work = Path(tmp)
        say(f"bench --local: generating a month of {rows:,} rows ({max(1, rows // ROWS_PER_NAME):,} customers) ...")
        month, names = prepare_month(work, rows, seed)
        say(f"bench --local: {names:,} distinct names, all in the index; a warm-up run first")
        ours = _ours_command(work, month)
        reference = [sys.executable, "-c", _REFERENCE.format(name=NAME_COLUMN), str(month), str(work / "map.parquet"),
                     str(work / "reference.parquet")]  # fmt: skip
        _measure(ours)  # the first run learns the month's plan codes and ids into the index: warm after it
        measured: dict[str, list[LocalRound]] = {"ours": [], "polars": []}
        loads: list[float] = []
        for number in range(1, rounds + 1):
            loads.append(_load())
            measured["ours"].append(_measure(ours))
            measured["polars"].append(_measure(reference))
            say(f"  round {number}/{rounds}: ours {measured['ours'][-1].wall_s:.2f}s, "
                f"polars {measured['polars'][-1].wall_s:.2f}s")  # fmt: skip
        summary = json.loads((work / "summary.json").read_text(encoding="utf-8"))
    report = local_report(rows, names, measured, loads=loads, phases=summary.get("phases_s", {}))
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "local.json", json.dumps(report, indent=2) + "\n")
    write_text(out / "local.md", render_local(report))
    ratio = report["ratio"]
    say(f"bench --local: ours {report['ours']['wall_s']:.2f}s and {_mib(report['ours']['peak_mib'])}, polars "
        f"{report['polars']['wall_s']:.2f}s and {_mib(report['polars']['peak_mib'])}: {ratio['wall']}x the time "
        f"(target {LOCAL_TIME_TARGET}x), {ratio['memory']}x the memory (target {LOCAL_MEMORY_TARGET}x); "
        f"wrote {out / 'local.md'}")  # fmt: skip
    return report


def prepare_month(work: Path, rows: int, seed: int) -> tuple[Path, int]:
    """The month, an index with every one of its names (the truth's id, a stand-in for names EQC does not
    know), and the same raw name -> id mapping for the reference; returns the month and its distinct names."""
    data, truth = make_month(seed, rows, companies=max(1, rows // ROWS_PER_NAME))
    month = work / "month.parquet"
    data.write_parquet(month)
    pairs = (
        pl.DataFrame({"raw": data[NAME_COLUMN], "id": truth["company_id"]})
        .filter(pl.col("raw").is_not_null())
        .unique("raw", keep="first", maintain_order=True)
    )
    ids: dict[str, str] = {}
    for raw, company_id in pairs.iter_rows():
        key = normalize_name(raw)
        if key:
            ids.setdefault(key, company_id or f"IN-STAND-IN-{len(ids)}")
    pl.DataFrame(
        {NAME_COLUMN: pairs["raw"], "company_id": [ids.get(normalize_name(raw)) for raw in pairs["raw"]]}
    ).write_parquet(work / "map.parquet")
    store = IndexStore(work / "index.db")
    try:
        kind = LookupType.CUSTOMER_NAME
        store.write(WriteBatch(entries=[IndexEntry(key, kind, cid, 1.0, _STAND_IN_SOURCE) for key, cid in ids.items()]))
    finally:
        store.close()
    return month, len(ids)


def local_report(
    rows: int,
    names: int,
    measured: dict[str, list[LocalRound]],
    *,
    loads: Sequence[float] = (),
    phases: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Medians per side and the two ratios; every round kept, with the machine's load before it."""
    sides = {side: _median(runs) for side, runs in measured.items()}
    ours, polars = sides["ours"], sides["polars"]
    memory = (
        round(ours["peak_mib"] / polars["peak_mib"], 2) if ours["peak_mib"] is not None and polars["peak_mib"] else None
    )
    return {
        "tool": "eqc-enrich bench --local",
        "rows": rows,
        "distinct_names": names,
        "rounds": len(measured["ours"]),
        "ours": {**ours, "command": "eqc-enrich run MONTH --no-enrichment -o OUT.parquet --db INDEX (warm)"},
        "polars": {**polars, "command": "polars: read_parquet(MONTH).join(name -> id, how='left').write_parquet"},
        "ratio": {"wall": round(ours["wall_s"] / polars["wall_s"], 2), "memory": memory},
        "target": {"wall": LOCAL_TIME_TARGET, "memory": LOCAL_MEMORY_TARGET},
        "ours_phases_s": phases or {},
        "load_average_1m": [round(load, 2) for load in loads],
        "runs": {side: [[round(r.wall_s, 4), r.peak_mib] for r in runs] for side, runs in measured.items()},
        "cpus": os.cpu_count(),
    }


def render_local(report: dict[str, Any]) -> str:
    ours, polars, ratio = report["ours"], report["polars"], report["ratio"]
    lines = [
        "# Local work: a warm month against bare polars",
        "",
        f"{report['rows']:,} rows, {report['distinct_names']:,} distinct names, all in the index; each side a "
        f"whole process, alternated, median of {report['rounds']} rounds (load average before each: "
        f"{', '.join(str(load) for load in report['load_average_1m'])}; {report['cpus']} CPUs).",
        "",
        "| | wall time | peak memory |",
        "|---|---|---|",
        f"| ours: `{ours['command']}` | {ours['wall_s']:.2f} s | {_mib(ours['peak_mib'])} |",
        f"| bare polars: read + left join + write | {polars['wall_s']:.2f} s | {_mib(polars['peak_mib'])} |",
        f"| **ratio** (target {report['target']['wall']}x, {report['target']['memory']}x) | **{ratio['wall']}x** | "
        f"**{ratio['memory']}x** |",
        "",
        "Our run's own phases (last round, seconds): "
        + ", ".join(f"{name} {seconds:g}" for name, seconds in report["ours_phases_s"].items()),
        "",
    ]
    return "\n".join(lines)


def _ours_command(work: Path, month: Path) -> list[str]:
    return [
        sys.executable, "-m", "eqc_enrich", "run", str(month), "--no-enrichment", "-o", str(work / "ours.parquet"),
        "--db", str(work / "index.db"), "--quiet", "--summary", str(work / "summary.json"),
    ]  # fmt: skip


_TIMER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
error = child.stderr.read().decode(errors="replace")
_, status, usage = os.wait4(child.pid, 0)
wall = time.perf_counter() - started
scale = 1 << 20 if sys.platform == "darwin" else 1 << 10
print(json.dumps({"wall_s": wall, "peak_mib": usage.ru_maxrss / scale, "code": os.waitstatus_to_exitcode(status),
                  "error": error[-500:]}))
"""
"""Runs one measured command and reports it. A small process of its own starts the command: Linux counts a
process's memory before its `exec` into its peak too, and a child started straight from this one (with the
month and polars loaded) would inherit this process's size as its peak."""


def _measure(command: list[str]) -> LocalRound:
    """Wall time of the whole process, and its own peak memory (`wait4`: the child's maximum RSS)."""
    if not hasattr(os, "wait4"):  # no per-process peak where the OS lacks wait4: time only
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{command[2:4]} exited {done.returncode}: {done.stderr.decode()[-500:]}")
        return LocalRound(time.perf_counter() - started, None)
    timer = subprocess.run([sys.executable, "-I", "-c", _TIMER, *command], capture_output=True, check=True)
    result = json.loads(timer.stdout)
    if result["code"] != 0:
        raise RuntimeError(f"{command[2:4]} exited {result['code']}: {result['error'].strip()}")
    return LocalRound(float(result["wall_s"]), round(float(result["peak_mib"]), 1))


def _median(runs: list[LocalRound]) -> dict[str, Any]:
    peaks = [r.peak_mib for r in runs if r.peak_mib is not None]
    return {
        "wall_s": round(statistics.median(r.wall_s for r in runs), 4),
        "peak_mib": round(statistics.median(peaks), 1) if peaks else None,
    }


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} MiB"
