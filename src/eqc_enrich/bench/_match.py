"""`eqc-enrich bench --local-match`: the realistic month with the local matcher off, in shadow and on.

Against the simulator (in this process), with an index already holding last month's companies (last month
run with the matcher off). First the threshold is earned as a user would earn it: further months drawn from
the same last month (`make_realistic(variant_seed=k)`) run in shadow on a copy of that index, one after the
other, until `index match-report`'s measure (`match_quality`) suggests a threshold, or `max_calibration`
months have run. Then the month to measure (variant seed 0, none of the calibration's draws) runs three
times, each on its own copy of last month's index: `off`, `shadow`, and `on` with the suggested threshold.

Per mode: the names sent to EQC, the ids wrong against the truth (rows and names), what became of each kind of
variant and look-alike, and the stage's time; per score band of the shadow run: how often the local
candidate was the truth's company and EQC's answer (precision), and how much of the month a threshold at the
band's edge would have answered locally (coverage). Written as local_match.md, local_match.json and the
calibration's bands as local_match.png.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from eqc_enrich._durations import RateLimit
from eqc_enrich._errors import ConfigError
from eqc_enrich._policies import MatchPolicy
from eqc_enrich.bench._match_chart import match_chart
from eqc_enrich.config import EqcOptions
from eqc_enrich.enrich import enrich
from eqc_enrich.keys import normalize_name
from eqc_enrich.match_stage import BANDS, EQUIVALENT, MatchQuality, match_quality
from eqc_enrich.options import RunOptions
from eqc_enrich.output import write_text
from eqc_enrich.simulator import (
    CONFUSER_KINDS,
    REAL_MONTH_COMPANIES,
    REAL_MONTH_ROWS,
    VARIANT_KINDS,
    Simulator,
    SimulatorConfig,
    make_realistic,
)
from eqc_enrich.store import IndexStore, ShadowRow

__all__ = ["MODES", "run_match_bench"]

MODES = ("off", "shadow", "on")
NAME_COLUMN = "客户名称"
LOCAL = "index:match"
_OPEN_SOURCES = (LOCAL, "eqc", "temp")  # rows of a name the index stage left open (plan codes answer some first)
_TOKEN = "bench-match-token"
_STORY_LIMIT = RateLimit(10, 60.0)
_STORY_LATENCY_S = (20.0, 60.0)

Echo = Callable[[str], None]
Month = tuple[pl.DataFrame, pl.DataFrame]


def run_match_bench(
    out: Path,
    *,
    companies: int | None = None,
    seed: int = 7,
    time_scale: float = 1000.0,
    max_calibration: int = 6,
    echo: Echo = print,
) -> dict[str, Any]:
    """The calibration, the three runs of the month, the report; returns what local_match.json holds.
    `companies`: a month's customers (default the real month's 2,500, in 30,986 rows)."""
    companies = REAL_MONTH_COMPANIES if companies is None else companies
    if companies < 1 or max_calibration < 1 or time_scale <= 0:
        raise ConfigError("bench --local-match needs --names >= 1, a positive time scale and a calibration month")
    rows = max(1, round(companies * REAL_MONTH_ROWS / REAL_MONTH_COMPANIES))
    last, this = make_realistic(seed, rows=rows, companies=companies)
    config = SimulatorConfig(seed=seed, latency=_STORY_LATENCY_S, time_scale=time_scale, rate_limit=_STORY_LIMIT,
                             tokens=(_TOKEN,), token_ttl=10 * 86_400.0)  # fmt: skip
    eqc = EqcOptions(token=_TOKEN, rate_limit=_STORY_LIMIT.scaled(time_scale), timeout_s=5.0)
    report: dict[str, Any] = {
        "tool": "eqc-enrich bench --local-match",
        "seed": seed, "rows": rows, "companies": companies, "time_scale": time_scale,
        "rate_limit": str(_STORY_LIMIT), "cpus": os.cpu_count(), "load_average_1m": [_load()],
    }  # fmt: skip
    with Simulator(config) as sim, tempfile.TemporaryDirectory(prefix="eqc-bench-match-") as folder:
        work, eqc = Path(folder), replace(eqc, url=sim.url)
        base = work / "last-month.db"
        echo(f"bench --local-match: last month ({rows:,} rows, {companies:,} companies) into the index, matcher off")
        first = _run(last[0], base, eqc, "off", MatchPolicy())
        report["last_month"] = {"names_asked": first["names_asked"], "seconds": first["seconds"]}
        quality, calibration = _calibrate(work, base, eqc, seed, rows, companies, max_calibration, echo)
        report["calibration"] = {"months": calibration, "match_report": quality.as_dict()}
        threshold = quality.suggested_threshold
        policy = MatchPolicy() if threshold is None else MatchPolicy(threshold=threshold)
        earned = "match-report" if threshold is not None else "the default: none suggested"
        report["policy_on"] = {"threshold": policy.threshold, "min_gap": policy.min_gap, "from": earned}
        known = _registered_names_known(base, this[1])
        report["runs"] = {}
        for mode in MODES:
            db = work / f"{mode}.db"
            shutil.copyfile(base, db)
            report["load_average_1m"].append(_load())
            run = _run(this[0], db, eqc, mode, policy, truth=this[1], known=known)
            report["runs"][mode] = run
            echo(f"  {mode}: {run['names_asked']:,} names sent to EQC, {run['wrong_names']} wrong ids, "
                 f"{run['answered_locally']:,} answered locally in {run['stage_s']:.2f}s")  # fmt: skip
            if mode == "shadow":
                report["bands"] = _bands(db, this, policy, open_names=run["local_match"].get("names", 0))
    report["fall_vs_off"] = {
        mode: round(1 - run["names_asked"] / report["runs"]["off"]["names_asked"], 4)
        if report["runs"]["off"]["names_asked"]
        else None
        for mode, run in report["runs"].items()
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "local_match.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    match_chart(quality, out / "local_match.png")
    write_text(out / "local_match.md", render_match(report))
    on, off = report["runs"]["on"], report["runs"]["off"]
    echo(f"bench --local-match: threshold {policy.threshold} ({report['policy_on']['from']}); names sent to EQC "
         f"{off['names_asked']:,} off, {on['names_asked']:,} on ({_share(report['fall_vs_off']['on'])} fewer); "
         f"wrote {out / 'local_match.md'}")  # fmt: skip
    return report


def _calibrate(
    work: Path, base: Path, eqc: EqcOptions, seed: int, rows: int, companies: int, most: int, echo: Echo
) -> tuple[MatchQuality, list[dict[str, Any]]]:
    """Shadow months on a copy of last month's index until the record suggests a threshold."""
    db = work / "calibration.db"
    shutil.copyfile(base, db)
    months: list[dict[str, Any]] = []
    quality = match_quality([], min_gap=MatchPolicy().min_gap)
    for number in range(1, most + 1):
        _, (data, _) = make_realistic(seed, rows=rows, companies=companies, variant_seed=number)
        run = _run(data, db, eqc, "shadow", MatchPolicy())
        quality = match_quality(_shadow_rows(db), min_gap=MatchPolicy().min_gap)
        judged = sum(band.names for band in quality.bands)
        months.append({"variant_seed": number, "names_asked": run["names_asked"], "similar_with_verdict": judged,
                       "suggested_threshold": quality.suggested_threshold})  # fmt: skip
        echo(f"  calibration month {number} (shadow): {judged:,} similar names with EQC's verdict so far; "
             f"suggested threshold: {quality.suggested_threshold}")  # fmt: skip
        if quality.suggested_threshold is not None:
            break
    return quality, months


