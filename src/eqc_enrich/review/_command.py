"""What `eqc-enrich review` does, apart from parsing: open the index, narrow to a file, serve, open a browser."""

from __future__ import annotations

import webbrowser
from collections.abc import Callable
from pathlib import Path

from eqc_enrich._errors import ConfigError
from eqc_enrich.config import EqcOptions, resolve_access
from eqc_enrich.review._queue import scope_of_file
from eqc_enrich.review._server import ReviewServer, check_host, is_loopback
from eqc_enrich.settings import load_settings
from eqc_enrich.store import IndexStore, redact_url

__all__ = ["review_command"]

Echo = Callable[[str], None]


def review_command(
    *,
    db: str | None,
    db_schema: str | None,
    eqc: EqcOptions,
    file: Path | None,
    name_column: str,
    host: str,
    port: int,
    open_browser: bool,
    echo: Echo,
    warn: Echo,
) -> None:
    check_host(host)  # before anything is opened: a refused address is a bad option, exit 2
    access = resolve_access(eqc, load_settings())  # the runs' EQC, token, rate limit and shared quota
    store = IndexStore(db, schema=db_schema)
    try:
        store.check_grants()  # decisions and searches write: a missing grant is said before the page opens
        scope = scope_of_file(store, file, name_column=name_column) if file is not None else None
        try:
            server = ReviewServer(
                store, access, host=host, port=port, scope_keys=scope.keys if scope else None,
                scope_label=f"names of {file.name}" if file is not None else "",
            )  # fmt: skip
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        if not is_loopback(host):
            warn(f"warning: listening on {host}, not loopback: whoever reaches it and opens the URL first can decide")
        counts = store.unsettled.counts(keys=scope.keys if scope else None)
        left = sum(n for k, n in counts.items() if k.startswith("kind:"))
        where = f" ({len(scope.keys):,} names in {file}, {scope.recorded:,} newly listed)" if scope and file else ""
        echo(f"index {redact_url(store.url)}: {left:,} names to settle{where}")
        echo(f"review page: {server.url}")
        echo("(the link opens the page once, in one browser; Ctrl-C stops the page)")
        if open_browser:
            _open(server.url)
        server.serve()
    finally:
        store.close()


def _open(url: str) -> None:
    """Open the page when this machine has a browser; without one the printed URL is the way in."""
    try:
        webbrowser.get()
    except webbrowser.Error:
        return
    webbrowser.open(url, new=2)
