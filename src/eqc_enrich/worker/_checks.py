"""Trust checked after the fact: the worker asks EQC again about names a run answered locally.

Every similar local answer, and a sample of the equivalent ones (`MatchPolicy.verify_share`), waits in the
shadow record until the worker has an idle slot for it. EQC's answer goes beside the candidate there (so it
counts for or against the score band in `index match-report`); where EQC names another company, its answer
replaces the local entry (only while that is still the local match's) and the name is listed for review.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from eqc_enrich.eqc_stage import EQC_SOURCE, LOOKUP_DOMAIN, LookupOutcome
from eqc_enrich.keys import LookupType
from eqc_enrich.match_stage import MATCH_SOURCE
from eqc_enrich.store import IndexEntry, IndexStore, ShadowRow, UnsettledName

__all__ = ["MATCH_CHECK", "settle_checks"]

MATCH_CHECK = "match_check"  # the worker queue's kind for a local answer to check with EQC


def settle_checks(
    store: IndexStore, rows: Sequence[ShadowRow], outcomes: Mapping[str, LookupOutcome], owner: str
) -> Counter[str]:
    """Record EQC's verdict on each checked local answer; a disagreement replaces the entry and goes to review.
    Returns how many agreed, disagreed, had no verdict (EQC did not know the name, or failed)."""
    verdicts: dict[str, tuple[str, str | None]] = {}
    overruled: list[tuple[ShadowRow, LookupOutcome]] = []
    tally: Counter[str] = Counter()
    for row in rows:
        outcome = outcomes.get(row.lookup_key)
        if outcome is None or outcome.status in ("skipped", "elsewhere"):
            continue  # not asked this time: it waits for the next idle slot
        hit = outcome.hit
        if outcome.status == "found" and hit is not None:
            verdicts[row.lookup_key] = ("found", hit.company_id)
            agreed = hit.company_id == row.candidate_id
            tally["agreed" if agreed else "disagreed"] += 1
            if not agreed:
                overruled.append((row, outcome))
        else:
            verdicts[row.lookup_key] = (outcome.status, None)
            tally["no_verdict"] += 1
    with store.transaction() as conn:
        store.shadow.checked(verdicts, by="worker", conn=conn)
        for row, outcome in overruled:
            hit = outcome.hit
            assert hit is not None  # only found answers are overruled
            entry = IndexEntry(row.lookup_key, LookupType.CUSTOMER_NAME, hit.company_id, hit.confidence, EQC_SOURCE,
                               source_domain=LOOKUP_DOMAIN)  # fmt: skip
            store.entries.overrule(entry, only_source=MATCH_SOURCE, conn=conn)
        store.unsettled.record([_for_review(row, outcome) for row, outcome in overruled], owner, conn=conn,
                               keep_answered=True)  # fmt: skip
    return tally


def _for_review(row: ShadowRow, outcome: LookupOutcome) -> UnsettledName:
    hit = outcome.hit
    assert hit is not None
    return UnsettledName(
        lookup_key=row.lookup_key,
        kind="low_confidence",
        status="match_disagreed",
        reason=(
            f"a local match ({row.kind}, score {row.score:.2f}) answered {row.candidate_id} ({row.candidate_key}); "
            f"EQC answered {hit.company_id} {hit.full_name} ({hit.match_type})"
        ),
        rows=0,
        display_name=row.lookup_key,
        candidate_id=hit.company_id,
        confidence=hit.confidence,
    )
