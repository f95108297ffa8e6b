"""Tokens from a QR login, as a user gets them: `eqc-enrich token login` drives Debian's Chromium through the
intranet's PAC proxy to the simulator's login page; the test plays the phone (`POST /__sim/scan`); the token
lands in the env file in WorkDataHub's line format, and a run uses it. A run whose token dies mid-run with
no token command waits for such a login and goes on, asking nothing twice.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
import segno
from tests.intranet import EQC_HOST, PacServer, RecordingProxy, pac_script

from eqc_enrich import RateLimit
from eqc_enrich.simulator import Simulator, SimulatorConfig, write_month

CHROMIUM = Path("/usr/bin/chromium")
FIRST_TOKEN = "login-test-first-token-77"
UM_USER, UM_PASSWORD = "um0042", "pw-Sesame-88"
TOKEN_LINE = re.compile(r"^WDH_EQC_TOKEN=([0-9a-f]{32}) # Updated: \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"no {CHROMIUM}: apt-get install chromium"
    return None


if (_why := _missing()) is not None:
    if os.environ.get("CI"):  # CI installs both (.ci/run): a skip there would hide a missing install step
        raise RuntimeError(f"CI must provide the login test's parts: {_why}")
    pytest.skip(_why, allow_module_level=True)


class Lines:
    """A process's stderr read line by line on a thread, so a test can wait for a line with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout_s: float = 60.0) -> str:
        for line in self.seen:
            if text in line:
                return line
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                got = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got is None:
                break
            self.seen.append(got)
            if text in got:
                return got
        raise AssertionError(f"no line with {text!r}; saw:\n" + "\n".join(self.seen))

    def rest(self, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                got = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got is None:
                break
            self.seen.append(got)
        return "\n".join(self.seen)


def cli(*args: str | Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "eqc_enrich.cli", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
    )  # fmt: skip


def scan(sim: Simulator) -> httpx.Response:
    return httpx.post(f"{sim.url}/__sim/scan", timeout=10)


def drawn_matrix(lines: list[str]) -> list[list[bool]]:
    """The QR code as `token login` drew it (half blocks), back to modules, quiet zone cut off."""
    start = next(i for i, line in enumerate(lines) if line.startswith("scan this QR code")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("the QR code as a picture"))
    rows: list[list[bool]] = []
    for line in lines[start:end]:
        rows.append([c in "█▀" for c in line])
        rows.append([c in "█▄" for c in line])
    dark = [r for r, row in enumerate(rows) if any(row)]
    columns = [c for row in rows for c, cell in enumerate(row) if cell]
    left, right = min(columns), max(columns)
    return [row[left : right + 1] for row in rows[dark[0] : dark[-1] + 1]]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        seed=3, latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(FIRST_TOKEN,), token_ttl=86_400.0
    )
    with Simulator(config) as running:
        yield running


