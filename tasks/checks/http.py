"""`http`: one HTTP(S) request, timed phase by phase, judged by its status code and body.

Modeled on blackbox_exporter's prober/http.go. The HTTP itself is done by libraries; the check keeps
what a plain client does not give: the target policy on every hop, phase timings, the deadline on every
blocking call, bounded reads, and TLS facts.

- **httpcore** (HTTP/1.1 through h11, HTTP/2 through h2) frames the exchange: Content-Length and chunked
  bodies (a body shorter than its length is a protocol error, not a short success), 1xx responses
  (100, 102, 103… are skipped; an unsolicited 101 is an error), bodies read to close, HEAD, a 100 KiB
  cap on the response head (`MAX_HEAD_BYTES`), malformed status lines and headers. httpcore reaches the
  network through
  `_GuardedBackend`: the host is resolved and judged by the target policy (`_common.connect`) before
  any connection, the connection goes to that pinned address while Host and SNI stay the URL's, TLS is
  `_common.start_tls` with the shared `tls_context`, and every read and write is bounded by the
  check's deadline. httpcore never follows redirects (that is httpx's layer, not used here):
  `http_check` follows them hop by hop, each through the same guard.
- **urllib3** (>= 2.7) decodes content codings (gzip, x-gzip, deflate, br, zstd, and chains of them)
  through its public streaming API, `HTTPResponse(body=…, preload_content=False).read(amt)`, which
  decodes at most `amt` bytes however small the input (its fixes for CVE-2025-66471 and
  CVE-2025-66418). httpx's decoders have no such bound: in httpx 0.28.1 one `decode()` call turned 1,617
  wire bytes of brotli into 1 GiB in 8 s (2 GiB RSS), 8,211 bytes of zstd into 256 MiB, and a 64 KiB
  read of gzip into 64 MiB. Wire bytes are capped too (`max_body_bytes` + 64 KiB). What a check may hold
  (the body, and its text when a pattern must read it) is reserved from the worker's body budget
  (`_budget`, issue #11 F10); a body that is ASCII or valid UTF-8 is searched as it is, without a text.

Why httpcore, and what it costs. Measured on the 2-core VM (shared with other work: load 9 to 20),
one local Tornado target in its own process answering ``GET /text`` (27 bytes, Connection: close), CPU
of the checking process per check, medians of 3 interleaved rounds, serial / 60 threads, two runs:
http.client (the previous check) 556 / 347 and 442 / 448 us; this check 671 / 563 and 658 / 584 us;
httpx.Client over the same backend (a Client per check) 1,327 / 979 and 1,380 / 1,123 us; pycurl
(RESOLVE-pinned, libcurl timings) 355 / 314 and 378 / 343 us. ``python -m bench.http_cpu --seconds 10
--rounds 3`` (60 threads, old = main's http.client check): 413 -> 672 us (1.63x), and 529 -> 738 us
(1.40x) once main's costlier target policy was merged, i.e. 0.2 to 0.25 ms of a core more per check:
h11's and httpcore's pure-Python event handling, where http.client is leaner. pycurl is the cheapest,
but libcurl owns the TLS connection: no Python SSL object, so neither the shared `tls_context` (the
``ca_bundle`` policy) nor `tls_details` (certificate facts, the chain's expiry, verify reasons) could
serve it, certificates would be re-parsed from CERTINFO text, and its wheel carries its own OpenSSL and
a libcurl without zstd. h11 without httpcore would save part of the cost but give up HTTP/2 and
httpcore's tested connection handling.

Result fields: see `http_check`. Body patterns see the decoded body as text as browsers read it: the
Encoding Standard's decode (WHATWG), done by **webencodings** (html5lib's implementation of it): a
byte-order mark wins, else the charset of its Content-Type when it is one of the Standard's labels, else
UTF-8. Python's own codec names are not labels: ``utf-7``, ``unicode_escape``, ``idna`` or ``undefined``
would read text no browser reads (or raise), so they fall back to UTF-8 like any unknown label.

What a target sends never raises out of the check: a status, length or header it cannot send correctly
is a ``protocol_error``. A Content-Length beyond 2^63 - 1 is one, as Go's net/http (blackbox_exporter's
client) refuses it: no 64-bit client can hold it, and the result's serializer (msgpack) could not either.
"""

