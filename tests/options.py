"""Test helpers: run and worker options written flat, the EQC settings routed into their one value.

Tests name a run's knobs side by side (`run_options(db=..., eqc_url=..., token=..., budget=...)`); the
library keeps how to reach EQC in `RunOptions.eqc` (an `EqcOptions`). These route the EQC names there.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from eqc_enrich.config import EqcOptions
from eqc_enrich.options import RunOptions
from eqc_enrich.worker import WorkerOptions

EQC_FIELDS = {
    "eqc_url": "url",
    "token": "token",
    "token_command": "token_command",
    "rate_limit": "rate_limit",
    "quota_key": "quota_key",
    "timeout_s": "timeout_s",
    "retries": "retries",
    "claim_lease_s": "claim_lease_s",
}


def _split(changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    eqc = {EQC_FIELDS[name]: changes.pop(name) for name in list(changes) if name in EQC_FIELDS}
    return eqc, changes


def run_options(base: RunOptions | None = None, **changes: Any) -> RunOptions:
    """`base` (default `RunOptions()`) with `changes`, EQC ones (`eqc_url`, `token`, `rate_limit`, ...) included."""
    eqc, rest = _split(changes)
    base = base or RunOptions()
    return replace(base, eqc=replace(base.eqc, **eqc), **rest)


def worker_options(base: WorkerOptions | None = None, **changes: Any) -> WorkerOptions:
    """The same for the worker's options."""
    eqc, rest = _split(changes)
    base = base or WorkerOptions()
    return replace(base, eqc=replace(base.eqc, **eqc), **rest)


def eqc_options(**changes: Any) -> EqcOptions:
    """An `EqcOptions` from the flat names."""
    eqc, rest = _split(changes)
    assert not rest, f"not EQC settings: {sorted(rest)}"
    return EqcOptions(**eqc)
