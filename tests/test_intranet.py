"""Reaching EQC from the intranet, with real parts on loopback: the PAC file served over HTTP, a proxy that
demands the UM account as Basic credentials and records what passes, and the simulator behind it over HTTPS
with a certificate from a test CA that only `--ca-bundle` / `WDH_EQC_CA_BUNDLE` makes trusted.

EQC's name (`eqc.intranet.test`) resolves nowhere but in the proxy: a request that reached the simulator
came through the proxy. Each failure of the way (wrong credentials, a dead first proxy, an unreachable PAC
file, an untrusted certificate) has its own one-line ending, or its fall-over.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from tests.intranet import EQC_HOST, IntranetCa, PacServer, RecordingProxy, closed_port, make_ca, pac_script

from eqc_enrich import RateLimit
from eqc_enrich.network import Route, env_proxy, pac_routes
from eqc_enrich.simulator import Simulator, SimulatorConfig, write_month

TOKEN = "intranet-token-5f0c9a"
UM_USER, UM_PASSWORD = "um0042", "pw-Sesame-88"


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_month(tmp_path_factory.mktemp("month") / "month.parquet", seed=4, rows=400, companies=40)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IntranetCa]:
    with make_ca(tmp_path_factory.mktemp("ca")) as made:
        yield made


@pytest.fixture
def eqc(ca: IntranetCa) -> Iterator[Simulator]:
    """The simulator over HTTPS with the test CA's certificate for eqc.intranet.test."""
    config = SimulatorConfig(
        seed=4, latency=(0.0, 0.0), rate_limit=RateLimit(1000, 1.0), tokens=(TOKEN,), token_ttl=86_400.0
    )
    with Simulator(config, tls_cert=str(ca.cert_pem), tls_key=str(ca.key_pem)) as sim:
        yield sim


@pytest.fixture
def proxy(eqc: Simulator) -> Iterator[RecordingProxy]:
    with RecordingProxy(UM_USER, UM_PASSWORD, hosts={EQC_HOST: "127.0.0.1"}) as running:
        yield running


def eqc_url(sim: Simulator) -> str:
    return f"https://{EQC_HOST}:{sim.port}"


def wdh_env(tmp_path: Path, sim: Simulator, pac_url: str, *, password: str = UM_PASSWORD, ca: Path | None) -> Path:
    """The `.wdh_env` an intranet user has, as WorkDataHub writes it (comments, the token's `# Updated:`)."""
    lines = [
        "# WorkDataHub, intranet",
        "WDH_INTRANET=true",
        f"WDH_PAC_URL={pac_url}",
        f"PA_UM_ACCOUNT={UM_USER}",
        f"PA_UM_PASSWORD={password}",
        f"WDH_EQC_BASE_URL={eqc_url(sim)}",
        f"WDH_EQC_TOKEN={TOKEN} # Updated: 2026-03-09 08:15:00",
        "WDH_DATABASE__URI=postgresql://wdh@db.intranet.test/wdh",
        *([f"WDH_EQC_CA_BUNDLE={ca}"] if ca is not None else []),
    ]
    path = tmp_path / ".wdh_env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(month: Path, tmp_path: Path, env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WDH_EQC_BASE")}
    return subprocess.run(
        [sys.executable, "-m", "eqc_enrich.cli", "run", str(month), "-o", str(tmp_path / "out.parquet"),
         "--db", str(tmp_path / "index.db"), "--summary", str(tmp_path / "summary.json"), "--timeout", "5s",
         "--log-json", str(tmp_path / "events.jsonl"), "--eqc-down-wait", "30s", "--rate-limit", "1000/1s", *extra],
        capture_output=True, text=True, timeout=180, check=False, env={**env, "WDH_ENV_FILE": str(env_file)},
    )  # fmt: skip