from __future__ import annotations

import codecs
import email.message
import io
import re
import socket
import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urljoin

import h2.exceptions
import httpcore
import urllib3
import webencodings
from urllib3.exceptions import DecodeError

from tasks.checks._budget import Reservation, process_budget
from tasks.checks._common import (
    NETWORK_ERRORS,
    Probe,
    ProbeFailure,
    ca_bundle_param,
    ca_pem_param,
    classify,
    connect,
    ip_version_param,
    regex_param,
    search,
    start_tls,
    tls_context,
    tls_details,
    verify_tls_param,
)
from tasks.checks._guard import URLTarget, parse_url, validate_url
from tasks.registry import Param, ParamError, check

USER_AGENT = "checkgate/0.1"
MAX_BODY_BYTES = 64 * 1024
# Wire bytes read beyond max_body_bytes at most: room for codings that grow a little (stored deflate
# blocks, gzip headers), never the unbounded input of a stream that decodes to nothing.
WIRE_SLACK = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PHASES = ("dns", "connect", "tls", "first_byte", "transfer")
# Framing is the check's own business: a caller-set length or encoding would desynchronize the exchange.
FORBIDDEN_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade", "expect"}
)
# Not carried to another origin by a redirect, as browsers and requests do.
ORIGIN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "host"})
MAX_HEADERS = 32
# The largest response head (status line and header fields) a check accepts: httpcore's own bound on
# h11's buffer. h11 enforces it only while the head is incomplete, so a head that arrives in larger
# reads can pass it; counting the parsed head makes the bound the same however the bytes arrive.
MAX_HEAD_BYTES = 100 * 1024
# Content codings urllib3 decodes here (br and zstd need the brotli and backports.zstd packages).
DECODED_CODINGS = frozenset(urllib3.HTTPResponse.CONTENT_DECODERS)
_READ_CHUNK = 64 * 1024
# Bytes of the worker's body budget (`_budget`) a body's text takes beyond the body itself, per body byte:
# measured with tracemalloc, 4 MiB bodies matched by body_match (tests/checks/test_budget.py): a UTF-8 body
# with one character beyond U+FFFF and one invalid byte (a 4-byte-wide str, its UTF-8 copy for RE2, the
# decoder's narrower first try) peaked at 9x the body, windows-1252 with every byte non-ASCII at 6x.
TEXT_BYTES_PER_BODY_BYTE = 8
_UTF8_CHUNK = 64 * 1024
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Encodings (Encoding Standard names) that read ASCII bytes as the same ASCII text.
_ASCII_COMPATIBLE = ("windows-", "iso-8859-", "koi8-", "ibm866", "macintosh", "x-mac-")
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS_ITEM_RE = re.compile(r"([1-5])xx|([1-5][0-9]{2})(?:-([1-5][0-9]{2}))?")
# Printable ASCII is kept as it is when a Location that is not UTF-8 gets its other bytes percent-encoded.
_LOCATION_SAFE = bytes(range(0x21, 0x7F)).decode("ascii")
_HTTP1_START = b"HTTP/"
# The largest Content-Length a check accepts: Go's net/http parses it into 63 bits (strconv.ParseUint(cl,
# 10, 63)), and msgpack, the result serializer, holds 64 at most.
MAX_CONTENT_LENGTH = 2**63 - 1


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
    """``Name:Value|Name2:Value2`` as (name, value) pairs; ValueError saying what is wrong.

    A value is text of code points up to U+00FF, each sent as the one octet it stands for (Latin-1), as
    fetch() sends a header's ByteString: ``%C3%BF`` in a query string is ``ÿ`` and goes out as 0xFF. HTTP
    field values are octets and RFC 9110 allows 0x80-0xFF (obs-text) in them."""
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
            value.encode("latin-1")  # what an HTTP/1.1 header can carry
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
    if kwargs.get("method") == "HEAD":
        # A HEAD answer has no body: body_not_match would always pass and body_match always fail.
        for name in ("body_match", "body_not_match"):
            if kwargs.get(name) is not None:
                raise ParamError(name, "has no body to judge with method=HEAD")


