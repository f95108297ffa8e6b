"""The `.wdh_env` users have, read and written as WorkDataHub does: the token line with its `# Updated:`
comment, the intranet settings, the UM account under both names, and the `WDH_*` names this tool does not
use said rather than ignored."""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path

import pytest

from eqc_enrich._errors import ConfigError
from eqc_enrich.config import EqcOptions, resolve_access
from eqc_enrich.settings import DEFAULT_PAC_URL, load_settings, read_env_token, unused_settings, write_env_token

TOKEN = "0123456789abcdef0123456789abcdef"


def test_a_value_is_cut_at_an_unquoted_comment_as_workdatahub_reads_it(tmp_path: Path) -> None:
    env = tmp_path / ".wdh_env"
    env.write_text(
        f"WDH_EQC_TOKEN={TOKEN} # Updated: 2026-03-09 10:15:00\n"
        'WDH_PAC_URL="http://pac.intranet.test/p.pac#not-a-comment" # the PAC file\n'
        "WDH_EQC_QUOTA_KEY=acct#1\n",
        encoding="utf-8",
    )
    settings = load_settings(env)
    assert settings.token_value() == TOKEN
    assert settings.pac_url == "http://pac.intranet.test/p.pac#not-a-comment"  # quoted: kept whole
    assert settings.eqc_quota_key == "acct#1"  # no space before the #: part of the value
    saved = read_env_token(env)
    assert saved.token == TOKEN
    assert saved.updated == datetime(2026, 3, 9, 10, 15, 0)
    assert TOKEN not in repr(saved)


def test_the_intranet_settings_and_their_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(tmp_path / "none").pac_url == DEFAULT_PAC_URL == "http://proxy.paic.com.cn/proxyformwg.pac"
    env = tmp_path / ".wdh_env"
    env.write_text(
        "WDH_INTRANET=true\nWDH_PA_UM_ACCOUNT=prefixed\nPA_UM_ACCOUNT=plain\nWDH_PA_UM_PASSWORD=pw-1\n",
        encoding="utf-8",
    )
    settings = load_settings(env)
    assert settings.intranet is True
    assert settings.pa_um_account == "plain"  # the un-prefixed name first, as WorkDataHub reads it
    assert settings.proxy_password() == "pw-1"  # the prefixed alias works too
    access = resolve_access(EqcOptions(url="https://eqc.intranet.test"), settings)
    assert access.pac_url == DEFAULT_PAC_URL  # WDH_INTRANET=true: the PAC file chooses the proxy
    assert access.proxy_auth == ("plain", "pw-1")
    assert access.verify is True  # WDH_INTRANET alone never turns verification off
    assert "pw-1" not in repr(access)
    assert "pw-1" not in str(access.public())
    monkeypatch.setenv("WDH_INTRANET", "false")  # the environment first, then the file
    assert resolve_access(None, load_settings(env)).pac_url is None
    assert resolve_access(EqcOptions(pac_url="http://pac/p.pac"), load_settings(env)).pac_url == "http://pac/p.pac"


def test_settings_this_tool_does_not_use_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".wdh_env"
    env.write_text(
        "WDH_DATABASE__URI=postgresql://x\nWDH_EQC_TOKEN=t # Updated: 2026-03-09 10:15:00\nWDH_INTRANET=true\n"
        "PA_UM_ACCOUNT=u\nWDH_PA_UM_PASSWORD=p\nOTHER=1\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("WDH_COMPANY_SYNC_LOOKUP_LIMIT", "5")
    assert unused_settings(env) == ["WDH_COMPANY_SYNC_LOOKUP_LIMIT", "WDH_DATABASE__URI"]


def test_a_ca_bundle_that_cannot_be_read_is_a_one_line_setting_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--ca-bundle / WDH_EQC_CA_BUNDLE .*missing.pem: cannot be read"):
        resolve_access(EqcOptions(ca_bundle=str(tmp_path / "missing.pem")), load_settings(tmp_path / "none"))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not.pem: cannot be read \(no certificate in it\)"):
        resolve_access(EqcOptions(ca_bundle=str(not_pem)), load_settings(tmp_path / "none"))


def test_the_token_line_replaces_every_old_one_keeps_the_rest_and_the_file_private(tmp_path: Path) -> None:
    env = tmp_path / ".wdh_env"
    env.write_text(
        "# comment\nWDH_EQC_TOKEN=old # Updated: 2026-01-01 00:00:00\nWDH_ALIAS_SALT=s\nwdh_eqc_token = older\n",
        encoding="utf-8",
    )
    os.chmod(env, 0o644)
    write_env_token(env, TOKEN, now=datetime(2026, 3, 9, 11, 0, 5))
    assert env.read_text(encoding="utf-8").splitlines() == [
        "# comment",
        f"WDH_EQC_TOKEN={TOKEN} # Updated: 2026-03-09 11:00:05",
        "WDH_ALIAS_SALT=s",
    ]
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert load_settings(env).token_value() == TOKEN
    assert [p.name for p in tmp_path.iterdir()] == [".wdh_env"]  # no temporary file left behind


def test_a_new_env_file_gets_the_one_line(tmp_path: Path) -> None:
    env = tmp_path / "sub" / ".wdh_env"
    env.parent.mkdir()
    write_env_token(env, TOKEN, now=datetime(2026, 3, 9, 11, 0, 5))
    assert env.read_text(encoding="utf-8") == f"WDH_EQC_TOKEN={TOKEN} # Updated: 2026-03-09 11:00:05\n"


@pytest.mark.parametrize("bad", ["", "has space", "has#hash", 'quo"te'])
def test_a_token_the_line_format_cannot_hold_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="refusing to save a token"):
        write_env_token(tmp_path / ".wdh_env", bad)
    assert not (tmp_path / ".wdh_env").exists()
