# ruff: noqa: E501 - the plants are lines of code, quoted whole
"""Plant the bugs of issue 13's table, one at a time, and check that the named tests catch each.

    .venv/bin/python tests/planted_bugs.py            # every plant, then the table
    .venv/bin/python tests/planted_bugs.py 3 12       # only these rows
    .venv/bin/python tests/planted_bugs.py --baseline # the named tests pass on the code as it is

Each plant is a text replacement in a copy of `src/` (a temporary folder, put first on PYTHONPATH, which
the CLI subprocesses of the tests inherit), so the work tree is never touched. A plant is caught when its
named tests fail; every replacement must match exactly once, so a plant that no longer applies says so
instead of passing silently. Not collected by pytest (no `test_` prefix); PostgreSQL tests follow
EQC_ENRICH_TEST_PG_URL as usual.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plant:
    row: str
    bug: str
    where: str
    edits: tuple[tuple[str, str, str], ...]  # (file under src/eqc_enrich, old text, new text)
    tests: tuple[str, ...]


PLANTS: tuple[Plant, ...] = (
    Plant(
        "1", "`normalize_name` stops after one pass (not a fixed point)", "keys.py `_normalize`",
        (("keys.py", "        current = following\n", "        return _bounded_key(following)\n"),),
        ("tests/test_keys.py::test_idempotent", "tests/test_keys.py::test_fixed_point_examples"),
    ),
    Plant(
        "2", "temporary id built from the stripped raw name instead of the key", "keys.py `temp_company_id`",
        (("keys.py", 'message = normalize_name(name) or "__empty__"', 'message = name.strip() or "__empty__"'),),
        ("tests/test_keys.py::test_temp_id_same_for_variants",),
    ),
    Plant(
        "3", "the client limiter admits N+1 per window", "eqc_stage/_pacing.py `SlidingWindowLimiter._rule` / `acquire`",
        (
            ("eqc_stage/_pacing.py", "requests=self.limit.requests, span_s=self.span_s", "requests=self.limit.requests + 1, span_s=self.span_s"),
            ("eqc_stage/_pacing.py", "recent=self.limit.requests, keep_s", "recent=self.limit.requests + 1, keep_s"),
        ),
        (
            "tests/test_pacing.py::test_the_limiter_admits_exactly_n_in_any_span",
            "tests/test_pacing.py::test_no_arrival_pattern_or_retry_mix_puts_more_than_n_sends_in_a_window_plus_margin",
        ),
    ),
    Plant(
        "4", "the limiter's hard window rule deleted, pacing kept", "eqc_stage/_pacing.py `next_send`",
        (("eqc_stage/_pacing.py", "earliest = max(earliest, sends[-requests] + span_s, sends[-1] + span_s / requests)",
          "earliest = max(earliest, sends[-1] + span_s / requests)"),),
        (
            "tests/test_pacing.py::test_a_burst_gets_n_sends_at_once_then_one_per_spacing_after_a_full_span",
            "tests/test_pacing.py::test_no_arrival_pattern_or_retry_mix_puts_more_than_n_sends_in_a_window_plus_margin",
        ),
    ),
    Plant(
        "5", "the limiter never waits", "eqc_stage/_pacing.py `SlidingWindowLimiter.acquire`",
        (("eqc_stage/_pacing.py", "                    if delay > 0:\n", "                    if delay > 0 and False:\n"),),
        (
            "tests/test_pacing.py::test_the_limiter_admits_exactly_n_in_any_span",
            "tests/test_run.py::test_each_name_is_searched_once_within_quota_then_never_again",
        ),
    ),
    Plant(
        "6", "upsert replaces on equal confidence (`>=` for `>`)", "store/_entries.py `Entries.upsert`",
        (("store/_entries.py", "stronger = new.confidence > old.confidence", "stronger = new.confidence >= old.confidence"),),
        ("tests/test_index.py::test_upsert_keeps_the_stronger_answer_and_counts_hits",),
    ),
    Plant(
        "7", "negative-cache TTL ignored", "index_stage.py `run_index_stage` (the cut-off also feeds the claims' look)",
        (("index_stage.py", "read_at - timedelta(seconds=options.negative_ttl_s)", "read_at - timedelta(days=36_500)"),),
        ("tests/test_promises.py::test_not_found_is_trusted_for_the_negative_ttl_and_no_longer",),
    ),
    Plant(
        "8", "negative TTL read as milliseconds (30 days become 43 minutes)", "index_stage.py `run_index_stage`",
        (("index_stage.py", "read_at - timedelta(seconds=options.negative_ttl_s)", "read_at - timedelta(milliseconds=options.negative_ttl_s)"),),
        ("tests/test_promises.py::test_not_found_is_trusted_for_the_negative_ttl_and_no_longer",),
    ),
    Plant(
        "9", "`--negative-ttl` ignored by the CLI", "cli.py `run`",
        (("cli.py", "        negative_ttl_s=parse_duration(negative_ttl),\n", ""),),
        ("tests/test_promises.py::test_negative_ttl_on_the_command_line_reaches_the_run",),
    ),
    Plant(
        "10", "answers arriving during the stop's grace period dropped", "eqc_stage/_lookup.py `EqcLookup._wait_for`",
        (("eqc_stage/_lookup.py", "                await asyncio.wait(running, timeout=self._settings.grace_s)\n",
          "                pass\n"),),
        (
            "tests/test_run.py::test_cancel_midway_then_rerun_asks_no_name_twice",
            "tests/test_cli.py::test_sigint_stops_cleanly_and_a_rerun_resumes",
        ),
    ),
    Plant(
        "10b", "... the same, answers in hand after the stop not handed on", "eqc_stage/_lookup.py `EqcLookup._worker`",
        (("eqc_stage/_lookup.py", "                self._events(\"name_failed\", {\"name\": name, \"error\": outcome.error})\n            self._finish(outcome)\n",
          "                self._events(\"name_failed\", {\"name\": name, \"error\": outcome.error})\n            if self._stop_requested:\n                return\n            self._finish(outcome)\n"),),
        ("tests/test_run.py::test_cancel_midway_then_rerun_asks_no_name_twice",),
    ),
    Plant(
        "11", "the writer's final flush removed", "eqc_stage/_writeback.py `IndexWriter.close`",
        (("eqc_stage/_writeback.py", "        while len(self._pending) and self.gave_up is None:\n", "        while False:\n"),),
        ("tests/test_run.py::test_cancel_midway_then_rerun_asks_no_name_twice",),
    ),
    Plant(
        "12", "output written straight to the target instead of temp file + rename", "output.py `write_tables`",
        (("output.py", '            tmp = path.with_name(_temp_name(path, "tmp"))\n            written.append((tmp, path))\n            _write_one(', "            tmp = path\n            written.append((tmp, path))\n            _write_one("),),
        (
            "tests/test_output.py::test_a_write_that_fails_midway_leaves_the_previous_file_byte_identical",
            "tests/test_resolution.py::test_writes_are_atomic",
        ),
    ),
    Plant(
        "13", "Retry-After not honoured (neither the account's pause nor the back-off floor)",
        "eqc_stage/_lookup.py `EqcLookup._send`, _policies.py `RetryPolicy.delay`",
        (
            ("eqc_stage/_lookup.py", "                self.limiter.pause_for(hold)\n", "                pass\n"),
            ("_policies.py", "        return max(delay, hold) if hold is not None else delay\n", "        return delay\n"),
        ),
        ("tests/test_promises.py::test_retry_after_holds_every_request_of_the_account",),
    ),
    Plant(
        "13b", "... the account's pause alone dropped", "eqc_stage/_lookup.py `EqcLookup._send`",
        (("eqc_stage/_lookup.py", "                self.limiter.pause_for(hold)\n", "                pass\n"),),
        ("tests/test_promises.py::test_retry_after_holds_every_request_of_the_account",),
    ),
    Plant(
        "13c", "... the back-off floor alone dropped", "_policies.py `RetryPolicy.delay`",
        (("_policies.py", "        return max(delay, hold) if hold is not None else delay\n", "        return delay\n"),),
        ("tests/test_pacing.py::test_retry_after_is_a_floor_of_the_back_off",),
    ),
    Plant(
        "13d", "... the limiter's pause ignored", "eqc_stage/_pacing.py `MemoryLedger.pause_for`",
        (("eqc_stage/_pacing.py", "        self._paused_until = max(self._paused_until, self._clock() + seconds)\n\n\nclass SendTiming",
          "        pass\n\n\nclass SendTiming"),),
        ("tests/test_pacing.py::test_retry_after_holds_every_send_until_the_pause_ends",),
    ),
    Plant(
        "14", "one token refresh per request that saw the expiry", "eqc_stage/_tokens.py `TokenKeeper.refresh`",
        (("eqc_stage/_tokens.py", "            if self.generation != sent_generation:\n", "            if False:\n"),),
        (
            "tests/test_tokens.py::test_many_requests_meeting_one_expiry_cost_one_refresh",
            "tests/test_cli.py::test_token_expiring_repeatedly_costs_one_refresh_per_expiry",
        ),
    ),
    Plant(
        "15", "`RunOptions.public()` no longer hides token and salt (the token lands in the run journal)",
        "options.py `RunOptions.public`",
        (("options.py", 'if f.name not in ("salt", "eqc")}', "}"),),
        (
            "tests/test_promises.py::test_a_token_given_to_the_python_api_stays_out_of_the_database",
            "tests/test_promises.py::test_a_token_printed_by_the_token_command_stays_out_of_the_database",
        ),
    ),
    Plant(
        "16", "commit interval 0.5 s turned into 3,600 s", "options.py `RunOptions.commit_interval_s`",
        (("options.py", "    commit_interval_s: float = 0.5\n", "    commit_interval_s: float = 3600.0\n"),),
        ("tests/test_promises.py::test_every_answer_is_committed_within_half_a_second_at_the_story_rate",),
    ),
    Plant(
        "16b", "... the writer ignoring its interval", "eqc_stage/_writeback.py `IndexWriter._run`",
        (("eqc_stage/_writeback.py", "interval = self._interval_s if self.writable else", "interval = 3600.0 if self.writable else"),),
        (
            "tests/test_promises.py::test_the_writer_commits_while_the_run_goes_on",
            "tests/test_failures.py::test_sigkill_mid_run_repeats_at_most_the_requests_in_flight",
        ),
    ),
    Plant(
        "16c", "... no commit at least once per quota slot", "config.py `stage_config`",
        (("config.py", "max(0.001, min(commit_interval_s, max(slot, MIN_COMMIT_INTERVAL_S)))", "max(0.001, commit_interval_s)"),),
        ("tests/test_promises.py::test_every_answer_is_committed_within_half_a_second_at_the_story_rate",),
    ),
    Plant(
        "17", "an option of `run` missing from the README", "cli.py `run`",
        (("cli.py", '    keep_formulas: Annotated[\n', '    frobnicate: Annotated[bool, typer.Option(help="x")] = False,\n    keep_formulas: Annotated[\n'),),
        ("tests/test_promises.py::test_every_option_of_every_command_is_in_the_help_and_in_the_readme",),
    ),
)  # fmt: skip


def planted_copy(plant: Plant | None, into: Path) -> Path:
    src = into / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for file, old, new in plant.edits if plant else ():
        path = src / "eqc_enrich" / file
        text = path.read_text(encoding="utf-8")
        count = text.count(old)
        if count != 1:
            raise SystemExit(f"plant {plant.row if plant else ''}: {file}: expected the text once, found {count}")
        path.write_text(text.replace(old, new), encoding="utf-8")
    return src


def run_tests(tests: tuple[str, ...], src: Path) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *tests],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-200:]
    return done.returncode == 0, "; ".join(lines[:2]) or tail


def main(argv: list[str]) -> int:
    baseline = "--baseline" in argv
    rows = [arg for arg in argv if not arg.startswith("--")]
    chosen = [p for p in PLANTS if not rows or p.row in rows]
    results: list[tuple[Plant, bool, str, float]] = []
    for plant in chosen:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"plant-{plant.row}-") as folder:
            passed, detail = run_tests(plant.tests, planted_copy(None if baseline else plant, Path(folder)))
        ok = passed if baseline else not passed
        results.append((plant, ok, detail, time.monotonic() - started))
        verdict = ("passes" if passed else "FAILS") if baseline else ("caught" if not passed else "NOT CAUGHT")
        print(f"{plant.row:>4} {verdict:<10} {time.monotonic() - started:6.1f}s  {plant.bug}", flush=True)
        print(f"{'':>16}{detail}", flush=True)
    print()
    print("| planted bug | where today | caught? | by |")
    print("|---|---|---|---|")
    for plant, ok, _, _ in results:
        word = ("passes" if ok else "**fails**") if baseline else ("yes" if ok else "**no**")
        named = ", ".join(f"`{t.split('::')[-1]}`" for t in plant.tests)
        print(f"| {plant.bug} | {plant.where} | {word} | {named} |")
    return 0 if all(ok for _, ok, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
