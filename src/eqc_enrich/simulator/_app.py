"""The simulated EQC service as a starlette app: same paths, auth, limits and answer shapes as the real one.

Every request to a data endpoint goes through the same steps, in the real service's order: token, rate
limit, latency, injected fault, answer. Admin endpoints (`/__token`, `/__expire`, `/__stats`, `/__reset`,
`/__sim/scan`) let tests and benchmarks steer and observe it; they need no token and are not rate
limited. `/` is a login page with QR login (`_login.py`).
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eqc_enrich._durations import RateLimit
from eqc_enrich._errors import ConfigError
from eqc_enrich.simulator._login import LoginDesk, login_routes
from eqc_enrich.simulator._ratelimit import TokenLimits
from eqc_enrich.simulator._universe import EXACT, INDUSTRIES, Company, Universe, build_universe

SEARCH, FIND_DEPART, FIND_LABELS, SEARCH_ALL = "search", "findDepart", "findLabels", "searchAll"
ENDPOINTS = (SEARCH, FIND_DEPART, FIND_LABELS, SEARCH_ALL)
FAULTS = ("server_error", "timeout", "malformed")
_BASE = "/kg-api-hfd/api/search"
DEFAULT_RATE_LIMIT = RateLimit(10, 60.0)  # what users configure for the real service


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulated service behaves.

    Latency and the rate-limit window are real-service seconds, divided by time_scale. A token expires after
    `token_ttl` seconds without use (`simulate --token-idle`) and `token_max_age` after it was issued
    (`simulate --token-ttl`), whichever comes first. Token lifetimes are
    wall-clock seconds: a client paced for the scaled quota still idles like a person between runs, and a
    30 min token that dies after 1.8 s would end every try-out with "token expired". Set
    `scale_token_lifetimes` to divide them too (for tests that want expiry to come quickly).
    """

    seed: int = 7
    universe_size: int = 60_000
    latency: tuple[float, float] = (20.0, 60.0)
    time_scale: float = 1.0
    rate_limit: RateLimit = DEFAULT_RATE_LIMIT
    tokens: tuple[str, ...] = ("sim-token",)
    token_ttl: float = 1800.0
    token_max_age: float | None = None
    scale_token_lifetimes: bool = False
    fail_rate: float = 0.0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    number_id_share: float = 0.3
    hang_s: float = 600.0

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ConfigError(f"time scale must be positive, got {self.time_scale}")
        low, high = self.latency
        if not 0 <= low <= high:
            raise ConfigError(f"latency range must be 0 <= low <= high, got {self.latency}")
        self._check_shares()
        if self.token_ttl <= 0 or (self.token_max_age is not None and self.token_max_age <= 0):
            raise ConfigError("token ttl and max age must be positive")

    def _check_shares(self) -> None:
        faults = (self.fail_rate, self.timeout_rate, self.malformed_rate)
        if any(not 0 <= share <= 1 for share in (*faults, self.number_id_share)):
            raise ConfigError("fail, timeout and malformed rates and number_id_share must lie in [0, 1]")
        if sum(faults) > 1:
            raise ConfigError(f"fault rates add up to more than 1: {sum(faults):g}")

    def scaled(self, seconds: float) -> float:
        """Real-service seconds -> seconds on this simulator's clock."""
        return seconds / self.time_scale

    def token_seconds(self, seconds: float) -> float:
        """A token lifetime in wall-clock seconds: as given, or scaled when asked to."""
        return self.scaled(seconds) if self.scale_token_lifetimes else seconds


# --- tokens -------------------------------------------------------------------------------------------------

OK, UNKNOWN, EXPIRED = "ok", "unknown", "expired"


@dataclass(slots=True)
class _TokenState:
    issued: float
    last_used: float
    expired: bool = False


class TokenStore:
    """Known tokens with their idle timer and age; an expired token stays expired.

    Like all of `SimulatorState`, used from the server's event loop only (the `Simulator` hops onto it).
    """

    def __init__(self, tokens: tuple[str, ...], ttl_s: float, max_age_s: float | None) -> None:
        now = time.monotonic()
        self._ttl, self._max_age = ttl_s, max_age_s
        self._tokens = {token: _TokenState(now, now) for token in tokens}

    def issue(self) -> str:
        """A fresh valid token (32 hex characters, like the real ones)."""
        token, now = secrets.token_hex(16), time.monotonic()
        self._tokens[token] = _TokenState(now, now)
        return token

    def check(self, token: str | None, now: float) -> str:
        """OK (and the idle timer restarts), UNKNOWN or EXPIRED."""
        state = self._tokens.get(token) if token else None
        if state is None:
            return UNKNOWN
        too_old = self._max_age is not None and now - state.issued > self._max_age
        if state.expired or now - state.last_used > self._ttl or too_old:
            state.expired = True
            return EXPIRED
        state.last_used = now
        return OK

    def expire_all(self) -> int:
        for state in self._tokens.values():
            state.expired = True
        return len(self._tokens)


