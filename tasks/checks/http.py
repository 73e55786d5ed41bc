"""`http`: one HTTP(S) request, timed phase by phase, judged by its status code and body.

Modeled on blackbox_exporter's prober/http.go. It is built on socket, ssl and http.client rather than
a client library so that every phase can be timed and every hop's address checked: the check resolves
the name itself, lets the target policy judge the chosen address, connects to that IP, wraps TLS with
the URL's host as server name, and speaks HTTP/1.1 over that socket. Redirects are followed hop by hop,
each hop going through the same guard.
"""

from __future__ import annotations

import http.client
import io
import re
import socket
import ssl
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urljoin

from tasks.checks._common import (
    NETWORK_ERRORS,
    Deadline,
    Probe,
    ca_bundle_param,
    ca_pem_param,
    classify,
    connect,
    ip_version_param,
    regex_param,
    start_tls,
    tls_context,
    tls_details,
    verify_tls_param,
)
from tasks.checks._guard import URLTarget, parse_url, validate_url
from tasks.checks._pattern import search
from tasks.registry import Param, ParamError, check

USER_AGENT = "checkgate/0.1"
MAX_BODY_BYTES = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PHASES = ("dns", "connect", "tls", "first_byte", "transfer")
# Framing is the check's own business: a caller-set length or encoding would desynchronize the exchange.
FORBIDDEN_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade", "expect"}
)
# Not carried to another origin by a redirect, as browsers and requests do.
ORIGIN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "host"})
MAX_HEADERS = 32
_READ_CHUNK = 64 * 1024
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS_ITEM_RE = re.compile(r"([1-5])xx|([1-5][0-9]{2})(?:-([1-5][0-9]{2}))?")


# --- parameters -----------------------------------------------------------------------------------


def parse_status_codes(spec: str) -> tuple[tuple[int, int], ...]:
    """``200-299,301`` or ``2xx,304`` as inclusive ranges; ValueError saying what is wrong."""
    ranges = []
    for item in (part.strip().lower() for part in spec.split(",")):
        match = _STATUS_ITEM_RE.fullmatch(item)
        if not match:
            raise ValueError(f"{item[:20]!r} is not a status code, range or class (e.g. 200-299,301 or 2xx)")
        if match[1]:
            low = int(match[1]) * 100
            ranges.append((low, low + 99))
            continue
        low, high = int(match[2]), int(match[3] or match[2])
        if low > high:
            raise ValueError(f"range {item!r} is empty")
        ranges.append((low, high))
    return tuple(ranges)


def parse_headers(spec: str) -> tuple[tuple[str, str], ...]:
    """``Name:Value|Name2:Value2`` as (name, value) pairs; ValueError saying what is wrong."""
    pairs = []
    for item in spec.split("|"):
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"{item[:40]!r} is not Name:Value")
        if name.lower() in FORBIDDEN_HEADERS:
            raise ValueError(f"header {name} is set by the check itself")
        if any((ord(ch) < 32 and ch != "\t") or ord(ch) == 127 for ch in value):
            raise ValueError(f"header {name} contains control characters")
        try:
            value.encode("latin-1")  # what HTTP/1.1 can carry; http.client would fail later otherwise
        except UnicodeEncodeError:
            raise ValueError(f"header {name} must be Latin-1 text") from None
        pairs.append((name, value))
    if len(pairs) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    return tuple(pairs)


def _validate_status_codes(spec: str) -> None:
    parse_status_codes(spec)


def _validate_headers(spec: str) -> None:
    parse_headers(spec)


def _check_args(kwargs: dict[str, Any]) -> None:
    """Rules across parameters (the gateway answers 400 naming the field)."""
    if kwargs.get("body") is not None and kwargs.get("method") != "POST":
        raise ParamError("body", "only allowed with method=POST")


# --- one request over a guarded socket ------------------------------------------------------------


class _DeadlineReader(io.RawIOBase):
    """Socket reads bounded by the check's deadline, re-armed before each recv so none outlives it."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(self._deadline.remaining())
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """What http.client uses of a socket, bounded by the deadline: a slow drip cannot hold a worker."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(self._deadline.remaining())
        self._sock.sendall(data)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        # http.client closes its connection as soon as it learns the server will close (HTTP/1.0,
        # "Connection: close"), before the body is read; the check closes the socket itself afterwards.
        pass


