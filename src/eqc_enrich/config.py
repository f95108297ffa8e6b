"""How to reach EQC and share its quota: one value, resolved once, used by every job that talks to EQC.

A run, `plan`, the standing worker, the review page, the benchmark against a real endpoint and the Dagster
resource all take an `EqcOptions` (what the caller said; `None` means "from the WDH_* settings") and turn
it into an `EqcAccess` with `resolve_access`, the one place where "the option, else the setting, else the
default" is decided for these knobs. `StageConfig` adds what the EQC stage itself needs on top (details,
concurrency, the outage and index-wait policies), built by `stage_config` for runs and workers alike.
"""

from __future__ import annotations

import shlex
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eqc_enrich._durations import RateLimit, check_rate_window
from eqc_enrich._policies import ConfidencePolicy, IndexWaitPolicy, OutagePolicy
from eqc_enrich.eqc import DEFAULT_BASE_URL, CallObserver, EqcClient, FallOver
from eqc_enrich.network import Route, env_proxy, fetch_pac, pac_routes, trust_context
from eqc_enrich.settings import Settings, checked_token, env_file_path

__all__ = [
    "DEFAULT_CLAIM_LEASE_S",
    "MIN_COMMIT_INTERVAL_S",
    "PROXY_AUTH_SETTINGS",
    "EqcAccess",
    "EqcOptions",
    "StageConfig",
    "resolve_access",
    "stage_config",
]

DEFAULT_CLAIM_LEASE_S = 60.0
PROXY_AUTH_SETTINGS = "PA_UM_ACCOUNT / PA_UM_PASSWORD (or WDH_PA_UM_ACCOUNT / WDH_PA_UM_PASSWORD)"


@dataclass(frozen=True)
class EqcOptions:
    """How to reach EQC and share its quota, as the caller gave it; `None` means "from the WDH_* settings".

    - `url`: EQC's base URL [`WDH_EQC_BASE_URL`].
    - `token` / `token_command`: the token, or a command that prints a fresh one [`WDH_EQC_TOKEN`,
      `WDH_EQC_TOKEN_COMMAND`]; never shown in a repr, a log or a summary.
    - `rate_limit`: the quota, never more than N requests in any window [`WDH_EQC_RATE_LIMIT(_WINDOW)`].
    - `quota_key`: the account whose quota every process on the index shares [`WDH_EQC_QUOTA_KEY`, else
      the URL].
    - `timeout_s`, `retries`: per request [`WDH_EQC_TIMEOUT`, `WDH_EQC_RETRY_MAX`].
    - `claim_lease_s`: how long a claim on a name outlives a process that died (default 60 s).
    - `proxy`: a fixed proxy URL [`WDH_EQC_PROXY`]; `pac_url`: choose the proxy by this PAC file [with
      `WDH_INTRANET=true`, `WDH_PAC_URL`]; else `HTTPS_PROXY`/`NO_PROXY`, else direct. Proxy credentials
      come from `PA_UM_ACCOUNT`/`PA_UM_PASSWORD` only (never an option: they would show in `ps`).
    - `ca_bundle`: a PEM file of CAs to trust besides the system's and the bundled ones
      [`WDH_EQC_CA_BUNDLE`]. Verification is turned off only by the setting `WDH_EQC_VERIFY=false`.
    - `token_wait_s`: with no token command, how long to wait for a new token in the env file (a login)
      when the token is missing or rejected [`WDH_EQC_TOKEN_WAIT`, 10 min].
    """

    url: str | None = None
    token: str | None = field(default=None, repr=False)
    token_command: str | None = field(default=None, repr=False)
    rate_limit: RateLimit | None = None
    quota_key: str | None = None
    timeout_s: float | None = None
    retries: int | None = None
    claim_lease_s: float | None = None
    proxy: str | None = field(default=None, repr=False)  # its URL may carry a password
    pac_url: str | None = None
    ca_bundle: str | None = None
    token_wait_s: float | None = None

    def public(self) -> dict[str, Any]:
        """As a journal or a log records them: the token, the token command and any password left out."""
        return {
            "eqc_url": self.url,
            "rate_limit": str(self.rate_limit) if self.rate_limit is not None else None,
            "quota_key": self.quota_key,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "claim_lease_s": self.claim_lease_s,
            "proxy": _without_password(self.proxy),
            "pac_url": self.pac_url,
            "ca_bundle": self.ca_bundle,
            "token_wait_s": self.token_wait_s,
        }


