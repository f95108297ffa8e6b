"""Settings users already have: `WDH_*` names from the environment or a `.wdh_env` file."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from eqc_enrich._durations import RateLimit
from eqc_enrich._errors import ConfigError

DEFAULT_BASE_URL = "https://eqc.pingan.com"


class Settings(BaseSettings):
    """Every knob the old production client read, under the names people have in their `.wdh_env`."""

    model_config = SettingsConfigDict(env_prefix="WDH_", extra="ignore", populate_by_name=True)

    eqc_token: SecretStr | None = None
    eqc_token_command: str | None = None
    eqc_base_url: str = DEFAULT_BASE_URL
    eqc_timeout: float = Field(default=30.0, gt=0)
    eqc_retry_max: int = Field(default=3, ge=0)
    eqc_rate_limit: int = Field(default=10, ge=1)
    eqc_rate_limit_window: float = Field(default=60.0, gt=0)
    alias_salt: SecretStr = SecretStr("")
    eqc_quota_key: str | None = None  # several EQC accounts behind one URL: name each account's shared quota

    @property
    def rate_limit(self) -> RateLimit:
        return RateLimit(self.eqc_rate_limit, self.eqc_rate_limit_window)

    def token_value(self) -> str | None:
        return self.eqc_token.get_secret_value() if self.eqc_token else None


def env_file_path() -> Path:
    return Path(os.environ.get("WDH_ENV_FILE", ".wdh_env"))


def load_settings(env_file: Path | None = None) -> Settings:
    """Environment first, then the `.wdh_env` file (path from `WDH_ENV_FILE`); bad values are one-line errors."""
    path = env_file or env_file_path()
    try:
        return Settings(_env_file=path if path.is_file() else None)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "WDH_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"{name}: {first['msg']}") from None
