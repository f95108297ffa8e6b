"""Where candidates come from: the names the index holds, and the registered names in `base_info`.

A source is anything with a `name` and `candidates()`; the stage takes a list of them, so a source of
another table joins by being added to that list. `base_info` (the users' table of every company EQC
answered) is read only where the schema has it; its column names live in the store (`store._shadow`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from eqc_enrich._errors import IndexStoreError
from eqc_enrich.keys import LookupType, is_temp_company_id, normalize_name
from eqc_enrich.match_stage._matcher import Candidate
from eqc_enrich.store import IndexStore

__all__ = ["MATCH_SOURCE", "BaseInfoNames", "CandidateSource", "IndexNames", "default_sources"]

MATCH_SOURCE = "local_match"
"""The `source` of an index entry a local match wrote (never a candidate itself: matches do not chain)."""

_NAME_TYPES = (LookupType.CUSTOMER_NAME, LookupType.FORMER_NAME)


class CandidateSource(Protocol):
    name: str

    def candidates(self) -> Iterator[Candidate]: ...


class IndexNames:
    """Every customer-name and former-name entry of the index, but local matches and temporary ids."""

    name = "index"

    def __init__(self, store: IndexStore) -> None:
        self._store = store

    def candidates(self) -> Iterator[Candidate]:
        for key, kind, company_id, confidence in self._store.name_candidates(_NAME_TYPES, skip_source=MATCH_SOURCE):
            if key and not is_temp_company_id(company_id):
                yield Candidate(key, company_id, float(confidence), kind)


class BaseInfoNames:
    """The registered name of every company in `base_info`, as sure as EQC's exact match (1.00); nothing
    where the table does not exist or cannot be read (a note says why)."""

    name = "base_info"

    def __init__(self, store: IndexStore) -> None:
        self._store = store
        self.note: str | None = None

    def candidates(self) -> Iterator[Candidate]:
        try:
            rows = self._store.base_info_names()
        except IndexStoreError as exc:
            self.note = f"base_info not read for local matching: {exc}"
            return
        for company_id, full_name in rows or ():
            key = normalize_name(full_name)
            if key:
                yield Candidate(key, company_id, 1.0, "base_info")


def default_sources(store: IndexStore) -> list[CandidateSource]:
    return [IndexNames(store), BaseInfoNames(store)]
