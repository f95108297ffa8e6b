"""Two names compared part by part: equivalent, similar with a score, or kept apart by a rule.

Equivalent: every part is the same (`parse_key` has already folded what cannot change the company: the form
equivalences of company law, the region's place and brackets, width, script). Similar: the trade names are
the same, the regions and branches do not conflict, and the score says how much of the rest differs. Never
similar, whatever the rest: another region, a branch against its head office (or another branch), another
trade name.

The industry words are compared by RapidFuzz's Levenshtein distance (C++, MIT, maintained; the distance
counts the characters a typist got wrong, where a ratio over two-character words would call one wrong
character half the word). A typo inside the industry words can hide them from the word list
(`供应链官理`): when two cores have the same length and differ only after the shorter trade name, the
candidate's split is used for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from rapidfuzz.distance import Levenshtein

from eqc_enrich.match_stage._parts import NameParts

__all__ = ["EQUIVALENT", "SIMILAR", "Comparison", "compare"]

EQUIVALENT: Final[str] = "equivalent"
SIMILAR: Final[str] = "similar"
_KEPT_APART: Final[str] = "apart"

# what each difference takes off a score of 1.0
_PER_WRONG_CHARACTER: Final[float] = 0.06
_OTHER_INDUSTRY: Final[float] = 0.5  # most of the industry words differ: another line of business
_INDUSTRY_MISSING: Final[float] = 0.15
_REGION_MISSING: Final[float] = 0.10
_FORM_MISSING: Final[float] = 0.04
_OTHER_FORM: Final[float] = 0.12
_GROUP: Final[float] = 0.08
_NOTES: Final[float] = 0.05


@dataclass(frozen=True, slots=True)
class Comparison:
    kind: str  # EQUIVALENT, SIMILAR, or kept apart (score 0)
    score: float
    reason: str = ""  # what kept them apart, or what differs

    @property
    def comparable(self) -> bool:
        return self.kind != _KEPT_APART


def _apart(reason: str) -> Comparison:
    return Comparison(_KEPT_APART, 0.0, reason)


def compare(query: NameParts, candidate: NameParts) -> Comparison:
    if (query.branch, query.branch_place) != (candidate.branch, candidate.branch_place):
        return _apart("branch")
    if query.region and candidate.region and query.region != candidate.region:
        return _apart("region")
    industries = _industries(query, candidate)
    if industries is None:
        return _apart("trade name")
    if (
        query.trade == candidate.trade
        and industries[0] == industries[1]
        and (query.region, query.form, query.group, query.notes)
        == (candidate.region, candidate.form, candidate.group, candidate.notes)
    ):
        return Comparison(EQUIVALENT, 1.0)
    penalty, differs = _penalties(query, candidate, industries)
    return Comparison(SIMILAR, round(max(0.0, 1.0 - penalty), 4), ", ".join(differs))


def _industries(query: NameParts, candidate: NameParts) -> tuple[str, str] | None:
    """The two industry parts to compare, or None when the trade names differ."""
    if query.trade == candidate.trade:
        return query.industry, candidate.industry
    q, c = query.core, candidate.core
    shorter = min(len(query.trade), len(candidate.trade))
    if shorter and len(q) == len(c) and q[:shorter] == c[:shorter]:
        trade = candidate.trade if len(candidate.trade) == shorter else query.trade
        return q[len(trade) :], c[len(trade) :]
    return None


def _penalties(query: NameParts, candidate: NameParts, industries: tuple[str, str]) -> tuple[float, list[str]]:
    penalty, differs = 0.0, []
    ours, theirs = industries
    if ours != theirs:
        if ours and theirs:
            wrong = Levenshtein.distance(ours, theirs)
            most = Levenshtein.normalized_distance(ours, theirs) > 0.5
            penalty += _OTHER_INDUSTRY if most else _PER_WRONG_CHARACTER * wrong
            differs.append("industry" if most else f"industry ({wrong} character{'s' if wrong > 1 else ''})")
        else:
            penalty += _INDUSTRY_MISSING
            differs.append("industry missing")
    if query.region != candidate.region:
        penalty += _REGION_MISSING
        differs.append("region missing")
    if query.form != candidate.form:
        missing = not query.form or not candidate.form
        penalty += _FORM_MISSING if missing else _OTHER_FORM
        differs.append("form missing" if missing else "form")
    if query.group != candidate.group:
        penalty += _GROUP
        differs.append("集团")
    if query.notes != candidate.notes:
        penalty += _NOTES
        differs.append("notes")
    return penalty, differs
