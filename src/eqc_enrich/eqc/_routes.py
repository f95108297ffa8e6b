"""Sending through a list of proxies in order, as a PAC file answers `PROXY a; PROXY b; DIRECT`.

`FallOverTransport` tries the routes in their order and moves on when a proxy cannot be connected to (the
proxy, not EQC behind it: refused, unresolvable, timed out); a route that failed so is passed over for a
while, so every later request does not wait for the same dead proxy first. Anything else that happens on
a route (EQC's answer, a TLS failure, a proxy's refusal) is that request's outcome. A proxy that asks for
credentials (407) raises `ProxyAuthRefused`: a wrong password does not get better by retrying.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Final

import httpx

__all__ = ["FallOverTransport", "ProxyAuthRefused", "proxy_label"]

_PASS_OVER_S: Final = 300.0  # how long a proxy that could not be connected to is passed over
FallOver = Callable[[str, str], None]
"""Hears `(route that failed, route tried next)`, each as `proxy_label` shows it."""


class ProxyAuthRefused(httpx.ProxyError):
    """The proxy answered 407 Proxy Authentication Required: missing or wrong proxy credentials."""

    def __init__(self, proxy: str, hint: str = "") -> None:
        super().__init__(f"proxy {proxy} refused the proxy credentials (HTTP 407)" + (f"; {hint}" if hint else ""))
        self.proxy = proxy


def proxy_label(proxy: str | None) -> str:
    """`host:port` of a proxy URL (never its credentials), or `DIRECT`."""
    if proxy is None:
        return "DIRECT"
    url = httpx.URL(proxy)
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


class FallOverTransport(httpx.AsyncBaseTransport):
    """Routes in order (`None` = direct), each an httpx transport with the same TLS settings and limits."""

    def __init__(
        self,
        proxies: Sequence[str | None],
        *,
        verify: ssl.SSLContext | bool = True,
        proxy_auth: tuple[str, str] | None = None,
        limits: httpx.Limits | None = None,
        on_fallover: FallOver | None = None,
        auth_hint: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not proxies:
            raise ValueError("at least one route (a proxy URL, or None for direct)")
        self._routes = list(proxies)
        self._transports = [self._transport(proxy, verify, proxy_auth, limits) for proxy in self._routes]
        self._passed_over: dict[int, float] = {}  # route index -> until when
        self._on_fallover = on_fallover or (lambda failed, following: None)
        self._clock = clock
        self._auth_hint = auth_hint  # where the credentials come from, for the 407 message

    @staticmethod
    def _transport(
        proxy: str | None, verify: ssl.SSLContext | bool, auth: tuple[str, str] | None, limits: httpx.Limits | None
    ) -> httpx.AsyncHTTPTransport:
        chosen = None
        if proxy is not None:
            url = httpx.URL(proxy)
            has_own = bool(url.username or url.password)
            chosen = httpx.Proxy(proxy, auth=None if has_own else auth)
        return httpx.AsyncHTTPTransport(
            verify=verify, proxy=chosen, limits=limits or httpx.Limits(), trust_env=False, retries=0
        )

    @property
    def routes(self) -> list[str]:
        return [proxy_label(proxy) for proxy in self._routes]

    def _order(self) -> list[int]:
        """Routes not passed over first, in their order; then the passed-over ones (better than nothing)."""
        now = self._clock()
        fresh = [i for i in range(len(self._routes)) if self._passed_over.get(i, 0.0) <= now]
        return fresh + [i for i in range(len(self._routes)) if i not in fresh]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        order = self._order()
        for position, index in enumerate(order):
            proxy = self._routes[index]
            last = position == len(order) - 1
            try:
                response = await self._transports[index].handle_async_request(request)
            except httpx.ProxyError as exc:
                if str(exc).startswith("407"):
                    raise ProxyAuthRefused(proxy_label(proxy), self._auth_hint) from exc
                raise
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if proxy is None or last or not _could_not_reach_proxy(exc):
                    raise
                self._passed_over[index] = self._clock() + _PASS_OVER_S
                self._on_fallover(proxy_label(proxy), proxy_label(self._routes[order[position + 1]]))
                continue
            if proxy is not None and response.status_code == 407:  # a plain-HTTP request through the proxy
                await response.aclose()
                raise ProxyAuthRefused(proxy_label(proxy), self._auth_hint)
            return response
        raise AssertionError("unreachable: the last route returns or raises")  # pragma: no cover

    async def aclose(self) -> None:
        for transport in self._transports:
            await transport.aclose()


def _could_not_reach_proxy(exc: Exception) -> bool:
    """A connect failure to the proxy itself (refused, unresolvable, timed out), not a TLS failure to EQC
    through it: only the first is a reason to try the next route."""
    if isinstance(exc, httpx.ConnectTimeout):
        return True
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return False
        if isinstance(seen, ConnectionRefusedError | socket.gaierror | TimeoutError | ConnectionResetError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" not in str(exc) and "certificate" not in str(exc).lower()
