"""Keeping the EQC token alive through a run that outlasts it."""

from __future__ import annotations

import asyncio
import subprocess

from eqc_enrich._errors import ConfigError
from eqc_enrich.eqc import EqcClient

_COMMAND_TIMEOUT_S = 300.0


class TokenKeeper:
    """Exactly one refresh per expiry, however many requests saw it at once.

    Each request notes the token `generation` it was sent with; a request that comes back expired asks for
    a refresh of that generation, and only the first such request runs the command: the others find the
    generation already moved on and simply replay.
    """

    def __init__(self, client: EqcClient, command: str | None) -> None:
        self._client = client
        self._command = command
        self._lock = asyncio.Lock()
        self.generation = 0
        self.refreshes = 0
        self.unavailable_reason: str | None = None

    @property
    def can_refresh(self) -> bool:
        return bool(self._command)

    async def refresh(self, seen_generation: int) -> bool:
        """True when a token newer than `seen_generation` is in place (now or already)."""
        async with self._lock:
            if self.generation != seen_generation:
                return True
            if self.unavailable_reason is not None:
                return False
            if not self._command:
                self.unavailable_reason = (
                    "the EQC token expired and no refresh is configured: set --token-command "
                    "(or WDH_EQC_TOKEN_COMMAND) to a command that prints a fresh token, or renew WDH_EQC_TOKEN"
                )
                return False
            try:
                token = await asyncio.to_thread(run_token_command, self._command)
            except ConfigError as exc:
                self.unavailable_reason = str(exc)
                return False
            self._client.set_token(token)
            self.generation += 1
            self.refreshes += 1
            return True


def run_token_command(command: str) -> str:
    """Run the user's token command; its output is the token, so it never goes into a message."""
    try:
        # shell=True: the user's own command line from their own configuration, pipes allowed.
        done = subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"token command failed to run: {type(exc).__name__}") from None
    if done.returncode != 0:
        raise ConfigError(f"token command exited with status {done.returncode}")
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        raise ConfigError("token command printed no token")
    return lines[-1]