# --- counters -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Stats:
    """What happened since the last reset; read by tests and benchmarks through `/__stats`."""

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    accepted: int = 0
    rate_limited: int = 0
    unauthorized: int = 0
    token_expired: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    search_keys: Counter[str] = field(default_factory=Counter)
    arrivals: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, outcome) of every request
    last_response: float | None = None  # monotonic time the last data request was done with (answer or refusal)

    def enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1
        self.last_response = time.monotonic()

    def snapshot(self, max_in_window: int) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "accepted": self.accepted,
            "rate_limited": self.rate_limited,
            "unauthorized": self.unauthorized,
            "token_expired": self.token_expired,
            "faults": dict(self.faults),
            "max_in_window": max_in_window,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "search_keys_distinct": len(self.search_keys),
            "search_keys_repeated": sum(1 for count in self.search_keys.values() if count > 1),
            # the server's own monotonic clock (seconds, only differences mean anything), so a benchmark in
            # another process can time a run from the first send to the last answer on one clock
            "first_arrival_s": self.arrivals[0][0] if self.arrivals else None,
            "last_arrival_s": self.arrivals[-1][0] if self.arrivals else None,
            "last_response_s": self.last_response,
        }


# --- answers ------------------------------------------------------------------------------------------------

_SECTIONS = {
    "农、林、牧、渔业": "A", "制造业": "C", "电力、热力、燃气及水生产和供应业": "D", "建筑业": "E",
    "批发和零售业": "F", "交通运输、仓储和邮政业": "G", "住宿和餐饮业": "H",
    "信息传输、软件和信息技术服务业": "I", "房地产业": "K", "租赁和商务服务业": "L",
    "科学研究和技术服务业": "M", "水利、环境和公共设施管理业": "N", "文化、体育和娱乐业": "R",
}  # fmt: skip
_COMPANY_TYPES = {
    "股份有限公司": "股份有限公司(非上市、自然人投资或控股)",
    "集团有限公司": "有限责任公司(法人独资)",
}
_DISTRICTS = ("高新区", "经济技术开发区", "新城区", "滨江区", "中山区", "开发区")
_ROADS = ("人民路", "建设路", "解放大道", "中山路", "长江路", "科技大道", "工业园路")


def _shows_number(company_id: str, seed: int, share: float) -> bool:
    """Whether this company's id is sent as a JSON number (stable per company, like the real service)."""
    return zlib.crc32(f"{seed}:{company_id}".encode()) / 2**32 < share


def search_item(company: Company, kind: str, rank: int, *, as_number: bool) -> dict[str, Any]:
    """One item of a search answer; keys as the real service sends them."""
    exact = kind == EXACT
    return {
        "companyId": int(company.company_id) if as_number else company.company_id,
        "companyFullName": company.name,
        "unite_code": company.unite_code,
        "type": kind,
        "_score": round((32.5 if exact else 21.7) - 3.1 * rank, 3),
        "rank_score": round((100.0 if exact else 80.0) - 10.0 * rank, 1),
        "name": company.name,
        "name_display": company.name,
        "province": company.province,
        "le_rep": company.le_rep,
        "reg_cap": company.reg_cap,
        "est_date": company.est_date,
        "registeredStatus": company.registered_status,
        "registered_status": company.registered_status,
        "company_former_name": ",".join(company.former_names),
        "organization_code": company.unite_code[8:17],
        "company_short_name": company.trade_name,
        "country": "中国",
        "is_list": 0,
        "is_normal": 1,
    }


