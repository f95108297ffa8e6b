"""Every figure true in every ending (issue 10): the summary, the progress object, the plain status line and
the CLI's report, each held to what the simulator itself counted, to the output and to the index.

The endings: completed (cold, then warm), interrupted (RunControl.stop mid-run), token stop (a stale token,
no command), EQC down (the simulator stopped mid-run), index unavailable (a second process holds the SQLite
lock past --index-wait), budget reached, names failed. Time runs 1000x faster than the story (latency
20-60 ms, 10 requests per 60 ms) on months of 400 rows; every wait is bounded, and only counts are compared
(never timings), so a loaded machine changes nothing asserted here.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from tests.options import run_options

from eqc_enrich import RateLimit, RunControl, RunOptions, RunProgress, enrich_async, plan
from eqc_enrich._durations import format_duration
from eqc_enrich.cli import EXIT_CODES, _report, exit_code
from eqc_enrich.enrich import EnrichResult
from eqc_enrich.eqc_stage._pending import batch_from_json  # the side file's line format, read directly
from eqc_enrich.keys import normalize_name
from eqc_enrich.model import Latency
from eqc_enrich.progress import eta_seconds, status_line
from eqc_enrich.simulator import Simulator, SimulatorConfig, make_month
from eqc_enrich.store import IndexEntry, IndexStore, WriteBatch
from eqc_enrich.summary import NO_NAME_NO_ID, RunSummary

SCALE = 1000.0
STORY_LIMIT = RateLimit(10, 60.0)
LIMIT = STORY_LIMIT.scaled(SCALE)
TOKEN = "endings-test-token"
SALT = "test_salt"
NAME = "客户名称"
CLI = [sys.executable, "-m", "eqc_enrich.cli"]
POLLS = 4_000  # at most ~20 s of polling at 5 ms; every run here ends well before


def sim_config(**changes: Any) -> SimulatorConfig:
    base: dict[str, Any] = {
        "seed": 9,
        "latency": (20.0, 60.0),
        "time_scale": SCALE,
        "rate_limit": STORY_LIMIT,
        "tokens": (TOKEN,),
        "token_ttl": 10 * 86_400.0,
    }
    return SimulatorConfig(**{**base, **changes})


def options(url: str, db: Path, **changes: Any) -> RunOptions:
    base = run_options(
        db=db,
        eqc_url=url,
        token=TOKEN,
        rate_limit=LIMIT,
        timeout_s=2.0,
        salt=SALT,
        latency_hint=Latency(0.04, 0.06),
        grace_s=1.0,
    )
    return run_options(base, **changes)


@pytest.fixture(scope="module")
def month() -> pl.DataFrame:
    """400 rows, about 80 named customers and a tenth of nameless 集合计划 rows; no ids in the input."""
    return make_month(seed=9, rows=400, companies=80, existing_id_share=0.0)[0]


@pytest.fixture(scope="module")
def big_month() -> pl.DataFrame:
    """About 300 names, about 2 s of EQC at this scale: room for a fault to land mid-run on a loaded machine."""
    return make_month(seed=9, rows=1_500, companies=300, existing_id_share=0.0)[0]


@pytest.fixture(autouse=True)
def _state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Side files of index servers go under the test's own folder, never the developer's home."""
    monkeypatch.setenv("EQC_ENRICH_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(sim_config()) as simulator:
        yield simulator


def name_keys(frame: pl.DataFrame) -> pl.Series:
    """The normalized name of every row ("" for a row without one), as the run keys it."""
    return frame[NAME].cast(pl.String).map_elements(normalize_name, return_dtype=pl.String).fill_null("")


# --- what the index and the simulator hold -------------------------------------------------------------------


@dataclass(frozen=True)
class IndexContents:
    """EQC's answers in the index (and in a side file the run left): names found, names it does not know."""

    names: frozenset[str] = frozenset()  # customer_name and former_name keys, whatever their source
    found: frozenset[str] = frozenset()  # customer_name keys EQC answered
    negatives: frozenset[str] = frozenset()

    @classmethod
    def read(cls, db: Path, side_file: str | None = None) -> IndexContents:
        if not db.exists():
            return cls()
        con = sqlite3.connect(db)
        try:
            rows = con.execute("SELECT lookup_key, lookup_type, source FROM enrichment_index").fetchall()
            negatives = {key for (key,) in con.execute("SELECT lookup_key FROM eqc_negative_cache")}
        finally:
            con.close()
        named = [(key, kind, source) for key, kind, source in rows if kind in ("customer_name", "former_name")]
        found = {key for key, kind, source in named if kind == "customer_name" and source == "eqc_api"}
        names = {key for key, _, _ in named}
        if side_file is not None:
            for line in Path(side_file).read_text(encoding="utf-8").splitlines():
                batch = batch_from_json(json.loads(line))
                saved = [e for e in batch.entries if e.lookup_type == "customer_name"]
                found |= {e.lookup_key for e in saved}
                names |= {e.lookup_key for e in saved}
                negatives |= set(batch.negatives)
        return cls(frozenset(names), frozenset(found), frozenset(negatives))

    @property
    def held(self) -> frozenset[str]:
        """Names the index answers before any EQC call: an entry, or a known not-found."""
        return self.names | self.negatives


@dataclass(frozen=True)
class SimCounts:
    """What the simulator counted: the truth every request figure is held to."""

    requests: Mapping[str, int]
    accepted: int
    rate_limited: int
    refused_tokens: int  # 401s and expired-token answers: refused before the quota
    arrivals: int
    answered_keys: frozenset[str]

    @classmethod
    def of(cls, sim: Simulator) -> SimCounts:
        stats = sim.stats()
        return cls(
            requests=stats["requests"],
            accepted=stats["accepted"],
            rate_limited=stats["rate_limited"],
            refused_tokens=stats["unauthorized"] + stats["token_expired"],
            arrivals=len(sim.state.stats.arrivals),
            answered_keys=frozenset(sim.state.stats.search_keys),
        )

    @property
    def total(self) -> int:
        return sum(self.requests.values())


# --- one ending ------------------------------------------------------------------------------------------------


@dataclass
class Step:
    """When `when(progress)` holds, do `action(progress)`: in a thread when it blocks, on the loop when it
    must (RunControl.stop is not thread-safe)."""

    when: Callable[[RunProgress], bool]
    action: Callable[[RunProgress], None]
    in_thread: bool = True


@dataclass
class Ending:
    result: EnrichResult
    progress: RunProgress
    sim: SimCounts
    db: Path
    before: IndexContents
    names: frozenset[str]  # distinct names of the input
    seen_during: list[tuple[str, float | None]] = field(default_factory=list)  # (phase, eta) sampled by steps

    @property
    def summary(self) -> RunSummary:
        return self.result.summary


def run_ending(
    frame: pl.DataFrame,
    opts: RunOptions,
    sim: Simulator,
    steps: tuple[Step, ...] = (),
    control: RunControl | None = None,
) -> Ending:
    db = Path(str(opts.db))
    before = IndexContents.read(db)
    progress = RunProgress()

    async def main() -> EnrichResult:
        task = asyncio.create_task(enrich_async(frame, options=opts, progress=progress, control=control))
        for step in steps:
            for _ in range(POLLS):
                if task.done() or step.when(progress):
                    break
                await asyncio.sleep(0.005)
            if step.in_thread:
                await asyncio.to_thread(step.action, progress)
            else:
                step.action(progress)
        return await task

    result = asyncio.run(main())
    names = frozenset(name_keys(frame).unique().to_list()) - {""}
    return Ending(result, progress, SimCounts.of(sim), db, before, names)


# --- the figures ----------------------------------------------------------------------------------------------


def check_every_figure(ending: Ending, *, status: str) -> None:
    """Every figure of the summary against the simulator, the output, the index and the progress object."""
    s, frame = ending.summary, ending.result.frame
    assert s.status == status, s.message
    assert exit_code(s.status) == EXIT_CODES[status]
    check_requests(ending, eqc_down=status == "eqc_unavailable")
    check_names(ending)
    check_rows(ending)
    check_bound(ending)
    check_progress(ending)
    assert frame.height == s.rows


def check_requests(ending: Ending, *, eqc_down: bool) -> None:
    """Calls as EQC counted them. Each call is in one bucket: taken into the quota, 429, token refused, or no
    HTTP answer; only a call without an answer can be missing from EQC's counts (it never reached EQC), and
    only when EQC is down."""
    s, sim = ending.summary, ending.sim
    assert sim.arrivals == sim.total  # the simulator's two records of arrivals agree
    total = s.api_calls["total"]
    assert total == sum(v for k, v in s.api_calls.items() if k != "total")
    assert total == s.accepted_requests + s.rate_limited + sim.refused_tokens + s.unanswered_requests
    assert s.unanswered_requests == ending.progress.eqc.unanswered
    if not eqc_down:
        assert s.unanswered_requests == 0
        assert {k: v for k, v in s.api_calls.items() if k != "total"} == {k: v for k, v in sim.requests.items() if v}
        assert s.accepted_requests == sim.accepted
        assert s.rate_limited == sim.rate_limited
        return
    assert s.unanswered_requests > 0
    answered = total - s.unanswered_requests
    # every answered call reached EQC, and EQC saw no call the run did not count; the two differ only by
    # calls EQC got whose answer was cut off as it went down (none, unless the stop hit one in flight)
    cut_off = sim.total - answered
    assert 0 <= cut_off <= s.unanswered_requests
    assert 0 <= sim.accepted - s.accepted_requests <= cut_off
    assert 0 <= sim.rate_limited - s.rate_limited <= cut_off - (sim.accepted - s.accepted_requests)


def check_names(ending: Ending) -> None:
    """Names asked are the keys EQC answered (or failed on after every retry), found and not found are in the
    output and the index, and the names add up."""
    s, eqc = ending.summary, ending.summary.eqc
    keys = name_keys(ending.result.frame)
    sources = ending.result.frame.select(keys.alias("key"), "company_id_source")
    found_names = set(sources.filter(pl.col("company_id_source") == "eqc")["key"].unique().to_list())
    unresolved = ending.result.unresolved
    by_status = dict(unresolved.group_by("status").len().iter_rows())
    fresh_not_found = set(unresolved.filter(pl.col("reason") == "EQC did not know it")["name"].to_list())
    # a name found in the index before it was asked here: this run's answer for another name (its registered
    # or a former name) put it there, or another run did
    settled = unresolved.filter(pl.col("reason") == "EQC did not know it (in the index before this run asked it)")
    failed = set(unresolved.filter(pl.col("status") == "failed")["name"].to_list())

    assert eqc.names_asked == eqc.found + eqc.not_found + eqc.failed
    assert eqc.names_planned == eqc.names_asked + eqc.not_asked + eqc.answered_elsewhere
    assert s.distinct_names == len(ending.names)
    assert s.distinct_names == (
        s.answered_before_eqc + eqc.too_long + eqc.over_budget + eqc.skipped + eqc.names_planned
    )
    assert len(found_names) == eqc.found
    assert len(fresh_not_found) == eqc.not_found
    assert len(failed) == eqc.failed == len(s.failed_names)
    assert {item["name"] for item in s.failed_names} == failed
    # the simulator answered exactly the names the run counts as found or not found, each once
    assert ending.sim.answered_keys == found_names | fresh_not_found
    assert not failed & ending.sim.answered_keys
    # the unresolved export lists every name left with a temporary id, with the summary's counts
    assert unresolved.height == s.unresolved_names
    assert settled.height <= eqc.answered_elsewhere
    assert by_status.get("not_found", 0) == eqc.not_found + eqc.negative_cache_hits + settled.height
    assert by_status.get("failed", 0) == eqc.failed
    assert by_status.get("not_asked", 0) == eqc.not_asked + eqc.over_budget + eqc.skipped
    assert by_status.get("too_long", 0) == eqc.too_long
    # every answer is in the index (or, when it could not be written, in the side file the next run loads)
    after = IndexContents.read(ending.db, s.side_file)
    assert found_names <= after.found
    assert fresh_not_found <= after.negatives
    assert ending.names & after.negatives == fresh_not_found | (ending.names & ending.before.negatives)
    # the index hit rate is the share of the input's names the index held when the run started
    held = ending.names & ending.before.held
    assert s.index_hit_rate == (round(len(held) / len(ending.names), 4) if ending.names else 0.0)


def check_rows(ending: Ending) -> None:
    """Rows by source as the output has them; the rows left empty are the nameless ones, with the reason."""
    s, frame = ending.summary, ending.result.frame
    counts = frame.group_by(pl.col("company_id_source").fill_null("none")).len()
    assert s.resolved_by == dict(counts.iter_rows())
    assert sum(s.resolved_by.values()) == s.rows
    empty = frame.filter(pl.col("company_id").is_null())
    assert (name_keys(empty) == "").all()
    assert s.rows_without_id == ({NO_NAME_NO_ID: empty.height} if empty.height else {})


def check_bound(ending: Ending) -> None:
    """The strict lower bound counts what EQC accepted; the efficiency never exceeds 1."""
    s = ending.summary
    if s.accepted_requests == 0:
        assert s.lower_bound_s is None
        assert s.efficiency is None
        return
    assert s.lower_bound_s is not None
    assert s.efficiency is not None
    assert s.lower_bound_s <= s.elapsed_s
    assert 0 < s.efficiency <= 1
    # the bound is at least the quota time the accepted requests needed
    assert s.lower_bound_s >= (s.accepted_requests - 1) // LIMIT.requests * LIMIT.window_s


STATUS_LINE = re.compile(
    r"^\[(?P<phase>[^\]]+)\] \| rows (?P<resolved>[\d,]+)/(?P<rows>[\d,]+) "
    r"\| names (?P<names>[\d,]+) \((?P<before>[\d,]+) answered before EQC\) "
    r"(?:\| local match (?P<local>[\d,]+) answered in \S+ \((?P<local_mode>\w+)\) )?"
    r"\| eqc (?P<done>[\d,]+)/(?P<planned>[\d,]+)(?: \((?P<meanwhile>[\d,]+) found in the index meanwhile\))? "
    r"\| found (?P<found>[\d,]+) not-found (?P<not_found>[\d,]+) failed (?P<failed>[\d,]+) "
    r"\| retries (?P<retries>\d+) 429s (?P<limited>\d+) \| rate \S+ of \S+ \| in-flight (?P<in_flight>\d+) "
    r"\| elapsed \S+ \| eta (?P<eta>\S+)$"
)


def number(text: str) -> int:
    return int(text.replace(",", ""))


def check_status_line(line: str, s: Mapping[str, Any]) -> None:
    """The plain status line printed at the end says what the summary says."""
    match = STATUS_LINE.match(line)
    assert match is not None, line
    eqc = s["eqc"]
    assert match["phase"] == "done"
    assert number(match["resolved"]) == number(match["rows"]) == s["rows"]
    assert number(match["names"]) == s["distinct_names"]
    assert number(match["before"]) == s["answered_before_eqc"]
    if match["local"] is not None:
        assert number(match["local"]) == s["answered_locally"] == s["local_match"]["answered"]
        assert match["local_mode"] == s["local_match"]["mode"]
    meanwhile = number(match["meanwhile"]) if match["meanwhile"] else 0
    assert meanwhile == eqc["answered_elsewhere"]
    assert number(match["done"]) == eqc["names_asked"] + meanwhile
    assert number(match["planned"]) == eqc["names_planned"]
    assert (number(match["found"]), number(match["not_found"]), number(match["failed"])) == (
        eqc["found"],
        eqc["not_found"],
        eqc["failed"],
    )
    assert (number(match["retries"]), number(match["limited"])) == (s["retries"], s["rate_limited"])
    assert number(match["in_flight"]) == 0
    assert match["eta"] == "-"


def check_progress(ending: Ending) -> None:
    """The progress object a display polls ends where the summary ends; no ETA once EQC is not being asked."""
    p, s = ending.progress, ending.summary
    assert p.phase == "done"
    assert p.eqc.names_done == s.eqc.names_asked
    assert (p.eqc.found, p.eqc.not_found, p.eqc.failed) == (s.eqc.found, s.eqc.not_found, s.eqc.failed)
    assert p.names_for_eqc == s.eqc.names_planned
    assert p.rows_resolved == p.rows == s.rows
    assert p.eqc.in_flight == 0
    assert eta_seconds(p) is None
    check_status_line(status_line(p), s.as_dict())
    for phase, eta in ending.seen_during:
        assert phase != "eqc"
        assert eta is None


REPORT = {
    "rows": re.compile(
        r"^rows (?P<rows>[\d,]+)  distinct names (?P<names>[\d,]+)  answered before EQC (?P<before>[\d,]+)  "
        r"index hit rate (?P<rate>[\d.]+)%$"
    ),
    "resolved": re.compile(r"^resolved by: (?P<sources>.*)$"),
    "asked": re.compile(
        r"^EQC: (?P<asked>[\d,]+) of (?P<planned>[\d,]+) names asked \(found (?P<found>[\d,]+), not found "
        r"(?P<not_found>[\d,]+), failed (?P<failed>[\d,]+)\), not asked (?P<not_asked>[\d,]+)"
        r"(, found in the index meanwhile (?P<elsewhere>[\d,]+))?$"
    ),
    "left": re.compile(r"^names never planned for EQC: (?P<left>.*)$"),
    "calls": re.compile(
        r"^EQC calls (?P<total>[\d,]+) \((?P<accepted>[\d,]+) taken into the quota"
        r"(, (?P<unanswered>[\d,]+) without an answer)?\), retries (?P<retries>[\d,]+), 429s (?P<limited>[\d,]+)$"
    ),
    "elapsed": re.compile(r"^elapsed (?P<elapsed>\S+)(, lower bound (?P<bound>\S+) \(efficiency (?P<eff>[\d.]+)\))?$"),
    "empty": re.compile(r"^rows without company_id: (?P<rows>[\d,]+) \((?P<why>.*)\)$"),
    "status": re.compile(r"^status: (?P<status>\w+) \(exit (?P<exit>\d+)\)$"),
}


def report_lines(lines: list[str]) -> dict[str, re.Match[str]]:
    found: dict[str, re.Match[str]] = {}
    for line in lines:
        for kind, pattern in REPORT.items():
            match = pattern.match(line)
            if match is not None:
                assert kind not in found, f"{kind} twice: {lines}"
                found[kind] = match
    return found


def check_report(lines: list[str], s: Mapping[str, Any]) -> None:
    """The CLI's closing report (cli._report) says the summary's numbers, no other."""
    got = report_lines(lines)
    eqc = s["eqc"]
    rows = got["rows"]
    assert (number(rows["rows"]), number(rows["names"]), number(rows["before"])) == (
        s["rows"],
        s["distinct_names"],
        s["answered_before_eqc"],
    )
    assert rows["rate"] == f"{s['index_hit_rate'] * 100:.1f}"
    sources = dict(item.rsplit(" ", 1) for item in got["resolved"]["sources"].split(", "))
    assert {k: number(v) for k, v in sources.items()} == s["resolved_by"]
    asked = got["asked"]
    assert [number(asked[k]) for k in ("asked", "planned", "found", "not_found", "failed", "not_asked")] == [
        eqc[k] for k in ("names_asked", "names_planned", "found", "not_found", "failed", "not_asked")
    ]
    assert number(asked["elsewhere"] or "0") == eqc["answered_elsewhere"]
    left = dict(item.rsplit(" ", 1) for item in got["left"]["left"].split(", ")) if "left" in got else {}
    assert {k: number(v) for k, v in left.items()} == {
        k: v
        for k, v in {
            "over --budget": eqc["over_budget"],
            "--no-enrichment": eqc["skipped"],
            "too long to send": eqc["too_long"],
        }.items()
        if v
    }
    calls = got["calls"]
    assert number(calls["unanswered"] or "0") == s["unanswered_requests"]
    assert [number(calls[k]) for k in ("total", "accepted", "retries", "limited")] == [
        s["api_calls"]["total"],
        s["accepted_requests"],
        s["retries"],
        s["rate_limited"],
    ]
    elapsed = got["elapsed"]
    assert elapsed["elapsed"] == format_duration(s["elapsed_s"])
    if s["efficiency"] is None:
        assert elapsed["bound"] is None
    else:
        assert elapsed["bound"] == format_duration(s["lower_bound_s"])
        assert elapsed["eff"] == f"{s['efficiency']:.2f}"
    if s["rows_without_id"]:
        assert (number(got["empty"]["rows"]), got["empty"]["why"]) == (
            s["rows_without_id"][NO_NAME_NO_ID],
            NO_NAME_NO_ID,
        )
    else:
        assert "empty" not in got
    assert (got["status"]["status"], int(got["status"]["exit"])) == (s["status"], EXIT_CODES[s["status"]])
    if s["message"]:
        assert s["message"] in lines


def check_cli_report(ending: Ending, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    _report(ending.result, verbose=False)
    check_report(capsys.readouterr().err.splitlines(), ending.summary.as_dict())


# --- the endings ----------------------------------------------------------------------------------------------


def test_completed_cold_then_warm(month: pl.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "index.db"
    with Simulator(sim_config()) as sim:
        cold = run_ending(month, options(sim.url, db), sim)
    check_every_figure(cold, status="completed")
    check_cli_report(cold, capsys)
    assert cold.summary.index_hit_rate == 0.0  # an empty index held nothing
    assert cold.summary.eqc.names_asked + cold.summary.eqc.answered_elsewhere == cold.summary.distinct_names > 0
    assert cold.summary.message is None
    # k = 1 and nothing failed: one call per name, plus one per retry
    assert cold.summary.api_calls["total"] == cold.summary.eqc.names_asked + cold.summary.retries
    with Simulator(sim_config()) as sim:
        warm = run_ending(month, options(sim.url, db), sim)
    check_every_figure(warm, status="completed")
    check_cli_report(warm, capsys)
    assert warm.summary.index_hit_rate == 1.0
    assert warm.sim.total == warm.summary.api_calls["total"] == 0
    assert warm.summary.eqc.negative_cache_hits == cold.summary.eqc.not_found


def test_completed_cold_with_ids_in_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Names the input's own ids answer are answered before EQC, but the (empty) index answered none."""
    frame = make_month(seed=9, rows=400, companies=80, existing_id_share=0.3)[0]
    with Simulator(sim_config()) as sim:
        ending = run_ending(frame, options(sim.url, tmp_path / "index.db"), sim)
    check_every_figure(ending, status="completed")
    check_cli_report(ending, capsys)
    s = ending.summary
    assert s.index_hit_rate == 0.0
    assert 0 < s.answered_before_eqc < s.distinct_names
    assert s.eqc.names_planned == s.distinct_names - s.answered_before_eqc


@pytest.mark.serial  # its figures follow wall-clock timing that a busy neighbour skews
def test_interrupted_mid_run(
    month: pl.DataFrame, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    control = RunControl()
    seen: list[tuple[str, float | None]] = []

    def stop(progress: RunProgress) -> None:
        control.stop()
        seen.append((progress.phase, eta_seconds(progress)))  # right after the stop: no ETA any more

    steps = (Step(lambda p: p.eqc.names_done >= 10, stop, in_thread=False),)
    ending = run_ending(month, options(sim.url, tmp_path / "index.db"), sim, steps, control)
    ending.seen_during.extend(seen)
    check_every_figure(ending, status="interrupted")
    check_cli_report(ending, capsys)
    assert seen == [("eqc: stopping", None)]
    assert ending.summary.eqc.not_asked > 0
    assert ending.summary.eqc.names_asked >= 10


def test_token_stop(month: pl.DataFrame, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    """EQC refuses a stale token before its quota: the refusals are calls, none of them accepted."""
    ending = run_ending(month, options(sim.url, tmp_path / "index.db", token="stale"), sim)
    check_every_figure(ending, status="token_unavailable")
    check_cli_report(ending, capsys)
    s = ending.summary
    assert ending.sim.total > 0  # the refusals did reach EQC
    assert s.accepted_requests == 0
    assert s.lower_bound_s is None
    assert s.efficiency is None
    assert s.eqc.names_asked == 0
    assert s.eqc.not_asked == s.eqc.names_planned > 0


def test_eqc_down_mid_run(big_month: pl.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = Simulator(sim_config()).start()
    try:
        steps = (Step(lambda p: p.eqc.names_done >= 10, lambda _: sim.stop()),)
        ending = run_ending(big_month, options(sim.url, tmp_path / "index.db", eqc_down_wait_s=0.5), sim, steps)
    finally:
        sim.stop()
    # requests after the stop never reached EQC: they are the run's own transport failures
    check_every_figure(ending, status="eqc_unavailable")
    check_cli_report(ending, capsys)
    assert ending.summary.eqc.failed == 0
    assert ending.summary.eqc.not_asked > 0


_LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
print("ready", flush=True)
sys.stdin.readline()
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(30)
"""


class Locker:
    """A second process, started ahead (so taking the lock mid-run costs no interpreter start), that takes the
    SQLite write lock of the index when told and holds it until killed (30 s at most)."""

    def __init__(self, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.readline() == "ready"

    def readline(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def lock(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("lock\n")
        self.process.stdin.flush()
        assert self.readline() == "locked"

    def release(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def test_index_unavailable(
    big_month: pl.DataFrame, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second process holds the write lock past --index-wait; it lets go once the run has given up, so the
    run's last writes (claims, journal) do not wait out the lock timeout."""
    db = tmp_path / "index.db"
    IndexStore(db).close()
    locker = Locker(db)
    gave_up = ("eqc: stopping", "writing output", "done")
    steps = (
        Step(lambda p: p.eqc.names_done >= 10, lambda _: locker.lock()),
        Step(lambda p: p.phase in gave_up, lambda _: locker.release()),
    )
    try:
        ending = run_ending(big_month, options(sim.url, db, index_wait_s=0.5), sim, steps)
    finally:
        locker.release()
    check_every_figure(ending, status="index_unavailable")
    check_cli_report(ending, capsys)
    assert ending.summary.side_file is not None
    assert ending.summary.eqc.not_asked > 0


def test_budget_reached_then_the_rest(month: pl.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "index.db"
    with Simulator(sim_config()) as sim:
        first = run_ending(month, options(sim.url, db, budget=10), sim)
    check_every_figure(first, status="completed")
    check_cli_report(first, capsys)
    s = first.summary
    assert s.eqc.names_planned == s.eqc.names_asked + s.eqc.answered_elsewhere == 10
    assert s.eqc.over_budget == s.distinct_names - 10
    assert s.message is not None
    assert f"{s.eqc.over_budget:,} less frequent names were not asked" in s.message
    # what `plan` says now is what the next run finds: the index holds part of the names
    planned = plan(month, options=options("http://127.0.0.1:9", db))
    with Simulator(sim_config()) as sim:
        rest = run_ending(month, options(sim.url, db), sim)
    check_every_figure(rest, status="completed")
    check_cli_report(rest, capsys)
    assert 0 < rest.summary.index_hit_rate < 1
    assert rest.summary.index_hit_rate == round(planned.index_hit_rate, 4)
    assert rest.summary.eqc.names_planned == planned.names_for_eqc
    assert rest.summary.answered_before_eqc == planned.answered_before_eqc


def test_names_failed(month: pl.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Simulator(sim_config(fail_rate=0.5, latency=(0.0, 0.0))) as sim:
        ending = run_ending(month, options(sim.url, tmp_path / "index.db", retries=1), sim)
    check_every_figure(ending, status="names_failed")
    check_cli_report(ending, capsys)
    s = ending.summary
    assert s.eqc.failed > 0
    assert s.api_calls["total"] == s.eqc.names_asked + s.retries  # every attempt after a name's first is a retry


# --- rows that stay empty ------------------------------------------------------------------------------------


def nameless_run(frame: pl.DataFrame, tmp_path: Path) -> tuple[EnrichResult, RunProgress]:
    """A run on an index that knows one plan code, with overrides that know another; EQC is never needed."""
    db = tmp_path / "index.db"
    store = IndexStore(db)
    try:
        store.write(WriteBatch(entries=[IndexEntry("P-INDEXED", "plan_code", "600000003", 1.0, "manual")]))
    finally:
        store.close()
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("plan_code:\n  P-KNOWN: '600000001'\n", encoding="utf-8")
    progress = RunProgress()
    opts = options("http://127.0.0.1:9", db, overrides=overrides)
    return asyncio.run(enrich_async(frame, options=opts, progress=progress)), progress


def test_rows_without_a_name_stay_empty_unless_plan_code_or_id_answers_and_the_summary_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What README says: a row with no name (blank, a placeholder) keeps an empty company_id unless its plan
    code (overrides, index) or its own id answers it. With no name at all, the index held none of the
    names: the hit rate is 0, not 100 %."""
    frame = pl.DataFrame(
        {
            NAME: [None, "空白", "N/A", None, None, None, "  ", "-"],
            "计划代码": ["P-SHARED", "P-SHARED", None, "P-KNOWN", "P-SHARED", "P-INDEXED", "P-SHARED", "P-OTHER"],
            "公司代码": [None, None, None, None, "600000002", None, None, None],
        }
    )
    result, progress = nameless_run(frame, tmp_path)
    s = result.summary
    assert s.status == "completed"
    assert s.distinct_names == 0
    assert s.index_hit_rate == 0.0
    assert s.resolved_by == {"existing": 1, "index:manual": 1, "none": 5, "override": 1}  # P-INDEXED: a manual entry
    assert s.rows_without_id == {NO_NAME_NO_ID: 5}
    ids = [None, None, None, "600000001", "600000002", "600000003", None, None]
    assert result.frame["company_id"].to_list() == ids
    assert result.frame["company_id_source"].null_count() == 5
    assert s.api_calls == {"total": 0}
    assert result.unresolved.height == 0  # no temporary id was made: nothing for a person to look at
    check_status_line(status_line(progress), s.as_dict())
    capsys.readouterr()
    _report(result, verbose=False)
    lines = capsys.readouterr().err.splitlines()
    assert f"rows without company_id: 5 ({NO_NAME_NO_ID})" in lines
    check_report(lines, s.as_dict())


def test_a_name_of_0_gets_no_temporary_id(tmp_path: Path) -> None:
    frame = pl.DataFrame({NAME: ["0", "0"], "计划代码": ["P-SHARED", "P-INDEXED"], "公司代码": [None, None]})
    result, _ = nameless_run(frame, tmp_path)
    assert result.frame["company_id"].to_list() == [None, "600000003"]
    assert result.summary.rows_without_id == {NO_NAME_NO_ID: 1}
    assert result.summary.api_calls == {"total": 0}


# --- the command line -----------------------------------------------------------------------------------------


def cli(*args: str | Path, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WDH_EQC_TOKEN": token},
        check=False,
    )


@pytest.fixture(scope="module")
def month_file(month: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("month") / "month.parquet"
    month.write_parquet(path)
    return path


def test_plan_on_a_brand_new_index_says_nothing_comes_from_it(month_file: Path, tmp_path: Path) -> None:
    done = cli("plan", month_file, "--db", tmp_path / "new.db")
    assert done.returncode == 0, done.stderr
    assert "(the index 0.0% of names" in done.stdout
    assert "answered without EQC 0 " in done.stdout
    assert not (tmp_path / "new.db").exists()  # a plan only reads: it leaves no new index behind


@pytest.mark.parametrize(
    ("token", "extra", "status"),
    [(TOKEN, ("--budget", "10"), "completed"), ("stale", (), "token_unavailable")],
    ids=["budget", "token"],
)
def test_cli_ending_figures_agree(
    month_file: Path, tmp_path: Path, sim: Simulator, token: str, extra: tuple[str, ...], status: str
) -> None:
    """A real `eqc-enrich run` off a terminal: the exit code, the last plain status line and the report
    against the summary file, and the summary's request figures against the simulator."""
    summary_path = tmp_path / "summary.json"
    done = cli(
        "run", month_file, "-o", tmp_path / "out.parquet", "--db", tmp_path / "index.db", "--eqc-url", sim.url,
        "--rate-limit", "10/60ms", "--timeout", "2s", "--progress-interval", "10m", "--summary", summary_path,
        *extra, token=token,
    )  # fmt: skip
    s = json.loads(summary_path.read_text(encoding="utf-8"))
    assert s["status"] == status
    assert done.returncode == EXIT_CODES[status], done.stderr
    lines = done.stderr.splitlines()
    status_lines = [line for line in lines if line.startswith("[")]
    assert status_lines, done.stderr
    check_status_line(status_lines[-1], s)
    check_report(lines, s)
    counted = SimCounts.of(sim)
    assert s["api_calls"]["total"] == counted.total
    assert s["accepted_requests"] == counted.accepted
    assert s["rate_limited"] == counted.rate_limited
    assert s["eqc"]["found"] + s["eqc"]["not_found"] == len(counted.answered_keys)
    out = pl.read_parquet(tmp_path / "out.parquet")
    by_source = dict(out.group_by(pl.col("company_id_source").fill_null("none")).len().iter_rows())
    assert by_source == s["resolved_by"]
