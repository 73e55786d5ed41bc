"""The gateway's HTTP edge: how much of a request is read, how long it may take, and a JSON answer with
the right status when it is refused — decided before any handler runs and before any body is read.

Why subclasses of Tornado's HTTP/1 server rather than only its options (Tornado 6.6: http1connection.py,
iostream.py, netutil.py):

* Tornado answers a malformed request line or header, a bad Host, a bad Content-Length and more than
  1,000 query parameters with a bare ``HTTP/1.1 400 Bad Request`` and no body
  (``HTTP1Connection._read_message_inner``), and drops the connection without any answer when a head
  is longer than ``max_header_size`` (``IOStream`` closes itself on ``UnsatisfiableReadError``).
* ``tornado.web`` buffers a request body (up to ``max_buffer_size``, 100 MB) before a handler may refuse
  it: ten 95 MB POSTs took the gateway from 56 MB to 1.5 GB RSS only to answer 405, and with no
  ``body_timeout`` a request whose body never came stayed open for ever.
* ``netutil.add_accept_handler`` lets an ``accept()`` error escape; at EMFILE the listening socket stays
  readable, so the loop calls the handler again at once: a busy loop logging a traceback each turn.

What changes, each as narrow as Tornado allows:

* `_EdgeStream` (an ``IOStream``): a head read (or a chunk-size line) that reaches its limit returns
  what it read instead of closing the stream, so the connection can still answer 414/431 (400); its
  search for the head's end resumes where the last one stopped (Tornado's searches the whole buffer on
  every arrival: quadratic for a head sent a byte at a time); once a head's first byte is in, the rest
  must follow within ``head_timeout`` (408, then close: slowloris).
* `EdgeConnection` (an ``HTTP1Connection``): checks each head in ``_parse_headers`` (size, request
  line, URI length, parameter count, whether a body may follow) and turns every refusal — its own and
  Tornado's ``HTTPInputError`` — into a JSON answer with ``Connection: close``; a refused body is never
  read (only drained for ``linger`` seconds, discarded, so the answer is not lost to a TCP reset); an
  accepted body must arrive within ``body_timeout`` (408); an answer the client does not take (it
  stops reading) closes the connection after ``idle_timeout`` instead of holding it for ever.
* `EdgeServer` (an ``HTTPServer``) puts them together and accepts connections with a loop that pauses
  (``ACCEPT_PAUSE_S``) instead of spinning when ``accept()`` fails, logging at a bounded rate.

Statuses: 400 malformed request line, header, Host, body framing, or more than `max_query_params`
parameters; 405 a method other than GET/HEAD that announces a body (outside `body_paths`); 408 head
or body not received in time; 413 a body on GET/HEAD, or larger than its path's cap (`max_body_bytes`,
or a smaller one `body_paths` gives); 414 a request
target longer than `max_uri_bytes`; 431 a head longer than `max_head_bytes`. The body is the API's
error shape, ``{"error": …, "field": …}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from http.client import responses
from typing import Any

from tornado import gen, httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters, HTTP1ServerConnection
from tornado.httpserver import HTTPServer, _HTTPRequestContext
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError
from tornado.log import gen_log

from gateway.ratelog import RateLimitedLog

log = logging.getLogger("checkgate.gateway.edge")

# Seconds the accept loop rests after accept() failed for another reason than "no connection waiting"
# (EMFILE, ENFILE, ENOBUFS, ENOMEM…): connections wait in the listen backlog meanwhile, and retrying
# costs one failed system call per pause instead of a busy loop.
ACCEPT_PAUSE_S = 0.1
# Connections accepted per readiness event before other work gets a turn (Tornado's own bound).
ACCEPT_BATCH = 128
# Seconds a draining process waits for the first request of a connection it has just accepted: a client
# sends it right after connecting, so one silent for this long is idle and closed (gateway/server.py).
FIRST_REQUEST_GRACE_S = 2.0
# accept() errors that concern one connection only: skip it and go on (accept(2), "Error handling").
_CONNECTION_ERRNOS = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR, errno.ENETDOWN, errno.ENETUNREACH}
    | {errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.ENONET}
)


@dataclass(frozen=True)
class EdgeLimits:
    """What a request may be (bytes, counts, seconds) before the edge refuses it."""

    # Request line plus headers; a longer head is a 431 (a 414 when its request line alone is too long).
    max_head_bytes: int = 64 * 1024
    # Request target (path and query); longer is a 414. Checks take at most a few 2 KiB parameters.
    max_uri_bytes: int = 16 * 1024
    # Query parameters; more is a 400. Tornado's own parser refuses past the same number.
    max_query_params: int = 1000
    # Largest body accepted where bodies are accepted at all (the console's form posts); larger is a 413.
    max_body_bytes: int = 64 * 1024
    # Seconds a connection may wait for the first byte of its next request (keep-alive), as before.
    idle_timeout: float = 75.0
    # Seconds from a head's first byte to its end; then 408 and close (slowloris).
    head_timeout: float = 10.0
    # Seconds an accepted body may take to arrive; then 408 and close.
    body_timeout: float = 10.0
    # After refusing a request whose rest may still be coming, read and discard for at most this many
    # seconds and bytes before closing: closing a socket with unread data sends a reset, which can
    # destroy the answer before the client reads it.
    linger_s: float = 2.0
    linger_bytes: int = 1024 * 1024


class EdgeRefusal(Exception):
    """A request the edge answers itself: status, message, the field at fault, extra headers.

    `linger`: whether bytes of the request may still be coming (then they are drained, not read).
    """

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        linger: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message[:300]
        self.field = field
        self.headers = headers or {}
        self.linger = linger

    def response(self, head_only: bool = False) -> bytes:
        """The whole HTTP/1.1 answer: JSON body, `Connection: close` (no body for a HEAD request)."""
        error: dict[str, Any] = {"error": self.message}
        if self.field:
            error["field"] = self.field
        body = json.dumps(error, separators=(",", ":")).encode()
        lines = [
            f"HTTP/1.1 {self.status} {responses.get(self.status, 'Error')}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


# The longest text each bounded read's end pattern matches (HTTP1Connection's head end and chunk-size line
# end): a new chunk is searched from that many bytes minus one before its start, not from the buffer's.
_HEAD_END = b"\r?\n\r?\n"
_END_WIDTHS = {_HEAD_END: 4, b"\r\n": 2}


@dataclass
class _BoundedScan:
    """A read that ends at `pattern` or after `limit` bytes, whichever comes first: where the search for
    `pattern` resumes (`start`), so that each byte is searched about once however the read arrives."""

    pattern: re.Pattern[bytes]
    limit: int
    width: int | None  # None: a pattern of unknown width, searched from the start each time
    start: int = 0
    searched: int = 0  # where the last search ended: nothing new, nothing to search


class _EdgeStream(IOStream):
    """An IOStream whose bounded head reads end at the limit instead of closing, and must finish in time.

    Tornado searches the whole buffer for a read's delimiter each time bytes arrive
    (``IOStream._find_read_pos``): quadratic in a head that arrives in small pieces. A bounded read here
    resumes its search where the last one stopped (`_BoundedScan`), counting the bytes searched in
    ``EdgeServer.scanned_bytes``. Measured (2 cores, loaded): a 64 KiB head sent in 8-byte pieces cost the
    whole-buffer search 7.0 s of CPU before its 431, the resumed one 0.23 s (90 KB searched).
    """

    def __init__(self, sock: socket.socket, edge: EdgeServer, **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._edge = edge
        self._reading_head = False
        self._head_timer: object | None = None
        self._scan: _BoundedScan | None = None

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None) -> Awaitable[bytes]:
        """With `max_bytes` (HTTP1Connection reading a request head): the data up to `regex`, or the first
        `max_bytes` bytes when it does not occur within them; the caller tells which by the data."""
        if max_bytes is None:
            return super().read_until_regex(regex)
        self._reading_head = True
        future = self._read_bounded(regex, max_bytes)
        future.add_done_callback(self._head_read)  # type: ignore[attr-defined]
        return future

    def read_until(self, delimiter: bytes, max_bytes: int | None = None) -> Awaitable[bytes]:
        """With `max_bytes` (a chunked body's size line): like `read_until_regex` above, so that a line
        too long is answered (400) instead of closing the stream."""
        if max_bytes is None:
            return super().read_until(delimiter)
        return self._read_bounded(re.escape(delimiter), max_bytes)

    def _read_bounded(self, regex: bytes, limit: int) -> Awaitable[bytes]:
        self._scan = _BoundedScan(re.compile(regex), limit, _END_WIDTHS.get(regex))
        # Tornado's bookkeeping for a regex read (future, state); the search itself is `_find_read_pos`'s.
        return super().read_until_regex(regex)

    def _find_read_pos(self) -> int | None:
        scan = self._scan
        if scan is None or self._read_regex is None:
            return super()._find_read_pos()
        size = self._read_buffer_size
        # A match must start within the limit; it may end up to width - 1 bytes past it.
        end = min(size, scan.limit - 1 + scan.width) if scan.width else size
        if scan.width and end <= scan.searched:
            return scan.limit if size >= scan.limit else None  # Tornado asks again without new bytes
        start = min(scan.start, end) if scan.width else 0
        match = scan.pattern.search(self._read_buffer, start, end)
        self._edge.scanned_bytes += end - start
        if match is not None and match.start() < scan.limit:
            return match.end()
        if size >= scan.limit:
            return scan.limit
        scan.start = max(0, end - scan.width + 1) if scan.width else 0
        scan.searched = end
        return None

    def _read_from_buffer(self, pos: int) -> None:
        self._scan = None
        super()._read_from_buffer(pos)

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        count = super().read_from_fd(buf)
        if count and self._reading_head and self._head_timer is None:
            self._head_timer = self.io_loop.call_later(self._edge.limits.head_timeout, self._head_too_slow)
        return count

    def awaiting_head(self) -> bool:
        """Whether the stream waits for a request head of which no byte has come (idle between requests)."""
        # _read_buffer_size is IOStream's: bytes read ahead (a pipelined request) make it not idle.
        return self._reading_head and self._head_timer is None and not self._read_buffer_size

    def _head_read(self, _: object) -> None:
        self._reading_head = False
        if self._head_timer is not None:
            self.io_loop.remove_timeout(self._head_timer)
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.closed() or not self._reading_head:
            return
        seconds = self._edge.limits.head_timeout
        refusal = EdgeRefusal(408, f"request head not complete within {seconds:g} s", linger=False)
        self._edge.refused(refusal, self._edge_peer())
        with contextlib.suppress(StreamClosedError, OSError):
            self.write(refusal.response())  # a few hundred bytes: written at once, before the close
        self.close()

    def _edge_peer(self) -> str:
        try:
            return str(self.socket.getpeername()[0])
        except (OSError, AttributeError, IndexError):
            return "?"


class EdgeConnection(HTTP1Connection):
    """Tornado's HTTP/1 server connection, with the edge's checks and JSON refusals (see the module doc)."""

    def __init__(self, stream: IOStream, params: HTTP1ConnectionParameters, context: Any, edge: EdgeServer) -> None:
        super().__init__(stream, False, params, context)
        self.edge = edge
        self._method = ""
        self._pending: EdgeRefusal | None = None

    def refuse_later(self, refusal: EdgeRefusal) -> None:
        """Answer `refusal` instead of reading this request's body (the application refused its head)."""
        self._pending = refusal

    async def _read_message(self, delegate: httputil.HTTPMessageDelegate) -> bool:
        try:
            return await super()._read_message(delegate)
        except EdgeRefusal as refusal:
            await self._refuse(refusal)
            return False

    async def _refuse(self, refusal: EdgeRefusal) -> None:
        stream = self.stream
        self.edge.refused(refusal, str(self.context))
        if stream is None or stream.closed():
            return
        if self._response_start_line is not None:
            stream.close()  # an answer already started: nothing else can be said on this connection
            return
        try:
            await stream.write(refusal.response(head_only=self._method == "HEAD"))
        except StreamClosedError:
            return
        if refusal.linger:
            await _drain_and_close(stream, self.edge.limits)
        else:
            stream.close()

    def finish(self) -> None:
        super().finish()
        if not self._finish_future.done():
            # The answer is written but the client has not taken it (it does not read): after idle_timeout
            # the connection is closed rather than held for ever.
            io_loop = self.stream.io_loop
            timer = io_loop.call_later(self.edge.limits.idle_timeout, self._answer_not_taken)
            self._finish_future.add_done_callback(lambda _: io_loop.remove_timeout(timer))

    def _answer_not_taken(self) -> None:
        if self.stream is not None and not self.stream.closed():
            self.edge.ratelog.log(
                logging.INFO, "answer not taken", "closed a connection whose client did not read its answer"
            )
            self.stream.close()

    def _parse_headers(self, data: bytes) -> tuple[str, httputil.HTTPHeaders]:
        limits = self.edge.limits
        if not data.endswith((b"\n\n", b"\n\r\n")):
            # The head read stopped at max_head_bytes without the head's end.
            line_end = data.find(b"\n")
            if line_end < 0:
                raise EdgeRefusal(414, f"request URI longer than {limits.max_uri_bytes} bytes", "uri")
            self._check_start_line(data[:line_end].decode("latin-1").strip())
            raise EdgeRefusal(431, f"request head longer than {limits.max_head_bytes} bytes", "headers")
        try:
            start_line, headers = super()._parse_headers(data)
        except httputil.HTTPInputError as exc:
            raise EdgeRefusal(400, f"malformed request head: {exc}", "headers") from None
        request = self._check_start_line(start_line)
        self._check_body(request, headers)
        return start_line, headers

    def _check_start_line(self, line: str) -> httputil.RequestStartLine:
        limits = self.edge.limits
        try:
            request = httputil.parse_request_start_line(line)
        except httputil.HTTPInputError as exc:
            raise EdgeRefusal(400, f"malformed request line: {exc}", "request") from None
        self._method = request.method
        if len(request.path) > limits.max_uri_bytes:
            raise EdgeRefusal(414, f"request URI longer than {limits.max_uri_bytes} bytes", "uri")
        query = request.path.partition("?")[2]
        if query and query.count("&") + 1 > limits.max_query_params:
            raise EdgeRefusal(400, f"more than {limits.max_query_params} query parameters", "query")
        return request

    def _check_body(self, request: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> None:
        length = 0
        if "Content-Length" in headers:
            # Tornado accepts a repeated Content-Length when every copy agrees; so do we.
            values = {value.strip() for value in headers["Content-Length"].split(",")}
            if len(values) != 1 or not (value := values.pop()).isdigit():
                raise EdgeRefusal(400, "Content-Length must be one non-negative integer", "headers")
            length = int(value)
        if not length and "Transfer-Encoding" not in headers:
            return
        limit = self.edge.body_limit(request.path)
        if limit is None:
            if request.method in ("GET", "HEAD"):
                raise EdgeRefusal(413, f"{request.method} takes no request body", "body")
            message = f"method {request.method} not allowed: this API takes GET and HEAD"
            raise EdgeRefusal(405, message, "method", {"Allow": "GET, HEAD"})
        if length > limit:
            raise EdgeRefusal(413, f"request body larger than {limit} bytes", "body")
        # A chunked body (no Content-Length) is held to the same cap while it is read.
        self.set_max_body_size(limit)

    def _read_body(
        self, code: int, headers: httputil.HTTPHeaders, delegate: httputil.HTTPMessageDelegate
    ) -> Awaitable[None] | None:
        if self._pending is not None:
            raise self._pending
        try:
            reading = super()._read_body(code, headers, delegate)
        except httputil.HTTPInputError as exc:
            raise EdgeRefusal(400, f"malformed request body framing: {exc}", "body") from None
        return None if reading is None else self._read_body_in_time(reading)

    async def _read_body_in_time(self, reading: Awaitable[None]) -> None:
        seconds = self.edge.limits.body_timeout
        try:
            await gen.with_timeout(self.stream.io_loop.time() + seconds, reading, StreamClosedError)
        except TimeoutError:
            raise EdgeRefusal(408, f"request body not complete within {seconds:g} s", linger=False) from None
        except httputil.HTTPInputError as exc:
            status = 413 if "too large" in str(exc) or "too long" in str(exc) else 400
            raise EdgeRefusal(status, f"bad request body: {exc}", "body") from None


async def _drain_and_close(stream: IOStream, limits: EdgeLimits) -> None:
    """Close a refused connection gracefully: end our side, discard what the client still sends (up
    to the linger limits), then close — so its answer is read rather than reset."""
    try:
        stream.socket.shutdown(socket.SHUT_WR)
        deadline = stream.io_loop.time() + limits.linger_s
        drained = 0
        while drained < limits.linger_bytes:
            chunk = await gen.with_timeout(deadline, stream.read_bytes(65536, partial=True), StreamClosedError)
            drained += len(chunk)
    except (TimeoutError, StreamClosedError, OSError):
        pass
    finally:
        stream.close()


class _EdgeServerConnection(HTTP1ServerConnection):
    """Tornado's per-connection request loop, reading each request with an `EdgeConnection`."""

    def __init__(self, stream: IOStream, params: HTTP1ConnectionParameters, context: Any, edge: EdgeServer) -> None:
        super().__init__(stream, params, context)
        self.edge = edge
        self.accepted = IOLoop.current().time()
        self.answered = 0

    def idle(self, now: float) -> bool:
        """Whether closing the connection now cuts nothing: it waits for a request of which no byte has come,
        having answered one already or been silent for `FIRST_REQUEST_GRACE_S` since it was accepted."""
        stream = self.stream
        if stream.closed():
            return True
        waiting = isinstance(stream, _EdgeStream) and stream.awaiting_head()
        return waiting and (self.answered > 0 or now - self.accepted > FIRST_REQUEST_GRACE_S)

    async def _server_request_loop(self, delegate: httputil.HTTPServerConnectionDelegate) -> None:
        # Tornado 6.6's loop, with EdgeConnection in place of HTTP1Connection.
        try:
            while True:
                conn = EdgeConnection(self.stream, self.params, self.context, self.edge)
                request_delegate = delegate.start_request(self, conn)
                try:
                    ret = await conn.read_response(request_delegate)
                except (StreamClosedError, UnsatisfiableReadError, asyncio.CancelledError):
                    return
                except Exception:
                    gen_log.error("Uncaught exception", exc_info=True)
                    conn.close()
                    return
                self.answered += 1
                if not ret:
                    return
                await asyncio.sleep(0)
        finally:
            delegate.on_close(self)


class _GuardedDelegate(httputil.HTTPMessageDelegate):
    """Passes a request to the application, but turns an `HTTPInputError` it raises on the head (a bad
    Host, say) into the edge's JSON 400 instead of Tornado's bare one."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, connection: httputil.HTTPConnection) -> None:
        self.inner = inner
        self.connection = connection
        self.refused = False

    def headers_received(
        self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> Awaitable[None] | None:
        try:
            return self.inner.headers_received(start_line, headers)
        except httputil.HTTPInputError as exc:
            if not isinstance(self.connection, EdgeConnection):
                raise
            self.refused = True
            self.connection.refuse_later(EdgeRefusal(400, f"malformed request: {exc}", "headers"))
            return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return None if self.refused else self.inner.data_received(chunk)

    def finish(self) -> None:
        if not self.refused:
            self.inner.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.inner.on_connection_close()


class EdgeServer(HTTPServer):
    """Tornado's HTTPServer with the edge's limits, JSON refusals and a pausing accept loop.

    `limits`: the `EdgeLimits`; `body_paths`: path prefixes whose handlers read request bodies (the
    console's forms, up to `limits.max_body_bytes`), or a mapping of such prefixes to their own smaller
    caps in bytes (Flower's task API) — everywhere else a body is refused from the head; `on_refusal(status)`: called
    for every refusal (for the metrics). No TLS (the gateway serves plain HTTP behind its proxy).
    """

    def initialize(  # type: ignore[override]
        self,
        request_callback: httputil.HTTPServerConnectionDelegate | Callable[[httputil.HTTPServerRequest], None],
        limits: EdgeLimits | None = None,
        body_paths: Iterable[str] | Mapping[str, int] = (),
        on_refusal: Callable[[int], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self.limits = limits = limits or EdgeLimits()
        cap = limits.max_body_bytes
        if isinstance(body_paths, Mapping):
            self.body_caps = {prefix: min(limit, cap) for prefix, limit in body_paths.items()}
        else:
            self.body_caps = dict.fromkeys(body_paths, cap)
        self.body_paths = tuple(self.body_caps)
        self.on_refusal = on_refusal
        self.ratelog = RateLimitedLog(log)
        # Bytes the bounded reads (request heads, chunk-size lines) have searched: linear in what arrived.
        self.scanned_bytes = 0
        kwargs.setdefault("max_buffer_size", 4 * max(limits.max_head_bytes, limits.max_body_bytes))
        super().initialize(
            request_callback,
            max_header_size=limits.max_head_bytes,
            idle_connection_timeout=limits.idle_timeout,
            max_body_size=limits.max_body_bytes,
            body_timeout=None,  # EdgeConnection bounds body reads itself, answering 408
            **kwargs,
        )
        self._acceptors: list[_Acceptor] = []

    def accepts_body(self, path: str) -> bool:
        """Whether requests to `path` may carry a body (up to `body_limit(path)` bytes)."""
        return self.body_limit(path) is not None

    def body_limit(self, path: str) -> int | None:
        """The largest body requests to `path` may carry, or None when they may carry none."""
        for prefix, limit in self.body_caps.items():
            if path.startswith(prefix):
                return limit
        return None

    def refused(self, refusal: EdgeRefusal, peer: str) -> None:
        """Count and log (at a bounded rate) a refusal."""
        if self.on_refusal is not None:
            self.on_refusal(refusal.status)
        self.ratelog.log(
            logging.INFO,
            f"refused {refusal.status}",
            "refused a request from %s: %d %s",
            peer,
            refusal.status,
            refusal.message,
        )

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        if self.ssl_options is not None:
            raise RuntimeError("EdgeServer serves plain HTTP only")
        # The same socket in an _EdgeStream; the IOStream TCPServer made has not touched the loop yet.
        edge_stream = _EdgeStream(
            stream.socket, self, max_buffer_size=stream.max_buffer_size, read_chunk_size=stream.read_chunk_size
        )
        # As HTTPServer.handle_stream, with our connection class.
        context = _HTTPRequestContext(edge_stream, address, self.protocol, self.trusted_downstream)
        conn = _EdgeServerConnection(edge_stream, self.conn_params, context, self)
        self._connections.add(conn)
        conn.start_serving(self)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _GuardedDelegate(super().start_request(server_conn, request_conn), request_conn)

    def open_connections(self) -> int:
        """How many client connections are open."""
        return len(self._connections)

    def idle(self) -> bool:
        """Whether every open connection is idle (`_EdgeServerConnection.idle`): a draining process may close
        them all without cutting a request short."""
        now = IOLoop.current().time()
        return all(conn.idle(now) for conn in self._connections if isinstance(conn, _EdgeServerConnection))

    def stop(self) -> None:
        """Stop listening, after taking every connection already queued on the sockets.

        Connections the kernel queued on a listening socket that closes are reset. With one process per
        port that is only what arrives during the stop; with several sharing the port (`SO_REUSEPORT`),
        each has its own accept queue, and the ones queued on a process that stops are lost although
        its siblings keep serving, unless net.ipv4.tcp_migrate_req=1 hands them over (Linux >= 5.14).
        Accepting right up to the close, with nothing else run in between, leaves only the microseconds
        between the last accept and the close (README: rolling restart)."""
        for acceptor in self._acceptors:
            acceptor.accept_queued()
        super().stop()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            acceptor = _Acceptor(sock, self._handle_connection, self.ratelog)
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = acceptor.stop
            self._acceptors.append(acceptor)


class _Acceptor:
    """Accepts connections on a listening socket; after an accept() failure it rests `ACCEPT_PAUSE_S`
    (off the loop's readers) instead of being called again at once."""

    def __init__(
        self, sock: socket.socket, on_connection: Callable[[socket.socket, Any], None], ratelog: RateLimitedLog
    ):
        self.sock = sock
        self.on_connection = on_connection
        self.ratelog = ratelog
        self.io_loop = IOLoop.current()
        self.stopped = False
        self.pauses = 0
        self._timer: object | None = None
        self.io_loop.add_handler(sock, self._ready, IOLoop.READ)

    def _ready(self, _fd: object, _events: int) -> None:
        for _ in range(ACCEPT_BATCH):
            if self.stopped:
                return
            try:
                accepted = self._accept_one()
            except OSError as exc:
                self._pause(exc)
                return
            if accepted is False:
                return
            if accepted is not True:
                self.on_connection(*accepted)

    def accept_queued(self) -> None:
        """Accept every connection waiting in the socket's queue now (before it closes)."""
        while True:
            try:
                accepted = self._accept_one()
            except OSError:  # out of descriptors, or the socket gone: nothing more to take
                return
            if accepted is False:
                return
            if accepted is not True:
                self.on_connection(*accepted)

    def _accept_one(self) -> tuple[socket.socket, Any] | bool:
        """One queued connection and its address; True for one that failed before it was accepted (skip
        it), False when none is queued. Any other OSError (out of descriptors) is raised."""
        try:
            return self.sock.accept()
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in _CONNECTION_ERRNOS:
                return True
            raise

    def _pause(self, exc: OSError) -> None:
        self.pauses += 1
        self.ratelog.log(
            logging.ERROR,
            f"accept {exc.errno}",
            "accept() failed: %s; accepting again every %.1f s meanwhile (connections wait in the backlog)",
            exc,
            ACCEPT_PAUSE_S,
        )
        self.io_loop.remove_handler(self.sock)
        self._timer = self.io_loop.call_later(ACCEPT_PAUSE_S, self._resume)

    def _resume(self) -> None:
        self._timer = None
        if not self.stopped:
            self.io_loop.add_handler(self.sock, self._ready, IOLoop.READ)

    def stop(self) -> None:
        """Stop accepting (TCPServer.stop calls this before closing the socket)."""
        if self.stopped:
            return
        self.stopped = True
        if self._timer is not None:
            self.io_loop.remove_timeout(self._timer)
        else:
            self.io_loop.remove_handler(self.sock)
