"""The decisions a person makes on the page: each made against the state the page showed, saved at once with
its journal row, and undone only by the page that made it.

An accepted or typed id becomes a `manual` customer-name entry (confidence 1.00, source_domain `eqc_review`)
in the same transaction as its journal row; the index write settles the open name. An accepted candidate EQC
offered that `base_info` does not hold yet goes there too, from its stored search item, in the same
transaction (a typed id was no EQC answer: it does not).

Compare-and-set: the page shows a name with a tag of its state (open or settled, and the index row for it),
and the decision carries the tag back. In one transaction the name's rows are locked (PostgreSQL: FOR UPDATE,
in the order a run's write takes them; SQLite: the writer's BEGIN IMMEDIATE), the state is read again, and a
decision for a name that changed meanwhile is refused with what it changed to: of two reviewers deciding one
name at once, one is saved and the other told what the first decided.

Undo never deletes (the production role has no DELETE on `enrichment_index`): it puts back, by UPDATE, the
row the decision replaced, whose values are kept with the decision; a name that had no row keeps it
withdrawn (`WITHDRAWN`: no company id, confidence 0.00), which lookups pass over and any later answer
replaces. An entry something else has replaced since stays as it is.
"""

from __future__ import annotations

import getpass
import hashlib
import re
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eqc_enrich._errors import InputError
from eqc_enrich.eqc import SearchHit
from eqc_enrich.eqc_stage import company_record
from eqc_enrich.keys import LookupType
from eqc_enrich.review._queue import candidates_of
from eqc_enrich.store import (
    NOT_A_COMPANY,
    WITHDRAWN,
    CompanyRecord,
    Decision,
    IndexEntry,
    IndexStore,
    UndoRecord,
    UnsettledName,
    WriteBatch,
    utcnow,
)

__all__ = [
    "COMPANY_ID_DIGITS",
    "MANUAL_DOMAIN",
    "MANUAL_SOURCE",
    "Decider",
    "DecisionRefused",
    "NameState",
    "Undone",
    "eqc_company_id",
    "manual_entry",
]

MANUAL_SOURCE = "manual"
MANUAL_DOMAIN = "eqc_review"
COMPANY_ID_DIGITS = (6, 20)
"""A typed id must look like an EQC company id: digits only, no leading zero, this many (the ids EQC hands
out have nine or ten)."""

_COMPANY_ID = re.compile(rf"[1-9][0-9]{{{COMPANY_ID_DIGITS[0] - 1},{COMPANY_ID_DIGITS[1] - 1}}}")
_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
_SHOWN_OF_TYPED = 40  # how much of a refused id the message repeats


def manual_entry(key: str, company_id: str) -> IndexEntry:
    return IndexEntry(key, LookupType.CUSTOMER_NAME, company_id, 1.0, MANUAL_SOURCE, source_domain=MANUAL_DOMAIN)


def _withdrawn_entry(key: str) -> IndexEntry:
    return IndexEntry(key, LookupType.CUSTOMER_NAME, "", 0.0, WITHDRAWN, utcnow(), source_domain=MANUAL_DOMAIN)


def eqc_company_id(typed: str) -> str | None:
    """The EQC company id a person typed (full-width digits folded, spaces dropped), or None when it has not
    the form of one."""
    text = "".join(typed.translate(_FULL_WIDTH_DIGITS).split())
    return text if _COMPANY_ID.fullmatch(text) else None


