"""Settings users already have: `WDH_*` names from the environment or a `.wdh_env` file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eqc_enrich._durations import RateLimit, check_rate_window, parse_rate_limit
from eqc_enrich._errors import ConfigError
from eqc_enrich.eqc import DEFAULT_BASE_URL, DEFAULT_TIMEOUT_S, EqcClient

__all__ = [
    "Settings",
    "env_file_path",
    "eqc_client",
    "load_settings",
]


class Settings(BaseSettings):
    """Every knob the old production client read, under the names people have in their `.wdh_env`."""

    # hide_input_in_errors: a rejected token must not come back inside the error that rejects it
    model_config = SettingsConfigDict(
        env_prefix="WDH_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    eqc_token: SecretStr | None = None
    eqc_token_command: str | None = None
    eqc_base_url: str = DEFAULT_BASE_URL
    eqc_timeout: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    eqc_retry_max: int = Field(default=3, ge=0)
    eqc_rate_limit: int | str = 10  # requests per window, or the whole limit as `--rate-limit` takes it: 10/60s
    eqc_rate_limit_window: float = 60.0
    alias_salt: SecretStr = SecretStr("")
    eqc_quota_key: str | None = None  # several EQC accounts behind one URL: name each account's shared quota
    mappings_dir: Path | None = None  # WorkDataHub's mappings folder (its company_id/ overrides), when no --overrides

    @field_validator("eqc_token", mode="before")
    @classmethod
    def _token_form(cls, value: object) -> object:
        """Whitespace around the token (a newline pasted with it) is dropped; inside it, it is refused."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            return value
        problem = token_problem(raw)
        if problem is not None:
            raise ValueError(problem)
        return raw.strip() or None

    @field_validator("eqc_rate_limit_window")
    @classmethod
    def _window_range(cls, value: float) -> float:
        try:
            check_rate_window(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("eqc_rate_limit", mode="before")
    @classmethod
    def _rate_limit_form(cls, value: object) -> int | str:
        """A whole number of requests (the old form), or N/DURATION like the command-line option."""
        text = str(value).strip()
        if re.fullmatch(r"[0-9]+", text):
            if int(text) < 1:
                raise ValueError(f"must be at least 1 request, got {text}")
            return int(text)
        try:
            parse_rate_limit(text)
        except ConfigError as exc:
            if str(exc).startswith("rate limit window"):  # well formed, too short or too long: say which bound
                raise ValueError(f"{exc} (e.g. 10/60s)") from exc
            raise ValueError(
                f"not a rate limit: {text!r} (use a number of requests, e.g. 10, or N/DURATION, e.g. 10/60s)"
            ) from exc
        return text

    @model_validator(mode="after")
    def _one_window(self) -> Self:
        """`10/60s` carries its own window; a different WDH_EQC_RATE_LIMIT_WINDOW beside it is a contradiction."""
        if isinstance(self.eqc_rate_limit, str) and "eqc_rate_limit_window" in self.model_fields_set:
            window = parse_rate_limit(self.eqc_rate_limit).window_s
            if window != self.eqc_rate_limit_window:
                raise ValueError(
                    f"WDH_EQC_RATE_LIMIT {self.eqc_rate_limit} and WDH_EQC_RATE_LIMIT_WINDOW "
                    f"{self.eqc_rate_limit_window:g} disagree about the window: drop one of them"
                )
        return self

    @property
    def rate_limit(self) -> RateLimit:
        if isinstance(self.eqc_rate_limit, str):
            return parse_rate_limit(self.eqc_rate_limit)
        return RateLimit(self.eqc_rate_limit, self.eqc_rate_limit_window)

    def token_value(self) -> str | None:
        return self.eqc_token.get_secret_value() if self.eqc_token else None


_TOKEN_FORM = re.compile(r"[\x21-\x7e]*")  # printable ASCII, no space: what a `token` header can carry as it is


def token_problem(token: str) -> str | None:
    """What is wrong with a token once the whitespace around it is stripped, in words that never show it."""
    inner = token.strip()
    if _TOKEN_FORM.fullmatch(inner):
        return None
    odd = next(char for char in inner if not _TOKEN_FORM.fullmatch(char))
    if odd in "\r\n":
        what = "a line break"
    elif odd.isspace():
        what = "whitespace"
    elif not odd.isprintable():
        what = "a control character"
    else:
        what = "a non-ASCII character"
    return f"the EQC token has {what} inside it: a token is printable ASCII without spaces; copy it again"


def checked_token(token: str | None, *, source: str) -> str | None:
    """A token as given (an option, a command's output), stripped; `ConfigError` naming `source` if it is
    malformed. An empty token is no token."""
    if token is None:
        return None
    problem = token_problem(token)
    if problem is not None:
        raise ConfigError(f"{source}: {problem}")
    return token.strip() or None


def env_file_path() -> Path:
    return Path(os.environ.get("WDH_ENV_FILE", ".wdh_env"))


def load_settings(env_file: Path | None = None) -> Settings:
    """Environment first, then the `.wdh_env` file (path from `WDH_ENV_FILE`); bad values are one-line errors."""
    path = env_file or env_file_path()
    try:
        return Settings(_env_file=path if path.is_file() else None)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        # not chained: a ValidationError repeats the values given, the token and the salt among them
        if not first["loc"]:  # a check across settings: its message names them
            raise ConfigError(message) from None
        raise ConfigError(f"WDH_{str(first['loc'][0]).upper()}: {message}") from None


def eqc_client(settings: Settings | None = None, **options: Any) -> EqcClient:
    """An EQC client from the `WDH_EQC_*` settings (token, base URL, timeout); `options` go to `EqcClient`."""
    settings = settings or load_settings()
    return EqcClient(settings.token_value(), base_url=settings.eqc_base_url, timeout=settings.eqc_timeout, **options)
