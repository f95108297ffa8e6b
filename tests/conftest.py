"""Shared fixtures: real servers on loopback for tests that talk HTTP.

- `sim_factory`: start EQC simulators (`Simulator`) with test-friendly defaults; stopped at teardown.
- `scripted_server`: a tiny stdlib HTTP server answering whatever the test scripts (status, headers, body),
  for answers the simulator cannot produce (403, 404, HTTP-date `Retry-After`, wrong-shape bodies, ...).
- `index_db`: the same test on a SQLite file and on a fresh schema of the PostgreSQL server named by
  `EQC_ENRICH_TEST_PG_URL`; `pg_schema`: just the latter (server URL, schema name).

The servers are real sockets on 127.0.0.1, the databases real files and servers; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from eqc_enrich._durations import RateLimit
from eqc_enrich.simulator import Simulator, SimulatorConfig
from eqc_enrich.store import IndexStore, init_index

SIM_DEFAULTS: Mapping[str, Any] = {
    "latency": (0.0, 0.0),
    "time_scale": 1.0,
    "rate_limit": RateLimit(1000, 1.0),
    "tokens": ("test-token",),
}
"""What `sim_factory` passes to `SimulatorConfig` unless a test overrides it."""

SimFactory = Callable[..., Simulator]

_OUTSIDE_SETTINGS = (
    "WDH_EQC_TOKEN", "WDH_EQC_TOKEN_COMMAND", "WDH_EQC_RATE_LIMIT", "WDH_EQC_RATE_LIMIT_WINDOW", "WDH_EQC_TIMEOUT",
    "WDH_EQC_RETRY_MAX", "WDH_ALIAS_SALT", "EQC_ENRICH_DB", "EQC_ENRICH_DB_SCHEMA",
    "WDH_INTRANET", "WDH_PAC_URL", "PA_UM_ACCOUNT", "PA_UM_PASSWORD", "WDH_PA_UM_ACCOUNT", "WDH_PA_UM_PASSWORD",
    "WDH_EQC_PROXY", "WDH_EQC_CA_BUNDLE", "WDH_EQC_VERIFY", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
    "ALL_PROXY", "all_proxy", "SSL_CERT_FILE",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may reach the real EQC or read the developer's own settings.

    The default base URL points at a closed loopback port, and the `.wdh_env` lookup at a file that does not
    exist; no proxy or PAC file is in force, and a run does not wait for a login; tests that want a setting
    set it themselves (subprocesses inherit this environment).
    """
    for name in _OUTSIDE_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WDH_EQC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WDH_EQC_TOKEN_WAIT", "0")  # a missing token ends a run at once unless a test waits for a login
    monkeypatch.setenv("WDH_ENV_FILE", str(tmp_path_factory.getbasetemp() / "no-such.wdh_env"))


@pytest.fixture
def sim_factory() -> Iterator[SimFactory]:
    """A function `(**config_overrides) -> Simulator` that starts a simulator on loopback and returns it.

    Keyword arguments are `SimulatorConfig` fields and override the defaults in `SIM_DEFAULTS`:
    `latency=(0.0, 0.0)` (answers at once), `time_scale=1.0`, `rate_limit=RateLimit(1000, 1.0)` (never in
    the way unless a test wants it) and `tokens=("test-token",)`. Every other field keeps the
    `SimulatorConfig` default (seed 7, 60 000 companies, 30 % of company ids sent as JSON numbers, ...).

    The simulator is already serving when the function returns (talk to `sim.url`); every simulator the
    test started is stopped at teardown, hanging requests included. Example::

        def test_x(sim_factory: SimFactory) -> None:
            sim = sim_factory(fail_rate=1.0)
    """
    with contextlib.ExitStack() as stack:

        def start(**config_overrides: Any) -> Simulator:
            config = SimulatorConfig(**{**SIM_DEFAULTS, **config_overrides})
            return stack.enter_context(Simulator(config))

        yield start


# --- a scripted HTTP server ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request the scripted server received; header names are lower case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    at: float  # time.monotonic() when it arrived


class ScriptedServer:
    """A loopback HTTP server that answers every request with the scripted response.

    `respond(status, body, headers)` sets the answer for all following requests (default: 200 with `{}`);
    `respond_once(...)` queues an answer for the next request only (queued ones go first, in order). A `body`
    that is `str` or `bytes` is sent as it is; anything else is sent as JSON. `requests` lists what arrived,
    in order, with the time each arrived.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = 200
        self._headers: dict[str, str] = {"Content-Type": "application/json"}
        self._body = b"{}"
        self._once: list[tuple[int, dict[str, str], bytes]] = []
        self.requests: list[SeenRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, name="scripted-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def respond(self, status: int = 200, body: object = None, headers: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._status, self._headers, self._body = _answer(status, body, headers)

    def respond_once(self, status: int = 200, body: object = None, headers: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._once.append(_answer(status, body, headers))

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.02)  # a short poll keeps `stop` quick

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        seen = SeenRequest(
            method=handler.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in handler.headers.items()},
            at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(seen)
            if self._once:
                status, headers, body = self._once.pop(0)
            else:
                status, headers, body = self._status, dict(self._headers), self._body
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

            def do_GET(self) -> None:
                server._answer(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: no access log in test output
                pass

        return Handler


def _answer(status: int, body: object, headers: Mapping[str, str] | None) -> tuple[int, dict[str, str], bytes]:
    if isinstance(body, bytes):
        raw = body
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps({} if body is None else body, ensure_ascii=False).encode()
    return status, {"Content-Type": "application/json", **(headers or {})}, raw


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    """A started `ScriptedServer` on 127.0.0.1 (answers 200 `{}` until the test calls `respond`)."""
    server = ScriptedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- index databases: a real SQLite file, and a schema of a real PostgreSQL ---------------------------------

PG_URL_ENV = "EQC_ENRICH_TEST_PG_URL"


@dataclass(frozen=True, slots=True)
class IndexDb:
    """Where a test's index lives: `url` (a SQLite file URL, or the PostgreSQL server) and `schema`."""

    url: str
    schema: str | None
    dialect: str

    def open(self, **kwargs: Any) -> IndexStore:
        """The store, after `index init` has created the tables (what the database owner does once)."""
        init_index(self.url, schema=self.schema)
        return IndexStore(self.url, schema=self.schema, **kwargs)

    def cli(self) -> list[str]:
        """`--db` and `--db-schema` for the command line."""
        return ["--db", self.url, *(["--db-schema", self.schema] if self.schema else [])]


def pg_url() -> str:
    """The test server's URL; the test is skipped without one (and fails in CI, which must provide it)."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {PG_URL_ENV} (.ci/run starts PostgreSQL)")
        pytest.skip(f"no PostgreSQL: set {PG_URL_ENV}")
    return url


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """(server URL, a fresh schema name): tests never see each other's rows; the schema is dropped after."""
    url = pg_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield url, schema
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def index_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexDb]:
    """The same test on a SQLite file and on PostgreSQL (a schema of its own)."""
    if request.param == "sqlite":
        yield IndexDb(f"sqlite:///{tmp_path / 'index.db'}", None, "sqlite")
        return
    url, schema = request.getfixturevalue("pg_schema")
    yield IndexDb(url, schema, "postgresql")
