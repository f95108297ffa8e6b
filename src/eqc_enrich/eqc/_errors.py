"""What can go wrong talking to EQC, split by what the caller should do about it."""

from __future__ import annotations

from eqc_enrich._errors import EqcEnrichError


class EqcError(EqcEnrichError):
    """Base of every failure of an EQC call."""

    endpoint: str

    def __init__(self, message: str, *, endpoint: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint


class TokenExpiredError(EqcError):
    """The token is invalid or expired (HTTP 401, or HTTP 200 with `{"error": "TokenExpired"}`): refresh it.

    `expired` is True only when EQC said "expired" in so many words; a bare 401 may as well mean "invalid".
    """

    def __init__(self, message: str, *, endpoint: str = "", expired: bool = False) -> None:
        super().__init__(message, endpoint=endpoint)
        self.expired = expired


class ForbiddenError(EqcError):
    """HTTP 403: the token may not use this endpoint; retrying the same request does not help."""


class RateLimitedError(EqcError):
    """HTTP 429: wait. `retry_after_s` is the server's hint in seconds, or None when it gave none."""

    def __init__(self, message: str, *, endpoint: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message, endpoint=endpoint)
        self.retry_after_s = retry_after_s


class NotFoundError(EqcError):
    """HTTP 404: the resource does not exist; an answer, never worth a retry."""


class TransientError(EqcError):
    """5xx, timeout or connection failure: the same request may well succeed later."""


class UnreachableError(TransientError):
    """No answer from EQC at all (connection refused, DNS, TLS, timeout): many in a row mean EQC is down."""


class CertificateError(UnreachableError):
    """EQC's TLS certificate is not trusted: waiting will not fix it, a CA bundle or the URL will."""


class ProxyAuthError(UnreachableError):
    """The proxy on the way to EQC refused the proxy credentials (407): waiting will not fix it, the
    credentials will. `proxy` is its `host:port`."""

    def __init__(self, message: str, *, endpoint: str = "", proxy: str = "") -> None:
        super().__init__(message, endpoint=endpoint)
        self.proxy = proxy


class InvalidRequestError(EqcError):
    """The request cannot be sent as asked (e.g. a URL the HTTP library refuses): retrying cannot help."""


class BadResponseError(EqcError):
    """The body is not JSON or not the documented shape."""