@pytest.mark.slow  # a real browser through a whole login or session: make test-all
def test_token_login_through_the_pac_proxy_saves_the_token_and_a_run_uses_it(sim: Simulator, tmp_path: Path) -> None:
    assert scan(sim).status_code == 409  # no QR code is waiting yet
    month = write_month(tmp_path / "month.parquet", seed=3, rows=200, companies=20)
    env_file = tmp_path / ".wdh_env"
    with (
        RecordingProxy(UM_USER, UM_PASSWORD, hosts={EQC_HOST: "127.0.0.1"}) as proxy,
        PacServer(pac_script(f"PROXY {proxy.address}", "DIRECT")) as pac,
    ):
        before = [
            "# kept as it is",
            "WDH_INTRANET=true",
            f"WDH_PAC_URL={pac.url}",
            f"PA_UM_ACCOUNT={UM_USER}",
            f"PA_UM_PASSWORD={UM_PASSWORD}",
            f"WDH_EQC_BASE_URL=http://{EQC_HOST}:{sim.port}",
            "WDH_EQC_TOKEN=an-expired-one # Updated: 2026-03-09 08:15:00",
            "WDH_ALIAS_SALT=kept-salt",
        ]
        env_file.write_text("\n".join(before) + "\n", encoding="utf-8")
        env = {
            "WDH_ENV_FILE": str(env_file),
            "WDH_EQC_BASE_URL": f"http://{EQC_HOST}:{sim.port}",  # the tests' environment has one: this wins
            "PLAYWRIGHT_CHROMIUM_EXECUTABLE_PATH": str(CHROMIUM),
        }
        login = cli("token", "login", "--timeout", "90s", env=env)
        assert login.stderr is not None
        lines = Lines(login.stderr)
        picture = lines.wait_for("the QR code as a picture: ").split(": ", 1)[1]
        lines.wait_for("waiting up to 1m30s for the scan")
        approved = scan(sim)
        assert approved.status_code == 200
        assert login.wait(timeout=60) == 0, lines.rest()
        said = lines.rest()
        browser_requests = [seen for seen in proxy.seen if seen.allowed and seen.method == "GET"]
    assert f"saved the EQC token to {env_file} (WDH_EQC_TOKEN, checked: valid)" in said
    after = env_file.read_text(encoding="utf-8").splitlines()
    token_lines = [line for line in after if line.startswith("WDH_EQC_TOKEN")]
    assert len(token_lines) == 1
    found = TOKEN_LINE.match(token_lines[0])
    assert found is not None
    token = found.group(1)
    assert [line for line in after if not line.startswith("WDH_EQC_TOKEN")] == [
        line for line in before if not line.startswith("WDH_EQC_TOKEN")
    ]
    assert after.index(token_lines[0]) == before.index("WDH_EQC_TOKEN=an-expired-one # Updated: 2026-03-09 08:15:00")
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # what the person saw: the very QR code the page showed, drawn in the terminal; the PNG gone afterwards
    expected = [[bool(cell) for cell in row] for row in segno.make(approved.json()["content"], error="m").matrix]
    assert drawn_matrix(lines.seen) == expected
    assert not Path(picture).exists()
    # the browser went the route's way: through the PAC's proxy, with the UM account
    assert any(seen.target.startswith(f"http://{EQC_HOST}:{sim.port}/") for seen in browser_requests)
    assert token not in said
    # a following run uses the saved token (the first one the simulator knew is expired)
    run = subprocess.run(
        [sys.executable, "-m", "eqc_enrich.cli", "run", str(month), "-o", str(tmp_path / "out.parquet"),
         "--db", str(tmp_path / "index.db"), "--eqc-url", sim.url, "--summary", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "WDH_ENV_FILE": str(env_file), "WDH_INTRANET": "false"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["eqc"]["names_asked"] > 0
    assert sim.stats()["unauthorized"] == 0


@pytest.mark.slow  # a real browser through a whole login or session: make test-all
def test_token_login_no_save_prints_only_the_token(sim: Simulator, tmp_path: Path) -> None:
    env_file = tmp_path / ".wdh_env"
    env_file.write_text("WDH_EQC_TOKEN=unchanged\n", encoding="utf-8")
    env = {"WDH_ENV_FILE": str(env_file), "WDH_EQC_BASE_URL": sim.url}
    login = cli("token", "login", "--no-save", "--timeout", "90s", env=env)
    assert login.stderr is not None
    lines = Lines(login.stderr)
    lines.wait_for("waiting up to")
    assert scan(sim).status_code == 200
    out, _ = login.communicate(timeout=60)
    assert login.returncode == 0, lines.rest()
    assert re.fullmatch(r"[0-9a-f]{32}\n", out)
    assert env_file.read_text(encoding="utf-8") == "WDH_EQC_TOKEN=unchanged\n"


@pytest.mark.slow  # a real browser through a whole login or session: make test-all
def test_token_login_that_nobody_scans_ends_with_exit_3(sim: Simulator, tmp_path: Path) -> None:
    env = {"WDH_ENV_FILE": str(tmp_path / ".wdh_env"), "WDH_EQC_BASE_URL": sim.url}
    login = cli("token", "login", "--timeout", "1s", env=env)
    _, err = login.communicate(timeout=90)
    assert login.returncode == 3
    assert err.strip().splitlines()[-1] == "error: no login within 1s: nobody scanned the QR code (--timeout)"
    assert not (tmp_path / ".wdh_env").exists()


def test_token_check_says_valid_with_its_age_then_invalid_with_the_login_command(
    sim: Simulator, tmp_path: Path
) -> None:
    env_file = tmp_path / ".wdh_env"
    env_file.write_text(f"WDH_EQC_TOKEN={FIRST_TOKEN} # Updated: 2026-03-09 08:15:00\n", encoding="utf-8")
    env = {"WDH_ENV_FILE": str(env_file), "WDH_EQC_BASE_URL": sim.url}
    valid = subprocess.run(
        [sys.executable, "-m", "eqc_enrich.cli", "token", "check"],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **env},
    )  # fmt: skip
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.startswith(f"valid: the token from {env_file}, saved 2026-03-09 08:15:00 (")
    sim.expire_tokens()
    invalid = subprocess.run(
        [sys.executable, "-m", "eqc_enrich.cli", "token", "check"],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **env},
    )  # fmt: skip
    assert invalid.returncode == 3
    assert f"log in with `eqc-enrich token login --env-file {env_file} --eqc-url {sim.url}`" in invalid.stdout
    assert sim.stats()["requests"]["searchAll"] == 2
    assert FIRST_TOKEN not in valid.stdout + valid.stderr + invalid.stdout + invalid.stderr