def summary(tmp_path: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((tmp_path / "summary.json").read_text())
    return loaded


def start_event(tmp_path: Path) -> dict[str, object]:
    for line in (tmp_path / "events.jsonl").read_text().splitlines():
        event: dict[str, object] = json.loads(line)
        if event.get("event") == "start" or event.get("kind") == "start":
            return event
    raise AssertionError("no start event in the log")


def test_eqcs_name_resolves_only_in_the_proxy() -> None:
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(EQC_HOST, 443)


def test_a_run_from_the_intranet_goes_through_the_pac_proxy_with_the_um_account(
    month: Path, tmp_path: Path, eqc: Simulator, proxy: RecordingProxy, ca: IntranetCa
) -> None:
    with PacServer(pac_script(f"PROXY {proxy.address}", "DIRECT")) as pac:
        env_file = wdh_env(tmp_path, eqc, pac.url, ca=ca.ca_pem)
        done = run(month, tmp_path, env_file)
    assert done.returncode == 0, done.stderr
    result = summary(tmp_path)
    asked = result["api_calls"]
    assert isinstance(asked, dict)
    assert eqc.stats()["requests"]["search"] == asked["search"] > 0  # every one of them came through the proxy
    assert eqc.stats()["requests"]["searchAll"] == asked["searchAll"] == 1  # the token check, by default
    tunnels = proxy.seen
    assert tunnels
    assert all(seen.allowed and seen.target == f"{EQC_HOST}:{eqc.port}" for seen in tunnels)
    assert pac.fetches >= 1
    route = str(start_event(tmp_path)["options"]["route"])  # type: ignore[index]
    assert route == f"proxy {proxy.address}, then DIRECT (from PAC {pac.url})"
    assert "note: these WDH_* settings are not used by eqc-enrich: WDH_DATABASE__URI" in done.stderr
    for text in (done.stdout, done.stderr, (tmp_path / "events.jsonl").read_text(), json.dumps(result)):
        assert UM_PASSWORD not in text
        assert TOKEN not in text


def test_wrong_um_credentials_end_the_run_at_once_naming_the_proxy_and_the_settings(
    month: Path, tmp_path: Path, eqc: Simulator, proxy: RecordingProxy, ca: IntranetCa
) -> None:
    with PacServer(pac_script(f"PROXY {proxy.address}")) as pac:
        env_file = wdh_env(tmp_path, eqc, pac.url, password="wrong-password-1", ca=ca.ca_pem)
        done = run(month, tmp_path, env_file, "--eqc-down-wait", "10m")
    assert done.returncode == 5, done.stderr
    assert summary(tmp_path)["status"] == "eqc_unavailable"
    ending = [line for line in done.stderr.splitlines() if "407" in line]
    assert len(ending) == 1
    assert f"proxy {proxy.address} refused the proxy credentials (HTTP 407)" in ending[0]
    assert "PA_UM_ACCOUNT / PA_UM_PASSWORD" in ending[0]
    assert "probing" not in done.stderr  # it ends at once: waiting would not fix the credentials
    assert "Traceback" not in done.stderr
    assert eqc.stats()["requests"]["search"] == 0
    assert not any(seen.allowed for seen in proxy.seen)
    assert "wrong-password-1" not in done.stderr + done.stdout


def test_a_dead_first_proxy_falls_over_to_the_live_second(
    month: Path, tmp_path: Path, eqc: Simulator, proxy: RecordingProxy, ca: IntranetCa
) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    with PacServer(pac_script(f"PROXY {dead}", f"PROXY {proxy.address}", "DIRECT")) as pac:
        env_file = wdh_env(tmp_path, eqc, pac.url, ca=ca.ca_pem)
        done = run(month, tmp_path, env_file)
    assert done.returncode == 0, done.stderr
    fallovers = [line for line in done.stderr.splitlines() if "cannot be connected to" in line]
    assert fallovers == [f"proxy {dead} cannot be connected to: trying {proxy.address}"]  # then passed over
    assert eqc.stats()["requests"]["search"] > 0
    assert all(seen.allowed for seen in proxy.seen)


def test_an_unreachable_pac_file_ends_the_run_with_one_line(
    month: Path, tmp_path: Path, eqc: Simulator, ca: IntranetCa
) -> None:
    pac_url = f"http://127.0.0.1:{closed_port()}/proxy.pac"
    done = run(month, tmp_path, wdh_env(tmp_path, eqc, pac_url, ca=ca.ca_pem))
    assert done.returncode == 5, done.stderr
    result = summary(tmp_path)
    assert result["status"] == "eqc_unavailable"
    assert f"the PAC file {pac_url} (WDH_PAC_URL / --pac-url) could not be fetched: connection refused" in str(
        result["message"]
    )
    assert "Traceback" not in done.stderr
    assert eqc.stats()["requests"]["search"] == 0


def test_an_untrusted_certificate_ends_the_run_naming_both_fixes(
    month: Path, tmp_path: Path, eqc: Simulator, proxy: RecordingProxy
) -> None:
    with PacServer(pac_script(f"PROXY {proxy.address}")) as pac:
        done = run(month, tmp_path, wdh_env(tmp_path, eqc, pac.url, ca=None))
    assert done.returncode == 5, done.stderr
    ending = [line for line in done.stderr.splitlines() if "not trusted" in line]
    assert len(ending) == 1
    assert "operating system's certificate store" in ending[0]
    assert "--ca-bundle FILE (WDH_EQC_CA_BUNDLE)" in ending[0]
    assert eqc.stats()["requests"]["search"] == 0
    assert any(seen.allowed for seen in proxy.seen)  # the proxy let it through: the certificate stopped it


def test_the_ca_bundle_option_trusts_the_test_ca(
    month: Path, tmp_path: Path, eqc: Simulator, proxy: RecordingProxy, ca: IntranetCa
) -> None:
    with PacServer(pac_script(f"PROXY {proxy.address}")) as pac:
        env_file = wdh_env(tmp_path, eqc, pac.url, ca=None)
        done = run(month, tmp_path, env_file, "--ca-bundle", str(ca.ca_pem))
    assert done.returncode == 0, done.stderr


def test_verification_is_off_only_by_its_own_setting_and_says_so_at_start(
    month: Path, tmp_path: Path, eqc: Simulator, proxy: RecordingProxy
) -> None:
    with PacServer(pac_script(f"PROXY {proxy.address}")) as pac:
        env_file = wdh_env(tmp_path, eqc, pac.url, ca=None)
        with env_file.open("a") as lines:
            lines.write("WDH_EQC_VERIFY=false\n")
        done = run(month, tmp_path, env_file)
    assert done.returncode == 0, done.stderr
    assert "warning: TLS verification of EQC is OFF (WDH_EQC_VERIFY=false)" in done.stderr
    tls = start_event(tmp_path)["options"]["tls"]  # type: ignore[index]
    assert tls == "NOT verified (WDH_EQC_VERIFY=false)"


def test_a_fixed_proxy_option_goes_before_the_pac_file(
    month: Path, tmp_path: Path, eqc: Simulator, proxy: RecordingProxy, ca: IntranetCa
) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    with PacServer(pac_script(f"PROXY {dead}")) as pac:
        env_file = wdh_env(tmp_path, eqc, pac.url, ca=ca.ca_pem)
        done = run(month, tmp_path, env_file, "--proxy", f"http://{proxy.address}")
    assert done.returncode == 0, done.stderr
    assert pac.fetches == 0
    assert str(start_event(tmp_path)["options"]["route"]) == f"proxy {proxy.address} (from --proxy / WDH_EQC_PROXY)"  # type: ignore[index]
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out["company_id"].null_count() < out.height


# --- the parts on their own ------------------------------------------------------------------------------------


def test_the_pac_answer_becomes_routes_in_order() -> None:
    script = pac_script("PROXY 10.0.0.1:8080", "PROXY 10.0.0.2:3128", "SOCKS 10.0.0.3:1080", "DIRECT")
    routes = pac_routes(script, f"https://{EQC_HOST}/kg-api-hfd/api/search/", pac_url="http://pac")
    assert routes == ("http://10.0.0.1:8080", "http://10.0.0.2:3128", None)  # SOCKS passed over
    assert pac_routes(script, "https://elsewhere.example/", pac_url="http://pac") == (None,)
    assert Route(routes, "PAC http://pac").describe() == (
        "proxy 10.0.0.1:8080, then proxy 10.0.0.2:3128, then DIRECT (from PAC http://pac)"
    )


def test_a_pac_file_that_is_not_javascript_is_a_one_line_route_error() -> None:
    from eqc_enrich.network import RouteError

    with pytest.raises(RouteError, match=r"^the PAC file http://pac cannot be run: "):
        pac_routes("this is { not javascript", "https://x/", pac_url="http://pac")


def test_https_proxy_and_no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "local.example")
    assert env_proxy("https://eqc.example/") == "http://user:pw@proxy.example:3128"
    assert env_proxy("https://api.local.example/") is None
    assert Route(("http://user:pw@proxy.example:3128",), "HTTPS_PROXY").describe() == (
        "proxy proxy.example:3128 (from HTTPS_PROXY)"
    )  # never the password
