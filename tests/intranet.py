"""The intranet's parts, real and on loopback: a proxy that demands Basic credentials, a PAC file server,
and a test CA for EQC's certificate.

`RecordingProxy` speaks HTTP/1.1 as a forward proxy (absolute-URI requests) and as a CONNECT tunnel; it
answers 407 (with `Proxy-Authenticate: Basic`) to a request without the right `Proxy-Authorization`, and
records every request it saw (method, target, whether it was let through). It resolves the names in its
`hosts` map itself, as an intranet proxy resolves names the client cannot: a client that reaches EQC at
such a name can only have come through the proxy.
"""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self

EQC_HOST = "eqc.intranet.test"  # `.test` is reserved: no resolver knows it, only the proxy's map
_HEAD_LIMIT = 65_536
_RELAY_LIMIT_S = 60.0  # a tunnel idle this long is closed


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    target: str
    allowed: bool


@dataclass
class _Log:
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, entry: Seen) -> None:
        with self.lock:
            self.seen.append(entry)


class RecordingProxy:
    """`with RecordingProxy("um01", "secret", hosts={EQC_HOST: "127.0.0.1"}) as proxy:` then `proxy.port`."""

    def __init__(self, user: str, password: str, *, hosts: dict[str, str] | None = None) -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.hosts = dict(hosts or {})
        self.log = _Log()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def seen(self) -> list[Seen]:
        with self.log.lock:
            return list(self.log.seen)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(_RELAY_LIMIT_S)
        with contextlib.suppress(OSError):
            head, rest = _read_head(client)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if headers.get("proxy-authorization") != self.expected:
                self.log.add(Seen(method, target, allowed=False))
                client.sendall(
                    b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="intranet"\r\n'
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            self.log.add(Seen(method, target, allowed=True))
            if method == "CONNECT":
                self._tunnel(client, target, rest)
            else:
                self._forward(client, method, target, lines[1:], rest)

    def _upstream(self, host: str, port: int) -> socket.socket:
        return socket.create_connection((self.hosts.get(host, host), port), timeout=10)

    def _tunnel(self, client: socket.socket, target: str, rest: bytes) -> None:
        host, _, port = target.rpartition(":")
        try:
            upstream = self._upstream(host, int(port))
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            _relay(client, upstream)

    def _forward(self, client: socket.socket, method: str, target: str, header_lines: list[str], rest: bytes) -> None:
        """An absolute-URI request (`GET http://host:port/path`): sent on as an origin-form request."""
        without_scheme = target.split("://", 1)[1]
        authority, _, path = without_scheme.partition("/")
        host, _, port = authority.partition(":")
        kept = [line for line in header_lines if line and not line.lower().startswith(("proxy-", "connection:"))]
        request = "\r\n".join([f"{method} /{path} HTTP/1.1", *kept, "Connection: close", "", ""]).encode("latin-1")
        try:
            upstream = self._upstream(host, int(port or 80))
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with upstream:
            upstream.sendall(request + rest)
            _relay(client, upstream)


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > _HEAD_LIMIT:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Both ways until either side closes (or nothing moves for a minute)."""
    sockets = [a, b]
    while True:
        ready, _, _ = select.select(sockets, [], [], _RELAY_LIMIT_S)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65_536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


class PacServer:
    """Serves one PAC file at `/proxy.pac` over plain HTTP on loopback, and counts the fetches."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                body = server.script.encode()
                self.send_response(200 if self.path == "/proxy.pac" else 404)
                self.send_header("Content-Type", "application/x-ns-proxy-autoconfig")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/proxy.pac"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()


def pac_script(*entries: str, host: str = EQC_HOST) -> str:
    """A PAC file sending `host` to `entries` in order (e.g. `PROXY 127.0.0.1:3128`, `DIRECT`), all else direct."""
    answer = "; ".join(entries)
    return (
        "function FindProxyForURL(url, host) {\n"
        f'  if (dnsDomainIs(host, "{host}") || shExpMatch(host, "*.{host}")) return "{answer}";\n'
        '  return "DIRECT";\n'
        "}\n"
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass(frozen=True)
class IntranetCa:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


@contextlib.contextmanager
def make_ca(folder: Path, host: str = EQC_HOST) -> Iterator[IntranetCa]:
    """A CA made for the test (trustme) and EQC's certificate for `host`, as PEM files in `folder`."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(host)
    paths = IntranetCa(folder / "test-ca.pem", folder / "eqc-cert.pem", folder / "eqc-key.pem")
    ca.cert_pem.write_to_path(str(paths.ca_pem))
    cert.private_key_pem.write_to_path(str(paths.key_pem))
    for number, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(paths.cert_pem), append=number > 0)
    yield paths
