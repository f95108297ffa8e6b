"""The simulated EQC as a child process, started and stopped by the benchmark itself.

A separate process, not the in-process `Simulator` thread: client and server must not share a GIL, or the
server's work (and its latency timers) would be charged to the client and the measured times would mix both.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Self

from eqc_enrich._durations import RateLimit
from eqc_enrich._errors import ConfigError

_STARTED = re.compile(r"EQC simulator on (http://\S+)")
_START_TIMEOUT_S = 60.0  # the child builds its company universe before it listens
_STOP_TIMEOUT_S = 10.0
HUGE_TOKEN_TTL = "100000d"  # the benchmark measures pacing, not token expiry


@dataclass(frozen=True, slots=True)
class SimulatorSpec:
    """How the child simulator behaves; durations in story seconds, divided by `time_scale` by the child."""

    seed: int
    time_scale: float
    rate_limit: RateLimit
    latency: tuple[float, float]
    token: str

    def command(self) -> list[str]:
        low, high = self.latency
        return [
            sys.executable, "-m", "eqc_enrich.cli", "simulate", "--port", "0", "--seed", str(self.seed),
            "--latency", f"{low:.6f}-{high:.6f}s", "--time-scale", f"{self.time_scale:.6f}",
            "--rate-limit", f"{self.rate_limit.requests}/{self.rate_limit.window_s:.6f}s",
            "--token-idle", HUGE_TOKEN_TTL,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        """The token travels in the environment, not on the command line where `ps` shows it."""
        return {**os.environ, "EQC_SIM_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}


class SimulatorProcess:
    """`with SimulatorProcess(spec) as sim:` talk to `sim.url`; the child is stopped on any exit, Ctrl-C too."""

    def __init__(self, spec: SimulatorSpec) -> None:
        self.spec = spec
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None

    def start(self) -> Self:
        # Lives as long as the child (its stderr goes there); closed in stop(), so no `with` block.
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self._proc = subprocess.Popen(
            self.spec.command(),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=self.spec.environment(),
            text=True,
            encoding="utf-8",
        )
        try:
            self.url = self._wait_for_url(self._proc)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_url(self, proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        line = _read_line(proc.stdout, _START_TIMEOUT_S)
        match = _STARTED.search(line or "")
        if match is None:
            raise ConfigError(f"the simulated EQC did not start: {self._stderr_tail() or line or 'no output'}")
        return match.group(1)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = [line.strip() for line in self._stderr.read().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def stop(self) -> None:
        """Ask the child to stop as Ctrl-C would; kill it if it does not within a few seconds."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _end(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _read_line(stream: IO[str], timeout_s: float) -> str | None:
    """One line, or None after `timeout_s`; a thread because pipes cannot be polled on every platform."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return box[0] if box else None


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    if os.name == "nt":
        proc.terminate()
    else:
        proc.send_signal(signal.SIGINT)  # `simulate` stops cleanly on Ctrl-C
    try:
        proc.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
