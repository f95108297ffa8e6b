"""How often the local candidate was EQC's answer, per score band: the evidence a threshold is set from.

Each band counts the names of the shadow record whose score falls in it and that have a verdict (EQC
answered the name, in a run or when the worker checked a local answer): how many, how many of them EQC
answered with the candidate, and the precision. Read from the top down, the bands give the precision a
threshold at each lower edge would have had; the suggested threshold is the lowest edge whose precision, over
every similar name at or above it, is at least `target` over at least `min_names` names, and whose own band
has names with a verdict: a band nothing was measured in cannot lower the threshold (below the lowest score
EQC has judged, a threshold would answer names no evidence speaks for). Equivalent names are their own row:
they are answered whatever the threshold, and their row shows how often that was right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from eqc_enrich.match_stage._score import EQUIVALENT
from eqc_enrich.store import ShadowRow

__all__ = ["BANDS", "MIN_NAMES", "TARGET_PRECISION", "Band", "MatchQuality", "match_quality"]

BANDS: Final[tuple[float, ...]] = (0.95, 0.90, 0.85, 0.80, 0.75, 0.70, 0.60, 0.50, 0.0)
"""Lower edges of the similar bands, highest first; a band runs up to the edge above it (1.0 for the first)."""
TARGET_PRECISION: Final[float] = 0.999
MIN_NAMES: Final[int] = 200


@dataclass(frozen=True, slots=True)
class Band:
    label: str
    low: float
    names: int  # names with a verdict: EQC answered them with a company (or a person did not)
    agreed: int  # of those, EQC's answer was the candidate
    no_verdict: int  # EQC did not know the name, or has not been asked yet
    answered_locally: int  # names of the band a run answered without EQC
    names_at_or_above: int = 0  # the same counts for every similar band from the top down to this one
    agreed_at_or_above: int = 0

    @property
    def precision(self) -> float | None:
        return round(self.agreed / self.names, 4) if self.names else None

    @property
    def precision_at_or_above(self) -> float | None:
        return round(self.agreed_at_or_above / self.names_at_or_above, 4) if self.names_at_or_above else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision, "precision_at_or_above": self.precision_at_or_above}


@dataclass(frozen=True, slots=True)
class MatchQuality:
    equivalent: Band
    bands: tuple[Band, ...]
    suggested_threshold: float | None  # None: no band has enough names at the target precision yet
    target: float
    min_names: int
    min_gap: float | None
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "target_precision": self.target, "min_names": self.min_names,
            "min_gap": self.min_gap, "suggested_threshold": self.suggested_threshold,
            "equivalent": self.equivalent.as_dict(), "bands": [band.as_dict() for band in self.bands],
        }  # fmt: skip


def _band(label: str, low: float, rows: Sequence[ShadowRow]) -> Band:
    verdicts = [row for row in rows if row.agreed is not None]
    return Band(
        label=label,
        low=low,
        names=len(verdicts),
        agreed=sum(1 for row in verdicts if row.agreed),
        no_verdict=len(rows) - len(verdicts),
        answered_locally=sum(1 for row in rows if row.action == "answered"),
    )


def match_quality(
    rows: Sequence[ShadowRow],
    *,
    target: float = TARGET_PRECISION,
    min_names: int = MIN_NAMES,
    min_gap: float | None = None,
) -> MatchQuality:
    """Per band and from the top down; `min_gap` leaves out names whose runner-up was too close to answer."""
    similar = [r for r in rows if r.kind != EQUIVALENT and (min_gap is None or r.gap is None or r.gap >= min_gap)]
    bands: list[Band] = []
    high = 1.0
    names = agreed = 0
    suggested: float | None = None
    for low in BANDS:
        band = _band(f"{low:.2f}-{high:.2f}", low, [r for r in similar if low <= r.score < high])
        names, agreed = names + band.names, agreed + band.agreed
        band = Band(**{**asdict(band), "names_at_or_above": names, "agreed_at_or_above": agreed})
        if band.names and names >= min_names and agreed >= target * names:
            suggested = low
        bands.append(band)
        high = low
    equivalent = _band(EQUIVALENT, 1.0, [r for r in rows if r.kind == EQUIVALENT])
    return MatchQuality(equivalent, tuple(bands), suggested, target, min_names, min_gap, len(rows))
