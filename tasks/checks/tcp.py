"""`tcp`: does a port accept connections, and does it say what it should?

Modeled on blackbox_exporter's prober/tcp.go with one query/response step: connect (optionally over
TLS), send an optional string, and read until the reply matches an optional regex.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from tasks.checks._common import (
    NETWORK_ERRORS,
    Probe,
    ProbeFailure,
    ca_bundle_param,
    ca_pem_param,
    classify,
    connect,
    host_param,
    ip_version_param,
    port_param,
    regex_param,
    server_name_for,
    server_name_param,
    start_tls,
    tls_context,
    tls_details,
    verify_tls_param,
)
from tasks.checks._pattern import compile_pattern
from tasks.registry import Param, check

MAX_REPLY_BYTES = 64 * 1024
EXCERPT_CHARS = 256
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|[rnt0\\])")
_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}


def decode_escapes(text: str) -> bytes:
    r"""`text` as UTF-8 with ``\r \n \t \0 \\ \xHH`` decoded: typing CRLF in a query string is awkward."""
    out, pos = [], 0
    for match in _ESCAPE_RE.finditer(text):
        out.append(text[pos : match.start()].encode())
        code = match[1]
        out.append(bytes([int(code[1:], 16)]) if code.startswith("x") else _ESCAPES[code])
        pos = match.end()
    out.append(text[pos:].encode())
    return b"".join(out)


def _read_until(sock: socket.socket, pattern: Any, probe: Probe) -> tuple[str, bool]:
    """Read until the reply matches, the peer closes, `MAX_REPLY_BYTES` arrive or the deadline passes."""
    received = b""
    while len(received) < MAX_REPLY_BYTES:
        try:
            sock.settimeout(probe.deadline.remaining())
            chunk = sock.recv(MAX_REPLY_BYTES - len(received))
        except (TimeoutError, ProbeFailure):
            if received:  # something came, just not what was expected
                break
            raise
        if not chunk:
            break
        received += chunk
        if pattern.search(received.decode("utf-8", "replace")):
            return received.decode("utf-8", "replace"), True
    return received.decode("utf-8", "replace"), False


@check(
    "tcp",
    params=(
        host_param(),
        port_param(),
        Param("send", str, doc=r"text to send after connecting, UTF-8; \r \n \t \0 \\ \xHH are decoded"),
        regex_param("expect", "regex the reply must match (read until it does, the peer closes, or the deadline)"),
        Param("tls", bool, default=False, doc="speak TLS after connecting"),
        server_name_param(),
        verify_tls_param(),
        ca_bundle_param(),
        ca_pem_param(),
        ip_version_param(),
    ),
    default_timeout=30.0,
    max_timeout=120.0,
)
def tcp_check(
    host: str,
    port: int,
    send: str | None = None,
    expect: str | None = None,
    tls: bool = False,
    server_name: str | None = None,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    ca_pem: str | None = None,
    ip_version: str = "any",
    deadline: float | None = None,
) -> dict[str, Any]:
    """Connect to host:port (optionally TLS), send `send`, and check the reply against `expect`.

    Result: ip, port, connect_ms, tls_ms and tls_version with tls, and reply (an excerpt) with expect.
    """
    probe = Probe(deadline)
    facts: dict[str, Any] = {"host": host, "port": port}
    try:
        sock, endpoint = connect(host, port, probe, ip_version)
        facts["ip"] = endpoint.ip
        try:
            if tls:
                ctx = tls_context(verify_tls, ca_bundle, ca_pem=ca_pem)
                sock = start_tls(sock, server_name_for(endpoint, server_name), ctx, probe)
                facts["tls_version"] = tls_details(sock)["tls_version"]
            if send:
                sock.settimeout(probe.deadline.remaining())
                sock.sendall(decode_escapes(send))
            if expect is not None:
                reply, matched = _read_until(sock, compile_pattern(expect), probe)
                facts["reply"] = reply[:EXCERPT_CHARS]
                if not matched:
                    return _answer(probe, facts, "expect", f"reply does not match {expect!r}")
        finally:
            sock.close()
    except NETWORK_ERRORS as exc:
        return _answer(probe, facts, *classify(exc))
    return _answer(probe, facts)


def _answer(probe: Probe, facts: dict[str, Any], reason: str | None = None, detail: str = "") -> dict[str, Any]:
    timings = probe.phases_ms("connect", "tls")
    facts = {**facts, "connect_ms": timings["connect"]}
    if "tls_version" in facts:
        facts["tls_ms"] = timings["tls"]
    return probe.result(reason, detail, **facts)
