"""A local stand-in for the EQC API (same paths, auth, limits, answers) and monthly data to feed it.

`Simulator` serves a seeded universe of fictitious companies on loopback; `make_month` / `write_month`
produce an annuity_performance month whose customer names come from the same universe, with the expected
company id of every row beside it.
"""

from eqc_enrich.simulator._app import SimulatorConfig
from eqc_enrich.simulator._datagen import make_month, make_months, truth_path, write_month
from eqc_enrich.simulator._server import Simulator
from eqc_enrich.simulator._universe import Company, Universe, build_universe, canonical_key

__all__ = [
    "Company",
    "Simulator",
    "SimulatorConfig",
    "Universe",
    "build_universe",
    "canonical_key",
    "make_month",
    "make_months",
    "truth_path",
    "write_month",
]
