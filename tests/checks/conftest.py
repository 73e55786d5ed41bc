"""Real targets on 127.0.0.1 for the check tests: HTTP(S), TLS, TCP echo and DNS servers, and certificates.

Everything listens on an ephemeral loopback port in a daemon thread and is shared by the session.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from tests.support import pki
from tests.support.dns_server import Zone, dns_server
from tests.support.infra import require
from tests.support.listener import Listener
from tests.support.raw_http import RawServer, raw_server

# --- certificates (tests/support/pki.py) -----------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    """PEM files: a local CA (60 days) and servers' (certificate chain, key) pairs.

    valid / expiring: leaves of the CA (30 and 5 days); self_signed: a self-signed leaf (30 days).
    The chains, each served as leaf + what follows it in the file, under the same CA unless said:
    short_intermediate: a 200-day leaf under an intermediate that expires in 5 days (issue #12 item 5);
    expired_intermediate: a 200-day leaf under an intermediate that expired yesterday;
    extra_expiring: a 200-day leaf and its 300-day intermediate, plus an unrelated CA certificate that
    expires in 3 days and is no part of the verified chain (blackbox_exporter #340's shape);
    short_root: a 200-day leaf and 300-day intermediate under another root, `short_root_ca`, that
    expires in 10 days and is not sent (it is only in the verified chain).
    `subjects` names each certificate of the chains: root, short_root, extra, and <chain>.<position>.
    """

    ca: Path
    valid: tuple[Path, Path]
    expiring: tuple[Path, Path]
    self_signed: tuple[Path, Path]
    short_intermediate: tuple[Path, Path]
    expired_intermediate: tuple[Path, Path]
    extra_expiring: tuple[Path, Path]
    short_root: tuple[Path, Path]
    short_root_ca: Path
    expiries: dict[str, float]
    subjects: dict[str, str]


@pytest.fixture(scope="session")
def certs(ca_dir: Path) -> Certs:
    """Made in the session's CA directory, so workers may read `ca` as a ca_bundle."""
    d = ca_dir / "certs"
    d.mkdir()
    root = pki.authority("checkgate test CA", days=60)
    short_root = pki.authority("checkgate short root", days=10)
    expiries: dict[str, float] = {"root": root.not_after, "short_root": short_root.not_after}
    subjects: dict[str, str] = {"root": root.subject, "short_root": short_root.subject}

    def served(name: str, *chain: pki.Issued) -> tuple[Path, Path]:
        for position, cert in enumerate(chain):
            expiries[f"{name}.{position}"] = cert.not_after
            subjects[f"{name}.{position}"] = cert.subject
        return pki.write_chain(d / f"{name}.pem", *chain), pki.write_key(d / f"{name}.key", chain[0])

    def under(issuer: pki.Issued, days: float, serial: int | None = None) -> pki.Issued:
        return pki.leaf(issuer, days, organization="checkgate tests", serial=serial)

    short = pki.authority("checkgate short intermediate", days=5, issuer=root)
    expired = pki.authority("checkgate expired intermediate", days=-1, since=30, issuer=root)
    long_ = pki.authority("checkgate long intermediate", days=300, issuer=root)
    other = pki.authority("checkgate other intermediate", days=300, issuer=short_root)
    extra = pki.authority("checkgate old cross-sign", days=3)
    expiries["extra"], subjects["extra"] = extra.not_after, extra.subject
    return Certs(
        ca=pki.write_chain(d / "ca.pem", root),
        valid=served("valid", under(root, 30, serial=1001)),
        expiring=served("expiring", under(root, 5, serial=1002)),
        self_signed=served("self_signed", pki.leaf(None, 30)),
        short_intermediate=served("short_intermediate", under(short, 200), short),
        expired_intermediate=served("expired_intermediate", under(expired, 200), expired),
        extra_expiring=served("extra_expiring", under(long_, 200), long_, extra),
        short_root=served("short_root", under(other, 200), other),
        short_root_ca=pki.write_chain(d / "short_root_ca.pem", short_root),
        expiries=expiries,
        subjects=subjects,
    )


@pytest.fixture(autouse=True)
def _ca_dirs(monkeypatch: pytest.MonkeyPatch, ca_dir: Path) -> None:
    """Checks called in-process read CA bundles from the session's CA directory, as its workers do."""
    monkeypatch.setenv("CHECKGATE_CA_DIRS", str(ca_dir))


# --- HTTP and HTTPS -------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Routes: /status/<code>, /old/<code> (HTTP/1.0), /redirect/<n>, /redirect-to?url=&code=, /slow?ms=,
    /big?bytes=, /chunked?chunks=, /gzip?text= (the text gzip-compressed), /echo, /text."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet tests
        pass

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        head, arg = segments[0], segments[1] if len(segments) > 1 else ""
        if head == "status":
            self._reply(int(arg), f"status {arg}\n".encode())
        elif head == "redirect":
            left = int(arg)
            target = f"/redirect/{left - 1}" if left > 1 else "/text"
            self._reply(302, b"", {"Location": target})
        elif head == "redirect-to":
            self._reply(int(query.get("code", "302")), b"", {"Location": query["url"]})
        elif head == "chunked":
            self._chunked(int(query.get("chunks", "3")))
        elif head == "old":
            self._old(int(arg or "200"))
        elif head == "slow":
            time.sleep(int(query.get("ms", "1000")) / 1000)
            self._reply(200, b"slow\n")
        elif head == "big":
            self._big(int(query.get("bytes", "1000000")))
        elif head == "gzip":
            body = gzip.compress(query.get("text", "").encode())
            self._reply(200, body, {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"})
        elif head == "echo":
            length = int(self.headers.get("Content-Length") or 0)
            seen = {"method": self.command, "headers": dict(self.headers), "body": self.rfile.read(length).decode()}
            self._reply(200, json.dumps(seen).encode(), {"Content-Type": "application/json"})
        else:
            self._reply(200, b"hello from checkgate tests\n")

    def _reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _chunked(self, chunks: int) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with contextlib.suppress(OSError):
            for i in range(chunks):
                data = f"chunk {i}\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    def _old(self, code: int) -> None:
        """An HTTP/1.0 answer whose body comes in a later segment: the client must read it after headers."""
        self.protocol_version = "HTTP/1.0"
        self.close_connection = True
        self.send_response(code)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.flush()
        time.sleep(0.05)
        self.wfile.write(b"old ok\n")

    def _big(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        block = b"x" * 65536
        try:
            while size > 0:
                self.wfile.write(block[: min(size, len(block))])
                size -= len(block)
        except OSError:
            pass  # the check stopped reading, as it should


class _TLSHTTPServer(ThreadingHTTPServer):
    """HTTPS: the handshake happens in the request's thread, so a failed one cannot stall the server."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext) -> None:
        super().__init__(address, _Handler)
        self.ctx = ctx

    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate: that is what some tests want
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


def _serve(server: socketserver.BaseServer) -> None:
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture(scope="session")
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    _serve(server)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _HTTP6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


@pytest.fixture(scope="session")
def http6_base() -> Iterator[str]:
    """The same HTTP routes on [::1], skipped where the machine has no IPv6 loopback."""
    try:
        server = _HTTP6Server(("::1", 0), _Handler)
    except OSError as exc:
        require(f"no IPv6 loopback ([::1]: {exc})")
    _serve(server)
    yield f"http://[::1]:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def tls_port(certs: Certs) -> Iterator[Callable[[str], int]]:
    """Port of an HTTPS server presenting the named certificate: valid, expiring or self_signed."""
    servers: dict[str, _TLSHTTPServer] = {}

    def port(which: str) -> int:
        if which not in servers:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*getattr(certs, which))
            servers[which] = _TLSHTTPServer(("127.0.0.1", 0), ctx)
            _serve(servers[which])
        return servers[which].server_address[1]

    yield port
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def odd_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], tuple[int, int, str]]]:
    """(port, position, CA PEM) of an HTTPS server whose chain holds the `pki.odd_leaf` of a kind, signed
    by the CA: as its leaf (position 0) where OpenSSL lets a server use it, else as the certificate after
    a valid leaf (position 1: a server may send anything there, OpenSSL does not look at it)."""
    d = tmp_path_factory.mktemp("odd-certs")
    root = pki.authority("checkgate odd CA", days=60)
    servers: dict[str, tuple[_TLSHTTPServer, int]] = {}

    def port(kind: str) -> tuple[int, int, str]:
        if kind not in servers:
            odd = pki.odd_leaf(kind, issuer=root)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                ctx.load_cert_chain(pki.write_chain(d / f"{kind}.pem", odd), pki.write_key(d / f"{kind}.key", odd))
                position = 0
            except ssl.SSLError:
                valid = pki.leaf(root, 30)
                chain = pki.write_chain(d / f"{kind}.pem", valid, odd)
                ctx.load_cert_chain(chain, pki.write_key(d / f"{kind}.key", valid))
                position = 1
            servers[kind] = (_TLSHTTPServer(("127.0.0.1", 0), ctx), position)
            _serve(servers[kind][0])
        server, position = servers[kind]
        return server.server_address[1], position, root.pem().decode()

    yield port
    for server, _ in servers.values():
        server.shutdown()
        server.server_close()


# --- scripted raw HTTP answers --------------------------------------------------------------------


@pytest.fixture(scope="session")
def raw_http() -> Iterator[RawServer]:
    """Scripted raw HTTP answers (tests/support/raw_http.py)."""
    with raw_server() as server:
        yield server


H2Routes = dict[str, tuple[list[tuple[str, str]], bytes]]


def _serve_h2(tls: ssl.SSLSocket, routes: H2Routes) -> None:
    """One HTTP/2 connection: each request gets the headers and body scripted for its :path; a
    ``(":status", "1xx")`` pair among the headers starts a new header block (an informational answer)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())
    while True:
        data = tls.recv(65536)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                path = dict((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers)[":path"]
                headers, body = routes.get(path, ([(":status", "404")], b""))
                blocks: list[list[tuple[str, str]]] = []
                for name, value in headers:
                    if name == ":status":
                        blocks.append([])
                    blocks[-1].append((name, value))
                for block in blocks[:-1]:
                    conn.send_headers(event.stream_id, block)
                conn.send_headers(event.stream_id, [*blocks[-1], ("content-length", str(len(body)))])
                conn.send_data(event.stream_id, body, end_stream=True)
        tls.sendall(conn.data_to_send())


@pytest.fixture(scope="session")
def h2_server(certs: Certs) -> Iterator[tuple[int, H2Routes]]:
    """An HTTPS server that speaks only HTTP/2 (ALPN h2), with the valid certificate: (port, routes)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*certs.valid)
    ctx.set_alpn_protocols(["h2"])
    routes: H2Routes = {}

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with (
                contextlib.suppress(OSError, h2.exceptions.ProtocolError),
                ctx.wrap_socket(self.request, server_side=True) as tls,
            ):
                tls.settimeout(5)
                _serve_h2(tls, routes)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    _serve(server)
    yield server.server_address[1], routes
    server.shutdown()
    server.server_close()


# --- TCP echo -------------------------------------------------------------------------------------

BANNER = b"HELLO checkgate-echo 1.0\r\n"


class _EchoHandler(socketserver.BaseRequestHandler):
    """Greets, then echoes each line; closes after QUIT."""

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # a client that hung up first (the TLS-to-plain-port test does)
            self._converse()

    def _converse(self) -> None:
        self.request.sendall(BANNER)
        buffer = b""
        while True:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip() == b"QUIT":
                    self.request.sendall(b"BYE\r\n")
                    return
                self.request.sendall(b"ECHO " + line + b"\n")


@pytest.fixture(scope="session")
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    _serve(server)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


# --- DNS ------------------------------------------------------------------------------------------

ZONE: Zone = {
    ("example.test.", "A"): ["192.0.2.10", "192.0.2.11"],
    ("example.test.", "AAAA"): ["2001:db8::10"],
    ("example.test.", "MX"): ["10 mail.example.test.", "20 backup.example.test."],
    ("example.test.", "TXT"): ['"v=spf1 -all"', '"hello" " world"'],
    ("xn--bcher-kva.example.test.", "A"): ["192.0.2.20"],
}
SILENT = "silent.example.test."  # never answered: the timeout case


@pytest.fixture(scope="session")
def dns_port() -> Iterator[int]:
    with dns_server(ZONE, silent=(SILENT,)) as port:
        yield port


# --- a protected endpoint that counts who reached it ----------------------------------------------


@pytest.fixture
def protected_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    """A listener the operator declared a protected endpoint (CHECKGATE_PROTECTED_ENDPOINTS)."""
    listener = Listener()
    monkeypatch.setenv("CHECKGATE_PROTECTED_ENDPOINTS", f"127.0.0.1:{listener.port}")
    yield listener
    listener.close()


# --- misc -----------------------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def soon() -> Callable[[float], float]:
    """A task deadline (epoch seconds) `seconds` from now."""
    return lambda seconds: time.time() + seconds