@dataclass(frozen=True)
class _Request:
    method: str
    body: bytes | None
    headers: tuple[tuple[str, str], ...]

    def redirected(self, status: int, same_origin: bool) -> _Request:
        """The request for the next hop: 303 (and 301/302 after POST) become a GET without body."""
        request = self
        if (status == 303 and self.method != "HEAD") or (status in (301, 302) and self.method == "POST"):
            kept = tuple(h for h in self.headers if h[0].lower() != "content-type")
            request = _Request("GET", None, kept)
        if not same_origin:
            kept = tuple(h for h in request.headers if h[0].lower() not in ORIGIN_HEADERS)
            request = replace(request, headers=kept)
        return request


@dataclass(frozen=True)
class _Hop:
    status: int
    location: str | None
    body: bytes


def _exchange(
    target: URLTarget,
    request: _Request,
    probe: Probe,
    tls: ssl.SSLContext | None,
    ip_version: str,
    limit: int,
    facts: dict[str, Any],
) -> _Hop:
    """Send one request to one allowed address and read at most `limit` body bytes.

    What is learnt along the way goes into `facts` at once, so a hop that fails halfway still reports it.
    """
    sock, endpoint = connect(target.host, target.port, probe, ip_version)
    facts["ip"] = endpoint.ip
    try:
        if tls is not None:
            sock = start_tls(sock, target.host, tls, probe)
            details = tls_details(sock)
            facts.update(tls_version=details["tls_version"], cert_expiry=details.get("not_after"))
        conn = http.client.HTTPConnection(target.host, target.port)
        conn.sock = _DeadlineSocket(sock, probe.deadline)  # set: http.client never connects by itself
        with probe.phase("first_byte"):
            _send(conn, target, request)
            response = conn.getresponse()
        with probe.phase("transfer"):
            body, truncated = _read_body(response, limit)
    finally:
        sock.close()
    facts.update(
        status_code=response.status,
        http_version="HTTP/1.0" if response.version == 10 else "HTTP/1.1",
        body_bytes=len(body),
        body_truncated=truncated,
    )
    return _Hop(response.status, response.getheader("Location"), body)


def _send(conn: http.client.HTTPConnection, target: URLTarget, request: _Request) -> None:
    conn.putrequest(request.method, target.target, skip_host=True, skip_accept_encoding=True)
    given = {name.lower() for name, _ in request.headers}
    for name, value in (("Host", target.netloc), ("User-Agent", USER_AGENT), ("Accept", "*/*")):
        if name.lower() not in given:
            conn.putheader(name, value)
    for name, value in request.headers:
        conn.putheader(name, value)
    conn.putheader("Connection", "close")
    if request.body is not None or request.method == "POST":
        conn.putheader("Content-Length", str(len(request.body or b"")))
    conn.endheaders(request.body)


