"""Claims on a real SQLite file and a real PostgreSQL: a name is held by one owner at a time, leases lapse,
and claimers racing for the same names split them without overlap."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from eqc_enrich.store import IndexStore

if TYPE_CHECKING:
    from tests.conftest import IndexDb

LEASE = 600.0


@pytest.fixture
def store(index_db: IndexDb) -> Iterator[IndexStore]:
    opened = index_db.open()
    yield opened
    opened.close()


def claimed_at(store: IndexStore, key: str) -> float:
    t = store.claims.table
    with store._engine.connect() as conn:
        return float(conn.execute(sa.select(t.c.claimed_at).where(t.c.lookup_key == key)).scalar_one())


def test_a_claim_is_held_by_one_owner_until_released(store: IndexStore) -> None:
    assert store.claims.claim(["甲", "乙", "甲"], "a", LEASE) == {"甲", "乙"}
    assert store.claims.claim(["乙", "丙"], "b", LEASE) == {"丙"}  # 乙 is a's
    assert store.claims.held_by_others(["甲", "乙", "丙", "丁"], "b") == {"甲", "乙"}
    assert store.claims.held_by_others(["甲", "乙", "丙"], "a") == {"丙"}
    assert store.claims.release(["乙", "丙"], "a") == 1  # only its own: 丙 stays b's
    assert store.claims.claim(["乙"], "b", LEASE) == {"乙"}
    assert store.claims.claim([], "b", LEASE) == set()
    assert store.claims.release([], "b") == 0


def test_claiming_again_renews_and_keeps_the_first_claim_time(store: IndexStore) -> None:
    store.claims.claim(["甲"], "a", 0.0)
    first = claimed_at(store, "甲")
    assert store.claims.claim(["甲"], "a", LEASE) == {"甲"}
    assert claimed_at(store, "甲") == first
    assert store.claims.held_by_others(["甲"], "b") == {"甲"}


def test_a_lapsed_claim_is_taken_over_and_pruned(store: IndexStore) -> None:
    store.claims.claim(["甲", "乙"], "crashed", 0.0)  # a lease of 0 s has lapsed by the next statement
    assert store.claims.held_by_others(["甲", "乙"], "b") == set()
    assert store.claims.claim(["甲"], "b", LEASE) == {"甲"}
    assert store.claims.held_by_others(["甲"], "crashed") == {"甲"}
    assert store.claims.release(["甲"], "crashed") == 0  # no longer its claim to release
    assert store.claims.prune_expired() == 1  # 乙
    assert [row["owner"] for row in store.claims.live()] == ["b"]


def test_renew_extends_every_claim_of_the_owner(store: IndexStore) -> None:
    store.claims.claim(["甲", "乙"], "a", 0.0)
    store.claims.claim(["丙"], "b", 0.0)
    assert store.claims.renew("a", LEASE) == 2
    assert store.claims.held_by_others(["甲", "乙", "丙"], "x") == {"甲", "乙"}
    (live,) = store.claims.live()
    assert (live["owner"], live["claims"]) == ("a", 2)
    assert 0 < live["expires_in_s"] <= LEASE


def test_claimers_racing_for_the_same_names_split_them(store: IndexStore) -> None:
    names = [f"公司{i:03d}" for i in range(60)]
    owners = [f"run-{i}" for i in range(6)]
    won: dict[str, set[str]] = {}
    failures: list[BaseException] = []

    def claim(owner: str, seed: int) -> None:
        mine = names[:]
        random.Random(seed).shuffle(mine)
        try:
            got: set[str] = set()
            for start in range(0, len(mine), 15):  # several batches, as a stage claims as it goes
                got |= store.claims.claim(mine[start : start + 15], owner, LEASE)
            won[owner] = got
        except BaseException as exc:  # reported below: a thread's exception would vanish otherwise
            failures.append(exc)

    threads = [threading.Thread(target=claim, args=(owner, i)) for i, owner in enumerate(owners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    assert sum(len(got) for got in won.values()) == len(names)  # every name once: no overlap, none lost
    assert set().union(*won.values()) == set(names)
    for owner, got in won.items():
        assert store.claims.held_by_others(names, owner) == set(names) - got


# --- found untested by mutation testing: the caller's transaction, the expiry instant, the stats view --------


class Rollback(Exception):
    pass


def every_claims_call_in_one_transaction(store: IndexStore) -> None:
    with store.transaction() as conn:
        assert store.claims.claim(["甲", "乙"], "a", LEASE, conn=conn) == {"甲", "乙"}
        assert store.claims.held_by_others(["甲", "丙"], "b", conn=conn) == {"甲"}
        assert [(row["owner"], row["claims"]) for row in store.claims.live(conn=conn)] == [("a", 2)]
        assert store.claims.renew("a", LEASE, conn=conn) == 2
        assert store.claims.release(["乙"], "a", conn=conn) == 1
        store.claims.claim(["丁"], "lapsed", 0.0, conn=conn)
        assert store.claims.prune_expired(conn=conn) == 1
        raise Rollback


def test_every_claims_call_takes_part_in_the_callers_transaction(store: IndexStore) -> None:
    """Inside `transaction()`, each call sees what the earlier ones did on the same connection, and a failure
    takes it all back: no call went through a connection of its own."""
    with pytest.raises(Rollback):
        every_claims_call_in_one_transaction(store)
    assert store.claims.live() == []
    assert store.claims.held_by_others(["甲", "乙", "丁"], "b") == set()


def test_a_claim_lapses_at_its_expiry_instant_for_every_call(
    store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At `now == expires_at` a claim is lapsed: not held, not live, pruned, and free to take over. The one
    clock reading a real clock cannot repeat is pinned (the store's dialect clock); the database is real."""
    now = 1_750_000_000.0
    monkeypatch.setattr(store._db.dialect, "clock", lambda conn: now)
    store.claims.claim(["甲", "丙"], "a", 0.0)  # expires_at == now
    store.claims.claim(["乙"], "a", 12.34)
    assert store.claims.held_by_others(["甲", "乙", "丙"], "b") == {"乙"}
    assert store.claims.live() == [{"owner": "a", "claims": 1, "expires_in_s": 12.3}]
    assert store.claims.claim(["甲", "乙"], "b", LEASE) == {"甲"}
    assert store.claims.prune_expired() == 1  # 丙


def test_held_by_others_answers_only_for_the_keys_asked(store: IndexStore) -> None:
    store.claims.claim(["甲", "乙", "丙"], "a", LEASE)
    assert store.claims.held_by_others(["乙", "戊"], "b") == {"乙"}


def test_live_counts_each_owner_apart_in_owner_order(store: IndexStore) -> None:
    store.claims.claim(["甲", "乙", "丙"], "z-run", LEASE)
    store.claims.claim(["丁"], "a-run", LEASE)
    assert [(row["owner"], row["claims"]) for row in store.claims.live()] == [("a-run", 1), ("z-run", 3)]
