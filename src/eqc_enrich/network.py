"""The way to EQC from where the user is: which proxies, in which order, and which certificates to trust.

Routes, in order of precedence: a fixed proxy (`--proxy` / `WDH_EQC_PROXY`); the PAC file (`--pac-url`, or
`WDH_INTRANET=true` with `WDH_PAC_URL`), fetched directly with a short timeout and evaluated for EQC's
base URL; `HTTPS_PROXY` / `NO_PROXY` from the environment; else direct. A PAC answer such as
`PROXY a:8080; PROXY b:8080; DIRECT` becomes three routes tried in that order.

The PAC file is JavaScript: it runs in pypac's evaluator (`pypac.parser.PACFile`: the PAC helper
functions `shExpMatch`, `dnsDomainIs`, `isInNet`, `myIpAddress`, ... in Python, the script itself in an
embedded JavaScript engine, dukpy), the library WorkDataHub's own intranet session uses, so a PAC file
is read here as it is there; and pypac's own parser turns the answer into proxy URLs.

Trust: the operating system's certificate store (through `truststore`, so a corporate root CA installed
on the machine just works) plus the CA bundle that ships with httpx (certifi), plus `--ca-bundle`.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import certifi
import httpx
import truststore

from eqc_enrich._errors import ConfigError, EqcEnrichError
from eqc_enrich.eqc import proxy_label

__all__ = ["PAC_TIMEOUT_S", "Route", "RouteError", "env_proxy", "fetch_pac", "pac_routes", "trust_context"]

PAC_TIMEOUT_S: Final = 10.0
_PAC_MAX_BYTES: Final = 1_000_000  # a PAC file is a few kilobytes; more is not a PAC file
_PAC_KEEP_S: Final = 60.0  # one fetch serves the commands of one start (the log's route and the run)
_pac_cache: dict[str, tuple[float, str]] = {}
_pac_lock = threading.Lock()


class RouteError(EqcEnrichError):
    """No route to EQC can be worked out (the PAC file cannot be fetched or run): EQC is out of reach."""


@dataclass(frozen=True, slots=True)
class Route:
    """The proxies to try in order (`None` = direct) and where that choice came from."""

    proxies: tuple[str | None, ...]
    source: str  # "direct", "--proxy / WDH_EQC_PROXY", "PAC <url>", "HTTPS_PROXY"

    def describe(self) -> str:
        """For the log and the notices: `proxy 10.0.0.1:8080, then DIRECT (from PAC http://...)`; never a
        password (a proxy URL's credentials are left out)."""
        steps = ", then ".join("DIRECT" if proxy is None else f"proxy {proxy_label(proxy)}" for proxy in self.proxies)
        return steps if self.source == "direct" else f"{steps} (from {self.source})"

    @property
    def direct(self) -> bool:
        return self.proxies == (None,)


def trust_context(ca_bundle: str | Path | None = None) -> ssl.SSLContext:
    """Verify against the OS store, the bundled CAs, and `ca_bundle` (a PEM file) when given."""
    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=certifi.where())
    if ca_bundle is not None:
        path = Path(ca_bundle)
        try:
            context.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            reason = "no certificate in it" if isinstance(exc, ssl.SSLError) else (exc.strerror or str(exc))
            raise ConfigError(f"--ca-bundle / WDH_EQC_CA_BUNDLE {path}: cannot be read ({reason})") from exc
    return context


def env_proxy(url: str) -> str | None:
    """The proxy `HTTPS_PROXY` / `HTTP_PROXY` name for `url`, unless `NO_PROXY` exempts its host."""
    target = httpx.URL(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(target.scheme) or proxies.get("all")
    if not proxy or _bypass(target.host, proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _bypass(host: str, proxies: dict[str, str]) -> bool:
    """NO_PROXY as the standard library reads it (the function is public but not in the type stubs)."""
    bypass: Callable[[str, dict[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bool(bypass(host, proxies))


def fetch_pac(pac_url: str, *, verify: ssl.SSLContext | bool = True, timeout_s: float = PAC_TIMEOUT_S) -> str:
    """The PAC file's text, fetched directly (never through a proxy: it is what chooses the proxy)."""
    now = time.monotonic()
    with _pac_lock:
        kept = _pac_cache.get(pac_url)
        if kept is not None and now - kept[0] < _PAC_KEEP_S:
            return kept[1]
    where = f"the PAC file {pac_url} (WDH_PAC_URL / --pac-url)"
    try:
        with (
            httpx.Client(timeout=timeout_s, verify=verify, trust_env=False, follow_redirects=True) as client,
            client.stream("GET", pac_url) as response,
        ):
            if response.status_code != 200:
                raise RouteError(f"{where} could not be fetched: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _PAC_MAX_BYTES:
                    raise RouteError(f"{where} is over {_PAC_MAX_BYTES:,} bytes: not a PAC file")
    except httpx.HTTPError as exc:
        raise RouteError(f"{where} could not be fetched: {_reason(exc)}") from exc
    except ValueError as exc:  # a URL httpx cannot use at all
        raise RouteError(f"{where} is not a URL that can be fetched: {exc}") from exc
    text = body.decode("utf-8", errors="replace")
    with _pac_lock:
        _pac_cache[pac_url] = (now, text)
    return text


def pac_routes(pac_text: str, url: str, *, pac_url: str) -> tuple[str | None, ...]:
    """Run `FindProxyForURL(url, host)` and return its entries as routes, in order (`None` = DIRECT)."""
    from pypac.parser import MalformedPacError, PACFile, parse_pac_value  # JavaScript engine: only when needed

    where = f"the PAC file {pac_url}"
    try:
        answer = PACFile(pac_text).find_proxy_for_url(url, httpx.URL(url).host)
    except MalformedPacError as exc:
        raise RouteError(f"{where} cannot be run: {_first_line(exc)}") from exc
    except Exception as exc:  # the script's own error, as the JavaScript engine raises it
        raise RouteError(f"{where} failed for {url}: {type(exc).__name__}: {_first_line(exc)}") from exc
    if not isinstance(answer, str) or not answer.strip():
        raise RouteError(f"{where} gave no answer for {url} (FindProxyForURL returned {answer!r})")
    routes: list[str | None] = []
    for entry in parse_pac_value(answer):
        if entry == "DIRECT":
            routes.append(None)
        elif entry.startswith(("http://", "https://")):
            routes.append(entry)
        # SOCKS entries are passed over: the proxies this is for speak HTTP
    if not routes:
        raise RouteError(f"{where} answered {answer!r} for {url}: no PROXY or DIRECT entry to use")
    return tuple(routes)


def _reason(exc: httpx.HTTPError) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
