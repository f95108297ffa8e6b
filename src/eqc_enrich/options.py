"""A run's options as the caller gives them, and the `RunConfig` resolved from them against the WDH_* settings.

How to reach EQC and share its quota is one nested value (`RunOptions.eqc`, an `EqcOptions`) shared with
the worker, the review page and the Dagster resource; the rest are what this run reads, asks and writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from eqc_enrich._errors import ConfigError
from eqc_enrich._jsonable import jsonable
from eqc_enrich._policies import ConfidencePolicy, MatchPolicy
from eqc_enrich.config import EqcAccess, EqcOptions, StageConfig, resolve_access, stage_config
from eqc_enrich.model import Latency
from eqc_enrich.resolve import Columns
from eqc_enrich.settings import Settings
from eqc_enrich.store import redact_url

__all__ = ["DEFAULT_NEGATIVE_TTL_S", "LOCAL_MATCH_MODES", "RunConfig", "RunOptions", "resolve_config"]

DEFAULT_NEGATIVE_TTL_S = 30 * 86_400.0
LOCAL_MATCH_MODES = ("off", "shadow", "on")
"""off: no local matching; shadow: equivalent names answered locally, similar ones still asked (and their
candidates recorded beside EQC's answers); on: similar names above the policy's threshold answered too."""


@dataclass(frozen=True)
class RunOptions:
    """Every knob of a run; `None` means "from the WDH_* settings".

    - where the data is: `columns`, `sheet`; the index: `db`, `db_schema`;
    - EQC: `eqc` (how to reach it and share its quota), `concurrency`, `details`, `check_token`,
      `eqc_down_wait_s`, `index_wait_s`, `budget` (at most this many names; 0 asks none; None: no cap),
      `enrichment`;
    - what counts as known: `negative_ttl_s`, `retry_not_found`, `refresh_s`, `overrides` (our YAML file, or
      WorkDataHub's mapping folder; None: the folder `WDH_MAPPINGS_DIR` names, if set), `confidence`;
    - names: `name_from_plan` (a 单一计划 row without a customer name takes it from its plan name; None: on
      for the 收入明细 sheet only);
    - the local matcher before EQC: `local_match` (one of `LOCAL_MATCH_MODES`) and its `match` policy;
    - output: `id_column`, `source_column`, `keep_formulas`; `salt` for temporary ids [WDH_ALIAS_SALT].
    """

    columns: Columns = field(default_factory=Columns)
    sheet: str | None = None
    db: str | Path | None = None
    db_schema: str | None = None
    eqc: EqcOptions = field(default_factory=EqcOptions)
    concurrency: int | None = None
    budget: int | None = None
    enrichment: bool = True
    details: bool = False
    overrides: Path | None = None
    name_from_plan: bool | None = None
    negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S
    retry_not_found: bool = False
    refresh_s: float | None = None
    salt: str | None = field(default=None, repr=False)
    id_column: str = "company_id"
    source_column: str = "company_id_source"
    margin_s: float | None = None
    grace_s: float = 5.0
    commit_interval_s: float = 0.5
    check_token: bool = False
    eqc_down_wait_s: float | None = None  # how long to wait for an unreachable EQC (OutagePolicy default)
    index_wait_s: float | None = None  # how long answers may wait for an index that cannot be written
    keep_formulas: bool = False  # CSV outputs: no leading ' on text cells starting with = + - @ (output.py)
    max_input_size: int | None = None  # bytes the input may take once read (None: EQC_ENRICH_MAX_INPUT_SIZE, 2 GiB)
    latency_hint: Latency | None = None  # for the lower bound in the summary; measured latency otherwise
    confidence: ConfidencePolicy = field(default_factory=ConfidencePolicy)  # what the index learns, by confidence
    local_match: str = "shadow"  # off, shadow, on (LOCAL_MATCH_MODES)
    match: MatchPolicy = field(default_factory=MatchPolicy)  # how far a local match is trusted

    def __post_init__(self) -> None:
        if self.local_match not in LOCAL_MATCH_MODES:
            raise ConfigError(f"local_match must be one of {', '.join(LOCAL_MATCH_MODES)}, got {self.local_match!r}")

    def public(self) -> dict[str, Any]:
        """The options as the run journal and `--log-json` record them, as plain JSON values with their real
        types (the rate limit as `10/60s`, durations in seconds); no token, no token command, no salt, and
        no password of a database URL."""
        shown = {f.name: jsonable(getattr(self, f.name)) for f in fields(self) if f.name not in ("salt", "eqc")}
        shown.update(self.eqc.public())
        if isinstance(self.db, str) and "://" in self.db:
            shown["db"] = redact_url(self.db)
        return shown


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A run's options with every default decided: the EQC stage's configuration, the salt, and the overrides
    (`--overrides`, else `WDH_MAPPINGS_DIR`)."""

    stage: StageConfig
    salt: str
    overrides: Path | None = None

    def __repr__(self) -> str:  # the salt never reaches a log through a repr (the access hides the token)
        return f"RunConfig(stage={self.stage!r})"

    @property
    def access(self) -> EqcAccess:
        return self.stage.access


def resolve_config(options: RunOptions, settings: Settings) -> RunConfig:
    access = resolve_access(options.eqc, settings)
    stage = stage_config(
        access,
        details=options.details,
        concurrency=options.concurrency,
        margin_s=options.margin_s,
        grace_s=options.grace_s,
        commit_interval_s=options.commit_interval_s,
        eqc_down_wait_s=options.eqc_down_wait_s,
        index_wait_s=options.index_wait_s,
        confidence=options.confidence,
    )
    salt = options.salt if options.salt is not None else settings.alias_salt.get_secret_value()
    return RunConfig(stage=stage, salt=salt, overrides=options.overrides or settings.mappings_dir)
