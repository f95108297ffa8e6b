"""The values that travel between the run and the store: index rows, payloads, base_info records, and what one
commit carries."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

__all__ = ["CompanyRecord", "IndexEntry", "Payload", "WriteBatch", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One row of the enrichment index, as read or to be written.

    `source_domain` and `source_table` are the provenance the existing writers record beside `source`
    (e.g. `eqc_api` / `eqc_sync_lookup`); a lookup leaves them None, since a run does not need them.
    """

    lookup_key: str
    lookup_type: str
    company_id: str
    confidence: float
    source: str
    updated_at: datetime | None = None
    source_domain: str | None = None
    source_table: str | None = None


@dataclass(frozen=True, slots=True)
class Payload:
    """Raw EQC answers for one company; None means "not fetched", never "erase"."""

    company_id: str
    search_key: str | None = None
    search_json: dict[str, Any] | None = None
    depart_json: dict[str, Any] | None = None
    labels_json: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CompanyRecord:
    """One company's `base_info` columns as one EQC answer teaches them; None means "not in this answer", never
    "erase" (the upsert keeps what is stored). `score` is the `_score` column.

    Search fields come from the top search item (`raw_data` is the whole search body), detail fields from
    findDepart's `businessInfodto` (`raw_business_info`) and findLabels (`raw_biz_label`).
    """

    company_id: str
    search_key_word: str | None = None
    company_full_name: str | None = None
    unite_code: str | None = None
    type: str | None = None
    score: float | None = None
    rank_score: float | None = None
    name: str | None = None
    le_rep: str | None = None
    reg_cap: float | None = None
    est_date: str | None = None
    province: str | None = None
    registered_status: str | None = None
    organization_code: str | None = None
    company_en_name: str | None = None
    company_former_name: str | None = None
    data_source: str | None = None
    raw_data: dict[str, Any] | None = None
    raw_business_info: dict[str, Any] | None = None
    raw_biz_label: dict[str, Any] | None = None

    def merged(self, later: CompanyRecord) -> CompanyRecord:
        """Two answers about one company in one commit: the later one's values, this one's where it has none."""
        return replace(
            self, **{f.name: getattr(later, f.name) for f in fields(self) if getattr(later, f.name) is not None}
        )


@dataclass(slots=True)
class WriteBatch:
    """What one commit carries: learned mappings, names EQC does not know, raw payloads, the companies EQC
    answered (`base_info`), claims to let go.

    `released` are claimed lookup keys whose answers this batch stores: `IndexStore.write(batch, owner=...)`
    deletes the owner's claims on them in the same transaction, so another process never sees a name
    unclaimed and unanswered at once.
    """

    entries: list[IndexEntry] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    payloads: list[Payload] = field(default_factory=list)
    cleared_negatives: list[str] = field(default_factory=list)  # names EQC has found since
    released: list[str] = field(default_factory=list)
    companies: list[CompanyRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.entries)
            + len(self.negatives)
            + len(self.payloads)
            + len(self.cleared_negatives)
            + len(self.released)
            + len(self.companies)
        )

    def extend(self, other: WriteBatch) -> None:
        self.entries.extend(other.entries)
        self.negatives.extend(other.negatives)
        self.payloads.extend(other.payloads)
        self.cleared_negatives.extend(other.cleared_negatives)
        self.released.extend(other.released)
        self.companies.extend(other.companies)
