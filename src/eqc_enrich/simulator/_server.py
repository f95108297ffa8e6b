"""Running the simulator in-process: uvicorn on a daemon thread with its own event loop, on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import uvicorn

from eqc_enrich.simulator._app import SimulatorConfig, SimulatorState, create_app
from eqc_enrich.simulator._universe import Universe

_T = TypeVar("_T")
_START_TIMEOUT_S = 15.0


class Simulator:
    """A real HTTP server speaking the EQC API; `with Simulator(config) as sim:` then talk to `sim.url`.

    `universe` replaces the seed's companies (a test that needs companies the generator never makes, such as
    two that once had the same name); `tls_cert`/`tls_key` (PEM files) make it serve HTTPS.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        universe: Universe | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.host = host
        self._port = port
        self._tls = (tls_cert, tls_key) if tls_cert else None  # serve HTTPS with this certificate (PEM files)
        self._app = create_app(self.config, universe)
        self.state: SimulatorState = self._app.state.simulator
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL with the real port (also when constructed with port=0)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._tls else 'http'}://{host}:{self._port}"

    def start(self) -> Self:
        """Bind, serve on a daemon thread, and return once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        sock = self._bind()
        self._port = sock.getsockname()[1]
        self.state.closing = asyncio.Event()  # bound to the loop that is about to run it
        server = self._server = uvicorn.Server(self._uvicorn_config())
        thread = threading.Thread(target=self._run, args=(server, sock), name="eqc-simulator", daemon=True)
        thread.start()
        self._wait_started(server, thread)
        self._thread = thread
        return self

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it
        # Nagle plus delayed ACKs add 40 ms to every keep-alive request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._port))
        except OSError:
            sock.close()
            raise
        return sock

    def _uvicorn_config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,  # the access log would be noise; the token travels in a header, never logged
            lifespan="off",
            limit_concurrency=10_000,  # hundreds of concurrent (slow) requests are the point
            backlog=4096,
            timeout_graceful_shutdown=2,
            ssl_certfile=self._tls[0] if self._tls else None,
            ssl_keyfile=self._tls[1] if self._tls else None,
        )

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])

        asyncio.run(serve())

    def _wait_started(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError(f"EQC simulator did not start on {self.host}:{self._port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop promptly: hanging and slow requests are cut short, then the thread ends."""
        thread, server, loop = self._thread, self._server, self._loop
        if thread is None or server is None:
            return
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.state.closing.set)
        server.should_exit = True
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # steering and observing; done on the server's loop so no request sees half an update

    def _on_loop(self, action: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None or self._thread is None:
            return action()

        async def call() -> _T:
            return action()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        """Counters as `/__stats` reports them."""
        return self._on_loop(self.state.snapshot)

    def issue_token(self) -> str:
        """A fresh valid token, as `POST /__token` gives."""
        return self._on_loop(self.state.tokens.issue)

    def expire_tokens(self) -> None:
        """Expire every token now, as `POST /__expire` does."""
        self._on_loop(self.state.tokens.expire_all)

    def reset_stats(self) -> None:
        """Zero the counters, as `POST /__reset` does."""
        self._on_loop(self.state.reset_stats)

    def scan(self) -> tuple[str, str] | None:
        """Approve the QR code the login page shows, as `POST /__sim/scan` does: (its id, its content)."""
        return self._on_loop(self.state.login.scan)
