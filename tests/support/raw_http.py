"""HTTP/1.1 as exact bytes over loopback sockets, both ends: a server that answers each path with
scripted bytes (`raw_server`), and a client that sends exact bytes and reads what comes back
(`exchange`, `answer`) — for what a well-behaved HTTP library will not send or will not accept."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# --- the server: scripted answers -----------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A scripted answer, written byte for byte: `parts` with `pause` seconds between them, then the
    connection held open for `hold` seconds (a server keeping it alive) before it is closed."""

    parts: tuple[bytes, ...]
    pause: float = 0.0
    hold: float = 0.0


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 that answers each request with the bytes scripted for its path (over
    TLS when `scheme` is https).

    `answer(path, *parts, pause=, hold=)` scripts a path (as sent on the request line, percent-escapes
    and all; see `Raw`) and returns its URL; `requests[path]` holds the request heads received for it.
    Unknown paths get a 404.
    """

    port: int
    routes: dict[str, Raw]
    requests: dict[str, list[bytes]]
    scheme: str = "http"

    def answer(self, path: str, *parts: bytes, pause: float = 0.0, hold: float = 0.0) -> str:
        self.routes[path] = Raw(parts, pause, hold)
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"


class _RawHandler(socketserver.BaseRequestHandler):
    server: socketserver.ThreadingTCPServer

    def handle(self) -> None:
        state: RawServer = self.server.state  # type: ignore[attr-defined]
        tls: ssl.SSLContext | None = self.server.tls  # type: ignore[attr-defined]
        sock: socket.socket = self.request
        sock.settimeout(5)
        head = b""
        with contextlib.suppress(OSError):  # ssl.SSLError included: a client that refused our certificate
            if tls is not None:
                sock = tls.wrap_socket(sock, server_side=True)
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                head += chunk
            path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else ""
            state.requests.setdefault(path, []).append(head)
            raw = state.routes.get(path, Raw((b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",)))
            for i, part in enumerate(raw.parts):
                if i and raw.pause:
                    time.sleep(raw.pause)
                sock.sendall(part)
            if raw.hold:
                time.sleep(raw.hold)
        if sock is not self.request:
            sock.close()  # the TLS socket took the connection over from the one socketserver closes


@contextlib.contextmanager
def raw_server(tls: ssl.SSLContext | None = None) -> Iterator[RawServer]:
    """A `RawServer` on an ephemeral loopback port, served by daemon threads until the block ends; behind
    a TLS handshake with the server context `tls` if given."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RawHandler)
    server.daemon_threads = True
    server.tls = tls  # type: ignore[attr-defined]
    server.state = RawServer(server.server_address[1], {}, {}, "https" if tls else "http")  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server.state  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


# --- the client: exact bytes out, the raw answer back ---------------------------------------------


def address(base: str) -> tuple[str, int]:
    """(host, port) of a base URL such as http://127.0.0.1:8888."""
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def exchange(base: str, data: bytes, timeout: float = 10.0, body_after: int = 0) -> bytes:
    """Send `data` (then `body_after` more bytes from another thread, as a client streaming a body
    does), read until the server closes; b"" when it answered nothing before `timeout`."""
    with socket.create_connection(address(base), timeout=timeout) as sock:
        sock.sendall(data)
        sender = None
        if body_after:

            def send_body() -> None:
                chunk = b"z" * 65536
                try:
                    for start in range(0, body_after, len(chunk)):
                        sock.sendall(chunk[: body_after - start])
                except OSError:
                    pass  # the server closed its side: it will not read this body

            sender = threading.Thread(target=send_body, daemon=True)
            sender.start()
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        if sender is not None:
            sender.join(timeout)
        return received


def trickle(base: str, head: bytes, every: float = 0.25, timeout: float = 30.0) -> bytes:
    """Send `head`, then one more byte of a header name every `every` s, never ending the head (slowloris),
    until the server closes or `timeout` passes; what the server sent meanwhile."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(address(base), timeout=timeout) as sock:
        sock.sendall(head)
        sock.settimeout(every)
        while time.monotonic() - started < timeout:
            try:
                sock.sendall(b"X")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
    return received


def answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """(status, headers with lower-case names, JSON body) of an answer; status 0 when there is none."""
    if not raw.startswith(b"HTTP/1.1 "):
        return 0, {}, raw
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    try:
        return int(lines[0].split()[1]), headers, json.loads(body)
    except ValueError:
        return int(lines[0].split()[1]), headers, body


def is_json_refusal(raw: bytes, status: int, field: str | None = None) -> bool:
    """Whether `raw` is the gateway edge's refusal: `status`, a JSON body with `error` (and `field`
    naming the part at fault when given), and `Connection: close`."""
    got, headers, body = answer(raw)
    return (
        got == status
        and headers.get("content-type", "").startswith("application/json")
        and headers.get("connection") == "close"
        and isinstance(body, dict)
        and bool(body.get("error"))
        and (field is None or body.get("field") == field)
    )
