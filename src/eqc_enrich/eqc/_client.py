"""An async client for the four EQC endpoints. It neither paces nor retries: the run owns both."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import httpx

from eqc_enrich.eqc._errors import (
    BadResponseError,
    CertificateError,
    EqcError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    ProxyAuthError,
    RateLimitedError,
    TokenExpiredError,
    TransientError,
    UnreachableError,
)
from eqc_enrich.eqc._models import (
    BusinessInfo,
    LabelSet,
    SearchResult,
    parse_business_info,
    parse_labels,
    parse_search,
)
from eqc_enrich.eqc._retry_after import parse_retry_after
from eqc_enrich.eqc._routes import FallOver, FallOverTransport, ProxyAuthRefused

DEFAULT_BASE_URL: Final = "https://eqc.pingan.com"
DEFAULT_TIMEOUT_S: Final = 30.0
SEARCH: Final = "search"
FIND_DEPART: Final = "findDepart"
FIND_LABELS: Final = "findLabels"
SEARCH_ALL: Final = "searchAll"

_PATHS: Final = {
    SEARCH: "/kg-api-hfd/api/search/",
    FIND_DEPART: "/kg-api-hfd/api/search/findDepart",
    FIND_LABELS: "/kg-api-hfd/api/search/findLabels",
    SEARCH_ALL: "/kg-api-hfd/api/search/searchAll",
}
CERTIFICATE_FIXES: Final = (
    "trust its issuing CA: install it in the operating system's certificate store, or name its PEM file with "
    "--ca-bundle FILE (WDH_EQC_CA_BUNDLE)"
)
_USER_AGENT: Final = "eqc-enrich/0.1 (+company-id enrichment)"
_WRITTEN_EVENTS: Final = frozenset({"http11.send_request_headers.complete", "http2.send_request_headers.complete"})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished attempt, for whoever keeps statistics: where the time went and how it ended.

    `network_s` runs from the call to the answer; `queued_s` is the part of it before the request was written
    to its connection (the client's own work and its wait for a connection), 0.0 when the transport does not
    say when it wrote (a test's stand-in transport)."""

    endpoint: str
    status: int | None
    network_s: float
    parse_s: float
    outcome: str  # "ok" or the name of the error class
    queued_s: float = 0.0

    @property
    def answer_s(self) -> float:
        """From the request leaving this process to its answer: EQC's latency, without this process's queue."""
        return max(0.0, self.network_s - self.queued_s)


CallObserver = Callable[[CallRecord], None]


