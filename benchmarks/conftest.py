"""Shared data for the micro-benchmarks, built once per session.

Not part of the test suite (`pytest` alone collects only tests/); run with
`.venv/bin/pytest benchmarks --benchmark-only`. There is no `__init__.py` here, so modules cannot import each
other: what they share comes as fixtures.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path

import pytest

from eqc_enrich.simulator import build_universe
from eqc_enrich.store import IndexStore

DISTINCT_NAMES = 100_000
_MARKERS = ("-已转出", "（已转出）", "(终止)", "-待转出", "(团托)", "及下属子企业", "-养老", "-福利")
_INSERT = (
    "INSERT INTO enrichment_index (lookup_key, lookup_type, company_id, confidence, source, hit_count, "
    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)"
)
_STAMP = "2025-01-01 00:00:00.000000"  # the form SQLAlchemy stores DateTime in on SQLite

IndexRow = tuple[str, str, str, float, str]  # lookup_key, lookup_type, company_id, confidence, source
IndexFiller = Callable[[Path, Iterable[IndexRow]], None]


def _variant(rng: random.Random, name: str) -> str:
    """A name as source sheets write it: a status marker, a stray space, or half-width brackets and padding."""
    roll = rng.random()
    if roll < 0.5:
        return name + rng.choice(_MARKERS)
    if roll < 0.8:
        cut = rng.randint(1, len(name) - 1)
        return f"{name[:cut]} {name[cut:]}"
    return " " + name.replace("（", "(").replace("）", ")") + "\u3000"


@pytest.fixture(scope="session")
def raw_names() -> list[str]:
    """100,000 distinct raw spellings: every company of the simulator's universe plus messy variants."""
    rng = random.Random(7)
    plain = [company.name for company in build_universe(7).companies]
    names = dict.fromkeys(plain)
    while len(names) < DISTINCT_NAMES:
        names[_variant(rng, rng.choice(plain))] = None
    return list(names)


def _fill_index(path: Path, rows: Iterable[IndexRow]) -> None:
    """Bulk rows into an index whose schema IndexStore created: one executemany in one transaction."""
    IndexStore(path).close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(_INSERT, ((*row, _STAMP, _STAMP) for row in rows))


@pytest.fixture(scope="session")
def fill_index() -> IndexFiller:
    return _fill_index
