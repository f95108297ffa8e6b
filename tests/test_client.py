"""The real `EqcClient` against real servers on loopback: the EQC simulator and a scripted HTTP server.

Every endpoint, every error class, the observer, token swapping, and that the token never leaks into an
error message. Nothing is mocked: each test opens real sockets.
"""

from __future__ import annotations

import asyncio
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest

from eqc_enrich._durations import RateLimit
from eqc_enrich.eqc import (
    EXACT_MATCH,
    FIND_DEPART,
    FIND_LABELS,
    FUZZY_MATCH,
    SEARCH,
    SEARCH_ALL,
    BadResponseError,
    BusinessInfo,
    CallRecord,
    EqcClient,
    EqcError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    SearchResult,
    TokenExpiredError,
    TransientError,
    UnreachableError,
)
from eqc_enrich.settings import eqc_client
from eqc_enrich.simulator import Company, Simulator
from eqc_enrich.simulator._universe import INDUSTRIES

if TYPE_CHECKING:
    from tests.conftest import ScriptedServer

SimFactory = Callable[..., Simulator]
_T = TypeVar("_T")

TOKEN = "test-token"
UNKNOWN_NAME = "子虚乌有（不存在）科技有限公司"
PATHS = {
    SEARCH: "/kg-api-hfd/api/search/",
    FIND_DEPART: "/kg-api-hfd/api/search/findDepart",
    FIND_LABELS: "/kg-api-hfd/api/search/findLabels",
    SEARCH_ALL: "/kg-api-hfd/api/search/searchAll",
}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client honours proxy variables (trust_env); loopback tests must not be routed through one."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# --- helpers ------------------------------------------------------------------------------------------------


def call(
    url: str,
    action: Callable[[EqcClient], Awaitable[_T]],
    *,
    token: str = TOKEN,
    timeout: float = 5.0,
    observer: Callable[[CallRecord], None] | None = None,
) -> _T:
    """Open a client on `url`, run one action on it, close it (each asyncio.run has its own loop)."""

    async def main() -> _T:
        async with EqcClient(token, base_url=url, timeout=timeout, observer=observer) as eqc:
            return await action(eqc)

    return asyncio.run(main())


def all_endpoints() -> list[tuple[str, Callable[[EqcClient], Awaitable[object]]]]:
    return [
        (SEARCH, lambda eqc: eqc.search("示例科技有限公司")),
        (FIND_DEPART, lambda eqc: eqc.find_depart("1000000001")),
        (FIND_LABELS, lambda eqc: eqc.find_labels("1000000001")),
        (SEARCH_ALL, lambda eqc: eqc.check_token()),
    ]


def searcher(name: str) -> Callable[[EqcClient], Awaitable[SearchResult]]:
    return lambda eqc: eqc.search(name)


def assert_token_hidden(exc: BaseException, token: str) -> None:
    """The token appears nowhere a user or a log could see it: message, repr, formatted traceback."""
    assert token not in str(exc)
    assert token not in repr(exc)
    assert token not in "".join(traceback.format_exception(exc))


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def companies(sim: Simulator) -> list[Company]:
    return sim.state.universe.companies


def renamed_company(sim: Simulator, count: int = 1) -> Company:
    return next(c for c in companies(sim)[:5000] if len(c.former_names) == count)