class EqcClient:
    """Speaks EQC: `token` header, GET with query parameters, typed answers, typed errors.

    Usable as `async with EqcClient(token) as eqc: await eqc.search("...")`. The client knows nothing of
    the tool's settings (so it can be used on its own): `eqc_enrich.settings.eqc_client()` builds one from
    the `WDH_EQC_*` settings. `set_token` swaps the token for requests not yet sent, so a refresh needs no
    new client (and no new connection pool).

    The route: `proxies` lists proxy URLs to try in order (`None` = direct; e.g. what a PAC file answered),
    with `proxy_auth` as Basic proxy credentials for those whose URL carries none (`proxy_auth_hint` says
    where they come from when a proxy refuses them); without `proxies` the
    client goes direct or through `HTTPS_PROXY`/`NO_PROXY` from the environment. `verify` is the TLS trust
    (an `ssl.SSLContext`, or False to turn verification off); `transport` replaces all of it (tests).
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = 64,
        max_idle_connections: int = 16,
        verify: ssl.SSLContext | bool = True,
        observer: CallObserver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        proxies: Sequence[str | None] | None = None,
        proxy_auth: tuple[str, str] | None = None,
        on_fallover: FallOver | None = None,
        proxy_auth_hint: str = "",
    ) -> None:
        self._token = token
        self._observer = observer
        # per task: the monotonic time this task's current request was written, and its last finished call
        self._written: ContextVar[float | None] = ContextVar("eqc_written", default=None)
        self._last: ContextVar[CallRecord | None] = ContextVar("eqc_last_call", default=None)
        # httpcore walks every pooled connection (and asks each idle one's socket whether it was closed)
        # for every request, so idle connections kept from a burst slow each request after it; the quota
        # needs about rate x latency in flight, a dozen at the story's conditions at any time scale
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_idle_connections)
        if transport is None and proxies is not None:
            transport = FallOverTransport(
                proxies, verify=verify, proxy_auth=proxy_auth, limits=limits, on_fallover=on_fallover,
                auth_hint=proxy_auth_hint,
            )  # fmt: skip
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout),
            limits=limits,
            headers={
                "Referer": "https://eqc.pingan.com/",
                "Accept": "application/json",
                "User-Agent": _USER_AGENT,
            },
            verify=verify,
            trust_env=True,  # HTTPS_PROXY / NO_PROXY from the environment, as users configure them today
            transport=transport,
        )

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    @property
    def token(self) -> str | None:
        """The token requests are sent with now (the caller's own secret: never log it)."""
        return self._token

    def set_token(self, token: str) -> None:
        self._token = token

    async def search(self, name: str) -> SearchResult:
        return await self._call(SEARCH, {"key": name}, lambda body: parse_search(name, body))

    async def find_depart(self, company_id: str) -> BusinessInfo | None:
        return await self._call(FIND_DEPART, {"targetId": company_id}, parse_business_info)

    async def find_labels(self, company_id: str) -> LabelSet:
        return await self._call(FIND_LABELS, {"targetId": company_id}, lambda body: parse_labels(company_id, body))

    async def check_token(self) -> bool:
        """True when the token works, False when EQC calls it expired or invalid; other failures raise.

        Only the status (and an expired-token body) matters here, so an answer that is not JSON still
        says the token works.
        """
        params = {"keyword": "test", "currentPage": "1", "pageSize": "1"}
        try:
            await self._call(SEARCH_ALL, params, lambda body: None, json_required=False)
        except TokenExpiredError:
            return False
        return True

    def last_call(self) -> CallRecord | None:
        """The record of the last call the current task finished (each worker task makes one call at a time)."""
        return self._last.get()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _call(
        self,
        endpoint: str,
        params: dict[str, str],
        parse: Callable[[Any], _T],
        *,
        json_required: bool = True,
    ) -> _T:
        """One attempt: send, check the status, decode, parse; the observer hears how it ended, once."""
        if not self._token:
            raise TokenExpiredError("no EQC token: set WDH_EQC_TOKEN", endpoint=endpoint)
        started = time.perf_counter()
        self._written.set(None)
        try:
            response = await self._http.get(
                _PATHS[endpoint], params=params, headers={"token": self._token}, extensions={"trace": self._trace}
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = transport_error(endpoint, exc)
            self._record(endpoint, None, started, time.perf_counter(), type(error).__name__)
            raise error from None  # not chained: the request (and its token header) stays out of tracebacks
        received = time.perf_counter()
        outcome = "ok"
        try:
            body = _decode(endpoint, response, json_required=json_required)
            try:
                return parse(body)
            except (ValueError, TypeError, AttributeError) as exc:
                message = f"EQC {endpoint} answer has an unexpected shape: {exc}"
                raise BadResponseError(message, endpoint=endpoint) from exc
        except EqcError as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._record(endpoint, response.status_code, started, received, outcome)

    async def _trace(self, event: str, _info: object) -> None:
        """httpcore's trace hook: notes when the request was written, the moment it left for EQC."""
        if event in _WRITTEN_EVENTS:
            self._written.set(time.perf_counter())

    def _record(self, endpoint: str, status: int | None, started: float, received: float, outcome: str) -> None:
        written = self._written.get()
        queued = written - started if written is not None and started <= written <= received else 0.0
        parse_s = time.perf_counter() - received if status is not None else 0.0
        record = CallRecord(endpoint, status, received - started, parse_s, outcome, queued_s=queued)
        self._last.set(record)
        if self._observer is not None:
            self._observer(record)


def transport_error(endpoint: str, exc: Exception) -> EqcError:
    """The typed error for a request that got no HTTP answer; says what failed without quoting the request."""
    if isinstance(exc, ProxyAuthRefused):
        return ProxyAuthError(f"EQC {endpoint}: {exc}", endpoint=endpoint, proxy=exc.proxy)
    if isinstance(exc, httpx.TimeoutException):
        return UnreachableError(f"EQC {endpoint} timed out ({type(exc).__name__})", endpoint=endpoint)
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return InvalidRequestError(f"EQC {endpoint}: request cannot be sent ({type(exc).__name__})", endpoint=endpoint)
    if _is_certificate_failure(exc):
        reason = getattr(_root_cause(exc), "verify_message", None) or "certificate verify failed"
        return CertificateError(
            f"EQC {endpoint}: TLS certificate not trusted ({reason}); {CERTIFICATE_FIXES}",
            endpoint=endpoint,
        )
    if isinstance(exc, httpx.ConnectError | httpx.NetworkError):
        return UnreachableError(f"EQC {endpoint} connection failed: {_connect_reason(exc)}", endpoint=endpoint)
    return TransientError(f"EQC {endpoint} connection failed: {type(exc).__name__}", endpoint=endpoint)


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return seen


def _is_certificate_failure(exc: BaseException) -> bool:
    cause = _root_cause(exc)
    return isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _connect_reason(exc: BaseException) -> str:
    """`connection refused`, `name not resolved`... from the OS error under httpx's, else the class name."""
    cause = _root_cause(exc)
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return "host name not resolved"
    if isinstance(cause, ssl.SSLError):
        return f"TLS failure ({cause.reason or type(cause).__name__})"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return type(exc).__name__


def _decode(endpoint: str, response: httpx.Response, *, json_required: bool = True) -> Any:
    """Status code and body to a JSON value, or the error that says what the caller should do."""
    status = response.status_code
    if status == 401:
        raise TokenExpiredError(f"EQC {endpoint}: token invalid or expired (HTTP 401)", endpoint=endpoint)
    if status == 403:
        raise ForbiddenError(f"EQC {endpoint}: forbidden (HTTP 403)", endpoint=endpoint)
    if status == 404:
        raise NotFoundError(f"EQC {endpoint}: not found (HTTP 404)", endpoint=endpoint)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise RateLimitedError(f"EQC {endpoint}: rate limited (HTTP 429)", endpoint=endpoint, retry_after_s=retry_after)
    if status >= 500:
        raise TransientError(f"EQC {endpoint}: server error (HTTP {status})", endpoint=endpoint)
    if status != 200:
        raise BadResponseError(f"EQC {endpoint}: unexpected HTTP {status}", endpoint=endpoint)
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        if not json_required:
            return None
        raise BadResponseError(f"EQC {endpoint}: answer is not JSON", endpoint=endpoint) from exc
    if isinstance(body, dict) and body.get("error") == "TokenExpired":
        raise TokenExpiredError(f"EQC {endpoint}: token expired", endpoint=endpoint, expired=True)
    return body
