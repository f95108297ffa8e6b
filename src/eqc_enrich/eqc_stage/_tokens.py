"""Keeping the EQC token alive through a run that outlasts it.

Every token in use has a generation: 0 for the one the run started with, +1 for each the token command
printed. A request notes the generation it was *sent* with (not the one in force when it joined the
queue), so when it comes back unauthorized the keeper knows whether that token is already replaced (just
send again) or is the current one (refresh it, once, whoever asks first). A generation that is rejected
before any request succeeded with it is not a token that expired: it is invalid, and asking again will not
help.

Without a token command, a keeper given a `LoginWatch` does not give up when the token is missing or
rejected: it stops the sending (requests in flight finish and are kept), says once what to run to log in,
and watches the env file that `eqc-enrich token login` writes; the first new token there that passes a
check is taken, and sending resumes. After `wait_s` without one, the token is unavailable as before.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqc_enrich._durations import format_duration
from eqc_enrich._errors import ConfigError
from eqc_enrich.eqc import EqcClient, EqcError, TokenExpiredError
from eqc_enrich.settings import checked_token, read_env_token

__all__ = ["NO_TOKEN_MESSAGE", "LoginWatch", "TokenKeeper", "run_token_command"]

_COMMAND_TIMEOUT_S = 300.0
_AFTER = "names not asked got temporary ids, which a later run replaces"
NO_TOKEN_MESSAGE = (
    "no EQC token: set WDH_EQC_TOKEN, or --token-command / WDH_EQC_TOKEN_COMMAND to a command that prints one; "
    + _AFTER
)


@dataclass(frozen=True, slots=True)
class LoginWatch:
    """Where a login saves the token (`path`), how long to wait for one, and the command a person runs."""

    path: Path
    wait_s: float
    login_command: str
    poll_s: float = 0.5


class TokenKeeper:
    """Exactly one refresh per expired token, however many requests saw it expire.

    `admit` is awaited before the keeper's own token-check call (a quota slot: the check counts like any
    request); `watch`, used only without a command, waits for a login instead of giving up.
    """

    def __init__(
        self,
        client: EqcClient,
        command: str | None,
        *,
        events: Callable[[str, dict[str, Any]], None] | None = None,
        admit: Callable[[], Awaitable[object]] | None = None,
        watch: LoginWatch | None = None,
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        self._client = client
        self._command = command
        self._events = events or (lambda kind, fields: None)
        self._admit = admit
        self._watch = watch if watch is not None and watch.wait_s > 0 and not command else None
        self._stopped = stopped
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()  # clear while a refresh runs: nobody sends with a token known dead
        self._settled.set()
        self.generation = 0
        self.refreshes = 0
        self._confirmed: set[int] = set()  # generations some request succeeded with
        self.unavailable_reason: str | None = None

    @property
    def can_refresh(self) -> bool:
        return bool(self._command) or self._watch is not None

    async def prepare(self, *, check: bool) -> bool:
        """A token to start with: given, or from the command; with `check`, one token-check call first.

        False (with `unavailable_reason` set) when the run has no usable token at all.
        """
        if not self._client.has_token:
            if self._watch is not None:
                return await self._await_login("there is no EQC token")
            if not self._command:
                self.unavailable_reason = NO_TOKEN_MESSAGE
                return False
            if not await self._replace("no token given"):
                return False
        if not check:
            return True
        works = await self._check()
        if works is None or works:
            if works:
                self._confirmed.add(self.generation)
            return True  # None: inconclusive (EQC busy or away): the stage's outage handling takes it from here
        return await self.refresh(self.generation, TokenExpiredError("token check rejected the token"))

    async def _check(self) -> bool | None:
        """One token-check call in the quota: True works, False rejected, None could not tell."""
        if self._admit is not None:
            await self._admit()
        try:
            return await self._client.check_token()
        except EqcError:
            return None

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
            if self._watch is not None:
                state = "expired" if error.expired or not rejected_fresh else "was rejected"
                return await self._await_login(f"the EQC token {state}")
            if rejected_fresh and sent_generation > 0:
                self.unavailable_reason = (
                    "the token printed by the token command was rejected by EQC (invalid); " + _AFTER
                )
                return False
            if not self._command:
                self.unavailable_reason = _no_refresh_message(error, ever_worked=not rejected_fresh)
                return False
            return await self._replace("invalid" if rejected_fresh else "expired")

    async def _await_login(self, why: str) -> bool:
        """No sending until a new token that passes a check appears in the watched env file, or the wait ends."""
        watch = self._watch
        assert watch is not None
        self._settled.clear()
        try:
            wait = format_duration(watch.wait_s)
            line = (
                f"{why}: sending paused (answers in flight are kept); log in with `{watch.login_command}` "
                f"- waiting up to {wait} (--token-wait) for a new token in {watch.path}"
            )
            self._events("token_login_needed", {"line": line, "wait_s": watch.wait_s, "env_file": str(watch.path)})
            token = await self._new_token(watch)
            if token is None:
                self.unavailable_reason = (
                    f"{why} and no new valid token appeared in {watch.path} within {wait} (--token-wait); "
                    f"log in with `{watch.login_command}` and rerun; {_AFTER}"
                )
                self._events("token_unavailable", {"reason": "no login within the wait"})
                return False
        finally:
            self._settled.set()
        self.generation += 1
        self._confirmed.add(self.generation)
        self.refreshes += 1
        self._events("token_login_done", {"generation": self.generation})
        return True

    async def _new_token(self, watch: LoginWatch) -> str | None:
        """Poll the env file; a token not seen before is checked once (in the quota) and kept if it works."""
        deadline = time.monotonic() + watch.wait_s
        current = self._client.token
        seen = {current} if current else set()
        while time.monotonic() < deadline and not self._stopped():
            found = read_env_token(watch.path).token
            if found and found not in seen:
                seen.add(found)
                self._client.set_token(found)
                works = await self._check()
                if works is None or works:
                    return found  # inconclusive counts as working: EQC's outage handling takes it from there
            await asyncio.sleep(min(watch.poll_s, max(0.0, deadline - time.monotonic())))
        if current:
            self._client.set_token(current)
        return None

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
    """Run the user's token command; its output is the token, so it never goes into a message. What it says on
    stderr goes to the person (a login command's QR code, say)."""
    try:
        # shell=True: the user's own command line from their own configuration, pipes allowed.
        done = subprocess.run(
            command, shell=True, stdout=subprocess.PIPE, text=True, timeout=_COMMAND_TIMEOUT_S, check=False
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
