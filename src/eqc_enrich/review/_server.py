"""Serving the page: uvicorn on a socket bound before start (so the URL, port included, is known at once).

`ReviewServer.serve()` blocks (the command); `start()` / `stop()` run it on a thread (tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn
from starlette.applications import Starlette

from eqc_enrich.config import EqcAccess
from eqc_enrich.review._app import create_app
from eqc_enrich.store import IndexStore

__all__ = ["ReviewServer", "is_loopback"]

_START_TIMEOUT_S = 15.0
_BACKLOG = 128


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReviewServer:
    """The page on `host:port` (port 0: any free one); `url` carries the session token."""

    def __init__(
        self,
        store: IndexStore,
        access: EqcAccess,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        scope_keys: frozenset[str] | None = None,
        scope_label: str = "",
        os_user: str | None = None,
    ) -> None:
        self.host = host
        self.token = secrets.token_urlsafe(32)
        self._sock = self._bind(host, port)
        self.port = int(self._sock.getsockname()[1])
        shown = f"[{host}]" if ":" in host else host
        hosts = {f"{shown}:{self.port}"}
        if is_loopback(host):
            hosts |= {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.app: Starlette = create_app(
            store, access, session_token=self.token, allowed_hosts=sorted(hosts), scope_keys=scope_keys,
            scope_label=scope_label, os_user=os_user,
        )  # fmt: skip
        self.base_url = f"http://{shown}:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        )  # no access log: the first request's URL carries the session token
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """What the person opens: the session token travels once, in the query."""
        return f"{self.base_url}/?token={self.token}"

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            # Listening from here on: the command prints the URL (and opens a browser) before uvicorn runs,
            # and a connection made in between waits in the backlog instead of being refused (it was, on a
            # busy machine).
            sock.listen(_BACKLOG)
        except OSError:
            sock.close()
            raise
        return sock

    def serve(self) -> None:
        """Serve until interrupted (Ctrl-C)."""
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        try:
            await self._server.serve(sockets=[self._sock])
        finally:
            await self.app.state.review.searcher.aclose()

    def start(self) -> Self:
        thread = threading.Thread(target=self.serve, name="eqc-review", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                raise RuntimeError(f"the review page did not start on {self.base_url}")
            time.sleep(0.01)
        self._thread = thread
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