@pytest.mark.slow  # a real browser through a whole login or session: make test-all
def test_a_run_whose_token_expires_waits_for_a_login_and_asks_nothing_twice(tmp_path: Path) -> None:
    config = SimulatorConfig(
        seed=8,
        latency=(0.0, 0.0),
        rate_limit=RateLimit(400, 60.0),
        time_scale=60.0,
        tokens=(FIRST_TOKEN,),
        token_ttl=86_400.0,
    )  # 400 requests a second: the run takes some seconds, the login happens in the middle
    month = write_month(tmp_path / "month.parquet", seed=8, rows=2_000, companies=500)
    env_file = tmp_path / ".wdh_env"
    env_file.write_text(f"WDH_EQC_TOKEN={FIRST_TOKEN} # Updated: 2026-03-09 08:15:00\n", encoding="utf-8")
    with Simulator(config) as sim:
        # one quota for the run and the login's token check: with the default 10/60s the check would wait
        # for the minute the run's fifty sends a second filled
        env = {"WDH_ENV_FILE": str(env_file), "WDH_EQC_BASE_URL": sim.url, "WDH_EQC_RATE_LIMIT": "50/1s"}
        run = cli(
            "run", month, "-o", tmp_path / "out.parquet", "--db", tmp_path / "index.db",
            "--summary", tmp_path / "summary.json", "--token-wait", "2m", env=env,
        )  # fmt: skip
        assert run.stderr is not None
        run_lines = Lines(run.stderr)
        deadline = time.monotonic() + 60
        while sim.stats()["accepted"] < 30 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
        sim.expire_tokens()  # the token dies mid-run
        asking = run_lines.wait_for("log in with `eqc-enrich token login")
        assert "sending paused (answers in flight are kept)" in asking
        assert "waiting up to 2m00s (--token-wait)" in asking
        login = cli("token", "login", "--env-file", env_file, "--db", tmp_path / "index.db", env=env)
        assert login.stderr is not None
        login_lines = Lines(login.stderr)
        login_lines.wait_for("waiting up to")
        assert scan(sim).status_code == 200
        assert login.wait(timeout=60) == 0, login_lines.rest()
        run_lines.wait_for("a new EQC token is in force: resuming")
        assert run.wait(timeout=120) == 0, run_lines.rest()
        stats = sim.stats()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["eqc"]["failed"] == 0
    assert summary["eqc"]["not_asked"] == 0  # (a name may be answered by another's former name meanwhile)
    assert summary["eqc"]["names_asked"] + summary["eqc"]["answered_elsewhere"] == summary["eqc"]["names_planned"]
    assert summary["token_refreshes"] == 1
    assert stats["search_keys_repeated"] == 0  # nothing asked twice: answers in flight were kept
    assert stats["token_expired"] >= 1
    assert [line for line in run_lines.seen if "log in with" in line] == [asking]  # asked once


@pytest.mark.slow  # a real browser through a whole login or session: make test-all
def test_run_login_on_a_terminal_shows_the_qr_code_there_and_goes_on(sim: Simulator, tmp_path: Path) -> None:
    month = write_month(tmp_path / "month.parquet", seed=3, rows=200, companies=20)
    env_file = tmp_path / ".wdh_env"  # none yet: the run starts without a token
    master, slave = pty.openpty()
    run = subprocess.Popen(
        [sys.executable, "-m", "eqc_enrich.cli", "run", str(month), "-o", str(tmp_path / "out.parquet"),
         "--db", str(tmp_path / "index.db"), "--rate-limit", "1000/1s", "--summary", str(tmp_path / "s.json"),
         "--login", "--token-wait", "2m"],
        stdin=slave, stdout=slave, stderr=slave,
        env={**os.environ, "WDH_ENV_FILE": str(env_file), "WDH_EQC_BASE_URL": sim.url},
    )  # fmt: skip
    os.close(slave)
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65_536)
            except OSError:  # the terminal's other end closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 90

    def qr_on_screen() -> bool:  # the login's own "waiting up to" line follows its QR code
        after = bytes(shown).split(b"scan this QR code")
        return len(after) > 1 and b"waiting up to" in after[-1]

    while not qr_on_screen() and time.monotonic() < deadline:
        time.sleep(0.2)  # until the QR code is on the terminal, as a person scans what they see
    scanned = scan(sim).status_code == 200
    assert scanned, shown.decode(errors="replace")[-2000:]
    assert run.wait(timeout=120) == 0, shown.decode(errors="replace")[-2000:]
    reader.join(timeout=10)
    os.close(master)
    text = shown.decode(errors="replace")
    assert "scan this QR code with the 快乐平安 app" in text  # in the run's own terminal
    assert "there is no EQC token: sending paused" in text
    assert TOKEN_LINE.match(env_file.read_text(encoding="utf-8").strip())
    assert json.loads((tmp_path / "s.json").read_text())["status"] == "completed"
