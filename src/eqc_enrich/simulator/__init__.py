"""A local stand-in for the EQC API (same paths, auth, limits, answers) and monthly data to feed it.

`Simulator` serves a seeded universe of fictitious companies on loopback; `make_month` / `write_month`
produce an annuity_performance month whose customer names come from the same universe, with the expected
company id of every row beside it; `make_realistic` / `write_realistic` two months for the local matcher (last
month, and this month with some customers written another way and look-alikes of others).
"""

from eqc_enrich.simulator._app import SimulatorConfig
from eqc_enrich.simulator._datagen import (
    CONFUSER_KINDS,
    REAL_MONTH_COMPANIES,
    REAL_MONTH_ROWS,
    VARIANT_KINDS,
    default_companies,
    make_month,
    make_months,
    make_realistic,
    previous_path,
    summarize,
    truth_path,
    write_frames,
    write_month,
    write_realistic,
)
from eqc_enrich.simulator._server import Simulator
from eqc_enrich.simulator._universe import Company, Universe, build_universe, canonical_key, invent_absent_names

__all__ = [
    "CONFUSER_KINDS",
    "REAL_MONTH_COMPANIES",
    "REAL_MONTH_ROWS",
    "VARIANT_KINDS",
    "Company",
    "Simulator",
    "SimulatorConfig",
    "Universe",
    "build_universe",
    "canonical_key",
    "default_companies",
    "invent_absent_names",
    "make_month",
    "make_months",
    "make_realistic",
    "previous_path",
    "summarize",
    "truth_path",
    "write_frames",
    "write_month",
    "write_realistic",
]