class DecisionRefused(InputError):
    """A decision or undo the page does not carry out; `reason` says why, without the name."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NameState:
    """What a decision for one name is made against: the queue's row for it and the index row for it."""

    key: str
    name: UnsettledName | None
    entry: IndexEntry | None

    @property
    def tag(self) -> str:
        """Short and opaque: travels with the page's forms and comes back with a decision."""
        name, entry = self.name, self.entry
        if name is None:
            queued = "gone"
        elif name.settled:
            queued = f"settled\x1f{name.settled_source}\x1f{name.settled_company_id or ''}"
        else:
            queued = "open"
        held = "none" if entry is None else f"{entry.company_id}\x1f{entry.confidence:.2f}\x1f{entry.source}"
        return hashlib.blake2s(f"{queued}\x1e{held}".encode(), digest_size=8).hexdigest()

    def describe(self, decided: Decision | None) -> str:
        """What the state is now, for a person whose page showed an older one."""
        name, entry = self.name, self.entry
        if name is None:
            return "it is no longer in the queue"
        if name.settled:
            settled = " ".join(filter(None, [name.settled_company_id, f"({name.settled_source})"]))
            who = f", decided by {decided.os_user}" if decided is not None and decided.undone_at is None else ""
            return f"it is settled now: {settled}{who}"
        if entry is None:
            return "it is open, with no index entry"
        if entry.source == WITHDRAWN:
            return "it is open again: a decision on it was undone"
        return f"it is open, the index holds {entry.company_id} ({entry.source}, {entry.confidence:.2f})"


@dataclass(frozen=True, slots=True)
class Undone:
    decision: Decision
    entry: str  # restored: the earlier row put back; withdrawn: no earlier row; kept: replaced since; "": no entry
    reopened: bool


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in this environment: still journal the decision
        return "unknown"