class Recorder:
    """An observer that keeps every CallRecord."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def __call__(self, record: CallRecord) -> None:
        self.records.append(record)


# --- search -------------------------------------------------------------------------------------------------


def test_search_exact_full_name(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    company = companies(sim)[0]
    result = call(sim.url, lambda eqc: eqc.search(company.name))
    best = result.best
    assert best is not None
    assert best.company_id == company.company_id
    assert best.full_name == company.name
    assert best.match_type == EXACT_MATCH
    assert best.confidence == 1.0
    assert best.unite_code == company.unite_code
    assert best.former_names == company.former_names
    assert result.key == company.name
    assert result.total == len(result.hits) == len(result.raw["list"])
    assert best.raw == result.raw["list"][0]  # the raw item is kept as it came
    assert best.raw["companyFullName"] == company.name
    assert all(isinstance(hit.company_id, str) for hit in result.hits)
    assert all(hit.match_type == FUZZY_MATCH and hit.confidence == 0.8 for hit in result.hits[1:])


def test_search_fuzzy_by_stem(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    company = companies(sim)[1]
    result = call(sim.url, lambda eqc: eqc.search(company.stem))
    assert result.best is not None
    assert result.best.company_id == company.company_id
    assert result.best.full_name == company.name
    assert result.best.match_type == FUZZY_MATCH
    assert result.best.confidence == 0.8


def test_search_by_former_name_and_former_names_parsed(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    once, twice = renamed_company(sim, 1), renamed_company(sim, 2)
    for company in (once, twice):
        former = company.former_names[-1]
        result = call(sim.url, searcher(former))
        assert result.best is not None
        assert result.best.company_id == company.company_id
        assert result.best.full_name == company.name
        assert result.best.match_type == FUZZY_MATCH
        assert result.best.confidence == 0.8
        assert result.best.former_names == company.former_names
        assert result.best.raw["company_former_name"] == ",".join(company.former_names)
    assert len(twice.former_names) == 2


def test_search_unknown_name_has_no_best(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    result = call(sim.url, lambda eqc: eqc.search(UNKNOWN_NAME))
    assert result.best is None
    assert result.hits == ()
    assert result.total == 0
    assert result.raw == {"list": [], "total": 0}


def test_company_id_sent_as_number_comes_back_as_string(sim_factory: SimFactory) -> None:
    sim = sim_factory()

    async def find_numeric() -> tuple[Company, Any, str] | None:
        async with EqcClient(TOKEN, base_url=sim.url, timeout=5.0) as eqc:
            for company in companies(sim)[:60]:  # ~30 % are numbers: 60 tries miss with p ~ 0.7**60
                result = await eqc.search(company.name)
                assert result.best is not None
                if isinstance(result.best.raw["companyId"], int):
                    return company, result.best.raw["companyId"], result.best.company_id
        return None

    found = asyncio.run(find_numeric())
    assert found is not None, "no company with a numeric companyId among the first 60"
    company, raw_id, company_id = found
    assert isinstance(company_id, str)
    assert company_id == company.company_id == str(raw_id)
    # the id as returned works for the detail endpoints
    info = call(sim.url, lambda eqc: eqc.find_depart(company_id))
    assert info is not None
    assert info.company_id == company_id


@pytest.mark.parametrize(("share", "json_type"), [(1.0, int), (0.0, str)])
def test_company_id_share_all_numbers_or_all_strings(
    sim_factory: SimFactory, share: float, json_type: type[object]
) -> None:
    sim = sim_factory(number_id_share=share)
    for company in companies(sim)[:5]:
        result = call(sim.url, searcher(company.name))
        assert result.best is not None
        assert type(result.best.raw["companyId"]) is json_type
        assert result.best.company_id == company.company_id


# --- findDepart, findLabels, check_token --------------------------------------------------------------------


def test_find_depart_business_info(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    company = renamed_company(sim, 2)
    info = call(sim.url, lambda eqc: eqc.find_depart(company.company_id))
    assert isinstance(info, BusinessInfo)
    assert info.company_id == company.company_id
    assert info.company_name == company.name
    assert info.credit_code == company.unite_code
    assert info.registered_status == company.registered_status
    assert info.former_names == company.former_names
    dto = info.raw["businessInfodto"]
    assert dto["registerCaptial"].endswith("万元")
    assert dto["legal_person_name"] == company.le_rep


def test_find_depart_unknown_id_is_none(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    assert call(sim.url, lambda eqc: eqc.find_depart("999")) is None


def test_find_labels(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    company = companies(sim)[2]
    label_set = call(sim.url, lambda eqc: eqc.find_labels(company.company_id))
    assert label_set.company_id == company.company_id
    assert label_set.labels
    # every label arrives with companyId null: it belongs to the company asked for
    assert all(entry["companyId"] is None for group in label_set.raw["labels"] for entry in group["labels"])
    assert {label.company_id for label in label_set.labels} == {company.company_id}
    by_category = {label.category: label for label in label_set.labels}
    assert set(by_category) == {"行业分类", "企业性质"}
    assert by_category["行业分类"].levels == INDUSTRIES[company.industry]  # null levels are dropped
    assert by_category["企业性质"].levels in (("国有企业",), ("民营企业",))


def test_find_labels_unknown_id_is_empty(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    label_set = call(sim.url, lambda eqc: eqc.find_labels("999"))
    assert label_set.labels == ()
    assert label_set.company_id == "999"


def test_check_token_true_and_false(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    assert call(sim.url, lambda eqc: eqc.check_token()) is True
    assert call(sim.url, lambda eqc: eqc.check_token(), token="nobody-knows-me") is False
    sim.expire_tokens()
    assert call(sim.url, lambda eqc: eqc.check_token()) is False
    assert sim.stats()["requests"]["searchAll"] == 3


def test_settings_fill_in_missing_arguments(
    sim_factory: SimFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    sim = sim_factory()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WDH_ENV_FILE", str(tmp_path / "absent.env"))
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    monkeypatch.setenv("WDH_EQC_BASE_URL", sim.url + "/")
    monkeypatch.setenv("WDH_EQC_TIMEOUT", "3")

    async def main() -> bool:
        async with eqc_client() as eqc:
            assert eqc.has_token
            assert eqc.base_url.rstrip("/") == sim.url
            return await eqc.check_token()

    assert asyncio.run(main()) is True


# --- token errors -------------------------------------------------------------------------------------------


def test_expired_token_via_admin_endpoint_both_forms(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    company = companies(sim)[0]
    recorder = Recorder()

    async def main() -> list[EqcError]:
        errors: list[EqcError] = []
        async with EqcClient(TOKEN, base_url=sim.url, timeout=5.0, observer=recorder) as eqc:
            assert (await eqc.search(company.name)).best is not None
            async with httpx.AsyncClient(base_url=sim.url) as admin:
                response = await admin.post("/__expire")
                assert response.json() == {"expired": 1}
            for action in (eqc.search(company.name), eqc.find_depart(company.company_id)):
                with pytest.raises(TokenExpiredError) as info:
                    await action
                errors.append(info.value)
            with pytest.raises(TokenExpiredError):
                await eqc.find_labels(company.company_id)
            assert await eqc.check_token() is False
        return errors

    search_error, depart_error = asyncio.run(main())
    assert search_error.endpoint == SEARCH
    assert "expired" in str(search_error)
    assert depart_error.endpoint == FIND_DEPART
    assert "401" in str(depart_error)
    for error in (search_error, depart_error):
        assert_token_hidden(error, TOKEN)
    # search says so in a 200 body; the other endpoints answer 401
    assert [(r.endpoint, r.status, r.outcome) for r in recorder.records] == [
        (SEARCH, 200, "ok"),
        (SEARCH, 200, "TokenExpiredError"),
        (FIND_DEPART, 401, "TokenExpiredError"),
        (FIND_LABELS, 401, "TokenExpiredError"),
        (SEARCH_ALL, 401, "TokenExpiredError"),
    ]


def test_token_max_age_expires_a_busy_token(sim_factory: SimFactory) -> None:
    """A token in constant use still dies `max_age` after it was issued (the idle TTL never runs out here).

    Timed on the test's own clock, with margins that are the lifetime itself: a request whose answer came
    back before `issued_before + max_age` must have been accepted; one sent after `issued_after + max_age`
    must meet the expiry. A busy machine only moves requests later, never across these lines the wrong way.
    """
    max_age = 1.0
    sim = sim_factory(token_max_age=max_age, token_ttl=3_600.0)
    company = companies(sim)[0]
    calls: list[tuple[float, float, BaseException | None]] = []  # (sent, answered, the error if refused)
    token = ""

    async def main() -> tuple[float, float]:
        nonlocal token
        async with EqcClient("warm-up", base_url=sim.url, timeout=5.0) as eqc:
            with pytest.raises(TokenExpiredError):
                await eqc.search(company.name)  # opens the connection: the token's clock is not spent on it
            issued_before = time.monotonic()
            token = sim.issue_token()
            eqc.set_token(token)
            issued_after = time.monotonic()
            while time.monotonic() < issued_after + 3 * max_age:  # bounded: three lifetimes
                sent = time.monotonic()
                try:
                    assert (await eqc.search(company.name)).best is not None
                    error: BaseException | None = None
                except TokenExpiredError as exc:
                    error = exc
                calls.append((sent, time.monotonic(), error))
                if error is not None and sent > issued_after + max_age:
                    break
                await asyncio.sleep(max_age / 20)
            return issued_before, issued_after

    issued_before, issued_after = asyncio.run(main())
    for sent, answered, error in calls:
        if answered < issued_before + max_age:
            assert error is None, "a request answered within the token's lifetime was refused"
        if sent > issued_after + max_age:
            assert isinstance(error, TokenExpiredError), "a request after the token's lifetime was accepted"
    late = [error for sent, _, error in calls if sent > issued_after + max_age]
    assert late, "no request was sent after the token's lifetime"
    assert any(error is None for _, _, error in calls)
    assert isinstance(late[-1], TokenExpiredError)
    assert late[-1].endpoint == SEARCH
    assert_token_hidden(late[-1], token)
    assert sim.stats()["token_expired"] >= 1


def test_unknown_token_is_401(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    token = "unknown-token-0123456789abcdef"
    for endpoint, action in all_endpoints()[:3]:
        with pytest.raises(TokenExpiredError) as info:
            call(sim.url, action, token=token)
        assert info.value.endpoint == endpoint
        assert "401" in str(info.value)
        assert_token_hidden(info.value, token)
    assert sim.stats()["unauthorized"] == 3


def test_no_token_fails_before_sending(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    recorder = Recorder()
    with pytest.raises(TokenExpiredError, match="WDH_EQC_TOKEN"):
        call(sim.url, lambda eqc: eqc.search("x"), token="", observer=recorder)
    assert sum(sim.stats()["requests"].values()) == 0
    assert recorder.records == []


# --- rate limits --------------------------------------------------------------------------------------------


def test_rate_limited_whole_seconds_when_not_scaled(sim_factory: SimFactory) -> None:
    sim = sim_factory(rate_limit=RateLimit(1, 0.5))  # time_scale 1: Retry-After in whole seconds
    company = companies(sim)[0]

    async def main() -> RateLimitedError:
        async with EqcClient(TOKEN, base_url=sim.url, timeout=5.0) as eqc:
            await eqc.search(company.name)
            with pytest.raises(RateLimitedError) as info:
                await eqc.search(company.name)
            return info.value

    error = asyncio.run(main())
    assert error.retry_after_s == 1.0
    assert error.endpoint == SEARCH
    assert "429" in str(error)
    assert_token_hidden(error, TOKEN)


@pytest.mark.serial  # its figures follow wall-clock timing that a busy neighbour skews
def test_rate_limited_decimal_retry_after_then_accepted(sim_factory: SimFactory) -> None:
    # 1 request per 5 s of service time, time scale 10: a 0.5 s window and a decimal Retry-After
    sim = sim_factory(rate_limit=RateLimit(1, 5.0), time_scale=10.0)
    company = companies(sim)[0]
    recorder = Recorder()

    async def main() -> tuple[RateLimitedError, str | None]:
        async with EqcClient(TOKEN, base_url=sim.url, timeout=5.0, observer=recorder) as eqc:
            await eqc.search(company.name)
            with pytest.raises(RateLimitedError) as info:
                await eqc.find_depart(company.company_id)
            async with httpx.AsyncClient(base_url=sim.url) as raw:
                response = await raw.get(PATHS[SEARCH], params={"key": "x"}, headers={"token": TOKEN})
                assert response.status_code == 429
                header = response.headers.get("Retry-After")
            wait = info.value.retry_after_s
            assert wait is not None
            await asyncio.sleep(wait + 0.05)
            assert await eqc.find_depart(company.company_id) is not None
            return info.value, header

    error, header = asyncio.run(main())
    assert header is not None
    assert "." in header  # decimal: whole seconds would be far too coarse at this scale
    assert error.retry_after_s is not None
    assert 0 < error.retry_after_s <= 0.5
    assert error.retry_after_s != int(error.retry_after_s)
    assert error.endpoint == FIND_DEPART
    assert [(r.endpoint, r.status, r.outcome) for r in recorder.records] == [
        (SEARCH, 200, "ok"),
        (FIND_DEPART, 429, "RateLimitedError"),
        (FIND_DEPART, 200, "ok"),
    ]


# --- transient failures and broken answers ------------------------------------------------------------------


def test_server_errors_are_transient_on_every_endpoint(sim_factory: SimFactory) -> None:
    sim = sim_factory(fail_rate=1.0)
    recorder = Recorder()
    for endpoint, action in all_endpoints() * 2:
        with pytest.raises(TransientError) as info:
            call(sim.url, action, observer=recorder)
        assert info.value.endpoint == endpoint
        assert "server error" in str(info.value)
        assert_token_hidden(info.value, TOKEN)
    assert len(recorder.records) == 8
    assert all(r.status in (500, 502, 503) and r.outcome == "TransientError" for r in recorder.records)
    assert sim.stats()["faults"]["server_error"] == 8


def test_timeout_is_transient(sim_factory: SimFactory) -> None:
    sim = sim_factory(timeout_rate=1.0)
    recorder = Recorder()
    with pytest.raises(TransientError, match="timed out") as info:
        call(sim.url, lambda eqc: eqc.search("某某公司"), timeout=0.2, observer=recorder)
    assert info.value.endpoint == SEARCH
    assert_token_hidden(info.value, TOKEN)
    (record,) = recorder.records
    assert isinstance(info.value, UnreachableError)
    assert (record.endpoint, record.status, record.outcome) == (SEARCH, None, "UnreachableError")
    assert record.network_s >= 0.15


def test_connection_refused_is_transient() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    recorder = Recorder()
    for endpoint, action in all_endpoints():
        with pytest.raises(TransientError, match="connection failed") as info:
            call(url, action, observer=recorder)
        assert info.value.endpoint == endpoint
        assert_token_hidden(info.value, TOKEN)
    assert [(r.endpoint, r.status, r.outcome) for r in recorder.records] == [
        (endpoint, None, "UnreachableError") for endpoint, _ in all_endpoints()
    ]


def test_malformed_json_is_a_bad_response(sim_factory: SimFactory) -> None:
    sim = sim_factory(malformed_rate=1.0)
    recorder = Recorder()
    for endpoint, action in all_endpoints()[:3]:
        with pytest.raises(BadResponseError, match="not JSON") as info:
            call(sim.url, action, observer=recorder)
        assert info.value.endpoint == endpoint
        assert_token_hidden(info.value, TOKEN)
    assert [(r.status, r.outcome) for r in recorder.records] == [(200, "BadResponseError")] * 3


# --- answers only a scripted server gives -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class", "text"),
    [
        (401, TokenExpiredError, "401"),
        (403, ForbiddenError, "403"),
        (404, NotFoundError, "404"),
        (400, BadResponseError, "400"),
        (405, BadResponseError, "405"),
        (418, BadResponseError, "418"),
        (422, BadResponseError, "422"),
        (302, BadResponseError, "302"),  # redirects are not followed
        (201, BadResponseError, "201"),
        (500, TransientError, "500"),
        (504, TransientError, "504"),
    ],
)
def test_status_codes_map_to_error_classes(
    scripted_server: ScriptedServer, status: int, error_class: type[EqcError], text: str
) -> None:
    scripted_server.respond(status, {"error": "whatever"}, headers={"Location": "/elsewhere"})
    recorder = Recorder()
    for endpoint, action in all_endpoints()[:3]:
        with pytest.raises(error_class, match=text) as info:
            call(scripted_server.url, action, observer=recorder)
        assert type(info.value) is error_class
        assert info.value.endpoint == endpoint
        assert_token_hidden(info.value, TOKEN)
    assert [(r.status, r.outcome) for r in recorder.records] == [(status, error_class.__name__)] * 3
    assert len(scripted_server.requests) == 3  # one attempt each: the client itself never retries


def test_check_token_false_only_for_token_errors(scripted_server: ScriptedServer) -> None:
    scripted_server.respond(401, {"error": "Unauthorized"})
    assert call(scripted_server.url, lambda eqc: eqc.check_token()) is False
    scripted_server.respond(200, {"error": "TokenExpired"})
    assert call(scripted_server.url, lambda eqc: eqc.check_token()) is False
    scripted_server.respond(200, {"list": [], "total": 0})
    assert call(scripted_server.url, lambda eqc: eqc.check_token()) is True
    for status, error_class in ((403, ForbiddenError), (404, NotFoundError), (429, RateLimitedError)):
        scripted_server.respond(status, {})
        with pytest.raises(error_class):
            call(scripted_server.url, lambda eqc: eqc.check_token())
    scripted_server.respond(503, "<html>down</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(TransientError):
        call(scripted_server.url, lambda eqc: eqc.check_token())


def _http_date(offset_s: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=offset_s), usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("2.5", 2.5),
        ("0.042", 0.042),
        ("0", None),
        ("-3", None),
        ("-0.5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),  # an HTTP-date in the past
    ],
)
def test_retry_after_header_forms(scripted_server: ScriptedServer, header: str | None, expected: float | None) -> None:
    headers = {} if header is None else {"Retry-After": header}
    scripted_server.respond(429, {"error": "TooManyRequests"}, headers=headers)
    with pytest.raises(RateLimitedError) as info:
        call(scripted_server.url, lambda eqc: eqc.search("x"))
    assert info.value.retry_after_s == expected
    assert_token_hidden(info.value, TOKEN)


def test_retry_after_http_date_in_the_future(scripted_server: ScriptedServer) -> None:
    scripted_server.respond(429, {}, headers={"Retry-After": _http_date(120)})
    with pytest.raises(RateLimitedError) as info:
        call(scripted_server.url, lambda eqc: eqc.find_labels("1"))
    assert info.value.retry_after_s is not None
    assert 115 <= info.value.retry_after_s <= 121  # whole seconds in the date, a little time on the wire


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (SEARCH, []),
        (SEARCH, {}),
        (SEARCH, {"list": None}),
        (SEARCH, {"list": "1000000001"}),
        (SEARCH, {"list": {"companyId": "1"}}),
        (SEARCH, "null"),
        (SEARCH, '"a string"'),
        (SEARCH, {"error": "Unauthorized"}),
        (FIND_DEPART, []),
        (FIND_DEPART, 42),
        (FIND_DEPART, {"businessInfodto": "not an object"}),
        (FIND_DEPART, {"businessInfodto": [1, 2]}),
        (FIND_LABELS, {"labels": "x"}),
        (FIND_LABELS, {"labels": {"type": "行业分类"}}),
        (FIND_LABELS, {"labels": ["x"]}),
        (FIND_LABELS, {"labels": [{"type": "行业分类", "labels": ["x"]}]}),
        (FIND_LABELS, {"labels": [{"type": "行业分类", "labels": 5}]}),
    ],
)
def test_wrong_shape_is_a_bad_response(scripted_server: ScriptedServer, endpoint: str, body: object) -> None:
    scripted_server.respond(200, body)
    action = dict(all_endpoints())[endpoint]
    with pytest.raises(BadResponseError, match="unexpected shape") as info:
        call(scripted_server.url, action)
    assert info.value.endpoint == endpoint
    assert_token_hidden(info.value, TOKEN)


@pytest.mark.parametrize("body", [[], "null", '"labels"', 7])
def test_find_labels_non_object_body_is_a_bad_response(scripted_server: ScriptedServer, body: object) -> None:
    scripted_server.respond(200, body)
    with pytest.raises(BadResponseError):
        call(scripted_server.url, lambda eqc: eqc.find_labels("1000000001"))


@pytest.mark.parametrize(
    "body", [b"", b"<html><body>502 Bad Gateway</body></html>", b'{"list": [', b"\xff\xfe\x00garbage"]
)
def test_non_json_body_is_a_bad_response(scripted_server: ScriptedServer, body: bytes) -> None:
    scripted_server.respond(200, body)
    for endpoint, action in all_endpoints()[:3]:
        with pytest.raises(BadResponseError, match="not JSON") as info:
            call(scripted_server.url, action)
        assert info.value.endpoint == endpoint


def test_token_expired_body_on_any_endpoint(scripted_server: ScriptedServer) -> None:
    scripted_server.respond(200, {"error": "TokenExpired", "message": "token expired, log in again"})
    for endpoint, action in all_endpoints()[:3]:
        with pytest.raises(TokenExpiredError) as info:
            call(scripted_server.url, action)
        assert info.value.endpoint == endpoint


def test_search_items_parsed_leniently(scripted_server: ScriptedServer) -> None:
    body = {
        "list": [
            {"companyId": None, "companyFullName": "无编号有限公司", "type": EXACT_MATCH},
            {"companyId": "", "companyFullName": "空编号有限公司", "type": EXACT_MATCH},
            {"companyId": "1000000009", "companyFullName": "", "type": EXACT_MATCH},
            {"companyId": "1000000008", "type": EXACT_MATCH},
            "not an item",
            {
                "companyId": 1000000001.0,
                "companyFullName": " 示例科技有限公司 ",
                "type": "拼音",
                "company_former_name": "旧名甲，旧名乙, ,旧名丙",
                "unite_code": "91000000MA00000000",
            },
            {
                "companyId": 1000000002,
                "companyFullName": "示例贸易有限公司",
                "type": "其他",
                "company_former_name": None,
            },
        ]
    }
    scripted_server.respond(200, body)
    result = call(scripted_server.url, lambda eqc: eqc.search("示例"))
    assert [hit.company_id for hit in result.hits] == ["1000000001", "1000000002"]
    first, second = result.hits
    assert result.best is first
    assert first.full_name == "示例科技有限公司"
    assert (first.match_type, first.confidence) == ("拼音", 0.6)
    assert first.former_names == ("旧名甲", "旧名乙", "旧名丙")
    assert first.unite_code == "91000000MA00000000"
    assert (second.match_type, second.confidence, second.former_names) == ("其他", 0.7, ())
    assert result.total == 7  # no `total` key: the length of the list as sent
    assert result.raw == body


def test_find_depart_without_data_is_none(scripted_server: ScriptedServer) -> None:
    bodies: list[dict[str, Any]] = [{}, {"businessInfodto": None}, {"businessInfodto": {}}]
    for body in bodies:
        scripted_server.respond(200, body)
        assert call(scripted_server.url, lambda eqc: eqc.find_depart("1")) is None


def test_find_labels_owner(scripted_server: ScriptedServer) -> None:
    entry = {"lv1Name": "信息技术", "lv2Name": "软件", "lv3Name": None, "lv4Name": None}
    body: dict[str, Any] = {
        "labels": [
            {"type": "行业分类", "labels": [{**entry, "companyId": None}, {**entry, "companyId": 2000000002}]},
            {"type": "空组", "labels": None},
        ]
    }
    scripted_server.respond(200, body)
    label_set = call(scripted_server.url, lambda eqc: eqc.find_labels("1000000001"))
    assert [(lab.category, lab.company_id, lab.levels) for lab in label_set.labels] == [
        ("行业分类", "1000000001", ("信息技术", "软件")),
        ("行业分类", "2000000002", ("信息技术", "软件")),
    ]
    assert label_set.raw == body
    scripted_server.respond(200, {})
    assert call(scripted_server.url, lambda eqc: eqc.find_labels("1")).labels == ()


@pytest.mark.parametrize(("endpoint", "action"), all_endpoints())
def test_request_shape(scripted_server: ScriptedServer, endpoint: str, action: Callable[[EqcClient], Any]) -> None:
    scripted_server.respond(200, {"list": [], "total": 0, "labels": []})
    call(scripted_server.url + "/", action)  # a trailing slash on the base URL is harmless
    (seen,) = scripted_server.requests
    assert seen.method == "GET"
    assert seen.path == PATHS[endpoint]
    assert seen.headers["token"] == TOKEN
    assert "authorization" not in seen.headers
    assert seen.headers["referer"] == "https://eqc.pingan.com/"
    assert seen.headers["accept"] == "application/json"
    assert seen.headers["user-agent"].startswith("eqc-enrich/")
    expected_query = {
        SEARCH: {"key": ["示例科技有限公司"]},
        FIND_DEPART: {"targetId": ["1000000001"]},
        FIND_LABELS: {"targetId": ["1000000001"]},
        SEARCH_ALL: {"keyword": ["test"], "currentPage": ["1"], "pageSize": ["1"]},
    }
    assert seen.query == expected_query[endpoint]


# --- the observer -------------------------------------------------------------------------------------------


def test_observer_gets_one_record_per_attempt(sim_factory: SimFactory) -> None:
    sim = sim_factory(rate_limit=RateLimit(4, 60.0))
    company = companies(sim)[0]
    recorder = Recorder()

    async def main() -> None:
        async with EqcClient(TOKEN, base_url=sim.url, timeout=5.0, observer=recorder) as eqc:
            await eqc.search(company.name)
            await eqc.find_depart(company.company_id)
            await eqc.find_labels(company.company_id)
            await eqc.check_token()
            with pytest.raises(RateLimitedError):
                await eqc.search(company.name)

    asyncio.run(main())
    assert [(r.endpoint, r.status, r.outcome) for r in recorder.records] == [
        (SEARCH, 200, "ok"),
        (FIND_DEPART, 200, "ok"),
        (FIND_LABELS, 200, "ok"),
        (SEARCH_ALL, 200, "ok"),
        (SEARCH, 429, "RateLimitedError"),
    ]
    assert all(r.network_s >= 0 and r.parse_s >= 0 for r in recorder.records)
    assert all(r.network_s < 5 and r.parse_s < 5 for r in recorder.records)


def test_observer_outcome_for_wrong_shape(scripted_server: ScriptedServer) -> None:
    scripted_server.respond(200, {"list": "oops"})
    recorder = Recorder()
    with pytest.raises(BadResponseError):
        call(scripted_server.url, lambda eqc: eqc.search("x"), observer=recorder)
    assert [(r.status, r.outcome) for r in recorder.records] == [(200, "BadResponseError")]


# --- set_token and secrecy ----------------------------------------------------------------------------------


def test_set_token_swaps_the_token_for_later_requests(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    company = companies(sim)[0]

    async def main() -> None:
        async with EqcClient(TOKEN, base_url=sim.url, timeout=5.0) as eqc:
            assert (await eqc.search(company.name)).best is not None
            sim.expire_tokens()
            with pytest.raises(TokenExpiredError):
                await eqc.search(company.name)
            async with httpx.AsyncClient(base_url=sim.url) as admin:
                fresh = (await admin.post("/__token")).json()["token"]
            assert isinstance(fresh, str)
            assert len(fresh) == 32
            eqc.set_token(fresh)
            assert eqc.has_token
            result = await eqc.search(company.name)
            assert result.best is not None
            assert result.best.company_id == company.company_id
            assert await eqc.check_token() is True

    asyncio.run(main())


def test_set_token_header_changes(scripted_server: ScriptedServer) -> None:
    scripted_server.respond(200, {"list": [], "total": 0})

    async def main() -> None:
        async with EqcClient("first-token", base_url=scripted_server.url, timeout=5.0) as eqc:
            await eqc.search("a")
            eqc.set_token("second-token")
            await eqc.search("b")
            await eqc.find_labels("1")

    asyncio.run(main())
    tokens = [seen.headers["token"] for seen in scripted_server.requests]
    assert tokens == ["first-token", "second-token", "second-token"]


SECRET = "s3cr3t-T0KEN-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (401, {"error": "Unauthorized", "token": SECRET}, TokenExpiredError),
        (200, {"error": "TokenExpired", "token": SECRET}, TokenExpiredError),
        (403, {"token": SECRET}, ForbiddenError),
        (404, {"token": SECRET}, NotFoundError),
        (429, {"token": SECRET}, RateLimitedError),
        (418, {"token": SECRET}, BadResponseError),
        (500, {"token": SECRET}, TransientError),
        (200, f"not json {SECRET}", BadResponseError),
        (200, {"list": SECRET, "labels": SECRET, "businessInfodto": SECRET}, BadResponseError),
    ],
)
def test_token_never_in_error_messages(
    scripted_server: ScriptedServer, status: int, body: object, error_class: type[EqcError]
) -> None:
    scripted_server.respond(status, body, headers={"Retry-After": SECRET, "X-Echo-Token": SECRET})
    for _endpoint, action in all_endpoints()[:3]:
        with pytest.raises(error_class) as info:
            call(scripted_server.url, action, token=SECRET)
        assert_token_hidden(info.value, SECRET)


def test_token_never_in_transport_error_messages(sim_factory: SimFactory) -> None:
    sim = sim_factory(tokens=(SECRET,), timeout_rate=1.0)
    errors: list[EqcError] = []
    for url, timeout in ((sim.url, 0.2), (f"http://127.0.0.1:{closed_port()}", 1.0)):
        with pytest.raises(TransientError) as info:
            call(url, lambda eqc: eqc.find_depart("1"), token=SECRET, timeout=timeout)
        errors.append(info.value)
    for error in errors:
        assert_token_hidden(error, SECRET)


# --- when a request leaves ------------------------------------------------------------------------------------


def test_each_call_says_how_long_it_queued_before_it_was_written_and_each_task_sees_its_own(
    sim_factory: SimFactory,
) -> None:
    """The pacing measures how late a request leaves its slot at the moment it is written to its connection
    (httpcore's trace hook): the record's `queued_s` is that part of the call, and `last_call()` is the record
    of the current task's own last call, whatever other tasks did meanwhile."""
    sim = sim_factory()
    recorder = Recorder()

    async def main() -> list[CallRecord | None]:
        async with EqcClient(TOKEN, base_url=sim.url, timeout=5.0, observer=recorder) as eqc:

            async def one(name: str) -> CallRecord | None:
                await eqc.search(name)
                return eqc.last_call()

            assert eqc.last_call() is None  # this task has made no call yet
            return list(await asyncio.gather(*(one(f"示例{i}科技有限公司") for i in range(6))))

    mine = asyncio.run(main())
    assert len(recorder.records) == 6
    assert sorted(map(id, mine)) == sorted(map(id, recorder.records))  # each task got its own record
    for record in recorder.records:
        assert 0.0 < record.queued_s <= record.network_s  # written at some point inside the call
        assert record.answer_s == pytest.approx(record.network_s - record.queued_s)


def test_a_transport_that_does_not_say_when_it_wrote_leaves_queued_at_zero() -> None:
    recorder = Recorder()

    async def main() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"list": []}))
        async with EqcClient(
            TOKEN, base_url="http://eqc.test", timeout=5.0, observer=recorder, transport=transport
        ) as eqc:
            await eqc.search("示例科技有限公司")

    asyncio.run(main())
    (record,) = recorder.records
    assert record.queued_s == 0.0
    assert record.answer_s == record.network_s
