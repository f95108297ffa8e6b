"""Getting an EQC token the way users get one: a QR login in a headless browser, scanned with the phone app.

`qr_login` opens EQC's page (the root of the EQC base URL) in headless Chromium through Playwright,
switches to QR login as the real page needs it (`立即体验` -> `#/login` -> the small switch image in
`.login_box` -> `扫描二维码`, the user agreement ticked), hands the QR code's screenshot to the caller, and
waits for the page's own request to `/kg-api-hfd/api/search/` carrying a `token` header: that header is
the token. The browser goes the same way to EQC as every request of this tool (the proxy the route
chose, with the same credentials). `check_token` asks EQC once whether a token works, inside the shared
quota when there is an index. `qr_matrix` and `terminal_qr` turn the screenshot into a QR code a phone
can scan from a terminal.

Playwright is an optional extra (`pip install 'eqc-enrich[login]'`); the browser is the one named by
`PLAYWRIGHT_CHROMIUM_EXECUTABLE_PATH`, else the system's Chromium or Chrome; none is ever downloaded.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import httpx
from dotenv import dotenv_values

from eqc_enrich._errors import ConfigError, EqcEnrichError
from eqc_enrich.config import EqcAccess
from eqc_enrich.eqc import ForbiddenError
from eqc_enrich.eqc_stage import DatabaseLedger, SlidingWindowLimiter
from eqc_enrich.store import IndexStore, database_url

__all__ = [
    "SEARCH_PATH",
    "LoginError",
    "browser_path",
    "check_token",
    "open_image",
    "qr_login",
    "qr_matrix",
    "terminal_qr",
]

SEARCH_PATH: Final = "/kg-api-hfd/api/search/"
_BROWSER_ENV: Final = "PLAYWRIGHT_CHROMIUM_EXECUTABLE_PATH"
_SYSTEM_BROWSERS: Final = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "msedge")
_STEP_MS: Final = 5_000
_SWITCHES: Final = (
    "xpath=/html/body/div[1]/div/div[3]/div[2]/div[1]/img",
    ".login_box > img",
    ".login_box div > img",
    ".login_box .login_switch",
    "img[src*='qr']",
    "img[src*='code']",
)  # where the real page has had its switch to QR login, in the order WorkDataHub tries them


class LoginError(EqcEnrichError):
    """The login did not give a token (the page was not as expected, or nobody scanned in time)."""


def browser_path(env_file: Path | None = None) -> str:
    """The browser to drive: `PLAYWRIGHT_CHROMIUM_EXECUTABLE_PATH` (the environment, else the env file, where
    WorkDataHub's intranet guide has it), else the system's Chromium/Chrome/Edge."""
    named = os.environ.get(_BROWSER_ENV)
    if not named and env_file is not None and env_file.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            named = dotenv_values(env_file).get(_BROWSER_ENV)
    if named:
        if not Path(named).is_file():
            raise ConfigError(f"{_BROWSER_ENV}={named}: no such file")
        return named
    for name in _SYSTEM_BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(
        f"no Chromium-based browser found: install Chromium (Debian: apt-get install chromium) or set {_BROWSER_ENV} "
        "to Chrome's or Edge's executable"
    )


def _reachable(proxy: str, timeout_s: float = 3.0) -> bool:
    url = httpx.URL(proxy)
    try:
        with socket.create_connection((url.host, url.port or 80), timeout=timeout_s):
            return True
    except OSError:
        return False


def browser_proxy(access: EqcAccess) -> dict[str, str] | None:
    """Playwright's proxy setting for the route to EQC: the first proxy that can be connected to (the
    route's fall-over, decided once for the browser), with the proxy credentials; None for direct."""
    for proxy in access.route().proxies:
        if proxy is None:
            return None
        if _reachable(proxy):
            url = httpx.URL(proxy)
            setting = {"server": f"{url.scheme}://{url.host}:{url.port or 80}", "bypass": "<-loopback>"}
            user, password = (
                (url.username, url.password) if url.username else (access.proxy_user, access.proxy_password)
            )
            if user:
                setting |= {"username": user, "password": password or ""}
            return setting
    raise LoginError(f"no proxy of the route to EQC can be connected to ({access.route().describe()})")


def qr_login(access: EqcAccess, *, timeout_s: float, on_qr: Callable[[bytes], None]) -> str:
    """Drive the login page until its own search request carries a token; `on_qr(png)` shows the QR code."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ConfigError("token login needs Playwright: pip install 'eqc-enrich[login]'") from exc
    executable = browser_path(access.env_file)
    proxy = browser_proxy(access)
    args = ["--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    captured: list[str] = []

    def seen(request: Any) -> None:
        token = request.headers.get("token")
        if SEARCH_PATH in request.url and token and not captured:
            captured.append(token)

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable,
                headless=True,
                args=args,
                proxy=proxy,  # type: ignore[arg-type]
            )
            try:
                context = browser.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
                page = context.new_page()
                page.on("request", seen)
                _open_qr_login(page, access.url)
                try:
                    on_qr(_qr_screenshot(page))
                except PlaywrightError:
                    if not captured:
                        raise
                    # scanned before the code could be shown here (the page has moved on): the token is in
                deadline = time.monotonic() + timeout_s
                while not captured and time.monotonic() < deadline:
                    page.wait_for_timeout(250)
            finally:
                browser.close()
    except PlaywrightError as exc:
        raise LoginError(f"the login page failed: {_first_line(str(exc))}") from exc
    if not captured:
        raise LoginError(f"no login within {timeout_s:g}s: nobody scanned the QR code (--timeout)")
    return captured[0]


def _open_qr_login(page: Any, url: str) -> None:
    """From EQC's front page to its QR code, the steps the real page needs."""
    root = url.rstrip("/") + "/"
    page.goto(root, wait_until="domcontentloaded", timeout=30_000)
    page.wait_for_timeout(500)
    if "login" not in page.url:
        for text in ("立即体验", "登录"):
            button = page.locator(f"text={text}").first
            if _visible(button):
                button.click(timeout=_STEP_MS)
                break
        else:
            page.goto(root + "#/login", wait_until="domcontentloaded")
        page.wait_for_url("**/login", timeout=10_000)
    page.locator(".login_box").first.wait_for(state="visible", timeout=_STEP_MS)
    if not _visible(page.locator("text=扫描二维码").first):
        _switch_to_qr(page)
    # the user agreement: the real page shows the code only once it is ticked
    page.evaluate(
        "() => { const box = document.querySelector('.statement .el-checkbox__inner'); if (box) box.click(); }"
    )


def _switch_to_qr(page: Any) -> None:
    for selector in _SWITCHES:
        candidate = page.locator(selector).first
        if not _visible(candidate):
            continue
        box = candidate.bounding_box()
        if box is None or box["width"] >= 100 or box["height"] >= 100:
            continue
        candidate.click(timeout=_STEP_MS)
        page.wait_for_timeout(500)
        if _visible(page.locator("text=扫描二维码").first) or _visible(page.locator("text=微信").first):
            return
    raise LoginError("the EQC login page has no switch to QR login where it used to be (.login_box)")


def _visible(locator: Any) -> bool:
    try:
        locator.wait_for(state="visible", timeout=2_000)
    except Exception:  # Playwright's TimeoutError: not there
        return False
    return True


def _qr_screenshot(page: Any) -> bytes:
    box = page.locator(".qrcode-box").first
    box.wait_for(state="visible", timeout=10_000)
    with contextlib.suppress(Exception):  # Playwright's TimeoutError: show what there is
        page.wait_for_function(  # the code's image loads after the box shows
            "() => { const i = document.querySelector('.qrcode-box img');"
            " return !i || (i.complete && i.naturalWidth > 0 && getComputedStyle(i).display !== 'none'); }",
            timeout=10_000,
        )
    page.wait_for_timeout(300)
    png: bytes = box.screenshot(timeout=10_000)
    return png


# --- the QR code in a terminal --------------------------------------------------------------------------------


def qr_matrix(png: bytes) -> list[list[bool]]:
    """The QR code's modules (True = dark) read from a screenshot: the finder pattern in the top-left corner is
    7 modules wide, which gives the module size; each module is read at its centre."""
    from PIL import Image  # the login extra

    image = Image.open(io.BytesIO(png)).convert("L")
    width, height = image.size
    pixels = image.load()
    assert pixels is not None
    dark = [[int(pixels[x, y]) < 128 for x in range(width)] for y in range(height)]  # type: ignore[arg-type]
    rows = [y for y in range(height) if any(dark[y])]
    if not rows:
        raise LoginError("the QR code's screenshot shows no code")
    top = rows[0]
    left = min(x for y in rows for x in range(width) if dark[y][x])
    right = max(x for y in rows for x in range(width) if dark[y][x])
    run = 0
    while left + run < width and dark[top][left + run]:
        run += 1
    module = run / 7
    size = round((right - left + 1) / module)
    if module < 1 or not 21 <= size <= 177:
        raise LoginError("the QR code's screenshot cannot be read as a QR code")
    return [
        [dark[min(height - 1, int(top + (r + 0.5) * module))][min(width - 1, int(left + (c + 0.5) * module))]
         for c in range(size)]
        for r in range(size)
    ]  # fmt: skip


def terminal_qr(matrix: list[list[bool]], *, ansi: bool) -> str:
    """The code in half-block characters, two module rows a line, with a quiet zone; `ansi` paints it dark on
    light whatever the terminal's colours (a scanner needs that contrast)."""
    size = len(matrix)
    quiet = 2
    padded = [[False] * (size + 2 * quiet) for _ in range(quiet)]
    padded += [[False] * quiet + row + [False] * quiet for row in matrix]
    padded += [[False] * (size + 2 * quiet) for _ in range(quiet + (len(padded) % 2))]
    glyphs = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}
    lines = []
    for top in range(0, len(padded), 2):
        text = "".join(glyphs[(a, b)] for a, b in zip(padded[top], padded[top + 1], strict=True))
        lines.append(f"\x1b[30;47m{text}\x1b[0m" if ansi else text)
    return "\n".join(lines)