# --- httpcore's way to the network: guarded, pinned, timed, bounded by the deadline ---------------


class _ContextStandIn:
    """What httpcore is given as its SSL context.

    httpcore calls ``set_alpn_protocols`` on the context it holds before every handshake; done on the
    shared, cached context of `tls_context`, that write would race with handshakes of other threads
    (OpenSSL frees the old ALPN list that a concurrent SSL_new may be copying). The stream shakes hands
    with the real context instead, whose ALPN list is the one httpcore would set.
    """

    def set_alpn_protocols(self, protocols: list[str]) -> None:
        pass


@dataclass
class _Hop:
    """One request's connection settings and what was learnt on the way (kept when the hop fails).

    `waiting` holds the ``first_byte`` phase: opened by the request's first write, closed when
    httpcore has the response head.
    """

    target: URLTarget
    probe: Probe
    ip_version: str
    tls: ssl.SSLContext | None
    facts: dict[str, Any]
    waiting: ExitStack = field(default_factory=ExitStack)
    sent: bool = False


class _GuardedStream(httpcore.NetworkStream):
    """A socket whose every read and write is bounded by the check's deadline.

    It also checks that an HTTP/1 answer starts with ``HTTP/``: h11 judges a status line only once the
    whole head is in, so a service that greets with a banner and waits (SSH, SMTP, an echo server)
    would otherwise hold the check until its deadline instead of being a protocol error at once.
    """

    def __init__(self, sock: socket.socket, hop: _Hop) -> None:
        self._sock = sock
        self._hop = hop
        self._start = b""  # the answer's first bytes until they are known to start with HTTP/
        self._started = isinstance(sock, ssl.SSLSocket) and sock.selected_alpn_protocol() == "h2"

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._sock.settimeout(self._hop.probe.deadline.remaining())
        data = self._sock.recv(max_bytes)
        if not self._started and data:
            self._start += data[: len(_HTTP1_START)]
            if not _HTTP1_START.startswith(self._start[: len(_HTTP1_START)]):
                raise httpcore.RemoteProtocolError(f"not an HTTP response: {self._start[:40]!r}")
            self._started = len(self._start) >= len(_HTTP1_START)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:  # h11 hands over empty writes (an empty body, its end): no syscall for them
            return
        if not self._hop.sent:
            self._hop.sent = True
            self._hop.waiting.enter_context(self._hop.probe.phase("first_byte"))
        self._sock.settimeout(self._hop.probe.deadline.remaining())
        try:
            self._sock.sendall(buffer)
        except TimeoutError:
            raise
        except OSError as exc:
            # httpcore then reads the response a server may have sent before closing (e.g. a 413).
            raise httpcore.WriteError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _GuardedStream:
        """TLS with the hop's context and the URL's host as server name (phase ``tls``), then its facts."""
        hop = self._hop
        assert hop.tls is not None, "httpcore shakes hands only for https origins"
        tls = start_tls(self._sock, hop.target.host, hop.tls, hop.probe)
        details = tls_details(tls)
        hop.facts.update(tls_version=details["tls_version"], cert_expiry=details.get("earliest_expiry"))
        return _GuardedStream(tls, hop)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":  # httpcore reads the ALPN outcome from it
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        return self._sock if info == "socket" else None


