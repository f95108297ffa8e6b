"""The run summary: the figures a person, a scheduler or a benchmark reads after a run."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eqc_enrich.output import write_text

PHASES = ("read", "normalize", "index_lookup", "eqc", "index_write", "write")


class PhaseTimer:
    """Wall time per named phase; a phase entered twice accumulates."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


STATUSES: dict[str, str] = {
    "completed": "every name that was to be asked got an answer (found or not found), and all is in the index",
    "names_failed": "EQC failed for some names after every retry; they got temporary ids and are listed",
    "eqc_unavailable": "EQC could not be reached (or its certificate is not trusted) and did not come back",
    "index_unavailable": "the index could not be written; answers in hand are in a side file the next run loads",
    "token_unavailable": "no usable EQC token, and no working way to get a fresh one",
    "interrupted": "stopped by a signal or RunControl.stop(); every answer received is kept",
}
"""Every way a run can end, in the order the first that applies wins (stops first, then failed names)."""

EXIT_CODES: dict[str, int] = {
    "completed": 0,
    "token_unavailable": 3,
    "names_failed": 4,
    "eqc_unavailable": 5,
    "index_unavailable": 6,
    "interrupted": 130,
}
"""The process exit code of each status (2 is bad input, 1 an unexpected error): what a scheduler reads."""


NO_NAME_NO_ID = "no customer name, and neither its plan code nor an id in the row resolves it"
"""The one reason in `rows_without_id`. A temporary id is made from a name, so a row without one (blank, a
placeholder such as 空白 or N/A, or 0: most 集合计划 rows) gets a company_id only from its plan code (in the
index or the overrides) or from an id in its own 公司代码; a 集合计划 code is shared by many companies, so
nothing is learned from it."""


@dataclass
class EqcCounts:
    """Names, not requests: `names_planned` = asked + not_asked + answered_elsewhere, and
    asked = found + not_found + failed."""

    names_planned: int = 0
    names_asked: int = 0
    found: int = 0
    not_found: int = 0
    failed: int = 0
    not_asked: int = 0
    # found in the index before this run asked them: another run answered them meanwhile, or this run's answer
    # for another name (its registered or a former name) did; not asked here
    answered_elsewhere: int = 0
    too_long: int = 0  # keys too long for a request EQC can take: never sent
    negative_cache_hits: int = 0
    not_a_company: int = 0  # names a person marked as no company on the review page: never asked
    over_budget: int = 0
    skipped: int = 0  # names for EQC left unasked on purpose (--no-enrichment)


@dataclass
class RunSummary:
    """Everything `--summary FILE.json` holds; `status` is one of `STATUSES`."""

    status: str = "completed"
    message: str | None = None
    input: str | None = None
    output: str | None = None
    rows: int = 0
    distinct_names: int = 0
    resolved_by: dict[str, int] = field(default_factory=dict)
    rows_without_id: dict[str, int] = field(default_factory=dict)  # reason (NO_NAME_NO_ID) -> rows left empty
    answered_before_eqc: int = 0
    index_hit_rate: float = 0.0
    index_hits_by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    eqc: EqcCounts = field(default_factory=EqcCounts)
    failed_names: list[dict[str, str]] = field(default_factory=list)
    api_calls: dict[str, int] = field(default_factory=dict)
    accepted_requests: int = 0  # calls EQC took into its quota: an HTTP answer other than 429 or a refused token
    unanswered_requests: int = 0  # calls that got no HTTP answer (EQC down, a cut connection, a timeout)
    retries: int = 0
    rate_limited: int = 0
    token_refreshes: int = 0
    eqc_outages: int = 0
    index_outages: int = 0
    side_file: str | None = None
    elapsed_s: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    rate_limit: str = ""
    concurrency: dict[str, Any] = field(default_factory=dict)
    lower_bound_s: float | None = None
    efficiency: float | None = None
    unresolved_names: int = 0
    unsettled_recorded: int = 0  # names left open for the review page and the worker (`eqc_unsettled`)
    index: str = ""
    run_id: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, indent=2, default=str)

    def write(self, path: Path) -> Path:
        return write_text(path, self.to_json() + "\n")
