"""Settings users already have: `WDH_*` names from the environment or a `.wdh_env` file.

The file is read the way WorkDataHub reads it (python-dotenv, through pydantic-settings): `KEY=value`
lines, an unquoted value cut at whitespace + `#`, so `WDH_EQC_TOKEN=<token> # Updated: <time>` gives the
token alone. `write_env_token` writes that line back in the same format.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eqc_enrich._durations import RateLimit, check_rate_window, parse_duration, parse_rate_limit
from eqc_enrich._errors import ConfigError
from eqc_enrich.eqc import DEFAULT_BASE_URL, DEFAULT_TIMEOUT_S, EqcClient

__all__ = [
    "DEFAULT_PAC_URL",
    "EnvToken",
    "Settings",
    "env_file_path",
    "eqc_client",
    "load_settings",
    "read_env_token",
    "unused_settings",
    "write_env_token",
]

DEFAULT_PAC_URL = "http://proxy.paic.com.cn/proxyformwg.pac"  # WorkDataHub's default for WDH_PAC_URL
DEFAULT_TOKEN_WAIT_S = 600.0
_TOKEN_LINE = re.compile(r"^\s*(export\s+)?WDH_EQC_TOKEN\s*=", re.IGNORECASE)
_UPDATED = re.compile(r"#\s*Updated:\s*(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})")
_OTHER_NAMES = {"WDH_ENV_FILE"}  # read by eqc-enrich, but not a field: where the file is


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

    eqc_token_wait: float = DEFAULT_TOKEN_WAIT_S  # how long a run waits for a login when the token is gone
    # the route to EQC, as the intranet deployment has it
    intranet: bool = False  # the PAC file at pac_url chooses the proxy
    pac_url: str = DEFAULT_PAC_URL
    pa_um_account: str | None = Field(
        default=None, validation_alias=AliasChoices("PA_UM_ACCOUNT", "WDH_PA_UM_ACCOUNT")
    )  # the proxy's user (the un-prefixed name first, as WorkDataHub reads it)
    pa_um_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PA_UM_PASSWORD", "WDH_PA_UM_PASSWORD")
    )
    eqc_proxy: str | None = None  # a fixed proxy for EQC, over the PAC file and HTTPS_PROXY
    eqc_ca_bundle: str | None = None  # more trusted CAs (PEM), besides the system's and the bundled ones
    eqc_verify: bool = True  # False turns TLS verification off: only by this name, with a warning each start

    @field_validator("eqc_token_wait", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        try:
            return parse_duration(value if isinstance(value, int | float) else str(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

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

    def proxy_password(self) -> str | None:
        return self.pa_um_password.get_secret_value() if self.pa_um_password else None


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


def _known_names() -> set[str]:
    """The WDH_* names eqc-enrich reads, upper-case."""
    names = set(_OTHER_NAMES)
    for name, info in Settings.model_fields.items():
        names.add(f"WDH_{name}".upper())
        if isinstance(info.validation_alias, AliasChoices):
            names.update(str(choice).upper() for choice in info.validation_alias.choices)
    return names


def unused_settings(env_file: Path | None = None) -> list[str]:
    """`WDH_*` names set in the environment or the env file that eqc-enrich does not read, sorted: a user's
    setting that does nothing here is named rather than silently ignored."""
    path = env_file or env_file_path()
    seen = {name.upper() for name in os.environ}
    if path.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            seen |= {name.upper() for name in dotenv_values(path)}
    return sorted(name for name in seen if name.startswith("WDH_") and name not in _known_names())


class EnvToken:
    """The token line of an env file: the token and when it was saved (from its `# Updated:` comment)."""

    def __init__(self, token: str | None, updated: datetime | None) -> None:
        self.token = token
        self.updated = updated

    def __repr__(self) -> str:  # never the token
        return f"EnvToken(updated={self.updated!r})"


def read_env_token(path: Path) -> EnvToken:
    """`WDH_EQC_TOKEN` as the settings loader reads it from `path` (empty when absent or unreadable)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return EnvToken(None, None)
    values = {name.upper(): value for name, value in dotenv_values(stream=io.StringIO(text)).items()}
    token = values.get("WDH_EQC_TOKEN") or None
    updated = None
    for line in text.splitlines():
        found = _UPDATED.search(line) if _TOKEN_LINE.match(line) else None
        if found:
            with contextlib.suppress(ValueError):
                updated = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")
    return EnvToken(token, updated)


def write_env_token(path: Path, token: str, now: datetime | None = None) -> None:
    """Save the token in WorkDataHub's line format: `WDH_EQC_TOKEN=<token> # Updated: <local time>`.

    An existing token line is replaced (every one of them, so exactly one remains), other lines are kept as
    they are; the file is written to a temporary file beside it and renamed (never half-written) with mode
    0600 (it holds a credential).
    """
    if not token or any(c.isspace() or c in "#'\"" for c in token):
        raise ConfigError("refusing to save a token that is empty or contains spaces, quotes or #")
    stamp = (now or datetime.now()).strftime("%Y-%m-%d %H:%M:%S")
    line = f"WDH_EQC_TOKEN={token} # Updated: {stamp}"
    try:
        old = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    kept = [existing for existing in old if not _TOKEN_LINE.match(existing)]
    first = next((i for i, existing in enumerate(old) if _TOKEN_LINE.match(existing)), None)
    if first is None:
        lines = [*kept, line]
    else:  # where the old line was, so the file reads as before
        before = sum(1 for existing in old[:first] if not _TOKEN_LINE.match(existing))
        lines = [*kept[:before], line, *kept[before:]]
    folder = path.parent if str(path.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def eqc_client(settings: Settings | None = None, **options: Any) -> EqcClient:
    """An EQC client from the `WDH_EQC_*` settings (token, base URL, timeout); `options` go to `EqcClient`."""
    settings = settings or load_settings()
    return EqcClient(settings.token_value(), base_url=settings.eqc_base_url, timeout=settings.eqc_timeout, **options)