@dataclass(frozen=True, slots=True)
class EqcAccess:
    """Where EQC is, with which token, at which rate, on whose quota: every value decided."""

    url: str
    token: str | None
    token_command: str | None
    rate_limit: RateLimit
    quota_key: str
    timeout_s: float
    retries: int
    claim_lease_s: float
    proxy: str | None = None  # a fixed proxy
    pac_url: str | None = None  # the PAC file that chooses the proxy (None: no PAC)
    proxy_user: str | None = None
    proxy_password: str | None = None
    ca_bundle: str | None = None
    verify: bool = True
    token_wait_s: float = 0.0
    env_file: Path = field(default_factory=env_file_path)  # where a login saves the token
    _routes: dict[str, Route] = field(default_factory=dict, compare=False)  # the route, once worked out

    def __repr__(self) -> str:  # the token, the token command and the password never reach a log
        return f"EqcAccess(url={self.url!r}, rate_limit={self.rate_limit}, quota_key={self.quota_key!r})"

    def route(self) -> Route:
        """The proxies to EQC in order, worked out once (a PAC file is fetched and run here): `RouteError`
        when that cannot be done."""
        if "eqc" not in self._routes:
            self._routes["eqc"] = self._find_route()
        return self._routes["eqc"]

    def _find_route(self) -> Route:
        if self.proxy:
            return Route((self.proxy,), "--proxy / WDH_EQC_PROXY")
        if self.pac_url:
            text = fetch_pac(self.pac_url, verify=self.tls())
            return Route(pac_routes(text, self.url, pac_url=self.pac_url), f"PAC {self.pac_url}")
        from_env = env_proxy(self.url)
        if from_env:
            return Route((from_env,), "HTTPS_PROXY")
        return Route((None,), "direct")

    def tls(self) -> ssl.SSLContext | bool:
        """What a TLS connection to EQC trusts (False only when `WDH_EQC_VERIFY=false` turned it off)."""
        return trust_context(self.ca_bundle) if self.verify else False

    def login_command(self) -> str:
        """The command a person runs to log in and save a token where this access looks for one."""
        words = ["eqc-enrich", "token", "login", "--env-file", str(self.env_file)]
        if self.url.rstrip("/") != DEFAULT_BASE_URL:
            words += ["--eqc-url", self.url]
        return shlex.join(words)

    @property
    def proxy_auth(self) -> tuple[str, str] | None:
        return (self.proxy_user, self.proxy_password or "") if self.proxy_user else None

    @property
    def can_ask(self) -> bool:
        """Whether there is a way to a token (given, or a command that prints one)."""
        return bool(self.token or self.token_command)

    @property
    def slot_s(self) -> float:
        """One quota slot: the even spacing of sends at the limit."""
        return self.rate_limit.window_s / self.rate_limit.requests

    def client(self, *, observer: CallObserver | None = None, on_fallover: FallOver | None = None) -> EqcClient:
        """An EQC client on this access and its route; `observer(CallRecord)` hears every finished attempt,
        `on_fallover(failed, next)` each proxy that could not be connected to. Raises `RouteError` when
        the route cannot be worked out (a PAC file out of reach)."""
        return EqcClient(
            self.token, base_url=self.url, timeout=self.timeout_s, observer=observer, verify=self.tls(),
            proxies=self.route().proxies, proxy_auth=self.proxy_auth, on_fallover=on_fallover,
            proxy_auth_hint=f"the proxy's user and password come from {PROXY_AUTH_SETTINGS}",
        )  # fmt: skip

    def public(self) -> dict[str, Any]:
        """What the log's start event shows; the route itself is `route().describe()`, which may fetch."""
        return {
            "eqc_url": self.url,
            "rate_limit": str(self.rate_limit),
            "quota_key": self.quota_key,
            "tls": "verified" if self.verify else "NOT verified (WDH_EQC_VERIFY=false)",
            **({"ca_bundle": self.ca_bundle} if self.ca_bundle else {}),
            **({"proxy_user": self.proxy_user} if self.proxy_user else {}),
        }


