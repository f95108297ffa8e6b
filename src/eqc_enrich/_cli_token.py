"""The `token` commands: `token login` (a QR login in a headless browser, the token saved to the env file)
and `token check` (is the token in force valid, and how old is it).

Exit codes as a run's: 0 done (valid); 2 bad options or settings (no browser, no Playwright); 3 no usable
token (nobody scanned in time, EQC rejected it); 5 EQC could not be reached (proxy, PAC file, TLS).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from eqc_enrich._cli_options import DbOpt, SchemaOpt, with_eqc_options, with_eqc_options_but_timeout
from eqc_enrich._durations import format_duration, parse_duration
from eqc_enrich._exit_codes import EXIT_CODES
from eqc_enrich.config import EqcAccess, EqcOptions, resolve_access
from eqc_enrich.eqc import EqcError
from eqc_enrich.login import LoginError, check_token, open_image, qr_login, qr_matrix, terminal_qr
from eqc_enrich.network import RouteError
from eqc_enrich.settings import env_file_path, load_settings, read_env_token, write_env_token

__all__ = ["register", "token_app"]

token_app = typer.Typer(name="token", help="Get an EQC token by QR login, or check the one in force.")
_NO_TOKEN = EXIT_CODES["token_unavailable"]
_NO_EQC = EXIT_CODES["eqc_unavailable"]


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")


def _end(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@token_app.command("login")
@with_eqc_options_but_timeout
def login(
    env_file: Annotated[
        Path | None, typer.Option(help="Save the token in this env file [WDH_ENV_FILE, else .wdh_env].")
    ] = None,
    timeout: Annotated[str, typer.Option(help="How long to wait for the QR code to be scanned.")] = "5m",
    no_save: Annotated[
        bool, typer.Option("--no-save", help="Print only the token on stdout (as a --token-command); save nothing.")
    ] = False,
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    *,
    eqc: EqcOptions,
) -> None:
    """Log in to EQC by QR code (scan it with the 快乐平安 app), check the token, save it to the env file."""
    access = resolve_access(eqc, load_settings())
    path = env_file or env_file_path()
    wait_s = parse_duration(timeout)
    picture = Path(tempfile.gettempdir()) / f"eqc-login-qr-{time.strftime('%H%M%S')}-{os.getpid()}.png"
    try:
        token = qr_login(access, timeout_s=wait_s, on_qr=lambda png: _show(png, picture, wait_s))
    except LoginError as exc:
        raise _end(str(exc), _NO_TOKEN) from exc
    except RouteError as exc:
        raise _end(str(exc), _NO_EQC) from exc
    finally:
        picture.unlink(missing_ok=True)
    try:
        works = asyncio.run(check_token(access, token, db=db, db_schema=db_schema))
    except EqcError as exc:  # not chained: it is about a request that carried the new token
        typer.echo(f"note: the new token could not be checked ({exc}); kept as it is", err=True)
        works = None
    if works is False:
        raise _end("EQC rejected the token the login gave (invalid): log in again", _NO_TOKEN)
    if no_save:
        typer.echo(token)
        return
    write_env_token(path, token)
    checked = "checked: valid" if works else "not checked"
    typer.echo(f"saved the EQC token to {path} (WDH_EQC_TOKEN, {checked})", err=True)


def _show(png: bytes, picture: Path, wait_s: float) -> None:
    """The QR code for the person: drawn on stderr (stdout may be a token command's), and as a PNG."""
    picture.write_bytes(png)
    try:
        drawing = terminal_qr(qr_matrix(png), ansi=sys.stderr.isatty())
    except LoginError:
        drawing = "(the code cannot be drawn here: open the PNG below)"
    opened = " (opened in the image viewer)" if open_image(picture) else ""
    for line in (
        "scan this QR code with the 快乐平安 app (打开APP > 右上角 + 号 > 扫一扫):",
        drawing,
        f"the QR code as a picture: {picture}{opened}",
        f"waiting up to {format_duration(wait_s)} for the scan (--timeout)",
    ):
        typer.echo(line, err=True)


@token_app.command("check")
@with_eqc_options
def check(
    db: DbOpt = None,
    db_schema: SchemaOpt = None,
    *,
    eqc: EqcOptions,
) -> None:
    """Is the EQC token in force valid (one call, in the shared quota), and how old is it."""
    access = resolve_access(eqc, load_settings())
    token = access.token
    if not token:
        raise _end(f"no EQC token: set WDH_EQC_TOKEN, or log in with `{access.login_command()}`", _NO_TOKEN)
    origin = _origin(access, token)
    try:
        works = asyncio.run(check_token(access, token, db=db, db_schema=db_schema))
    except (EqcError, RouteError) as exc:  # not chained: it is about a request that carried the token
        raise _end(f"cannot tell whether the token is valid: {exc}", _NO_EQC) from None
    if not works:
        typer.echo(f"invalid: EQC rejected the token {origin}; log in with `{access.login_command()}`")
        raise typer.Exit(_NO_TOKEN)
    typer.echo(f"valid: the token {origin} works")


def _origin(access: EqcAccess, token: str) -> str:
    """Where the token in force comes from, and its age when its line says when it was saved."""
    saved = read_env_token(access.env_file)
    if saved.token != token:
        return "from the environment (WDH_EQC_TOKEN)"
    if saved.updated is None:
        return f"from {access.env_file} (no '# Updated:' time)"
    age = max(0.0, (datetime.now() - saved.updated).total_seconds())
    return f"from {access.env_file}, saved {saved.updated:%Y-%m-%d %H:%M:%S} ({format_duration(age)} ago)"
