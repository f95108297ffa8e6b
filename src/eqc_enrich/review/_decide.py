"""The decisions a person makes on the page, each saved at once with its journal row, each undoable.

An accepted or typed id becomes a `manual` customer-name entry (confidence 1.00, source_domain
`eqc_review`) in the same transaction as its journal row; the index write settles the open name. An
accepted candidate EQC offered that `base_info` does not hold yet goes there too, from its stored search
item, in the same transaction (a typed id was no EQC answer: it does not). Undo
removes that entry only while it is still the one the decision wrote (a later, stronger writer's entry
stays), and reopens the name.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

import sqlalchemy as sa

from eqc_enrich._errors import InputError
from eqc_enrich.eqc import SearchHit
from eqc_enrich.eqc_stage import company_record
from eqc_enrich.keys import LookupType, clean_company_id, is_real_company_id, is_temp_company_id
from eqc_enrich.store import NOT_A_COMPANY, CompanyRecord, Decision, IndexEntry, IndexStore, WriteBatch

__all__ = ["MANUAL_DOMAIN", "MANUAL_SOURCE", "Decider", "Undone", "manual_entry"]

MANUAL_SOURCE = "manual"
MANUAL_DOMAIN = "eqc_review"


def manual_entry(key: str, company_id: str) -> IndexEntry:
    return IndexEntry(key, LookupType.CUSTOMER_NAME, company_id, 1.0, MANUAL_SOURCE, source_domain=MANUAL_DOMAIN)


@dataclass(frozen=True, slots=True)
class Undone:
    decision: Decision
    entry_removed: bool  # False for an id whose entry something else has replaced since (left as it is)
    reopened: bool


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in this environment: still journal the decision
        return "unknown"


class Decider:
    def __init__(self, store: IndexStore, *, os_user: str | None = None) -> None:
        self._store = store
        self.os_user = os_user or _os_user()

    def set_id(self, key: str, company_id: str, *, decision: str, query: str | None = None) -> int:
        """Accept a candidate (`accept`) or a typed id (`typed`): the index learns it, the name is settled."""
        cleaned = clean_company_id(company_id)
        if not cleaned or not is_real_company_id(cleaned):
            raise InputError(f"not a company id: {company_id!r}")
        if is_temp_company_id(cleaned):
            raise InputError(f"{cleaned} is a temporary id a run gave, not a company id")
        self._require_open(key)
        store = self._store
        with store.transaction() as conn:
            companies = self._candidate_record(key, cleaned, query, conn) if decision == "accept" else []
            store.write(WriteBatch(entries=[manual_entry(key, cleaned)], companies=companies), conn=conn)
            return store.decisions.add(key, decision, os_user=self.os_user, company_id=cleaned, query=query, conn=conn)

    def _candidate_record(
        self, key: str, company_id: str, query: str | None, conn: sa.Connection
    ) -> list[CompanyRecord]:
        """The accepted candidate's `base_info` record from its stored search item, unless base_info has it."""
        if self._store.base_info.get(company_id, conn=conn) is not None:
            return []
        payloads = self._store.tables.payloads
        item = conn.execute(
            sa.select(payloads.c.search_json).where(payloads.c.company_id == company_id)
        ).scalar_one_or_none()
        hit = SearchHit.from_item(item) if isinstance(item, dict) else None
        return [company_record(query or key, None, hit)] if hit is not None else []

    def not_a_company(self, key: str) -> int:
        self._require_open(key)
        store = self._store
        with store.transaction() as conn:
            store.unsettled.mark_not_a_company(key, conn=conn)
            return store.decisions.add(key, "not_a_company", os_user=self.os_user, conn=conn)

    def skip(self, key: str) -> int:
        """Looked at and left open (journaled, so the queue can say who looked)."""
        self._require_open(key)
        return self._store.decisions.add(key, "skip", os_user=self.os_user)

    def undo(self, decision_id: int | None = None) -> Undone | None:
        """Undo a decision (default: the newest one not undone yet); None when there is nothing to undo."""
        store = self._store
        if decision_id is None:
            latest = store.decisions.latest(limit=1, undone=False)
            if not latest:
                return None
            decision_id = latest[0].id
        with store.transaction() as conn:
            decision = store.decisions.get(decision_id, conn=conn)
            if decision is None or not store.decisions.mark_undone(decision_id, conn=conn):
                return None
            removed = reopened = False
            name = store.unsettled.get(decision.lookup_key, conn=conn)
            if decision.decision in ("accept", "typed") and decision.company_id:
                removed = self._remove_entry(decision.lookup_key, decision.company_id, conn)
                reopened = removed and name is not None and name.settled_company_id == decision.company_id
            elif decision.decision == "not_a_company":
                reopened = name is not None and name.settled_source == NOT_A_COMPANY
            if reopened:
                store.unsettled.reopen(decision.lookup_key, conn=conn)
        return Undone(decision, removed, reopened)

    def _remove_entry(self, key: str, company_id: str, conn: sa.Connection) -> bool:
        index = self._store.tables.index
        gone = conn.execute(
            sa.delete(index).where(
                index.c.lookup_key == key,
                index.c.lookup_type == LookupType.CUSTOMER_NAME,
                index.c.company_id == company_id,
                index.c.source == MANUAL_SOURCE,
                index.c.source_domain == MANUAL_DOMAIN,
            )
        )
        return bool(gone.rowcount)

    def _require_open(self, key: str) -> None:
        name = self._store.unsettled.get(key)
        if name is None:
            raise InputError(f"no such name in the queue: {key}")
        if name.settled:
            raise InputError(f"already settled: {key} ({name.settled_source})")