class _GuardedBackend(httpcore.NetworkBackend):
    """Connects httpcore to the hop's host through `_common.connect`: resolved by the check, judged by
    the target policy before connecting, pinned to that address (phases ``dns`` and ``connect``)."""

    def __init__(self, hop: _Hop) -> None:
        self._hop = hop

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> _GuardedStream:
        hop = self._hop
        sock, endpoint = connect(hop.target.host, hop.target.port, hop.probe, hop.ip_version)
        hop.facts["ip"] = endpoint.ip
        return _GuardedStream(sock, hop)


# --- one exchange ---------------------------------------------------------------------------------


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

    def wire_headers(self, target: URLTarget, http2: bool) -> list[tuple[bytes, bytes]]:
        """Host, User-Agent and Accept unless given, the caller's headers, then the framing ones, as the
        octets sent (Latin-1, see `parse_headers`; httpcore takes text headers as ASCII only)."""
        given = {name.lower() for name, _ in self.headers}
        defaults = (("Host", target.netloc), ("User-Agent", USER_AGENT), ("Accept", "*/*"))
        out = [(name, value) for name, value in defaults if name.lower() not in given] + list(self.headers)
        if not (http2 and target.scheme == "https"):  # HTTP/2 forbids it; the check closes after a hop anyway
            out.append(("Connection", "close"))
        if self.body is not None or self.method == "POST":
            out.append(("Content-Length", str(len(self.body or b""))))
        return [(name.encode("ascii"), value.encode("latin-1")) for name, value in out]


@dataclass(frozen=True)
class _Answer:
    status: int
    location: bytes | None
    content_type: str | None
    body: bytearray