def _read_body(response: http.client.HTTPResponse, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the body, and whether there was more."""
    chunks, size = [], 0
    while size < limit:
        chunk = response.read(min(_READ_CHUNK, limit - size))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    more = response.length > 0 if response.length is not None else bool(response.read(1))
    return b"".join(chunks), more


# --- the check ------------------------------------------------------------------------------------


def _answer(probe: Probe, facts: dict[str, Any], reason: str | None = None, detail: str = "") -> dict[str, Any]:
    phases = probe.phases_ms(*PHASES)
    phases["total"] = probe.elapsed_ms()
    return probe.result(reason, detail, **facts, phases_ms=phases)


def _judge(
    hop: _Hop, codes: tuple[tuple[int, int], ...], spec: str, match: str | None, not_match: str | None
) -> tuple[str, str] | None:
    """The first failed assertion as (reason, detail), or None when all hold."""
    if not any(low <= hop.status <= high for low, high in codes):
        return "status_codes", f"status {hop.status} is not in {spec}"
    text = hop.body.decode("utf-8", "replace")
    if match is not None and not search(match, text):
        return "body_match", f"body does not match {match!r}"
    if not_match is not None and search(not_match, text):
        return "body_not_match", f"body matches {not_match!r}"
    return None


@check(
    "http",
    params=(
        Param(
            "url",
            str,
            required=True,
            doc="http:// or https:// URL; no credentials, non-ASCII host names are IDNA-encoded",
            validator=validate_url,
        ),
        Param("method", str, default="GET", choices=("GET", "HEAD", "POST"), doc="request method"),
        Param("body", str, max_length=8192, doc="request body, sent as UTF-8; only with method=POST"),
        Param(
            "headers",
            str,
            max_length=4096,
            doc="extra request headers as Name:Value|Name2:Value2 ('|' separates headers, so a value cannot "
            "contain it); Host may be set, framing headers (Content-Length, Connection…) may not",
            validator=_validate_headers,
        ),
        Param(
            "status_codes",
            str,
            default="200-299",
            max_length=200,
            doc="accepted status codes: codes, ranges and classes, comma-separated (200-299,301 or 2xx,304)",
            validator=_validate_status_codes,
        ),
        regex_param("body_match", "regex the body (its first max_body_bytes, as UTF-8) must match"),
        regex_param("body_not_match", "regex the body (its first max_body_bytes, as UTF-8) must not match"),
        Param("follow_redirects", bool, default=True, doc="follow 301/302/303/307/308 (each hop is re-checked)"),
        Param("max_redirects", int, default=10, min=0, max=20, doc="redirects to follow before failing"),
        verify_tls_param(),
        ca_bundle_param(),
        ca_pem_param(),
        ip_version_param(),
        Param(
            "max_body_bytes",
            int,
            default=MAX_BODY_BYTES,
            min=0,
            max=10 * 1024 * 1024,
            doc="body bytes read at most; the rest is not read (body_truncated: true)",
        ),
    ),
    default_timeout=30.0,
    max_timeout=120.0,
    validator=_check_args,
)
def http_check(
    url: str,
    method: str = "GET",
    body: str | None = None,
    headers: str | None = None,
    status_codes: str = "200-299",
    body_match: str | None = None,
    body_not_match: str | None = None,
    follow_redirects: bool = True,
    max_redirects: int = 10,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    ca_pem: str | None = None,
    ip_version: str = "any",
    max_body_bytes: int = MAX_BODY_BYTES,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Request `url`; ok when the final status is in `status_codes` and the body assertions hold.

    Result: status_code, http_version, final_url, redirects, ip, body_bytes, body_truncated, phases_ms
    (dns, connect, tls, first_byte = request sent until response headers, transfer, total; summed over
    redirect hops) and, for https, tls_version and cert_expiry (epoch seconds).
    """
    probe = Probe(deadline)
    facts: dict[str, Any] = {"url": url, "final_url": url, "redirects": 0}
    codes = parse_status_codes(status_codes)
    request = _Request(method, body.encode() if body is not None and method == "POST" else None, ())
    if headers:
        request = replace(request, headers=parse_headers(headers))
    try:
        target = parse_url(url)
    except ValueError as exc:
        return _answer(probe, facts, "invalid_target", str(exc))
    try:
        while True:
            facts = {"url": url, "final_url": target.url, "redirects": facts["redirects"]}
            tls = tls_context(verify_tls, ca_bundle, ("http/1.1",), ca_pem=ca_pem) if target.scheme == "https" else None
            hop = _exchange(target, request, probe, tls, ip_version, max_body_bytes, facts)
            if not (follow_redirects and hop.status in REDIRECT_STATUSES and hop.location):
                break
            if facts["redirects"] >= max_redirects:
                return _answer(probe, facts, "too_many_redirects", f"more than {max_redirects} redirects")
            try:
                next_target = parse_url(urljoin(target.url, hop.location))
            except ValueError as exc:
                return _answer(probe, facts, "bad_redirect", f"Location {hop.location[:80]!r}: {exc}")
            request = request.redirected(hop.status, same_origin=next_target.origin == target.origin)
            target = next_target
            facts["redirects"] += 1
    except NETWORK_ERRORS as exc:
        return _answer(probe, facts, *classify(exc))
    failed = _judge(hop, codes, status_codes, body_match, body_not_match)
    return _answer(probe, facts, *failed) if failed else _answer(probe, facts)
