"""Small parsers with big consequences: `Retry-After`, human durations and rates, and the `WDH_*` settings."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from eqc_enrich._durations import (
    MAX_DURATION_S,
    RateLimit,
    format_duration,
    format_range,
    parse_duration,
    parse_range,
    parse_rate_limit,
)
from eqc_enrich._errors import ConfigError
from eqc_enrich.eqc import DEFAULT_BASE_URL, parse_retry_after
from eqc_enrich.settings import Settings, env_file_path, load_settings

# --- parse_retry_after --------------------------------------------------------------------------------------

NOW = 1_750_000_000.0  # a fixed "now" for HTTP-date tests


def http_date(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(timestamp, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("1", 1.0),
        (" 5 ", 5.0),
        ("0.042", 0.042),
        ("2.5", 2.5),
        ("0.001", 0.001),
    ],
)
def test_retry_after_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value) == expected


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "0", "0.0", "-0", "-1", "-0.5", "soon", "1 second", "12s", "inf", "-inf", "nan", "1e999"],
)
def test_retry_after_absent_zero_negative_or_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None
    assert parse_retry_after(value, now=NOW) is None


def test_retry_after_http_date_in_the_future() -> None:
    assert parse_retry_after(http_date(NOW + 90), now=NOW) == pytest.approx(90.0)
    assert parse_retry_after("Sun, 15 Jun 2025 15:06:40 GMT", now=NOW - 10) == pytest.approx(10.0)
    assert datetime.fromtimestamp(NOW, UTC) == datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC)


def test_retry_after_http_date_now_or_past_is_none() -> None:
    assert parse_retry_after(http_date(NOW), now=NOW) is None
    assert parse_retry_after(http_date(NOW - 1), now=NOW) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) is None


def test_retry_after_http_date_uses_the_clock_by_default() -> None:
    future = datetime.now(UTC).timestamp() + 3600
    seconds = parse_retry_after(http_date(future))
    assert seconds is not None
    assert 3590 <= seconds <= 3600


@pytest.mark.parametrize("value", ["Wed, 32 Foo 2015 07:28:00 GMT", "Mon, 99 99 99", "2025-06-15T15:06:40Z"])
def test_retry_after_broken_date_is_none(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


@given(st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_retry_after_any_positive_number_round_trips(seconds: float) -> None:
    assert parse_retry_after(repr(seconds)) == seconds


# --- parse_duration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("1500ms", 1.5),
        ("30s", 30.0),
        ("0.5s", 0.5),
        ("2m", 120.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("0.5h", 1800.0),
        ("30d", 2_592_000.0),
        ("45", 45.0),
        ("0", 0.0),
        ("0s", 0.0),
        (" 10 s ", 10.0),
        ("7 d", 604_800.0),
        (5, 5.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    result = parse_duration(text)
    assert result == pytest.approx(seconds)
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "text",
    ["", " ", "abc", "s", "ms", "-5s", "-1", "5x", "5 sec", "1h30m", "1,5s", "1.s", ".5s", "5s5", "1e3s", "五秒"],
)
def test_parse_duration_bad_text_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    message = str(info.value)
    assert "\n" not in message
    assert repr(text) in message


@pytest.mark.parametrize("value", [-1, -0.5, -1e-9])
def test_parse_duration_negative_number_is_a_config_error(value: float) -> None:
    with pytest.raises(ConfigError, match="negative"):
        parse_duration(value)


def test_parse_duration_nan_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_duration(math.nan)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d", ""]))
def test_parse_duration_units(count: int, unit: str) -> None:
    factor = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "": 1.0}[unit]
    if count * factor > MAX_DURATION_S:
        with pytest.raises(ConfigError, match="too long"):
            parse_duration(f"{count}{unit}")
    else:
        assert parse_duration(f"{count}{unit}") == pytest.approx(count * factor)


# --- parse_rate_limit and RateLimit -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "requests", "window_s"),
    [
        ("10/60s", 10, 60.0),
        ("10/1m", 10, 60.0),
        ("1/60", 1, 60.0),
        ("5/500ms", 5, 0.5),
        ("100/1h", 100, 3600.0),
        (" 3 / 2s ", 3, 2.0),
        ("1000/1", 1000, 1.0),
    ],
)
def test_parse_rate_limit(text: str, requests: int, window_s: float) -> None:
    limit = parse_rate_limit(text)
    assert limit == RateLimit(requests, window_s)
    assert limit.per_second == pytest.approx(requests / window_s)


@pytest.mark.parametrize(
    "text",
    ["", "10", "10/", "/60s", "x/60s", "10.5/60s", "-1/60s", "0/60s", "10/0s", "10/0", "10/abc", "10/60s/2", "10:60s"],
)
def test_parse_rate_limit_bad_text_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rate_limit(text)
    assert "\n" not in str(info.value)


def test_parse_rate_limit_superscript_digit_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_rate_limit("²/60s")


@pytest.mark.parametrize(("requests", "window_s"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -1.0)])
def test_rate_limit_must_be_positive(requests: int, window_s: float) -> None:
    with pytest.raises(ConfigError):
        RateLimit(requests, window_s)


def test_rate_limit_scaled_str_and_frozen() -> None:
    limit = RateLimit(10, 60.0)
    fast = limit.scaled(1000.0)
    assert fast.requests == 10
    assert fast.window_s == pytest.approx(0.06)
    assert fast.per_second == pytest.approx(1000 * limit.per_second)
    assert limit.scaled(1.0) == limit
    assert limit.scaled(0.5).window_s == 120.0
    assert limit == RateLimit(10, 60.0)  # scaling makes a new one
    assert str(limit) == "10/60s"
    assert parse_rate_limit(str(limit)) == limit  # the display form reads back
    assert str(RateLimit(5, 0.5)) == "5/500ms"
    for short in (RateLimit(5, 0.5), RateLimit(10, 30.0), RateLimit(1, 1.0)):
        assert parse_rate_limit(str(short)) == short
    with pytest.raises(dataclasses.FrozenInstanceError):
        limit.requests = 11  # type: ignore[misc]
    with pytest.raises(ConfigError):
        limit.scaled(-1.0)


# --- parse_range ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20-60s", (20.0, 60.0)),
        ("20s-60s", (20.0, 60.0)),
        ("500ms-2s", (0.5, 2.0)),
        ("1-2m", (60.0, 120.0)),
        ("30s-2m", (30.0, 120.0)),
        ("0-0", (0.0, 0.0)),
        ("20-60", (20.0, 60.0)),
        (" 1s - 3s ", (1.0, 3.0)),
        ("5", (5.0, 5.0)),
        ("30s", (30.0, 30.0)),
        ("250ms", (0.25, 0.25)),
    ],
)
def test_parse_range(text: str, expected: tuple[float, float]) -> None:
    low, high = parse_range(text)
    assert (low, high) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("low", "high", "text"),
    [(0.02, 0.06, "20-60ms"), (20.0, 60.0, "20-60s"), (0.2, 0.6, "200-600ms"), (0.5, 2.0, "0.5-2s"),
     (0.0, 0.0, "0-0ms"), (20 / 7, 60 / 7, "2.85714285714-8.57142857143s")],
)  # fmt: skip
def test_format_range_is_what_parse_range_reads_back(low: float, high: float, text: str) -> None:
    assert format_range(low, high) == text
    assert parse_range(text) == pytest.approx((low, high), rel=1e-11)


@pytest.mark.parametrize("text", ["60-20s", "1m-30s", "2s-500ms"])
def test_parse_range_backwards_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="backwards"):
        parse_range(text)


@pytest.mark.parametrize("text", ["", "a-b", "1-", "-1s", "1--2", "1-2-3", "1s-x", "20~60s"])
def test_parse_range_bad_text_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_range(text)


# --- format_duration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.045, "45ms"),
        (0.5, "500ms"),
        (1.0, "1s"),
        (12.5, "12.5s"),
        (59.0, "59s"),
        (60.0, "1m00s"),
        (200.0, "3m20s"),
        (3599.0, "59m59s"),
        (3600.0, "1h00m"),
        (7500.0, "2h05m"),
        (86_400.0, "24h00m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.0, 0.001, 0.25, 1.0, 1.5, 30.0, 59.0])
def test_format_duration_short_values_parse_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


# --- settings -----------------------------------------------------------------------------------------------

SETTING_NAMES = (
    "WDH_EQC_TOKEN",
    "WDH_EQC_TOKEN_COMMAND",
    "WDH_EQC_BASE_URL",
    "WDH_EQC_TIMEOUT",
    "WDH_EQC_RETRY_MAX",
    "WDH_EQC_RATE_LIMIT",
    "WDH_EQC_RATE_LIMIT_WINDOW",
    "WDH_ALIAS_SALT",
    "WDH_ENV_FILE",
)
TOKEN = "tok-0123456789abcdef0123456789abcdef"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No WDH_* variable from the developer's shell, and a working directory without a `.wdh_env`."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.eqc_token is None
    assert settings.token_value() is None
    assert settings.eqc_base_url == DEFAULT_BASE_URL
    assert settings.eqc_timeout == 30.0
    assert settings.eqc_retry_max == 3
    assert settings.rate_limit == RateLimit(10, 60.0)
    assert settings.alias_salt.get_secret_value() == ""
    assert env_file_path() == Path(".wdh_env")


def test_reads_environment(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    monkeypatch.setenv("WDH_EQC_BASE_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("WDH_EQC_TIMEOUT", "5")
    monkeypatch.setenv("WDH_EQC_RETRY_MAX", "0")
    monkeypatch.setenv("WDH_EQC_RATE_LIMIT", "20")
    monkeypatch.setenv("WDH_EQC_RATE_LIMIT_WINDOW", "30.5")
    monkeypatch.setenv("WDH_ALIAS_SALT", "pepper")
    monkeypatch.setenv("WDH_SOMETHING_UNRELATED", "ignored")
    settings = load_settings()
    assert isinstance(settings.eqc_token, SecretStr)
    assert settings.token_value() == TOKEN
    assert settings.eqc_base_url == "http://127.0.0.1:8080"
    assert settings.eqc_timeout == 5.0
    assert settings.eqc_retry_max == 0
    assert settings.rate_limit == RateLimit(20, 30.5)
    assert settings.alias_salt.get_secret_value() == "pepper"


def test_reads_the_env_file_named_by_wdh_env_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = clean_env / "conf" / "custom.env"
    env_file.parent.mkdir()
    env_file.write_text(
        f"WDH_EQC_TOKEN={TOKEN}\nWDH_EQC_TIMEOUT=7.5\n# a comment\nWDH_EQC_RATE_LIMIT=3\nOTHER_TOOL=1\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("WDH_ENV_FILE", str(env_file))
    assert env_file_path() == env_file
    settings = load_settings()
    assert settings.token_value() == TOKEN
    assert settings.eqc_timeout == 7.5
    assert settings.rate_limit == RateLimit(3, 60.0)
    assert settings.eqc_base_url == DEFAULT_BASE_URL


def test_reads_dot_wdh_env_in_the_working_directory(clean_env: Path) -> None:
    (clean_env / ".wdh_env").write_text("WDH_EQC_RETRY_MAX=9\n", encoding="utf-8")
    assert load_settings().eqc_retry_max == 9


def test_explicit_env_file_argument(clean_env: Path) -> None:
    path = clean_env / "explicit.env"
    path.write_text("WDH_EQC_BASE_URL=http://eqc.example\n", encoding="utf-8")
    assert load_settings(path).eqc_base_url == "http://eqc.example"


def test_environment_wins_over_the_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = clean_env / "custom.env"
    env_file.write_text("WDH_EQC_TIMEOUT=7\nWDH_EQC_RETRY_MAX=5\n", encoding="utf-8")
    monkeypatch.setenv("WDH_ENV_FILE", str(env_file))
    monkeypatch.setenv("WDH_EQC_TIMEOUT", "2")
    settings = load_settings()
    assert settings.eqc_timeout == 2.0
    assert settings.eqc_retry_max == 5


def test_missing_env_file_means_defaults(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WDH_ENV_FILE", str(clean_env / "does-not-exist.env"))
    assert load_settings().eqc_timeout == 30.0
    assert load_settings(clean_env / "nope").eqc_timeout == 30.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WDH_EQC_TIMEOUT", "soon"),
        ("WDH_EQC_TIMEOUT", "0"),
        ("WDH_EQC_TIMEOUT", "-1"),
        ("WDH_EQC_TIMEOUT", "30s"),
        ("WDH_EQC_RETRY_MAX", "-1"),
        ("WDH_EQC_RETRY_MAX", "many"),
        ("WDH_EQC_RATE_LIMIT", "0"),
        ("WDH_EQC_RATE_LIMIT", "ten"),
        ("WDH_EQC_RATE_LIMIT_WINDOW", "0"),
    ],
)
def test_bad_value_is_a_one_line_config_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message
    assert TOKEN not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_bad_value_in_the_file_is_a_config_error(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = clean_env / "custom.env"
    env_file.write_text(f"WDH_EQC_TOKEN={TOKEN}\nWDH_EQC_TIMEOUT=whenever\n", encoding="utf-8")
    monkeypatch.setenv("WDH_ENV_FILE", str(env_file))
    with pytest.raises(ConfigError, match=r"^WDH_EQC_TIMEOUT: ") as info:
        load_settings()
    assert "\n" not in str(info.value)
    assert TOKEN not in str(info.value)


def test_token_is_secret(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    monkeypatch.setenv("WDH_ALIAS_SALT", "pepper-salt-value")
    settings = load_settings()
    assert isinstance(settings.eqc_token, SecretStr)
    for shown in (repr(settings), str(settings), repr(settings.eqc_token), str(settings.eqc_token)):
        assert TOKEN not in shown
        assert "pepper-salt-value" not in shown
    assert TOKEN not in settings.model_dump_json()
    assert settings.token_value() == TOKEN


def test_empty_token_is_no_token(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WDH_EQC_TOKEN", "")
    assert not load_settings().token_value()


def test_settings_constructed_directly(clean_env: Path) -> None:
    settings = Settings(eqc_token=SecretStr(TOKEN), eqc_rate_limit=2, eqc_rate_limit_window=0.5)
    assert settings.token_value() == TOKEN
    assert settings.rate_limit == RateLimit(2, 0.5)


@pytest.mark.parametrize(
    ("limit", "window", "expected"),
    [
        ("10/60s", None, RateLimit(10, 60.0)),
        ("10/60ms", None, RateLimit(10, 0.06)),
        (" 5/2m ", None, RateLimit(5, 120.0)),
        ("10/60s", "60", RateLimit(10, 60.0)),  # a window that agrees is fine
        ("20", "30", RateLimit(20, 30.0)),
        ("20", None, RateLimit(20, 60.0)),
    ],
)
def test_rate_limit_setting_takes_both_forms(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, limit: str, window: str | None, expected: RateLimit
) -> None:
    """The old integer (with WDH_EQC_RATE_LIMIT_WINDOW) or what `--rate-limit` takes."""
    monkeypatch.setenv("WDH_EQC_RATE_LIMIT", limit)
    if window is not None:
        monkeypatch.setenv("WDH_EQC_RATE_LIMIT_WINDOW", window)
    assert load_settings().rate_limit == expected


@pytest.mark.parametrize("limit", ["lots", "10/", "10/soon", "10/0s", "0/60s", "-3", "1.5", "10/60s/2"])
def test_nonsense_rate_limit_setting_is_one_clear_line(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    monkeypatch.setenv("WDH_EQC_RATE_LIMIT", limit)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("WDH_EQC_RATE_LIMIT: ")
    assert "10/60s" in message  # says what a good value looks like
    assert "\n" not in message
    assert "Value error" not in message


def test_rate_limit_and_a_different_window_contradict(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WDH_EQC_RATE_LIMIT", "10/60s")
    monkeypatch.setenv("WDH_EQC_RATE_LIMIT_WINDOW", "30")
    with pytest.raises(ConfigError, match=r"^WDH_EQC_RATE_LIMIT 10/60s and WDH_EQC_RATE_LIMIT_WINDOW 30 disagree"):
        load_settings()