def _run(
    data: pl.DataFrame,
    db: Path,
    eqc: EqcOptions,
    mode: str,
    policy: MatchPolicy,
    *,
    truth: pl.DataFrame | None = None,
    known: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    options = RunOptions(db=str(db), eqc=eqc, local_match=mode, match=policy, salt="bench-match")
    started = time.perf_counter()
    result = enrich(data, options=options)
    seconds = time.perf_counter() - started
    summary = result.summary
    if summary.status != "completed":
        raise RuntimeError(f"the {mode} run ended {summary.status}: {summary.message}")
    run: dict[str, Any] = {
        "names_asked": summary.eqc.names_asked,
        "seconds": round(seconds, 3),
        "answered_locally": summary.answered_locally,
        "stage_s": float(summary.local_match.get("stage_s", 0.0)),
        "local_match": {k: v for k, v in summary.local_match.items() if k != "policy"},
    }
    if truth is not None:
        run.update(_scored(result.frame, truth, known))
    return run


def _scored(frame: pl.DataFrame, truth: pl.DataFrame, known: frozenset[str]) -> dict[str, Any]:
    """Rows and names against the truth: wrong ids, and per kind of variant and look-alike what became of it."""
    rows = (
        frame.select(NAME_COLUMN, "company_id", "company_id_source")
        .with_row_index("row")
        .join(truth.rename({"company_id": "expected"}), on="row")
    )
    wrong = rows.filter(pl.col("expected").is_not_null() & (pl.col("company_id") != pl.col("expected")))
    kinds: dict[str, dict[str, int]] = {}
    for kind in (*VARIANT_KINDS, *CONFUSER_KINDS):
        of_kind = rows.filter(pl.col("variant") == kind)
        names = of_kind.group_by(NAME_COLUMN).agg(
            pl.col("company_id_source").eq(LOCAL).any().alias("local"),
            (pl.col("company_id") != pl.col("expected")).fill_null(False).any().alias("wrong"),
            pl.col("name").first().alias("registered"),
            pl.col("company_id_source").is_in(_OPEN_SOURCES).any().alias("reached"),
        )
        entry = {
            "names": names.height,
            "answered_locally": int(names["local"].sum()),
            "wrong": int(names["wrong"].sum()),
        }
        if VARIANT_KINDS.get(kind) == EQUIVALENT:  # left open by the index, which knows the registered name
            registered_known = pl.col("registered").map_elements(lambda n: normalize_name(n) in known,
                                                                 return_dtype=pl.Boolean)  # fmt: skip
            answerable = names.filter(pl.col("reached") & registered_known)
            entry["answerable"] = answerable.height
            entry["answerable_locally"] = int(answerable["local"].sum())
        kinds[kind] = entry
    confusers = rows.filter(pl.col("variant").is_in(list(CONFUSER_KINDS)))
    confused = confusers.filter(pl.col("company_id") != pl.col("expected"))
    return {
        "rows": rows.height,
        "wrong_rows": wrong.height,
        "wrong_names": wrong[NAME_COLUMN].n_unique(),
        "confusers_given_another_id": confused[NAME_COLUMN].n_unique(),
        "sources": dict(Counter(rows["company_id_source"].to_list())),
        "kinds": kinds,
    }


def _registered_names_known(db: Path, truth: pl.DataFrame) -> frozenset[str]:
    """The registered names (as keys) of this month's companies that last month's index holds."""
    keys = [key for name in truth["name"].drop_nulls().unique() if (key := normalize_name(name))]
    store = IndexStore(db)
    try:
        return frozenset(key for key, _ in store.lookup({"customer_name": keys}))
    finally:
        store.close()


def _shadow_rows(db: Path) -> list[ShadowRow]:
    store = IndexStore(db)
    try:
        return store.shadow.all_rows()
    finally:
        store.close()


def _bands(db: Path, month: Month, policy: MatchPolicy, *, open_names: int) -> list[dict[str, Any]]:
    """Per score band of the shadow run: the similar names in it, how often the candidate was the truth's
    company and EQC's answer, and the share of the month's open names a threshold at its edge would answer
    locally (equivalent names included: they are answered whatever the threshold)."""
    data, truth = month
    expected = _expected_by_key(data, truth)
    rows = _shadow_rows(db)
    open_names = max(1, open_names)
    equivalent = sum(1 for r in rows if r.kind == EQUIVALENT and r.action == "answered")
    similar = [r for r in rows if r.kind != EQUIVALENT]
    out: list[dict[str, Any]] = []
    high, covered = 1.0, equivalent
    for low in BANDS:
        band = [r for r in similar if low <= r.score < high]
        answerable = [r for r in band if r.gap is None or r.gap >= policy.min_gap]
        true = [r for r in band if r.lookup_key in expected]
        right = sum(1 for r in true if expected[r.lookup_key] == r.candidate_id)
        judged = [r for r in band if r.agreed is not None]
        covered += len(answerable)
        out.append({
            "band": f"{low:.2f}-{high:.2f}", "low": low, "names": len(band),
            "with_truth": len(true), "right_by_truth": right,
            "precision_by_truth": round(right / len(true), 4) if true else None,
            "eqc_verdicts": len(judged), "eqc_agreed": sum(1 for r in judged if r.agreed),
            "coverage_at_or_above": round(covered / open_names, 4),
        })  # fmt: skip
        high = low
    return out


def _expected_by_key(data: pl.DataFrame, truth: pl.DataFrame) -> dict[str, str]:
    """Each name's key -> the truth's company id (keys whose rows the truth gives one company only)."""
    pairs = (
        pl.DataFrame({"raw": data[NAME_COLUMN], "expected": truth["company_id"]})
        .filter(pl.col("raw").is_not_null() & pl.col("expected").is_not_null())
        .unique()
    )
    ids: dict[str, set[str]] = {}
    for raw, company_id in pairs.iter_rows():
        key = normalize_name(raw)
        if key:
            ids.setdefault(key, set()).add(company_id)
    return {key: next(iter(found)) for key, found in ids.items() if len(found) == 1}


def render_match(report: Mapping[str, Any]) -> str:
    """local_match.md: the set-up, the calibration, the modes side by side, the kinds of names, the bands."""
    return "\n".join(
        [*_setup_lines(report), *_mode_lines(report), *_kind_lines(report["runs"]), *_band_lines(report), ""]
    )


def _setup_lines(report: Mapping[str, Any]) -> list[str]:
    policy = report["policy_on"]
    loads = ", ".join(f"{load:.2f}" for load in report["load_average_1m"])
    lines = [
        "# The local matcher on the realistic month: off, shadow, on",
        "",
        f"A `make-data --variants realistic` month (seed {report['seed']}, {report['rows']:,} rows, "
        f"{report['companies']:,} companies) against the simulator at time scale {report['time_scale']:g} "
        f"({report['rate_limit']} in story units), each mode on its own copy of an index holding last month "
        f"(run with the matcher off: {report['last_month']['names_asked']:,} names asked). Load average before "
        f"each part: {loads} ({report['cpus']} CPUs).",
        "",
        f"**The threshold of `on`: {policy['threshold']:.2f}** ({policy['from']}; least gap {policy['min_gap']}), "
        f"earned by {len(report['calibration']['months'])} calibration month(s) in shadow (other draws from the "
        "same last month, on a copy of its index) until `index match-report` suggested one:",
        "",
        "| calibration month | names sent to EQC | similar names with EQC's verdict (so far) | suggested threshold |",
        "|---|---|---|---|",
    ]
    for month in report["calibration"]["months"]:
        suggested = month["suggested_threshold"]
        lines.append(
            f"| {month['variant_seed']} | {month['names_asked']:,} | {month['similar_with_verdict']:,} | "
            f"{'-' if suggested is None else suggested} |"
        )
    return lines


def _mode_lines(report: Mapping[str, Any]) -> list[str]:
    runs, fall = report["runs"], report["fall_vs_off"]
    return [
        "",
        "## The month, per mode",
        "",
        "| | " + " | ".join(MODES) + " |",
        "|---|" + "---|" * len(MODES),
        _row("names sent to EQC", [f"{runs[m]['names_asked']:,}" for m in MODES]),
        _row("fewer than `off`", [_share(fall[m]) for m in MODES]),
        _row("answered locally (names)", [f"{runs[m]['answered_locally']:,}" for m in MODES]),
        _row(
            "wrong ids against the truth (names / rows)",
            [f"{runs[m]['wrong_names']} / {runs[m]['wrong_rows']}" for m in MODES],
        ),
        _row("look-alikes given another company's id", [str(runs[m]["confusers_given_another_id"]) for m in MODES]),
        _row("local match stage (s)", [f"{runs[m]['stage_s']:.3f}" for m in MODES]),
        _row("whole run (s)", [f"{runs[m]['seconds']:.2f}" for m in MODES]),
        "",
    ]


def _kind_lines(runs: Mapping[str, Any]) -> list[str]:
    lines = [
        "What became of each kind of name (distinct names: answered locally / of them / with a wrong id). An",
        "equivalent variant is answerable when the index stage left it open (a plan code answers some first) and",
        "last month's index holds its company's registered name; every answerable one is to be answered locally:",
        "",
        "| kind | what it is | " + " | ".join(MODES) + " | answerable: answered locally in shadow, on |",
        "|---|---|" + "---|" * (len(MODES) + 1),
    ]
    for kind in (*VARIANT_KINDS, *CONFUSER_KINDS):
        cells = [f"{runs[m]['kinds'][kind]['answered_locally']} / {runs[m]['kinds'][kind]['names']} / "
                 f"{runs[m]['kinds'][kind]['wrong']}" for m in MODES]  # fmt: skip
        shadow, on = runs["shadow"]["kinds"][kind], runs["on"]["kinds"][kind]
        answerable = (
            f"{on['answerable']}: {shadow['answerable_locally']}, {on['answerable_locally']}"
            if "answerable" in on
            else ""
        )
        what = VARIANT_KINDS.get(kind, "look-alike: another company")
        lines.append(_row(f"{kind} | {what}", [*cells, answerable]))
    return lines


def _band_lines(report: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        "## Precision and coverage per score band (the shadow run of the month)",
        "",
        "Similar names only (equivalent ones are answered whatever the threshold). Precision by the truth: the",
        "candidate was the name's company; EQC agreed: EQC's answer was the candidate. Coverage: the share of the",
        "names the index could not answer exactly that a threshold at the band's lower edge would answer locally",
        "(equivalent names included).",
        "",
        "| band | names | precision by the truth | EQC agreed / verdicts | coverage at or above |",
        "|---|---|---|---|---|",
    ]
    for band in report.get("bands", []):
        precision = (
            f"{band['precision_by_truth']:.1%} ({band['right_by_truth']}/{band['with_truth']})"
            if band["with_truth"]
            else "-"
        )
        lines.append(
            _row(
                band["band"],
                [
                    f"{band['names']:,}",
                    precision,
                    f"{band['eqc_agreed']}/{band['eqc_verdicts']}",
                    f"{band['coverage_at_or_above']:.1%}",
                ],
            )
        )
    return [
        *lines,
        "",
        "The calibration's bands as `index match-report --chart` draws them:",
        "",
        "![calibration bands](local_match.png)",
        "",
        "Made with `eqc-enrich bench --local-match --names N --out DIR` (N companies a month, rows at the real",
        "month's ratio; `--names 2500` is the real month's size, the default).",
    ]


def _row(label: str, cells: list[str]) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
