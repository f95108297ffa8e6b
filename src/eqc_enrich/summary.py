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


@dataclass
class EqcCounts:
    names_asked: int = 0
    found: int = 0
    not_found: int = 0
    failed: int = 0
    skipped: int = 0
    negative_cache_hits: int = 0
    over_budget: int = 0


@dataclass
class RunSummary:
    """Everything `--summary FILE.json` holds; `status` is completed, interrupted or token_unavailable."""

    status: str = "completed"
    message: str | None = None
    input: str | None = None
    output: str | None = None
    rows: int = 0
    distinct_names: int = 0
    resolved_by: dict[str, int] = field(default_factory=dict)
    index_hit_rate: float = 0.0
    index_hits_by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    eqc: EqcCounts = field(default_factory=EqcCounts)
    api_calls: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    rate_limited: int = 0
    token_refreshes: int = 0
    elapsed_s: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    rate_limit: str = ""
    concurrency: dict[str, Any] = field(default_factory=dict)
    lower_bound_s: float | None = None
    efficiency: float | None = None
    unresolved_names: int = 0
    index: str = ""
    run_id: str = ""
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, indent=2, default=str)

    def write(self, path: Path) -> Path:
        return write_text(path, self.to_json() + "\n")
