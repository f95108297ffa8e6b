"""The local matcher: names taken apart, compared part by part, the policy, the record and its report, and the
stage in a run of the realistic sandbox month against the simulator (last month's companies in the index)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from tests import review_pages
from tests.options import run_options, worker_options

from eqc_enrich import RateLimit, RunOptions, enrich
from eqc_enrich._errors import ConfigError
from eqc_enrich._policies import MatchPolicy
from eqc_enrich.keys import normalize_name
from eqc_enrich.match_stage import (
    ANSWERED,
    ASKED,
    EQUIVALENT,
    REVIEW,
    SIMILAR,
    Candidate,
    Matcher,
    MatchResult,
    compare,
    decide,
    match_quality,
    parse_name,
)
from eqc_enrich.model import Latency
from eqc_enrich.simulator import VARIANT_KINDS, Simulator, SimulatorConfig, make_realistic
from eqc_enrich.store import IndexStore, ShadowRow
from eqc_enrich.worker import run_worker, worker_status

SCALE = 1000.0
LIMIT = RateLimit(10, 60.0)
TOKEN = "match-test-token"


# --- the parts of a name ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "region", "trade", "industry", "form", "group", "branch", "place"),
    [
        ("北京华润科技有限公司", "北京市", "华润", "科技", "有限公司", False, "", ""),
        ("華潤（北京）科技有限責任公司", "北京市", "华润", "科技", "有限公司", False, "", ""),
        ("华润(北京)科技股份公司", "北京市", "华润", "科技", "股份有限公司", False, "", ""),
        ("浙江杭州华润新材料股份有限公司", "杭州市", "华润", "新材料", "股份有限公司", False, "", ""),
        ("华润科技有限公司北京分公司", "", "华润", "科技", "有限公司", False, "分公司", "北京市"),
        ("工商银行北京分行", "", "工商", "银行", "", False, "分行", "北京市"),
        ("中国平安保险（集团）股份有限公司", "中国", "平安", "保险", "股份有限公司", True, "", ""),
        ("华润科技集团有限公司", "", "华润", "科技", "有限公司", True, "", ""),
        ("中山有限公司", "", "中山", "", "有限公司", False, "", ""),  # a region that would leave nothing is the trade
        ("内蒙古金华建材有限公司", "内蒙古自治区", "金华", "建材", "有限公司", False, "", ""),  # 金华 is not in 内蒙古
        ("阳江（台州）建设有限公司", "台州市", "阳江", "建设", "有限公司", False, "", ""),
        ("原平市鑫源煤业有限公司", "原平市", "鑫源", "煤业", "有限公司", False, "", ""),
    ],
)
def test_a_name_is_taken_apart_into_its_parts(
    name: str, region: str, trade: str, industry: str, form: str, group: bool, branch: str, place: str
) -> None:
    parts = parse_name(name)
    assert (parts.region, parts.trade, parts.industry, parts.form, parts.group) == (
        region,
        trade,
        industry,
        form,
        group,
    )
    assert (parts.branch, parts.branch_place) == (branch, place)


def test_a_bracketed_legal_form_stays_part_of_the_form() -> None:
    assert parse_name("某某律师事务所（特殊普通合伙）").form == "事务所（特殊普通合伙）"
    assert parse_name("某某律师事务所（特殊普通合伙）").form != parse_name("某某律师事务所").form


# --- two names compared ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("北京华润科技有限公司", "北京华润科技有限责任公司"),  # the form equivalences of company law
        ("北京华润科技股份有限公司", "北京华润科技股份公司"),
        ("北京华润科技有限公司", "华润（北京）科技有限公司"),  # the region's place and brackets
        ("北京华润科技有限公司", "北京市华润科技有限公司"),
        ("北京华润科技有限公司", "北京華潤科技有限公司"),  # traditional characters
        ("ＡＢＣ科技有限公司", "ABC科技有限公司"),  # width
    ],
)
def test_names_differing_only_by_rules_that_cannot_change_the_company_are_equivalent(ours: str, theirs: str) -> None:
    comparison = compare(parse_name(ours), parse_name(theirs))
    assert (comparison.kind, comparison.score) == (EQUIVALENT, 1.0)


@pytest.mark.parametrize(
    ("ours", "theirs", "reason"),
    [
        ("北京华润科技有限公司", "上海华润科技有限公司", "region"),
        ("华润科技有限公司", "华润科技有限公司北京分公司", "branch"),
        ("华润科技有限公司上海分公司", "华润科技有限公司北京分公司", "branch"),
        ("北京华润科技有限公司", "北京华闰科技有限公司", "trade name"),  # one character, in the trade name
        ("北京华润达科技有限公司", "北京华润科技有限公司", "trade name"),  # one more character
    ],
)
def test_another_region_a_branch_or_another_trade_name_is_never_similar(ours: str, theirs: str, reason: str) -> None:
    comparison = compare(parse_name(ours), parse_name(theirs))
    assert not comparison.comparable
    assert (comparison.score, comparison.reason) == (0.0, reason)


def test_similar_names_score_by_what_differs_and_another_industry_scores_low() -> None:
    def score(ours: str, theirs: str) -> float:
        comparison = compare(parse_name(ours), parse_name(theirs))
        assert comparison.kind == SIMILAR
        return comparison.score

    typo = score("山东绣旭供应链官理有限公司", "山东绣旭供应链管理有限公司")  # a typo hides the industry words
    group = score("华润科技有限公司", "华润科技集团有限公司")
    bare = score("华润科技", "北京华润科技有限公司")  # no region, no form
    other = score("北京华润医药有限公司", "北京华润科技有限公司")
    assert 0.9 < typo < 1.0
    assert 0.9 <= group < typo
    assert 0.8 < bare < group
    assert other <= 0.5


# --- the best candidate ---------------------------------------------------------------------------------------


def test_the_matcher_finds_the_best_candidate_and_the_runner_up_of_another_company() -> None:
    candidates = [
        Candidate("北京华润科技有限公司", "1", 1.0, "customer_name"),
        Candidate("北京華潤科技有限公司", "1", 0.9, "former_name"),
        Candidate("北京华润医药有限公司", "2", 1.0, "customer_name"),
        Candidate("上海华润科技有限公司", "3", 1.0, "customer_name"),
        Candidate("北京蓝天科技有限公司", "4", 1.0, "customer_name"),
    ]
    names = ["华润（北京）科技有限责任公司", "北京华润科枝有限公司", "广州华润科技有限公司", "北京海天物流有限公司"]
    matcher = Matcher(candidates, names)
    equivalent = matcher.best(names[0])
    assert equivalent is not None
    assert (equivalent.kind, equivalent.candidate.company_id, equivalent.candidate.confidence) == (EQUIVALENT, "1", 1.0)
    assert equivalent.runner_up == 0.5
    assert equivalent.gap == 0.5
    typo = matcher.best(names[1])
    assert typo is not None
    assert (typo.kind, typo.candidate.company_id) == (SIMILAR, "1")
    assert matcher.best(names[2]) is None  # only other regions
    assert matcher.best(names[3]) is None  # nothing shares its trade name
    assert matcher.parsed < matcher.candidates  # 北京蓝天 shares no opening with any name: never parsed


def test_a_name_equivalent_to_two_companies_is_ambiguous_and_never_answered() -> None:
    candidates = [Candidate("北京华润科技有限公司", "1", 1.0, "customer_name"),
                  Candidate("北京市华润科技有限责任公司", "2", 1.0, "customer_name")]  # fmt: skip
    result = Matcher(candidates, ["华润（北京）科技有限公司"]).best("华润（北京）科技有限公司")
    assert result is not None
    assert result.ambiguous
    assert decide(result, MatchPolicy(), "on") == ASKED


# --- the policy ------------------------------------------------------------------------------------------------


def _result(kind: str, score: float, runner_up: float | None = None) -> MatchResult:
    return MatchResult("x", kind, score, Candidate("y", "1", 1.0, "customer_name"), runner_up=runner_up)


def test_the_policy_answers_equivalents_always_and_similar_names_only_with_on_above_the_threshold() -> None:
    policy = MatchPolicy(threshold=0.9, review_band=0.1, min_gap=0.05)
    assert decide(_result(EQUIVALENT, 1.0), policy, "shadow") == ANSWERED
    assert decide(_result(EQUIVALENT, 1.0), policy, "on") == ANSWERED
    assert decide(_result(SIMILAR, 0.92), policy, "shadow") == REVIEW
    assert decide(_result(SIMILAR, 0.92), policy, "on") == ANSWERED
    assert decide(_result(SIMILAR, 0.90), policy, "on") == ANSWERED  # at the threshold
    assert decide(_result(SIMILAR, 0.92, runner_up=0.88), policy, "on") == REVIEW  # too close to another company
    assert decide(_result(SIMILAR, 0.85), policy, "on") == REVIEW
    assert decide(_result(SIMILAR, 0.80), policy, "on") == REVIEW  # the band's lower edge
    assert decide(_result(SIMILAR, 0.79), policy, "on") == ASKED
    assert policy.confidence(1.0, 0.92) == 0.92
    assert policy.confidence(0.8, 1.0) == 0.8  # never above the candidate's
    assert policy.confidence(0.9, 0.93) == 0.83  # rounded down
    with pytest.raises(ValueError, match="threshold"):
        MatchPolicy(threshold=1.5)
    with pytest.raises(ConfigError, match="local_match"):
        RunOptions(local_match="always")


# --- the report ------------------------------------------------------------------------------------------------


def _row(key: int, score: float, agreed: bool | None, kind: str = SIMILAR, gap: float | None = None) -> ShadowRow:
    return ShadowRow(f"n{key}", kind, score, "c", "1", 1.0, "customer_name", "asked", gap=gap, agreed=agreed)


def test_the_report_suggests_the_lowest_threshold_with_the_target_precision_over_enough_names() -> None:
    rows = [_row(i, 0.96, True) for i in range(150)] + [_row(200 + i, 0.91, True) for i in range(100)]
    rows += [_row(400, 0.86, False)] + [_row(500 + i, 0.86, True) for i in range(20)]
    rows += [_row(600, 0.91, None), _row(601, 1.0, True, kind=EQUIVALENT), _row(602, 0.96, False, gap=0.01)]
    quality = match_quality(rows, min_gap=0.05)
    by_low = {band.low: band for band in quality.bands}
    assert (by_low[0.95].names, by_low[0.95].agreed, by_low[0.95].precision) == (150, 150, 1.0)
    assert (by_low[0.90].names, by_low[0.90].no_verdict, by_low[0.90].names_at_or_above) == (100, 1, 250)
    assert by_low[0.85].precision_at_or_above == round(270 / 271, 4)
    assert quality.suggested_threshold == 0.90  # 0.95 alone has 150 names; 0.85 falls below 99.9%
    assert (quality.equivalent.names, quality.equivalent.agreed) == (1, 1)
    # without the gap rule the name whose runner-up was too close counts, and 0.95 is no longer clean
    assert match_quality(rows).suggested_threshold is None
    assert match_quality(rows[:150], min_gap=0.05).suggested_threshold is None  # too few names
    # nothing was measured below 0.90: the empty bands under it do not lower the threshold to 0
    assert match_quality(rows[:250], min_gap=0.05).suggested_threshold == 0.90


def test_match_report_prints_the_bands_the_threshold_to_set_and_draws_them(tmp_path: Path) -> None:
    """`eqc-enrich index match-report` as a user runs it: text, --json, --chart, on a record that has earned
    a threshold (and one that has not yet)."""
    db = tmp_path / "index.db"
    store = IndexStore(db)
    try:
        store.shadow.record([_row(i, 0.91, None) for i in range(199)] + [_row(300, 0.52, None)])
        store.shadow.checked({f"n{i}": ("found", "1") for i in range(199)} | {"n300": ("found", "2")}, by="run")
    finally:
        store.close()

    def report(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "eqc_enrich.cli", "index", "match-report", "--db", str(db), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    early = report()
    assert early.returncode == 0, early.stderr
    assert "no threshold yet" in early.stdout  # 199 names: one short of the evidence a threshold needs
    store = IndexStore(db)
    try:
        store.shadow.record([_row(400, 0.93, None)])
        store.shadow.checked({"n400": ("found", "1")}, by="run")
    finally:
        store.close()
    text = report("--chart", str(tmp_path / "bands.png"))
    assert text.returncode == 0, text.stderr
    assert "--local-match on --match-threshold 0.90" in text.stdout
    assert (tmp_path / "bands.png").read_bytes().startswith(b"\x89PNG")
    as_json = json.loads(report("--json").stdout)
    # nothing was judged from 0.60 to 0.90, so those bands do not lower it; the 0.50 band's miss would take the
    # precision below 99.9%
    assert as_json["suggested_threshold"] == 0.90
    by_low = {band["low"]: band for band in as_json["bands"]}
    assert (by_low[0.9]["names"], by_low[0.9]["agreed"], by_low[0.5]["names"], by_low[0.5]["agreed"]) == (
        200, 200, 1, 0,
    )  # fmt: skip


# --- the stage in a run, on the realistic sandbox month ------------------------------------------------------------


@pytest.fixture(scope="module")
def months() -> tuple[tuple[pl.DataFrame, pl.DataFrame], tuple[pl.DataFrame, pl.DataFrame]]:
    return make_realistic(seed=7, rows=8_000, variant_share=0.5, confuser_share=0.08)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(seed=7, latency=(20.0, 60.0), time_scale=SCALE, rate_limit=LIMIT, tokens=(TOKEN,),
                             token_ttl=10 * 86_400.0)  # fmt: skip
    with Simulator(config) as simulator:
        yield simulator


def _options(sim: Simulator, db: Path, **changes: object) -> RunOptions:
    base = run_options(db=db, eqc_url=sim.url, token=TOKEN, rate_limit=LIMIT.scaled(SCALE), timeout_s=2.0,
                       salt="s", latency_hint=Latency(0.04, 0.06))  # fmt: skip
    return run_options(base, **changes)


@pytest.fixture(scope="module")
def last_month_index(
    months: tuple[tuple[pl.DataFrame, pl.DataFrame], ...], sim: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    db = tmp_path_factory.mktemp("match") / "last.db"
    (last, _), _ = months
    assert enrich(last, options=_options(sim, db, local_match="off")).summary.status == "completed"
    return db


def _scored(result_frame: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    return result_frame.with_row_index("row").join(truth.rename({"company_id": "expected"}), on="row")


def test_on_the_realistic_month_every_equivalent_variant_is_answered_locally_and_no_id_is_wrong(
    months: tuple[tuple[pl.DataFrame, pl.DataFrame], ...], sim: Simulator, last_month_index: Path, tmp_path: Path
) -> None:
    _, (data, truth) = months
    # an equivalent variant is equivalent to a name the index holds: the registered name (an EQC answer);
    # a company last month's sheet carried an id for was learned under its spelling there only
    store = IndexStore(last_month_index)
    try:
        registered = [normalize_name(name) for name in truth["name"].drop_nulls().unique()]
        known = {key for key, _ in store.lookup({"customer_name": registered})}
    finally:
        store.close()
    asked: dict[str, int] = {}
    for mode in ("off", "shadow", "on"):
        db = tmp_path / f"{mode}.db"
        shutil.copy(last_month_index, db)
        result = enrich(data, options=_options(sim, db, local_match=mode, match=MatchPolicy(threshold=0.9)))
        assert result.summary.status == "completed"
        asked[mode] = result.summary.eqc.names_asked
        rows = _scored(result.frame, truth)
        wrong = rows.filter(pl.col("expected").is_not_null() & (pl.col("company_id") != pl.col("expected")))
        assert wrong.height == 0, wrong.select("客户名称", "company_id_source", "variant").unique().head()
        local = rows.filter(pl.col("company_id_source") == "index:match")
        equivalents = rows.filter(
            pl.col("variant").is_in([k for k, v in VARIANT_KINDS.items() if v == EQUIVALENT])
            & pl.col("name").map_elements(lambda n: normalize_name(n) in known, return_dtype=pl.Boolean)
        )
        assert equivalents.height > 100
        if mode == "off":
            assert local.height == 0
            continue
        # every one, whatever the threshold (a row whose plan code the index knows is answered before)
        missed = equivalents.filter(~pl.col("company_id_source").is_in(["index:match", "index:plan_code"]))
        assert missed.height == 0, missed.select("客户名称", "name", "company_id_source").unique().head()
        assert local.filter(pl.col("like").is_not_null()).height == 0  # no look-alike got a known company's id
        summary = result.summary
        assert summary.answered_locally == summary.local_match["answered"] > 0
        assert summary.local_match["mode"] == mode
        assert summary.phases_s["local_match"] > 0
    assert asked["on"] <= asked["off"] * 2 / 3  # the names sent to EQC fall by at least a third
    assert asked["on"] < asked["shadow"] < asked["off"]


def test_local_answers_are_in_the_index_for_the_next_run_and_the_record_has_eqcs_answers(
    months: tuple[tuple[pl.DataFrame, pl.DataFrame], ...], sim: Simulator, last_month_index: Path, tmp_path: Path
) -> None:
    _, (data, _truth) = months
    db = tmp_path / "shadow.db"
    shutil.copy(last_month_index, db)
    first = enrich(data, options=_options(sim, db))  # shadow, the default
    again = enrich(data, options=_options(sim, db))
    assert again.summary.eqc.names_asked == 0
    assert again.summary.answered_locally == 0  # the index finds them directly now
    assert "index:match" not in again.summary.resolved_by
    store = IndexStore(db)
    try:
        rows = store.shadow.all_rows()
        local = {r.lookup_key: r for r in rows if r.action == ANSWERED}
        assert len(local) == first.summary.answered_locally
        entries = store.lookup({"customer_name": list(local)})
        for (key, _), entry in entries.items():
            row = local[key]
            assert (entry.company_id, entry.source) == (row.candidate_id, "local_match")
            assert entry.confidence <= row.candidate_confidence
        checked = [r for r in rows if r.action != ANSWERED and r.checked_by == "run"]
        assert checked
        assert all(r.eqc_status in ("found", "not_found") for r in checked)
        similar_found = [r for r in checked if r.kind == SIMILAR and r.eqc_status == "found"]
        assert similar_found
        # EQC resolves the similar variants to their company, the look-alikes in another industry to themselves
        assert {r.agreed for r in similar_found} == {True, False}
        assert first.summary.local_match["shadow_checked"] == len(checked)
    finally:
        store.close()


# --- trust checked after the fact: the worker, and the review page ---------------------------------------------------


def test_the_worker_checks_local_answers_in_idle_slots_and_a_disagreement_replaces_the_entry_for_review(
    months: tuple[tuple[pl.DataFrame, pl.DataFrame], ...], sim: Simulator, last_month_index: Path, tmp_path: Path
) -> None:
    _, (data, truth) = months
    db = tmp_path / "lax.db"
    shutil.copy(last_month_index, db)
    # a threshold no report would suggest: look-alikes in another industry (scored 0.5) get answered wrongly
    lax = MatchPolicy(threshold=0.45, min_gap=0.0, verify_share=1.0)
    run = enrich(data, options=_options(sim, db, local_match="on", match=lax))
    rows = _scored(run.frame, truth)
    wrong = rows.filter((pl.col("company_id_source") == "index:match") & (pl.col("company_id") != pl.col("expected")))
    wrong_names = set(wrong["客户名称"].unique())
    assert wrong_names, "the lax threshold should have answered some look-alike wrongly"
    worker = worker_options(db=str(db), eqc_url=sim.url, token=TOKEN, rate_limit=LIMIT.scaled(SCALE), timeout_s=2.0)
    store = IndexStore(db)
    try:
        to_check = store.shadow.to_verify()
        assert len(to_check) == run.summary.answered_locally  # verify_share 1.0: every local answer
        status = worker_status(store, worker, LIMIT.scaled(SCALE), sim.url)  # `worker status` counts them
        assert status.due["match_check"] == len(to_check)
        assert status.match_checks_due == {
            "equivalent": run.summary.local_match["equivalent"], "similar": run.summary.local_match["similar"],
        }  # fmt: skip
        line = next(line for line in status.lines() if line.startswith("local answers to check with EQC"))
        assert line.startswith(f"local answers to check with EQC: {len(to_check):,} (equivalent ")
    finally:
        store.close()
    report = run_worker(worker, once=True)
    assert report.status == "completed"
    assert report.match_checks["disagreed"] >= len(wrong_names) > 0
    assert report.match_checks["agreed"] > 0
    assert report.by_kind["match_check"] == sum(report.match_checks.values())
    store = IndexStore(db)
    try:
        assert store.shadow.to_verify() == []
        assert worker_status(store, worker, LIMIT.scaled(SCALE), sim.url).due["match_check"] == 0
        checked = {row.lookup_key: row for row in store.shadow.all_rows() if row.checked_by == "worker"}
        disagreed = {key for key, row in checked.items() if row.agreed is False}
        entries = store.lookup({"customer_name": sorted(disagreed)})
        for (key, _), entry in entries.items():  # EQC's answer replaced the local match's
            assert (entry.company_id, entry.source) == (checked[key].eqc_company_id, "eqc_api")
        review = {name.lookup_key: name for name in store.unsettled.open_names(statuses=["match_disagreed"])}
        assert set(review) == disagreed
        assert all(review[key].candidate_id == checked[key].eqc_company_id for key in review)
        quality = match_quality(store.shadow.all_rows(), min_gap=0.0)
        low = next(band for band in quality.bands if band.low == 0.5)
        assert low.names > low.agreed  # the disagreements count against their band
    finally:
        store.close()
    again = enrich(data, options=_options(sim, db, local_match="off"))  # the next run: the corrected ids
    fixed = _scored(again.frame, truth).filter(pl.col("客户名称").is_in(list(wrong_names)))
    assert fixed.filter(pl.col("company_id") != pl.col("expected")).height == 0


def test_names_in_the_review_band_reach_the_review_page_with_the_local_candidate_and_are_accepted_without_a_search(
    months: tuple[tuple[pl.DataFrame, pl.DataFrame], ...], sim: Simulator, last_month_index: Path, tmp_path: Path
) -> None:
    _, (data, truth) = months
    expected = dict(zip(data["客户名称"].map_elements(normalize_name, return_dtype=pl.String), truth["company_id"],
                        strict=True))  # fmt: skip
    # 1. EQC asked (shadow, the default): its weak answer is the local candidate, and the page says both
    asked_db = tmp_path / "asked.db"
    shutil.copy(last_month_index, asked_db)
    enrich(data, options=_options(sim, asked_db))
    store = IndexStore(asked_db)
    try:
        weak = {n.lookup_key: n for n in store.unsettled.open_names(kinds=["low_confidence"])}
        band = [r for r in store.shadow.all_rows() if r.action == REVIEW and r.lookup_key in weak]
        assert band
        row = band[0]
        assert weak[row.lookup_key].candidate_id == row.candidate_id  # EQC's fuzzy answer: the same company
        with review_pages.page_of(store, review_pages.access(sim.url, token=TOKEN)) as (_, page):
            shown = page.get("/", params={"key": row.lookup_key}).text
        assert shown.count('<tr class="candidate') == 1  # one row for the one company, not two
        assert "(the run&#x27;s weak answer)" in shown
        assert f"also the local match: similar {row.score:.2f}" in shown
    finally:
        store.close()
    # 2. EQC not asked (--budget 0): the local candidate is the only one, and a person accepts it
    db = tmp_path / "review.db"
    shutil.copy(last_month_index, db)
    first = enrich(data, options=_options(sim, db, budget=0))
    assert first.summary.local_match["review"] > 0
    store = IndexStore(db)
    try:
        kept = {r.lookup_key: r for r in store.shadow.all_rows() if r.action == REVIEW}
        assert len(kept) == first.summary.local_match["review"]
        assert set(kept) <= {n.lookup_key for n in store.unsettled.open_names(statuses=["not_asked"])}
        requests_before = sum(sim.stats()["requests"].values())
        with review_pages.page_of(store, review_pages.access(sim.url, token=TOKEN)) as (_, page):
            listed = page.get("/", params={"kind": "local"}).text
            assert listed.count('<tr class="name') == min(len(kept), 100)  # the filter: the review band only
            assert listed.count('<span class="tag local">local candidate</span>') == min(len(kept), 100)
            key = min(kept)
            chosen = kept[key]
            shown = page.get("/", params={"key": key}).text
            assert "What EQC answered before, and the local match" in shown
            assert '<tr class="candidate local chosen" data-index="1">' in shown
            assert f"the local match: {chosen.kind} {chosen.score:.2f}" in shown
            assert chosen.candidate_id in shown
            answer = review_pages.decide(page, key=key, decision="accept", company_id=chosen.candidate_id)
            assert "saved to the index" in review_pages.notice_of(page, answer)
        assert sum(sim.stats()["requests"].values()) == requests_before  # accepted without a search
        entry = store.lookup({"customer_name": [key]})[(key, "customer_name")]
        assert (entry.company_id, entry.source) == (chosen.candidate_id, "manual")
        assert chosen.candidate_id == expected[key]  # the truth agrees with the person
        assert key not in {n.lookup_key for n in store.unsettled.open_names()}
    finally:
        store.close()
    again = enrich(data, options=_options(sim, db, budget=0))
    rows = again.frame.filter(pl.col("客户名称").map_elements(normalize_name, return_dtype=pl.String) == key)
    assert rows.height > 0
    assert set(rows["company_id_source"]) == {"index:manual"}
    assert set(rows["company_id"]) == {chosen.candidate_id}