def business_info(company: Company, seed: int) -> dict[str, str]:
    """The findDepart `businessInfodto`: all values strings; the address is stable per company."""
    rng = random.Random(f"{seed}:{company.company_id}")
    lv1, lv2 = INDUSTRIES[company.industry]
    etype = company.name[len(company.stem) :]
    capital = f"{company.reg_cap:.2f}万元"
    return {
        "company_id": company.company_id,
        "company_name": company.name,
        "credit_code": company.unite_code,
        "registered_date": company.est_date,
        "registerCaptial": capital,
        "actualCapi": capital,
        "registered_status": company.registered_status,
        "legal_person_name": company.le_rep,
        "address": f"{company.province}{company.city}市{rng.choice(_DISTRICTS)}{rng.choice(_ROADS)}"
        f"{rng.randint(1, 999)}号",
        "company_type": _COMPANY_TYPES.get(etype, "有限责任公司(自然人投资或控股)"),
        "industry_name": lv2,
        "industryCode": _SECTIONS.get(lv1, "L"),
        "province": company.province,
        "company_former_name": ",".join(company.former_names),
        "organization_code": company.unite_code[8:17],
        "business_scope": f"{company.industry}相关的技术开发、技术咨询、技术服务；企业管理咨询。"
        "（依法须经批准的项目，经相关部门批准后方可开展经营活动）",
        "telephone": f"0{rng.randint(10, 999)}-{rng.randint(10_000_000, 99_999_999)}",
        "website": "",
        "typeCode": "1130",
        "updateTime": "2025-01-15 08:00:00",
    }


def labels(company: Company) -> list[dict[str, Any]]:
    """The findLabels groups; a null companyId means the label is the requested company's own."""
    lv1, lv2 = INDUSTRIES[company.industry]
    nature = "国有企业" if zlib.crc32(company.company_id.encode()) % 5 == 0 else "民营企业"
    return [
        {"type": "行业分类", "labels": [_label(lv1, lv2)]},
        {"type": "企业性质", "labels": [_label(nature, None)]},
    ]


def _label(lv1: str, lv2: str | None) -> dict[str, Any]:
    return {"companyId": None, "lv1Name": lv1, "lv2Name": lv2, "lv3Name": None, "lv4Name": None}


def retry_after(seconds: float, time_scale: float) -> str:
    """`Retry-After` value. RFC 9110 only has whole seconds; a time-scaled simulator sends a decimal with
    millisecond precision (e.g. `0.042`) because whole seconds would be far too coarse there."""
    if time_scale == 1:
        return str(max(1, math.ceil(seconds)))
    return f"{max(0.001, math.ceil(seconds * 1000) / 1000):.3f}"


# --- the app ------------------------------------------------------------------------------------------------

_Answer = Callable[[Request], Response]