class Decider:
    """One per page: `page` names it in the journal, and only its own decisions are undone through it."""

    def __init__(self, store: IndexStore, *, os_user: str | None = None, page: str | None = None) -> None:
        self._store = store
        self.os_user = os_user or _os_user()
        self.page = page or uuid.uuid4().hex[:16]

    def state(self, key: str) -> NameState:
        with self._store.reading() as conn:
            return self._state(key, conn, lock=False)

    def set_id(
        self, key: str, company_id: str, *, decision: str, query: str | None = None, seen: str | None = None
    ) -> int:
        """Accept a candidate (`accept`: one EQC offered for this name) or a typed id (`typed`: of the form of an
        EQC company id, full-width digits folded): the index learns it, the name is settled."""
        cleaned = self._checked_id(key, company_id, decision)
        store = self._store
        with store.transaction() as conn:
            state = self._current(key, seen, conn)
            before = state.entry
            if (
                before is not None and before.source != WITHDRAWN and before.confidence >= 1.0
                and before.company_id != cleaned
            ):  # fmt: skip
                held = f"{before.company_id} ({before.source}, 1.00)"
                raise DecisionRefused(key, f"the index holds {held} for it, which no decision replaces")
            companies = self._candidate_record(key, cleaned, query, conn) if decision == "accept" else []
            store.write(WriteBatch(entries=[manual_entry(key, cleaned)], companies=companies), conn=conn)
            return store.decisions.add(
                key, decision, os_user=self.os_user, company_id=cleaned, query=query,
                undo=UndoRecord(self.page, before), conn=conn,
            )  # fmt: skip

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

    def not_a_company(self, key: str, *, seen: str | None = None) -> int:
        store = self._store
        with store.transaction() as conn:
            state = self._current(key, seen, conn)
            store.unsettled.mark_not_a_company(key, conn=conn)
            undo = UndoRecord(self.page, state.entry)
            return store.decisions.add(key, "not_a_company", os_user=self.os_user, undo=undo, conn=conn)

    def skip(self, key: str, *, seen: str | None = None) -> int:
        """Looked at and left open (journaled, so the queue can say who looked)."""
        store = self._store
        with store.transaction() as conn:
            state = self._current(key, seen, conn)
            undo = UndoRecord(self.page, state.entry)
            return store.decisions.add(key, "skip", os_user=self.os_user, undo=undo, conn=conn)

    def undo(self, decision_id: int | None = None) -> Undone | None:
        """Undo one of this page's decisions (default: its newest not undone yet); None when there is nothing
        to undo. A decision another page made is refused."""
        store = self._store
        with store.transaction() as conn:
            decision = self._own(decision_id, conn)
            if decision is None:
                return None
            assert decision.undo is not None  # _own checked it
            key = decision.lookup_key
            name = self._state(key, conn, lock=True).name
            if not store.decisions.mark_undone(decision.id, conn=conn):
                return None
            entry, reopened = "", False
            if decision.decision in ("accept", "typed") and decision.company_id:
                before = decision.undo.before
                put_back = _withdrawn_entry(key) if before is None else before
                if store.entries.replace_row(manual_entry(key, decision.company_id), put_back, conn=conn):
                    entry = "withdrawn" if before is None else "restored"
                    reopened = name is not None and name.settled_company_id == decision.company_id
                else:
                    entry = "kept"
            elif decision.decision == NOT_A_COMPANY:
                reopened = name is not None and name.settled_source == NOT_A_COMPANY
            if reopened:
                store.unsettled.reopen(key, conn=conn)
        return Undone(decision, entry, reopened)

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _checked_id(self, key: str, company_id: str, decision: str) -> str:
        if decision == "typed":
            cleaned = eqc_company_id(company_id)
            if cleaned is None:
                low, high = COMPANY_ID_DIGITS
                raise DecisionRefused(
                    key,
                    f"not a company id: {company_id[:_SHOWN_OF_TYPED]!r} (an EQC company id is {low} to {high} digits)",
                )
            return cleaned
        if decision == "accept":  # one of EQC's candidates for the name, or at least of the form of an id
            if company_id not in self._offered(key) and eqc_company_id(company_id) != company_id:
                shown = company_id[:_SHOWN_OF_TYPED]
                raise DecisionRefused(key, f"{shown!r} is neither a candidate EQC offered for it nor a company id")
            return company_id
        raise ValueError(f"set_id takes accept or typed, not {decision!r}")

    def _offered(self, key: str) -> set[str]:
        name = self._store.unsettled.get(key)
        weak = name.candidate_id if name is not None else None
        return {c["company_id"] for c in candidates_of(self._store, key, weak_id=weak)}

    def _state(self, key: str, conn: Connection, *, lock: bool) -> NameState:
        """Read under locks in the order a run's write takes them (index row, then the queue's row), then the
        index row again: an entry committed while this waited is seen."""
        store = self._store
        if lock:
            store.entries.row(key, LookupType.CUSTOMER_NAME, lock=True, conn=conn)
        name = store.unsettled.get(key, lock=lock, conn=conn)
        entry = store.entries.row(key, LookupType.CUSTOMER_NAME, lock=lock, conn=conn)
        return NameState(key, name, entry)

    def _current(self, key: str, seen: str | None, conn: Connection) -> NameState:
        """The state, locked; refused unless the name is open and (when `seen` is given) as the page showed it."""
        state = self._state(key, conn, lock=True)
        if state.name is None:
            raise DecisionRefused(key, "no such name in the queue")
        if (seen is not None and seen != state.tag) or state.name.settled:
            decided = self._store.decisions.latest(limit=1, key=key, conn=conn)
            what = state.describe(decided[0] if decided else None)
            changed = seen is not None and seen != state.tag
            why = "changed since this page showed it" if changed else "already settled"
            raise DecisionRefused(key, f"{why}: {what}")
        return state

    def _own(self, decision_id: int | None, conn: Connection) -> Decision | None:
        decisions = self._store.decisions
        if decision_id is None:
            mine = decisions.latest(limit=1, undone=False, page=self.page, conn=conn)
            return mine[0] if mine else None
        decision = decisions.get(decision_id, conn=conn)
        if decision is None or decision.undone_at is not None:
            return None
        if decision.undo is None:
            raise DecisionRefused(
                decision.lookup_key,
                f"decision {decision.id} was made by an earlier version, which kept nothing to undo it by",
            )
        if decision.undo.page != self.page:
            raise DecisionRefused(
                decision.lookup_key, f"decision {decision.id} was made on another page: only that page undoes it"
            )
        return decision
