"""Options several commands share, declared once: the index's, and how to reach EQC and share its quota.

`with_eqc_options` gives a command every option of `EqcOptions` (`--eqc-url`, `--rate-limit`, `--quota-key`,
`--timeout`, `--retries`, `--token-command`, `--claim-lease`, `--proxy`, `--pac-url`, `--ca-bundle`,
`--token-wait`) and hands them to it as one `EqcOptions` in its `eqc` parameter, so `run`, `plan`,
`worker`, `worker status`, `review`, `bench` and `token` cannot drift apart: a new setting of how to reach
EQC is added here, once, and every command that talks to EQC has it. At its start such a command says, on
stderr, when TLS verification is off and which `WDH_*` settings it does not use.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import fields
from typing import Annotated, Any, TypeVar

import typer

from eqc_enrich._durations import parse_duration, parse_rate_limit
from eqc_enrich._errors import ConfigError
from eqc_enrich.config import EqcOptions
from eqc_enrich.settings import load_settings, unused_settings

__all__ = [
    "EQC_OPTION_FLAGS",
    "DbOpt",
    "SchemaOpt",
    "start_notices",
    "with_eqc_options",
    "with_eqc_options_but_timeout",
]

DbOpt = Annotated[
    str | None, typer.Option(envvar="EQC_ENRICH_DB", help="Index: SQLite path or SQLAlchemy URL [./eqc_enrich.db].")
]
SchemaOpt = Annotated[
    str | None, typer.Option(envvar="EQC_ENRICH_DB_SCHEMA", help="PostgreSQL schema of the index, e.g. enterprise.")
]

_Command = TypeVar("_Command", bound=Callable[..., Any])


def _text(value: str | None) -> str | None:
    return value or None


def _duration(value: str | None) -> float | None:
    return parse_duration(value) if value else None


_OPTIONS: dict[str, tuple[str, Any, Callable[[Any], Any]]] = {
    # EqcOptions field: (parameter name, its typer annotation, how the text becomes the field's value)
    "url": (
        "eqc_url",
        Annotated[str | None, typer.Option("--eqc-url", help="EQC base URL [WDH_EQC_BASE_URL].")],
        _text,
    ),
    "token_command": (
        "token_command",
        Annotated[
            str | None,
            typer.Option(envvar="WDH_EQC_TOKEN_COMMAND", help="Command that prints a fresh EQC token."),
        ],
        _text,
    ),
    "rate_limit": (
        "rate_limit",
        Annotated[str | None, typer.Option(help="The quota as N/DURATION, e.g. 10/60s [WDH_EQC_RATE_LIMIT/_WINDOW].")],
        lambda value: parse_rate_limit(value) if value else None,
    ),
    "quota_key": (
        "quota_key",
        Annotated[
            str | None,
            typer.Option(envvar="WDH_EQC_QUOTA_KEY", help="Name of the EQC account's shared quota [the EQC base URL]."),
        ],
        _text,
    ),
    "timeout_s": (
        "timeout",
        Annotated[str | None, typer.Option(help="Per-request timeout, e.g. 30s [WDH_EQC_TIMEOUT].")],
        _duration,
    ),
    "retries": (
        "retries",
        Annotated[int | None, typer.Option(min=0, help="Retries per request [WDH_EQC_RETRY_MAX].")],
        lambda value: value,
    ),
    "claim_lease_s": (
        "claim_lease",
        Annotated[
            str | None,
            typer.Option(help="How long a claim on a name outlives a process that died (renewed while alive) [60s]."),
        ],
        _duration,
    ),
    "proxy": (
        "proxy",
        Annotated[
            str | None,
            typer.Option(
                metavar="URL",
                help="A fixed proxy to EQC, e.g. http://proxy:8080 [WDH_EQC_PROXY].",
            ),
        ],
        _text,
    ),
    "pac_url": (
        "pac_url",
        Annotated[
            str | None,
            typer.Option(metavar="URL", help="Choose the proxy by this PAC file [WDH_PAC_URL when WDH_INTRANET=true]."),
        ],
        _text,
    ),
    "ca_bundle": (
        "ca_bundle",
        Annotated[
            str | None,
            typer.Option(
                metavar="FILE",
                help="PEM file of more CAs to trust [WDH_EQC_CA_BUNDLE].",
            ),
        ],
        _text,
    ),
    "token_wait_s": (
        "token_wait",
        Annotated[
            str | None,
            typer.Option(
                help="Without --token-command: how long to wait for a login when the token is missing or rejected "
                "[WDH_EQC_TOKEN_WAIT, 10m]."
            ),
        ],
        _duration,
    ),
}

EQC_OPTION_FLAGS: dict[str, str] = {field: "--" + name.replace("_", "-") for field, (name, _, _) in _OPTIONS.items()}
"""Each `EqcOptions` field a command line can set, and its flag (the token is never an option: it would show
in `ps`; it comes from WDH_EQC_TOKEN, `.wdh_env` or the token command)."""

_NOT_AN_OPTION = {"token"}
if {f.name for f in fields(EqcOptions)} - _NOT_AN_OPTION != set(_OPTIONS):  # pragma: no cover - a developer's slip
    raise RuntimeError("every EqcOptions field needs its command-line option in _cli_options._OPTIONS")


def with_eqc_options(command: _Command) -> _Command:
    """Add the EQC options to `command`'s parameters; it receives them as `eqc: EqcOptions`."""
    return _with_options(command, _OPTIONS)


def with_eqc_options_but_timeout(command: _Command) -> _Command:
    """`with_eqc_options` for `token login`, whose own `--timeout` is how long to wait for the scan (its one
    check call takes the per-request timeout from WDH_EQC_TIMEOUT)."""
    return _with_options(command, {field: spec for field, spec in _OPTIONS.items() if field != "timeout_s"})


def _with_options(command: _Command, options: dict[str, tuple[str, Any, Callable[[Any], Any]]]) -> _Command:
    signature = inspect.signature(command, eval_str=True)
    own = [parameter for parameter in signature.parameters.values() if parameter.name != "eqc"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation, _ in options.values()
    ]

    @functools.wraps(command)
    def with_eqc(*args: Any, **kwargs: Any) -> Any:
        values = {field: convert(kwargs.pop(name)) for field, (name, _, convert) in options.items()}
        start_notices()
        return command(*args, eqc=EqcOptions(**values), **kwargs)

    with_eqc.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    with_eqc.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
    return with_eqc  # type: ignore[return-value]


def start_notices() -> None:
    """What a person must know before a command talks to EQC: TLS verification turned off, and `WDH_*`
    settings this tool does not read (named, so nothing a user set is silently ignored)."""
    try:
        verify = load_settings().eqc_verify
    except ConfigError:
        return  # the command itself reports a bad setting, once
    if not verify:
        typer.echo(
            "warning: TLS verification of EQC is OFF (WDH_EQC_VERIFY=false): anyone on the way can read the token "
            "and forge answers; trust the CA instead (--ca-bundle / WDH_EQC_CA_BUNDLE, or the system's store)",
            err=True,
        )
    unused = unused_settings()
    if unused:
        typer.echo(f"note: these WDH_* settings are not used by eqc-enrich: {', '.join(unused)}", err=True)