def open_image(path: Path) -> bool:
    """Open `path` in the desktop's image viewer, where there is a desktop; False when there is none."""
    try:
        if sys.platform == "win32":
            os.startfile(path)  # type: ignore[attr-defined]  # Windows only
            return True
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        has_desktop = sys.platform == "darwin" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        if not has_desktop or shutil.which(opener) is None:
            return False
        subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return False
    return True


# --- checking a token -----------------------------------------------------------------------------------------


async def check_token(access: EqcAccess, token: str, *, db: str | None, db_schema: str | None) -> bool:
    """One token-check call (the validation call: 401/403 = invalid); in the shared quota when the index exists.

    Raises `EqcError` when EQC cannot tell (unreachable, a proxy refusing, an untrusted certificate).
    """
    store = _index_if_any(db, db_schema)
    client = replace(access, token=token).client()
    try:
        if store is not None:
            ledger = DatabaseLedger(store, access.quota_key, f"token-{uuid.uuid4().hex[:12]}", spacing_s=access.slot_s)
            await SlidingWindowLimiter(access.rate_limit, ledger=ledger).acquire()
        try:
            return await client.check_token()
        except ForbiddenError:
            return False  # the validation call's reading: 403 is an invalid token too
    finally:
        await client.aclose()
        if store is not None:
            store.close()


def _index_if_any(db: str | None, db_schema: str | None) -> IndexStore | None:
    """The index, to take the call's quota slot in; none when there is no index yet (nothing to share)."""
    url = database_url(db)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    return IndexStore(url, schema=db_schema)


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else "unknown error"
