"""The simulated EQC's login page: QR login the way `eqc-enrich token login` meets it on the real site.

The page at `/` is a landing page with `立即体验`; it leads to `#/login`, a `.login_box` in password mode
with a small image (`.login_box > img`, under 100 x 100 px) that switches to QR mode (`扫描二维码`). The QR
code appears in `.qrcode-box` once the user agreement (`.statement .el-checkbox__inner`) is ticked. The
page then polls for the scan. `POST /__sim/scan` plays the phone: it approves the QR shown (409 when none
is waiting), the poll hands the page a new token, and the page searches with it in its `token` header,
as the real page does after a login. The page's own endpoints (`/__sim/login/...`) are the simulator's:
the real site's are not part of the API this tool speaks.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import segno
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

__all__ = ["LoginDesk", "login_routes"]

_QR_LIFETIME_S = 300.0  # a QR code not scanned within this is void, as on the real site
_MAX_PENDING = 64  # page loads left open do not pile up QR codes without bound


@dataclass(slots=True)
class _Qr:
    content: str
    created: float
    token: str | None = None  # set by the scan
    handed: bool = False  # the page has taken the token


class LoginDesk:
    """QR codes shown and scanned; `issue` makes the token a scan grants (the simulator's token store)."""

    def __init__(self, issue: Callable[[], str]) -> None:
        self._issue = issue
        self._codes: dict[str, _Qr] = {}

    def new_code(self) -> tuple[str, str]:
        """A new QR code for a page: its id and its content."""
        self._forget_old()
        code = secrets.token_hex(8)
        self._codes[code] = _Qr(f"https://eqc.sim/login?qr={code}", time.monotonic())
        return code, self._codes[code].content

    def scan(self) -> tuple[str, str] | None:
        """Approve the newest QR code still waiting: (its id, its content); None when none waits."""
        self._forget_old()
        waiting = [(qr.created, code) for code, qr in self._codes.items() if qr.token is None]
        if not waiting:
            return None
        _, code = max(waiting)
        qr = self._codes[code]
        qr.token = self._issue()
        return code, qr.content

    def poll(self, code: str) -> dict[str, str]:
        """What the page learns when it asks about its QR code: waiting, approved (with the token), or void."""
        qr = self._codes.get(code)
        if qr is None or time.monotonic() - qr.created > _QR_LIFETIME_S:
            return {"status": "expired"}
        if qr.token is None:
            return {"status": "waiting"}
        if qr.handed:
            return {"status": "used"}
        qr.handed = True
        return {"status": "approved", "token": qr.token}

    def _forget_old(self) -> None:
        now = time.monotonic()
        for code in [c for c, qr in self._codes.items() if now - qr.created > _QR_LIFETIME_S]:
            del self._codes[code]
        while len(self._codes) >= _MAX_PENDING:
            del self._codes[min(self._codes, key=lambda c: self._codes[c].created)]


def login_routes(desk: LoginDesk) -> list[Route]:
    async def page(_request: Request) -> Response:
        return HTMLResponse(_PAGE)

    async def new_code(_request: Request) -> Response:
        code, content = desk.new_code()
        image = segno.make(content, error="m").png_data_uri(scale=6, border=4)
        return JSONResponse({"id": code, "image": image})

    async def poll(request: Request) -> Response:
        return JSONResponse(desk.poll(request.path_params["code"]))

    async def scan(_request: Request) -> Response:
        approved = desk.scan()
        if approved is None:
            return JSONResponse({"error": "no QR code is waiting for a scan"}, status_code=409)
        code, content = approved
        return JSONResponse({"approved": code, "content": content})

    return [
        Route("/", page, methods=["GET"]),
        Route("/index", page, methods=["GET"]),
        Route("/__sim/login/qr", new_code, methods=["POST"]),
        Route("/__sim/login/qr/{code}", poll, methods=["GET"]),
        Route("/__sim/scan", scan, methods=["POST"]),
    ]


# The switch icon: a 40 x 40 QR glyph, as an inline SVG.
_SWITCH_ICON = (
    "data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' width='40' height='40' viewBox='0 0 4 4'>"
    "<path d='M0 0h2v2H0zM2 2h2v2H2z' fill='%23e4393c'/></svg>"
)

_PAGE = (
    """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>平安E企查 (simulator)</title>
<style>
body { font-family: sans-serif; margin: 0; background: #f5f6f8; }
#app > div { padding: 24px; }
.login_box { position: relative; width: 360px; margin: 40px auto; padding: 24px; background: #fff;
  border-radius: 6px; box-shadow: 0 2px 12px rgba(0,0,0,.1); }
.login_box > img { position: absolute; top: 0; right: 0; width: 40px; height: 40px; cursor: pointer; }
.qrcode-box { position: relative; width: 222px; height: 222px; margin: 12px auto; }
.qrcode-box img { width: 222px; height: 222px; image-rendering: pixelated; }
.qrcode-box .mask { position: absolute; inset: 0; background: rgba(255,255,255,.92); display: flex;
  align-items: center; justify-content: center; text-align: center; }
.statement { font-size: 13px; margin-top: 12px; }
[hidden] { display: none !important; }
</style></head>
<body><div id="app">
<div id="landing"><h1>平安E企查</h1><p>企业信息查询 (EQC simulator)</p><button id="try">立即体验</button></div>
<div id="login" hidden>
  <div class="login_box">
    <img class="login_switch" src="SWITCH_ICON" alt="扫码登录" title="扫码登录">
    <div id="password_mode"><h3>账号密码登录</h3>
      <p><input placeholder="UM账号"></p><p><input type="password" placeholder="密码"></p>
      <p><button disabled>登 录</button></p></div>
    <div id="qr_mode" hidden><h3>扫描二维码</h3><p>请使用快乐平安APP扫码登录 (打开APP &gt; 右上角 + 号 &gt; 扫一扫)</p>
      <div class="qrcode-box"><img id="qr" alt="二维码"><div class="mask" id="mask">请先阅读并勾选用户协议</div></div>
      <p id="qr_status"></p></div>
    <div class="statement"><label class="el-checkbox"><span class="el-checkbox__input">
      <span class="el-checkbox__inner"></span><input type="checkbox" id="agree" class="el-checkbox__original">
      </span><span>我已阅读并同意《用户协议》和《隐私政策》</span></label></div>
  </div>
</div>
<div id="home" hidden><h2>欢迎使用平安E企查</h2><p id="home_status"></p></div>
</div>
<script>
let mode = "password", code = null, token = null, polling = null;
function show() {
  const h = location.hash;
  document.getElementById("landing").hidden = !(h === "" || h === "#/" || h === "#/index");
  document.getElementById("login").hidden = h !== "#/login";
  document.getElementById("home").hidden = h !== "#/home";
}
window.addEventListener("hashchange", show);
document.getElementById("try").addEventListener("click", () => { location.hash = "#/login"; });
document.querySelector(".login_switch").addEventListener("click", () => {
  mode = mode === "password" ? "qr" : "password";
  document.getElementById("password_mode").hidden = mode !== "password";
  document.getElementById("qr_mode").hidden = mode !== "qr";
  maybeQr();
});
document.getElementById("agree").addEventListener("change", maybeQr);
async function maybeQr() {
  const agreed = document.getElementById("agree").checked;
  document.getElementById("mask").hidden = agreed;
  if (mode !== "qr" || !agreed || code !== null) return;
  const answer = await (await fetch("/__sim/login/qr", {method: "POST"})).json();
  code = answer.id;
  document.getElementById("qr").src = answer.image;
  polling = setInterval(poll, 300);
}
async function poll() {
  const state = await (await fetch("/__sim/login/qr/" + code)).json();
  document.getElementById("qr_status").textContent = state.status;
  if (state.status === "approved") { clearInterval(polling); loggedIn(state.token); }
  if (state.status === "expired") { clearInterval(polling); code = null; maybeQr(); }
}
async function loggedIn(newToken) {
  token = newToken;
  location.hash = "#/home";
  const answer = await fetch("/kg-api-hfd/api/search/?key=" + encodeURIComponent("平安"), {headers: {token}});
  document.getElementById("home_status").textContent = "search " + answer.status;
}
show();
</script></body></html>
"""
).replace("SWITCH_ICON", _SWITCH_ICON)
