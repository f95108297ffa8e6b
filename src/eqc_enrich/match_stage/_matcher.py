"""Finding the best candidate of each unknown name among the names the index (and base_info) holds.

Blocking keeps the comparisons few: a candidate is compared with a name only when they share the trade name
or the first two characters of their core (the trade name and industry words), which is where a typo inside
the industry words still lands. Before any candidate is parsed, its key is checked for those two-character
openings of the names being matched: most of a large index shares none of them and is never parsed.

A name's result is its best candidate, the best candidate of any other company (the runner-up: several keys
of one company are one candidate), and whether another company was equivalent too (then the name is
ambiguous and nothing answers it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from eqc_enrich.match_stage._fold import fold_key
from eqc_enrich.match_stage._parts import NameParts, parse_key
from eqc_enrich.match_stage._score import EQUIVALENT, compare

__all__ = ["Candidate", "MatchResult", "Matcher"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A name some company is known by: an index key, or a registered name from base_info."""

    key: str
    company_id: str
    confidence: float
    origin: str  # customer_name, former_name, base_info


@dataclass(frozen=True, slots=True)
class MatchResult:
    name: str
    kind: str  # equivalent or similar
    score: float
    candidate: Candidate
    runner_up: float | None = None  # the best score of another company
    ambiguous: bool = False  # another company is equivalent too
    reason: str = ""

    @property
    def gap(self) -> float | None:
        """How far ahead of the runner-up the best candidate is (None: no other company came close)."""
        return None if self.runner_up is None else round(self.score - self.runner_up, 4)


def _opening(parts: NameParts) -> str:
    return parts.core[:2]


class Matcher:
    """The candidates relevant to `names`, parsed and blocked once; `best(name)` for each of them."""

    def __init__(self, candidates: Iterable[Candidate], names: Sequence[str]) -> None:
        self._names = {name: parse_key(name) for name in names}
        openings = {_opening(parts) for parts in self._names.values() if parts.core}
        self._by_trade: dict[str, list[tuple[NameParts, Candidate]]] = {}
        self._by_opening: dict[str, list[tuple[NameParts, Candidate]]] = {}
        self.candidates = 0
        self.parsed = 0
        for candidate in candidates:
            self.candidates += 1
            key = fold_key(candidate.key)  # the openings are of folded names: 乾 is 干 in both
            if not any(key[i : i + 2] in openings for i in range(len(key) - 1)):
                continue
            parts = parse_key(candidate.key)
            self.parsed += 1
            if not parts.core:
                continue
            entry = (parts, candidate)
            self._by_trade.setdefault(parts.trade, []).append(entry)
            self._by_opening.setdefault(_opening(parts), []).append(entry)

    def best(self, name: str) -> MatchResult | None:
        """The best candidate of `name` (one of the names given), or None when none is comparable."""
        query = self._names.get(name) or parse_key(name)
        if not query.core:
            return None
        seen: set[str] = set()
        per_company: dict[str, tuple[float, float, str, Candidate, str]] = {}
        equivalent: set[str] = set()
        for parts, candidate in (*self._by_trade.get(query.trade, ()), *self._by_opening.get(_opening(query), ())):
            if candidate.key in seen or candidate.key == name:
                continue
            seen.add(candidate.key)
            comparison = compare(query, parts)
            if not comparison.comparable:
                continue
            if comparison.kind == EQUIVALENT:
                equivalent.add(candidate.company_id)
            ranked = (comparison.score, candidate.confidence, comparison.kind, candidate, comparison.reason)
            current = per_company.get(candidate.company_id)
            if current is None or ranked[:2] > current[:2]:
                per_company[candidate.company_id] = ranked
        if not per_company:
            return None
        order = sorted(per_company.values(), key=lambda r: (-r[0], -r[1], r[3].company_id))
        score, _, kind, candidate, reason = order[0]
        runner_up = order[1][0] if len(order) > 1 else None
        return MatchResult(
            name, kind, score, candidate, runner_up=runner_up, ambiguous=len(equivalent) > 1, reason=reason
        )
