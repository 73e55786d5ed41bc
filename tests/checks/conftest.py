"""Real targets on 127.0.0.1 for the check tests: HTTP(S), TLS, TCP echo and DNS servers, and certificates.

Everything listens on an ephemeral loopback port in a daemon thread and is shared by the session.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

# --- certificates (openssl CLI: the `cryptography` package is not a dependency) --------------------

_OPENSSL_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[self_ext]
basicConstraints = CA:FALSE
subjectAltName = DNS:localhost,IP:127.0.0.1
"""
_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Certs:
    """PEM files: a local CA, leaves it signed (30 days, 5 days), and a self-signed leaf."""

    ca: Path
    valid: tuple[Path, Path]
    expiring: tuple[Path, Path]
    self_signed: tuple[Path, Path]


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _leaf(d: Path, name: str, days: int, serial: int) -> tuple[Path, Path]:
    _openssl(
        "req",
        "-new",
        "-config",
        "openssl.cnf",
        *_EC_KEY,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        "/CN=localhost/O=checkgate tests",
        cwd=d,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        str(serial),
        "-days",
        str(days),
        "-extfile",
        "openssl.cnf",
        "-extensions",
        "leaf_ext",
        "-out",
        f"{name}.pem",
        cwd=d,
    )
    return d / f"{name}.pem", d / f"{name}.key"


@pytest.fixture(scope="session")
def certs(ca_dir: Path) -> Certs:
    """Made in the session's CA directory, so workers may read `ca` as a ca_bundle."""
    d = ca_dir / "certs"
    d.mkdir()
    (d / "openssl.cnf").write_text(_OPENSSL_CONF)
    _openssl(
        "req",
        "-x509",
        "-config",
        "openssl.cnf",
        "-extensions",
        "ca_ext",
        *_EC_KEY,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "60",
        "-subj",
        "/CN=checkgate test CA",
        cwd=d,
    )
    _openssl(
        "req",
        "-x509",
        "-config",
        "openssl.cnf",
        "-extensions",
        "self_ext",
        *_EC_KEY,
        "-keyout",
        "self.key",
        "-out",
        "self.pem",
        "-days",
        "30",
        "-subj",
        "/CN=localhost",
        cwd=d,
    )
    return Certs(
        d / "ca.pem", _leaf(d, "valid", 30, 1001), _leaf(d, "expiring", 5, 1002), (d / "self.pem", d / "self.key")
    )


@pytest.fixture(autouse=True)
def _ca_dirs(monkeypatch: pytest.MonkeyPatch, ca_dir: Path) -> None:
    """Checks called in-process read CA bundles from the session's CA directory, as its workers do."""
    monkeypatch.setenv("CHECKGATE_CA_DIRS", str(ca_dir))


# --- HTTP and HTTPS -------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Routes: /status/<code>, /old/<code> (HTTP/1.0), /redirect/<n>, /redirect-to?url=&code=, /slow?ms=,
    /big?bytes=, /chunked?chunks=, /echo, /text."""

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
    except OSError:
        pytest.skip("no IPv6 loopback")
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

ZONE = {
    ("example.test.", "A"): ["192.0.2.10", "192.0.2.11"],
    ("example.test.", "AAAA"): ["2001:db8::10"],
    ("example.test.", "MX"): ["10 mail.example.test.", "20 backup.example.test."],
    ("example.test.", "TXT"): ['"v=spf1 -all"', '"hello" " world"'],
    ("xn--bcher-kva.example.test.", "A"): ["192.0.2.20"],
}
SILENT = "silent.example.test."  # never answered: the timeout case


def _dns_answer(wire: bytes) -> bytes | None:
    query = dns.message.from_wire(wire)
    question = query.question[0]
    name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
    if name == SILENT:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    values = ZONE.get((name, rdtype))
    if values:
        response.answer.append(dns.rrset.from_text(question.name, 300, "IN", rdtype, *values))
    elif not any(key[0] == name for key in ZONE):
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response.to_wire()


@pytest.fixture(scope="session")
def dns_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            answer = _dns_answer(wire)
            if answer is not None:
                sock.sendto(answer, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    sock.close()


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
