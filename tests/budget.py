"""How many examples a property test draws: all of them in `make test-all` and CI, a fifth in `make test`.

A developer's inner loop keeps every property in play with fewer cases; the thorough run
(`EQC_ENRICH_THOROUGH=1`, which `make test-all` and `.ci/run` set) draws the full count.
"""

from __future__ import annotations

import os

THOROUGH = os.environ.get("EQC_ENRICH_THOROUGH", "") not in ("", "0")


def examples(full: int) -> int:
    """`full` when thorough, else a fifth of it (at least 50)."""
    return full if THOROUGH else max(50, full // 5)
