"""Keeping the EQC token alive through a run that outlasts it.

Every token in use has a generation: 0 for the one the run started with, +1 for each the token command
printed. A request notes the generation it was *sent* with (not the one in force when it joined the
queue), so when it comes back unauthorized the keeper knows whether that token is already replaced (just
send again) or is the current one (refresh it, once, whoever asks first). A generation that is rejected
before any request succeeded with it is not a token that expired: it is invalid, and asking again will not
help.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from typing import Any

from eqc_enrich._errors import ConfigError
from eqc_enrich.eqc import EqcClient, EqcError, TokenExpiredError
from eqc_enrich.settings import checked_token

__all__ = ["NO_TOKEN_MESSAGE", "TokenKeeper", "run_token_command"]

_COMMAND_TIMEOUT_S = 300.0
_AFTER = "names not asked got temporary ids, which a later run replaces"
NO_TOKEN_MESSAGE = (
    "no EQC token: set WDH_EQC_TOKEN, or --token-command / WDH_EQC_TOKEN_COMMAND to a command that prints one; "
    + _AFTER
)


class TokenKeeper:
    """Exactly one refresh per expired token, however many requests saw it expire."""

    def __init__(
        self,
        client: EqcClient,
        command: str | None,
        *,
        events: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._client = client
        self._command = command
        self._events = events or (lambda kind, fields: None)
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()  # clear while a refresh runs: nobody sends with a token known dead
        self._settled.set()
        self.generation = 0
        self.refreshes = 0
        self._confirmed: set[int] = set()  # generations some request succeeded with
        self.unavailable_reason: str | None = None

    @property
    def can_refresh(self) -> bool:
        return bool(self._command)

    async def prepare(self, *, check: bool) -> bool:
        """A token to start with: given, or from the command; with `check`, one token-check call first.

        False (with `unavailable_reason` set) when the run has no usable token at all.
        """
        if not self._client.has_token:
            if not self._command:
                self.unavailable_reason = NO_TOKEN_MESSAGE
                return False
            if not await self._replace("no token given"):
                return False
        if not check:
            return True
        try:
            works = await self._client.check_token()
        except EqcError:
            return True  # inconclusive (EQC busy or away): the stage's own outage handling takes it from here
        if works:
            self._confirmed.add(self.generation)
            return True
        return await self.refresh(self.generation, TokenExpiredError("token check rejected the token"))

    @property
    def settled(self) -> bool:
        """No refresh is running: the token in place is the newest."""
        return self._settled.is_set()

    async def ready(self) -> None:
        """Wait while a refresh is running, so that no request is sent with the token being replaced."""
        await self._settled.wait()

    def confirm(self, generation: int) -> None:
        """A request sent with `generation` was accepted: that token works (or worked)."""
        self._confirmed.add(generation)

    async def refresh(self, sent_generation: int, error: TokenExpiredError) -> bool:
        """True when a token newer than `sent_generation` is in place (now or already): send again."""
        async with self._lock:
            if self.generation != sent_generation:
                return True
            if self.unavailable_reason is not None:
                return False
            rejected_fresh = sent_generation not in self._confirmed
            if rejected_fresh and sent_generation > 0:
                self.unavailable_reason = (
                    "the token printed by the token command was rejected by EQC (invalid); " + _AFTER
                )
                return False
            if not self._command:
                self.unavailable_reason = _no_refresh_message(error, ever_worked=not rejected_fresh)
                return False
            return await self._replace("invalid" if rejected_fresh else "expired")

    async def _replace(self, why: str) -> bool:
        self._settled.clear()
        try:
            assert self._command is not None
            token = await asyncio.to_thread(run_token_command, self._command)
        except ConfigError as exc:
            self.unavailable_reason = f"{exc}; {_AFTER}"
            self._events("token_unavailable", {"reason": str(exc)})
            return False
        finally:
            self._settled.set()
        self._client.set_token(token)
        self.generation += 1
        if why != "no token given":
            self.refreshes += 1
            self._events("token_refresh", {"refreshes": self.refreshes, "generation": self.generation, "why": why})
        return True


def _no_refresh_message(error: TokenExpiredError, *, ever_worked: bool) -> str:
    state = "expired" if error.expired or ever_worked else "was rejected (invalid or expired, HTTP 401)"
    return (
        f"the EQC token {state} and no refresh is configured: renew WDH_EQC_TOKEN, or set --token-command "
        f"(WDH_EQC_TOKEN_COMMAND) to a command that prints a fresh token; {_AFTER}"
    )


def run_token_command(command: str) -> str:
    """Run the user's token command; its output is the token, so it never goes into a message."""
    try:
        # shell=True: the user's own command line from their own configuration, pipes allowed.
        done = subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        # not chained: a timed-out command's exception holds what it printed so far, which may be the token
        raise ConfigError(f"token command failed to run: {type(exc).__name__}") from None
    if done.returncode != 0:
        raise ConfigError(f"token command failed: it exited with status {done.returncode}")
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        raise ConfigError("token command failed: it printed no token")
    token = checked_token(lines[-1], source="token command failed")
    assert token is not None  # the line is not blank
    return token
