"""The token keeper directly: one refresh per expired token however many requests saw it expire, a token
rejected before it ever worked is invalid, and the token command's output never reaches a message.

The keeper runs the user's real command (a real subprocess); the client it refreshes is a real `EqcClient`
that sends nothing here except in the `--check-token` tests, which talk to the simulator on loopback.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import pytest

from eqc_enrich._errors import ConfigError
from eqc_enrich.eqc import EqcClient, TokenExpiredError
from eqc_enrich.eqc_stage import NO_TOKEN_MESSAGE, TokenKeeper, run_token_command
from eqc_enrich.simulator import Simulator

SimFactory = Callable[..., Simulator]
NOWHERE = "http://127.0.0.1:9"  # never contacted: these keepers only swap tokens
EXPIRED = TokenExpiredError("EQC search: token expired", endpoint="search", expired=True)
REJECTED = TokenExpiredError("EQC search: token invalid or expired (HTTP 401)", endpoint="search")


def printing(*tokens: str) -> str:
    """A command that prints its tokens, one per line (the keeper takes the last)."""
    lines = "\\n".join(tokens)
    return f"{sys.executable} -c \"print('{lines}')\""


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.seen.append((kind, fields))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.seen]


def keeper_for(token: str | None, command: str | None, events: Events | None = None) -> tuple[TokenKeeper, EqcClient]:
    client = EqcClient(token, base_url=NOWHERE, timeout=1.0)
    return TokenKeeper(client, command, events=events), client


def test_many_requests_meeting_one_expiry_cost_one_refresh() -> None:
    events = Events()

    async def main() -> tuple[list[bool], TokenKeeper, EqcClient]:
        keeper, client = keeper_for("old-token", printing("fresh-token"), events)
        keeper.confirm(0)  # the first token worked for a while, then expired
        answers = await asyncio.gather(*(keeper.refresh(0, EXPIRED) for _ in range(25)))
        await client.aclose()
        return list(answers), keeper, client

    answers, keeper, client = asyncio.run(main())
    assert answers == [True] * 25
    assert keeper.refreshes == 1
    assert keeper.generation == 1
    assert client._token == "fresh-token"
    assert events.kinds() == ["token_refresh"]
    assert events.seen[0][1] == {"refreshes": 1, "generation": 1, "why": "expired"}


def test_a_request_sent_with_a_replaced_token_just_goes_again() -> None:
    async def main() -> tuple[bool, TokenKeeper]:
        keeper, client = keeper_for("old-token", printing("fresh-token"))
        keeper.confirm(0)
        await keeper.refresh(0, EXPIRED)
        again = await keeper.refresh(0, EXPIRED)  # a slow request that still carried generation 0
        await client.aclose()
        return again, keeper

    again, keeper = asyncio.run(main())
    assert again is True
    assert keeper.refreshes == 1


def test_each_expiry_of_a_working_token_costs_one_refresh() -> None:
    async def main() -> TokenKeeper:
        keeper, client = keeper_for("t0", printing("t-next"))
        for generation in range(3):
            keeper.confirm(generation)
            assert await keeper.refresh(generation, EXPIRED)
        await client.aclose()
        return keeper

    keeper = asyncio.run(main())
    assert (keeper.refreshes, keeper.generation) == (3, 3)


def test_a_printed_token_rejected_before_it_ever_worked_is_invalid() -> None:
    async def main() -> tuple[bool, TokenKeeper]:
        keeper, client = keeper_for("t0", printing("bad"))
        keeper.confirm(0)
        assert await keeper.refresh(0, EXPIRED)
        ok = await keeper.refresh(1, REJECTED)  # the command's token was refused at once
        await client.aclose()
        return ok, keeper

    ok, keeper = asyncio.run(main())
    assert ok is False
    assert keeper.refreshes == 1  # not asked again: the command would print the same useless token
    assert (keeper.unavailable_reason or "").startswith(
        "the token printed by the token command was rejected by EQC (invalid); names not asked got temporary ids"
    )


def test_a_first_token_rejected_at_once_is_replaced_as_invalid() -> None:
    events = Events()

    async def main() -> TokenKeeper:
        keeper, client = keeper_for("stale", printing("fresh"), events)
        assert await keeper.refresh(0, REJECTED)
        await client.aclose()
        return keeper

    keeper = asyncio.run(main())
    assert keeper.generation == 1
    assert events.seen[0][1]["why"] == "invalid"


def test_once_unavailable_every_later_refresh_says_no_at_once() -> None:
    async def main() -> tuple[bool, bool, TokenKeeper]:
        keeper, client = keeper_for("t0", None)
        first = await keeper.refresh(0, EXPIRED)
        second = await keeper.refresh(0, EXPIRED)
        await client.aclose()
        return first, second, keeper

    first, second, keeper = asyncio.run(main())
    assert (first, second) == (False, False)
    assert keeper.refreshes == 0


@pytest.mark.parametrize(
    ("worked", "error", "says"),
    [
        (True, REJECTED, "the EQC token expired and no refresh is configured"),
        (False, EXPIRED, "the EQC token expired and no refresh is configured"),
        (False, REJECTED, "the EQC token was rejected (invalid or expired, HTTP 401) and no refresh is configured"),
    ],
)
def test_without_a_command_the_message_says_what_happened(worked: bool, error: TokenExpiredError, says: str) -> None:
    async def main() -> TokenKeeper:
        keeper, client = keeper_for("t0", None)
        if worked:
            keeper.confirm(0)
        assert not await keeper.refresh(0, error)
        await client.aclose()
        return keeper

    reason = asyncio.run(main()).unavailable_reason or ""
    assert reason.startswith(says)
    assert "--token-command" in reason


def test_a_failing_command_makes_the_token_unavailable_and_says_why() -> None:
    events = Events()

    async def main() -> tuple[bool, TokenKeeper]:
        keeper, client = keeper_for("t0", "exit 7", events)
        keeper.confirm(0)
        ok = await keeper.refresh(0, EXPIRED)
        await client.aclose()
        return ok, keeper

    ok, keeper = asyncio.run(main())
    assert ok is False
    assert (keeper.unavailable_reason or "").startswith("token command failed: it exited with status 7; ")
    assert events.seen == [("token_unavailable", {"reason": "token command failed: it exited with status 7"})]
    assert keeper.settled  # a failed refresh does not leave requests waiting forever


def test_no_token_and_no_command_is_unavailable_before_anything_is_sent() -> None:
    async def main() -> tuple[bool, TokenKeeper]:
        keeper, client = keeper_for(None, None)
        ok = await keeper.prepare(check=False)
        await client.aclose()
        return ok, keeper

    ok, keeper = asyncio.run(main())
    assert ok is False
    assert keeper.unavailable_reason == NO_TOKEN_MESSAGE
    assert not keeper.can_refresh


def test_no_token_but_a_command_starts_with_the_commands_token_without_counting_a_refresh() -> None:
    events = Events()

    async def main() -> tuple[bool, TokenKeeper, EqcClient]:
        keeper, client = keeper_for(None, printing("from-command"), events)
        ok = await keeper.prepare(check=False)
        await client.aclose()
        return ok, keeper, client

    ok, keeper, client = asyncio.run(main())
    assert ok is True
    assert client.has_token
    assert (keeper.generation, keeper.refreshes) == (1, 0)
    assert events.kinds() == []


def test_requests_wait_while_a_refresh_runs() -> None:
    async def main() -> list[str]:
        keeper, client = keeper_for("t0", f"{sys.executable} -c \"import time; time.sleep(0.2); print('t1')\"")
        keeper.confirm(0)
        order: list[str] = []

        async def request() -> None:
            await asyncio.sleep(0.01)  # the refresh has started
            assert not keeper.settled
            await keeper.ready()
            order.append(f"sent with generation {keeper.generation}")

        await asyncio.gather(keeper.refresh(0, EXPIRED), request())
        await client.aclose()
        return order

    assert asyncio.run(main()) == ["sent with generation 1"]


def test_check_token_confirms_a_working_token(sim_factory: SimFactory) -> None:
    sim = sim_factory()

    async def main() -> tuple[bool, TokenKeeper]:
        client = EqcClient("test-token", base_url=sim.url, timeout=5.0)
        keeper = TokenKeeper(client, None)
        ok = await keeper.prepare(check=True)
        # the token is known to work: a later rejection means it expired, not that it is invalid
        await keeper.refresh(0, REJECTED)
        await client.aclose()
        return ok, keeper

    ok, keeper = asyncio.run(main())
    assert ok is True
    assert (keeper.unavailable_reason or "").startswith("the EQC token expired")
    assert sim.stats()["requests"]["searchAll"] == 1


def test_check_token_replaces_a_rejected_token_before_the_run(sim_factory: SimFactory) -> None:
    sim = sim_factory()

    async def main() -> tuple[bool, TokenKeeper, EqcClient]:
        client = EqcClient("stale", base_url=sim.url, timeout=5.0)
        keeper = TokenKeeper(client, printing("test-token"))
        ok = await keeper.prepare(check=True)
        await client.aclose()
        return ok, keeper, client

    ok, keeper, client = asyncio.run(main())
    assert ok is True
    assert keeper.generation == 1
    assert client._token == "test-token"


def test_check_token_that_cannot_reach_eqc_is_inconclusive() -> None:
    async def main() -> bool:
        keeper, client = keeper_for("t0", None)
        ok = await keeper.prepare(check=True)  # port 9 refuses: the stage's outage handling takes it from here
        await client.aclose()
        return ok

    assert asyncio.run(main()) is True


def test_the_command_prints_the_token_on_its_last_line() -> None:
    assert run_token_command(printing("logging in...", "", "  the-token  ")) == "the-token"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("exit 3", "token command failed: it exited with status 3"),
        ("true", "token command failed: it printed no token"),
        ("echo '   '", "token command failed: it printed no token"),
    ],
)
def test_a_failing_command_is_a_config_error(command: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_token_command(command)
    assert str(info.value) == message


def test_the_commands_output_never_reaches_its_error() -> None:
    with pytest.raises(ConfigError) as info:
        run_token_command("echo secret-token-value; exit 1")
    assert "secret-token-value" not in str(info.value)


def test_a_command_that_hangs_is_stopped_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import eqc_enrich.eqc_stage._tokens as tokens

    monkeypatch.setattr(tokens, "_COMMAND_TIMEOUT_S", 0.2)
    with pytest.raises(ConfigError) as info:
        run_token_command("sleep 5; echo late-token")
    assert str(info.value) == "token command failed to run: TimeoutExpired"


def test_no_token_and_a_failing_command_is_unavailable_at_the_start() -> None:
    async def main() -> tuple[bool, TokenKeeper]:
        keeper, client = keeper_for(None, "exit 2")
        ok = await keeper.prepare(check=False)
        await client.aclose()
        return ok, keeper

    ok, keeper = asyncio.run(main())
    assert ok is False
    assert (keeper.unavailable_reason or "").startswith("token command failed: it exited with status 2; ")


def test_check_token_rejecting_the_token_without_a_command_says_it_was_rejected(sim_factory: SimFactory) -> None:
    sim = sim_factory()

    async def main() -> tuple[bool, TokenKeeper]:
        client = EqcClient("stale", base_url=sim.url, timeout=5.0)
        keeper = TokenKeeper(client, None)
        ok = await keeper.prepare(check=True)
        await client.aclose()
        return ok, keeper

    ok, keeper = asyncio.run(main())
    assert ok is False
    assert (keeper.unavailable_reason or "").startswith(
        "the EQC token was rejected (invalid or expired, HTTP 401) and no refresh is configured"
    )