class _WireBody(io.RawIOBase):
    """A response body as httpcore delivers it (de-chunked, still content-coded), as a file.

    Counts the bytes handed out (``consumed``) and stops at `limit`: what is past it is never read.
    """

    def __init__(self, chunks: Iterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._limit = limit
        self._pending = b""
        self._ended = False
        self.consumed = 0
        self.capped = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes of the current chunk (the next one when it is used up); b"" at the end."""
        room = self._limit - self.consumed if size < 0 else min(size, self._limit - self.consumed)
        if room <= 0:
            self.capped = self.capped or self.more()
            return b""
        if not self.more():
            return b""
        part, self._pending = self._pending[:room], self._pending[room:]
        self.consumed += len(part)
        return part

    def readinto(self, buffer: Any) -> int:
        part = self.read(len(buffer))
        buffer[: len(part)] = part
        return len(part)

    def more(self) -> bool:
        """Whether the body goes on past what was handed out (reads one more chunk at most)."""
        if not self._pending and not self._ended:
            self._pending = next(filter(None, self._chunks), b"")  # an empty chunk is no end
            self._ended = not self._pending
        return bool(self._pending)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """A response header's raw value; repeated ones joined by commas (RFC 9110 §5.3)."""
    values = [value for key, value in headers if key.lower() == name]
    return b", ".join(values) if values else None


def _codings(value: bytes | None) -> list[str]:
    """The content codings of a Content-Encoding value, in the order they were applied."""
    if value is None:
        return []
    codings = (token.strip().lower() for token in value.decode("latin-1").split(","))
    return [coding for coding in codings if coding and coding != "identity"]


def _read_body(
    response: httpcore.Response, limit: int, known_length: int | None, facts: dict[str, Any], needs_text: bool
) -> bytearray:
    """At most `limit` decoded body bytes; sizes and truncation go into `facts`.

    `known_length` is the body's Content-Length when it frames this body, so truncation is known without
    waiting for more. A body in a content coding the check cannot decode is read as it is (its size is
    the wire size) unless body patterns need its text: then it is a ``protocol_error``.
    """
    codings = _codings(_header(response.headers, b"content-encoding"))
    undecodable = [c for c in codings if c not in DECODED_CODINGS]
    if undecodable and needs_text:
        raise ProbeFailure("protocol_error", f"cannot decode Content-Encoding {', '.join(undecodable)!r}")
    decoding = bool(codings) and not undecodable
    wire = _WireBody(response.iter_stream(), limit + WIRE_SLACK if decoding else limit)
    if decoding:
        decoded = urllib3.HTTPResponse(
            body=wire, headers={"content-encoding": ", ".join(codings)}, preload_content=False, decode_content=True
        )
        reader = decoded.read
    else:
        reader = wire.read
    body = bytearray()  # grown in place: a list of parts joined at the end held the body twice
    size = 0
    try:
        while size < limit:
            part = reader(min(_READ_CHUNK, limit - size))
            if not part:
                break
            body += part
            size += len(part)
        if size < limit:
            truncated = wire.capped
        elif not decoding and known_length is not None:
            truncated = known_length > wire.consumed
        else:
            truncated = bool(reader(1)) or wire.capped
    except DecodeError as exc:
        if not wire.capped:  # a stream cut by the wire cap is incomplete, not corrupt
            raise ProbeFailure("protocol_error", f"cannot decode the {', '.join(codings)} body: {exc}") from None
        truncated = True
    except urllib3.exceptions.HTTPError as exc:
        # urllib3 wraps the socket's errors; the check reports the original (a timeout, a reset…).
        raise exc.__cause__ or ProbeFailure("protocol_error", str(exc)) from None
    facts.update(body_bytes=size, body_wire_bytes=wire.consumed, body_truncated=truncated)
    return body


def _exchange(hop: _Hop, request: _Request, limit: int, http2: bool, needs_text: bool) -> _Answer:
    """Send one request over a new guarded connection and read at most `limit` decoded body bytes.

    What is learnt along the way goes into ``hop.facts`` at once, so a hop that fails halfway still
    reports it.
    """
    target, probe = hop.target, hop.probe
    url = httpcore.URL(scheme=target.scheme, host=target.host, port=target.port, target=target.target)
    connection = httpcore.HTTPConnection(
        origin=url.origin,
        ssl_context=_ContextStandIn(),  # type: ignore[arg-type]  # see _ContextStandIn
        http1=True,
        http2=http2,
        network_backend=_GuardedBackend(hop),
    )
    try:
        # httpcore returns once the response head is in: that ends first_byte (see _Hop). Its `trace`
        # extension would tell too, at ~12 callbacks a request.
        with hop.waiting:
            try:
                response = connection.handle_request(
                    httpcore.Request(
                        request.method, url, headers=request.wire_headers(target, http2), content=request.body
                    )
                )
            except ValueError as exc:
                if isinstance(exc, OSError):  # ssl.SSLCertVerificationError is both: a TLS failure
                    raise
                # httpcore reads an HTTP/2 :status with int(): "abc" is its ValueError.
                raise httpcore.RemoteProtocolError(f"malformed response ({exc})") from None
        if not 0 <= response.status <= 999:  # h11 reads three digits; an HTTP/2 :status may say anything
            raise httpcore.RemoteProtocolError(f"status {str(response.status)[:20]} is not a three-digit code")
        head_bytes = sum(len(name) + len(value) + 4 for name, value in response.headers)  # "name: value\r\n"
        if head_bytes > MAX_HEAD_BYTES:
            raise httpcore.RemoteProtocolError(f"response head of {head_bytes} bytes exceeds {MAX_HEAD_BYTES}")
        hop.facts.update(status_code=response.status, http_version=response.extensions["http_version"].decode("ascii"))
        length = _header(response.headers, b"content-length")
        known_length = None
        if length is not None and length.isdigit():
            if int(length) > MAX_CONTENT_LENGTH:
                raise httpcore.RemoteProtocolError(f"Content-Length {length[:30].decode()} is beyond 2^63 - 1")
            hop.facts["content_length"] = int(length)
            if _header(response.headers, b"transfer-encoding") is None:  # else chunked frames the body
                known_length = int(length)
        if request.method == "HEAD" or response.status in (204, 304):
            known_length = 0  # no body follows, whatever Content-Length says (RFC 9110 §8.6)
        with probe.phase("transfer"):
            body = _read_body(response, limit, known_length, hop.facts, needs_text)
        response.close()
    finally:
        connection.close()
    content_type = _header(response.headers, b"content-type")
    return _Answer(
        response.status,
        _header(response.headers, b"location"),
        content_type.decode("latin-1") if content_type is not None else None,
        body,
    )


def _location_url(base: str, raw: bytes) -> str:
    """The absolute URL a Location header points to; ValueError when it holds control characters.

    UTF-8 is read as UTF-8 (servers send raw UTF-8 paths and host names; parse_url then percent-encodes
    the path and IDNA-encodes the host), other bytes are percent-encoded as they are, and spaces inside
    become %20, as browsers do. A tab is refused rather than dropped as urljoin would (parse_url's rule).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = quote(raw, safe=_LOCATION_SAFE + " \t")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError("Location must not contain control characters")
    return urljoin(base, text.strip(" ").replace(" ", "%20"))


def _searchable(body: bytearray, content_type: str | None) -> bytearray | None:
    """`body` itself when its bytes are already the UTF-8 form of its text (`_body_text`), which is what
    RE2 searches: no byte-order mark, and UTF-8 that is valid, or ASCII in an ASCII-compatible encoding.
    None otherwise (the body must be decoded). Spares the body's text and its UTF-8 copy (2 to 8 times
    the body's size) for most bodies; the check reads in `_UTF8_CHUNK` pieces to say so."""
    if body.startswith(_BOMS):
        return None
    encoding = _declared_encoding(content_type)
    name = encoding.name if encoding is not None else "utf-8"
    if body.isascii():
        return body if name == "utf-8" or name.startswith(_ASCII_COMPATIBLE) else None
    if name != "utf-8":
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(body)
    try:
        for start in range(0, len(body), _UTF8_CHUNK):
            decoder.decode(view[start : start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    return body


def _declared_encoding(content_type: str | None) -> webencodings.Encoding | None:
    """The Encoding Standard encoding the charset of `content_type` names, or None."""
    if not content_type:
        return None
    message = email.message.Message()
    message["content-type"] = content_type
    charset = message.get_param("charset")
    if isinstance(charset, str) and charset.isascii():  # labels are ASCII
        return webencodings.lookup(charset)
    return None


def _body_text(body: bytes | bytearray, content_type: str | None) -> str:
    """The body as text, by the Encoding Standard's decode: its byte-order mark, else the charset of its
    Content-Type when that is an Encoding Standard label, else UTF-8; malformed bytes become U+FFFD."""
    encoding = _declared_encoding(content_type)
    return webencodings.decode(body, encoding or webencodings.UTF8, errors="replace")[0]


def read_reservation(max_body_bytes: int) -> int:
    """Bytes of the worker's body budget a check reading `max_body_bytes` may hold while it reads and judges:
    the body (in a bytearray, which over-allocates up to 1/8 as it grows) and the wire bytes past it."""
    return max_body_bytes + max_body_bytes // 8 + WIRE_SLACK + _READ_CHUNK


# --- the check ------------------------------------------------------------------------------------


def _answer(probe: Probe, facts: dict[str, Any], reason: str | None = None, detail: str = "") -> dict[str, Any]:
    phases = probe.phases_ms(*PHASES)
    phases["total"] = probe.elapsed_ms()
    return probe.result(reason, detail, **facts, phases_ms=phases)


def _failure(exc: BaseException) -> tuple[str, str]:
    """The reason and detail of an exception out of a hop."""
    if isinstance(exc, httpcore.NetworkError | httpcore.TimeoutException) and exc.__cause__ is not None:
        return _failure(exc.__cause__)
    if isinstance(exc, httpcore.TimeoutException):
        return "timeout", str(exc) or "timed out"
    if isinstance(exc, httpcore.ProtocolError | h2.exceptions.ProtocolError):
        return "protocol_error", f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpcore.NetworkError):
        return "connection_error", f"{type(exc).__name__}: {exc}"
    return classify(exc)


# What a hop may raise when the target is down, slow or wrong; anything else is a bug and raises.
_HOP_ERRORS = (
    *NETWORK_ERRORS,
    httpcore.ProtocolError,
    httpcore.NetworkError,
    httpcore.TimeoutException,
    h2.exceptions.ProtocolError,
)


def _judge(
    probe: Probe,
    answer: _Answer,
    codes: tuple[tuple[int, int], ...],
    spec: str,
    match: str | None,
    not_match: str | None,
    reservation: Reservation,
    truncated: bool = False,
) -> tuple[str, str] | None:
    r"""The first failed assertion as (reason, detail), or None when all hold. Keeps of `reservation` only
    what judging this body needs.

    `truncated`: only the first `max_body_bytes` of the body were read. body_not_match found there fails
    as on the whole body, but *not* found in part of a body it proves nothing: ``body_truncated``, not a
    pass. body_match passes on a cut body only with a match that ends before the cut (its assertions,
    ``$`` and ``\b``, then see read text, so it is a match of the whole body too); a match that reaches the
    cut (``^[a]*$`` on a run of ``a`` cut mid-way) might not be one: ``body_truncated``."""
    held = read_reservation(len(answer.body))
    if not any(low <= answer.status <= high for low, high in codes):
        reservation.shrink(held)
        return "status_codes", f"status {answer.status} is not in {spec}"
    if match is None and not_match is None:
        return None
    text = _searchable(answer.body, answer.content_type)
    if text is not None:
        reservation.shrink(held)
    else:
        # Decoded to a str (and encoded to UTF-8 again for RE2): up to TEXT_BYTES_PER_BODY_BYTE more.
        reservation.shrink(held + TEXT_BYTES_PER_BODY_BYTE * len(answer.body))
        text = _body_text(answer.body, answer.content_type)
    failed = _match_body(probe, text, match, not_match)
    cut_match = failed is None and match is not None and truncated
    if cut_match and not search(probe, match, text, "body_match", before_end=True):
        detail = (
            f"body_match {match!r} matches only up to the end of the {len(answer.body)} bytes read "
            "(max_body_bytes): the rest of the body could undo it"
        )
        return "body_truncated", detail
    if failed is None and not_match is not None and truncated:
        detail = (
            f"body_not_match {not_match!r} cannot be judged: the body is longer than the {len(answer.body)} "
            "bytes read (max_body_bytes)"
        )
        return "body_truncated", detail
    return failed


def _match_body(
    probe: Probe, text: str | bytearray, match: str | None, not_match: str | None
) -> tuple[str, str] | None:
    if match is not None and not search(probe, match, text, "body_match"):
        return "body_match", f"body does not match {match!r}"
    if not_match is not None and search(probe, not_match, text, "body_not_match"):
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
            "contain it); Host may be set, framing headers (Content-Length, Connection…) may not; values are "
            "characters up to U+00FF, each sent as its Latin-1 octet (%C3%BF, ÿ, goes out as 0xFF)",
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
        regex_param(
            "body_match",
            "regex the body must match somewhere, as blackbox_exporter's fail_if_body_not_matches_regexp: matched "
            "once against the whole body text (its first max_body_bytes, decoded from gzip/deflate/br/zstd, read "
            "in the charset of its Content-Type, else UTF-8), so ^ and $ anchor at the body's start and end; (?m) "
            "makes them anchor at each line; on a body longer than max_body_bytes only a match ending before "
            "the cut passes (one reaching it, e.g. ending in $, answers reason body_truncated)",
        ),
        regex_param(
            "body_not_match",
            "regex the body must not match anywhere, as blackbox_exporter's fail_if_body_matches_regexp: matched "
            "once against the whole body text (read as for body_match), ^ and $ as in body_match; a body longer "
            "than max_body_bytes in which it is not found is not a pass (reason body_truncated)",
        ),
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
            doc="decoded body bytes read at most; the rest is not read (body_truncated: true). Beyond the "
            "default, held within the worker's body budget (CHECKGATE_BODY_BUDGET_BYTES): a check that cannot "
            "get its share by its deadline answers reason body_budget",
        ),
        Param("http2", bool, default=False, doc="offer HTTP/2 to https targets (ALPN); http:// stays HTTP/1.1"),
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
    http2: bool = False,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Request `url`; ok when the final status is in `status_codes` and the body assertions hold.

    Result (of the last hop): status_code, http_version (HTTP/1.0, HTTP/1.1, HTTP/2), final_url,
    redirects, ip, content_length (the Content-Length header, when sent), body_bytes (decoded, at most
    max_body_bytes), body_wire_bytes (the body bytes those took on the wire, content-coded), body_truncated,
    phases_ms (dns, connect, tls, first_byte = request sent until response head, transfer, total; summed
    over redirect hops) and, for https, tls_version and cert_expiry (epoch seconds: the earliest expiry
    over the certificate chain, see `_common.tls_details`).

    Besides the shared reasons: ``body_budget`` when the worker's body budget (`_budget`) cannot hold
    what `max_body_bytes` (with a body pattern, its text too) may take, by the deadline;
    ``body_truncated`` when `body_not_match` is not found in a body cut at `max_body_bytes` (what
    follows was not read, so the assertion cannot pass).
    """
    probe = Probe(deadline)
    facts: dict[str, Any] = {"url": url, "final_url": url, "redirects": 0}
    codes = parse_status_codes(status_codes)
    request = _Request(method, body.encode() if body is not None and method == "POST" else None, ())
    if headers:
        request = replace(request, headers=parse_headers(headers))
    needs_text = body_match is not None or body_not_match is not None
    alpn = ("http/1.1", "h2") if http2 else ("http/1.1",)  # the list httpcore sets (see _ContextStandIn)
    try:
        target = parse_url(url)
    except ValueError as exc:
        return _answer(probe, facts, "invalid_target", str(exc))
    try:
        # The most the body and its text may hold, from the worker's body budget (`_budget`), until the
        # body is judged; `_judge` gives back what this body turns out not to need.
        most = read_reservation(max_body_bytes) + (TEXT_BYTES_PER_BODY_BYTE * max_body_bytes if needs_text else 0)
        what = f"max_body_bytes={max_body_bytes}" + (" with a body pattern" if needs_text else "")
        with process_budget().reserve(most, probe.deadline, what) as reservation:
            while True:
                facts = {"url": url, "final_url": target.url, "redirects": facts["redirects"]}
                tls = tls_context(verify_tls, ca_bundle, alpn, ca_pem=ca_pem) if target.scheme == "https" else None
                hop = _Hop(target, probe, ip_version, tls, facts)
                answer = _exchange(hop, request, max_body_bytes, http2, needs_text)
                if not (follow_redirects and answer.status in REDIRECT_STATUSES and answer.location):
                    break
                if facts["redirects"] >= max_redirects:
                    return _answer(probe, facts, "too_many_redirects", f"more than {max_redirects} redirects")
                try:
                    next_target = parse_url(_location_url(target.url, answer.location))
                except ValueError as exc:
                    return _answer(probe, facts, "bad_redirect", f"Location {answer.location[:80]!r}: {exc}")
                request = request.redirected(answer.status, same_origin=next_target.origin == target.origin)
                target = next_target
                facts["redirects"] += 1
                del answer  # a redirect's body is not judged: the next hop's must not be held beside it
            failed = _judge(
                probe,
                answer,
                codes,
                status_codes,
                body_match,
                body_not_match,
                reservation,
                truncated=bool(facts.get("body_truncated")),
            )
    except _HOP_ERRORS as exc:  # the budget's ProbeFailure too, and _judge's (no time left to match)
        return _answer(probe, facts, *_failure(exc))
    return _answer(probe, facts, *failed) if failed else _answer(probe, facts)