def resolve_access(options: EqcOptions | None, settings: Settings) -> EqcAccess:
    """The option, else the WDH_* setting (environment, then `.wdh_env`), else the default."""
    given = options or EqcOptions()
    url = given.url or settings.eqc_base_url
    rate_limit = given.rate_limit or settings.rate_limit
    check_rate_window(rate_limit.window_s)  # a window too short to pace by, however it was given
    ca_bundle = given.ca_bundle or settings.eqc_ca_bundle
    if ca_bundle and settings.eqc_verify:
        trust_context(ca_bundle)  # a bundle that cannot be read is a bad setting, said before anything runs
    return EqcAccess(
        url=url,
        token=checked_token(given.token, source="token") if given.token is not None else settings.token_value(),
        token_command=given.token_command or settings.eqc_token_command,
        rate_limit=rate_limit,
        quota_key=given.quota_key or settings.eqc_quota_key or url,
        timeout_s=given.timeout_s if given.timeout_s is not None else settings.eqc_timeout,
        retries=given.retries if given.retries is not None else settings.eqc_retry_max,
        claim_lease_s=given.claim_lease_s if given.claim_lease_s is not None else DEFAULT_CLAIM_LEASE_S,
        proxy=given.proxy or settings.eqc_proxy,
        pac_url=given.pac_url or (settings.pac_url if settings.intranet else None),
        proxy_user=settings.pa_um_account or None,
        proxy_password=settings.proxy_password(),
        ca_bundle=ca_bundle,
        verify=settings.eqc_verify,
        token_wait_s=given.token_wait_s if given.token_wait_s is not None else settings.eqc_token_wait,
    )


MIN_COMMIT_INTERVAL_S = 0.025


def _without_password(url: str | None) -> str | None:
    if not url or "@" not in url:
        return url
    scheme, _, rest = url.rpartition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[1]}" if scheme else rest.rsplit("@", 1)[1]


@dataclass(frozen=True, slots=True)
class StageConfig:
    """What the EQC stage runs on: the access, and how this job asks (for a run and the worker alike)."""

    access: EqcAccess
    details: bool = False
    concurrency: int | None = None  # a cap on requests in flight; None lets the gate adapt to latency
    margin_s: float | None = None  # the limiter's margin against the window; None: its default
    grace_s: float = 5.0  # how long requests in flight may finish after a stop
    commit_interval_s: float = 0.5
    outage: OutagePolicy = field(default_factory=OutagePolicy)
    index_wait: IndexWaitPolicy = field(default_factory=IndexWaitPolicy)
    confidence: ConfidencePolicy = field(default_factory=ConfidencePolicy)

    @property
    def calls_per_name(self) -> int:
        """search, and findDepart and findLabels when details are wanted."""
        return 3 if self.details else 1


def stage_config(
    access: EqcAccess,
    *,
    details: bool = False,
    concurrency: int | None = None,
    margin_s: float | None = None,
    grace_s: float = 5.0,
    commit_interval_s: float = 0.5,
    eqc_down_wait_s: float | None = None,
    index_wait_s: float | None = None,
    confidence: ConfidencePolicy | None = None,
) -> StageConfig:
    """The stage's policies, scaled to the quota so they hold at the story's speed and in a benchmark."""
    slot = access.slot_s
    outage = OutagePolicy() if eqc_down_wait_s is None else OutagePolicy(wait_s=eqc_down_wait_s)
    # A commit that has not returned within a few quota slots counts as stuck: at the story's speed that is
    # 2 s, in a 1000x benchmark 0.25 s (a busy database server can take that for a commit), so a lock stops
    # the sending after a handful of requests at any scale.
    stall = min(2.0, max(0.25, 3 * slot))
    index_wait = IndexWaitPolicy(
        wait_s=IndexWaitPolicy().wait_s if index_wait_s is None else index_wait_s, stall_s=stall
    )
    return StageConfig(
        access=access,
        details=details,
        concurrency=concurrency,
        margin_s=margin_s,
        grace_s=grace_s,
        # at least one commit per quota slot, so a SIGKILL repeats at most the requests in flight; but no more
        # often than every 25 ms unless asked: at 1000x a commit per 6 ms slot cost the process more than its
        # requests did (a time-scaled benchmark only: at the story's speed a slot is 6 s)
        commit_interval_s=max(0.001, min(commit_interval_s, max(slot, MIN_COMMIT_INTERVAL_S))),
        outage=outage,
        index_wait=index_wait,
        confidence=confidence or ConfidencePolicy(),
    )
