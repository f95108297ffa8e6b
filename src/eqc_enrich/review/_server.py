"""Serving the page: uvicorn on a socket bound before start (so the URL, port included, is known at once).

`ReviewServer.serve()` blocks (the command); `start()` / `stop()` run it on a thread (tests).

The page answers only under the address it prints (its Host header is checked), so it listens on one
address: loopback by default, or one the user names (this machine's LAN address, or a host name of it).
An address that means "every interface" (`0.0.0.0`, `::`) is refused: no URL printed for it would be the
one a person opens.
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

from eqc_enrich._errors import ConfigError
from eqc_enrich.config import EqcAccess
from eqc_enrich.review._app import create_app
from eqc_enrich.store import IndexStore

__all__ = ["ReviewServer", "check_host", "is_loopback"]

_START_TIMEOUT_S = 15.0
_BACKLOG = 128


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str) -> None:
    """Refuse an address the page could not be opened under (a ConfigError, exit 2)."""
    try:
        unspecified = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        unspecified = not host.strip()
    if unspecified:
        raise ConfigError(
            f"--host {host or repr(host)}: the page answers only under the one address it prints, so it listens "
            "on one; give the address people will open (this machine's LAN address or host name), or 127.0.0.1"
        )


class ReviewServer:
    """The page on `host:port` (port 0: any free one) under a path of its own; `url` carries the one-time token."""

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
        check_host(host)
        self.host = host
        self.token = secrets.token_urlsafe(32)
        self.server_id = secrets.token_hex(8)
        self._sock = self._bind(host, port)
        self.port = int(self._sock.getsockname()[1])
        shown = f"[{host}]" if ":" in host else host
        hosts = {f"{shown}:{self.port}"}
        if is_loopback(host):
            hosts |= {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.app: Starlette = create_app(
            store, access, session_token=self.token, allowed_hosts=sorted(hosts), server_id=self.server_id,
            scope_keys=scope_keys, scope_label=scope_label, os_user=os_user,
        )  # fmt: skip
        self.origin = f"http://{shown}:{self.port}"
        self.base_url = f"{self.origin}/{self.server_id}"  # the page's own path, where its cookie lives
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        )  # no access log: the first request's URL carries the session token
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """What the person opens, once: the token travels in the query and is spent on the first visit."""
        return f"{self.base_url}/?token={self.token}"

    @property
    def cookie_name(self) -> str:
        return str(self.app.state.review.cookie_name)

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            check_host(str(sock.getsockname()[0]))  # a name may resolve to "every address" too
            # Listening from here on: the command prints the URL (and opens a browser) before uvicorn runs,
            # and a connection made in between waits in the backlog instead of being refused (it was, on a
            # busy machine).
            sock.listen(_BACKLOG)
        except (OSError, ConfigError):
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