class SimulatorState:
    """Everything one simulated service holds; handlers are its methods."""

    def __init__(self, config: SimulatorConfig, universe: Universe | None = None) -> None:
        self.config = config
        self.universe = build_universe(config.seed, config.universe_size) if universe is None else universe
        self.tokens = TokenStore(config.tokens, config.token_seconds(config.token_ttl), self._max_age())
        self.limits = TokenLimits(config.rate_limit.scaled(config.time_scale))
        self.stats = Stats()
        self.login = LoginDesk(self.tokens.issue)
        self.closing = asyncio.Event()
        self._rng = random.Random(config.seed)

    def _max_age(self) -> float | None:
        age = self.config.token_max_age
        return None if age is None else self.config.token_seconds(age)

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot(self.limits.max_in_window)

    def reset_stats(self) -> None:
        """Zero the counters; requests still in flight stay counted."""
        in_flight = self.stats.in_flight
        self.stats = Stats(in_flight=in_flight, max_in_flight=in_flight)
        self.limits.reset_peak()

    # steps of a data request

    async def handle(self, request: Request, endpoint: str, answer: _Answer) -> Response:
        """Token, rate limit, latency, fault, answer: the real service's order."""
        now = time.monotonic()
        self.stats.requests[endpoint] += 1
        self.stats.enter()
        try:
            refused = self._admit(request.headers.get("token"), endpoint, now)
            # what the client sent, accepted or not: tests judge the client's pacing by this, not by what got in
            self.stats.arrivals.append((now, "accepted" if refused is None else str(refused.status_code)))
            if refused is not None:
                return refused
            if await self._pause(request, self._latency()):
                return Response(status_code=503)  # the client left or the server is closing
            return await self._fault(request) or answer(request)
        finally:
            self.stats.leave()

    def _admit(self, token: str | None, endpoint: str, now: float) -> Response | None:
        """None when the request may proceed; else the refusal (401, expired-token body or 429)."""
        status = self.tokens.check(token, now)
        if status == EXPIRED:
            self.stats.token_expired += 1
            if endpoint == SEARCH:
                return JSONResponse({"error": "TokenExpired", "message": "token expired, log in again"})
        if status != OK or token is None:
            self.stats.unauthorized += 1
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        wait = self.limits.try_acquire(token, now)
        if wait is not None:
            self.stats.rate_limited += 1
            headers = {"Retry-After": retry_after(wait, self.config.time_scale)}
            return JSONResponse({"error": "TooManyRequests"}, status_code=429, headers=headers)
        self.stats.accepted += 1
        return None

    def _latency(self) -> float:
        return self.config.scaled(self._rng.uniform(*self.config.latency))

    async def _pause(self, request: Request, seconds: float) -> bool:
        """Wait `seconds`; True when cut short because the client hung up or the server is closing."""
        if seconds <= 0:
            return False
        watchers = [asyncio.create_task(_client_gone(request)), asyncio.create_task(self.closing.wait())]
        try:
            done, _ = await asyncio.wait(watchers, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for watcher in watchers:
                watcher.cancel()
        return bool(done)

    async def _fault(self, request: Request) -> Response | None:
        """An injected 5xx, hang or broken body, by the configured rates; None for a normal answer."""
        config, roll = self.config, self._rng.random()
        if roll < config.fail_rate:
            self.stats.faults["server_error"] += 1
            return _server_error(self._rng.choice((500, 502, 503)))
        if roll < config.fail_rate + config.timeout_rate:
            self.stats.faults["timeout"] += 1
            await self._pause(request, config.scaled(config.hang_s))
            return Response(status_code=504)
        if roll < config.fail_rate + config.timeout_rate + config.malformed_rate:
            self.stats.faults["malformed"] += 1
            return Response('{"list": [{"companyId": "1', media_type="application/json")
        return None

    # answers

    def search(self, request: Request) -> Response:
        key = request.query_params.get("key", "")
        self.stats.search_keys[key] += 1
        items = [
            search_item(company, kind, rank, as_number=self._as_number(company))
            for rank, (company, kind) in enumerate(self.universe.search(key))
        ]
        return JSONResponse({"list": items, "total": len(items)})

    def _as_number(self, company: Company) -> bool:
        return _shows_number(company.company_id, self.config.seed, self.config.number_id_share)

    def find_depart(self, request: Request) -> Response:
        company = self._target(request)
        info = None if company is None else business_info(company, self.config.seed)
        return JSONResponse({"businessInfodto": info})

    def find_labels(self, request: Request) -> Response:
        company = self._target(request)
        return JSONResponse({"labels": [] if company is None else labels(company)})

    def search_all(self, request: Request) -> Response:
        page = request.query_params.get("currentPage", "1")
        return JSONResponse({"list": [], "total": 0, "currentPage": page, "pageSize": 1})

    def _target(self, request: Request) -> Company | None:
        return self.universe.by_id.get(request.query_params.get("targetId", "").strip())


async def _client_gone(request: Request) -> None:
    """Returns once the client has disconnected (the request has no body to read first)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _server_error(status: int) -> Response:
    if status == 500:
        return JSONResponse({"error": "Internal Server Error"}, status_code=500)
    return Response(f"<html><body><h1>{status} Bad Gateway</h1></body></html>", status, media_type="text/html")


def create_app(config: SimulatorConfig, universe: Universe | None = None) -> Starlette:
    """The starlette app; `app.state.simulator` is its `SimulatorState`."""
    state = SimulatorState(config, universe)

    def data(endpoint: str, answer: _Answer) -> Callable[[Request], Any]:
        async def endpoint_handler(request: Request) -> Response:
            return await state.handle(request, endpoint, answer)

        return endpoint_handler

    search = data(SEARCH, state.search)
    routes = [
        Route(f"{_BASE}/", search),
        Route(_BASE, search),
        Route(f"{_BASE}/findDepart", data(FIND_DEPART, state.find_depart)),
        Route(f"{_BASE}/findLabels", data(FIND_LABELS, state.find_labels)),
        Route(f"{_BASE}/searchAll", data(SEARCH_ALL, state.search_all)),
        *_admin_routes(state),
        *login_routes(state.login),
    ]
    app = Starlette(routes=routes)
    app.state.simulator = state
    return app


def _admin_routes(state: SimulatorState) -> list[Route]:
    async def issue(_request: Request) -> Response:
        return JSONResponse({"token": state.tokens.issue()})

    async def expire(_request: Request) -> Response:
        return JSONResponse({"expired": state.tokens.expire_all()})

    async def stats(_request: Request) -> Response:
        return JSONResponse(state.snapshot())

    async def reset(_request: Request) -> Response:
        state.reset_stats()
        return JSONResponse({"reset": True})

    return [
        Route("/__token", issue, methods=["POST"]),
        Route("/__expire", expire, methods=["POST"]),
        Route("/__stats", stats, methods=["GET"]),
        Route("/__reset", reset, methods=["POST"]),
    ]
