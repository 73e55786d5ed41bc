"""Non-blocking XML-RPC to supervisord, over `http(s)://` or `unix://`: the one client of checkgate.

The console (on the gateway's event loop), `checkgate status` (a CLI running its own loop) and the
alerts listener (one `asyncio.run` per alert) all call supervisord through `RpcClient`.

Why this client and not `xmlrpc.client.ServerProxy` (or supervisor's `SupervisorTransport`, which
`childutils.getRPCInterface` uses): those do blocking socket I/O, which on the gateway's loop would
stall every request for as long as a node takes to answer (forever, for a node that accepts but never
replies), and SupervisorTransport has no timeout. Only the encoding and decoding are borrowed from
the standard library; the request is a Tornado `SimpleAsyncHTTPClient` fetch with a connect and a
request timeout, so a dead node costs its own timeout and nothing else.

Unix sockets: Tornado's HTTP client connects wherever its `Resolver` says a host is (the approach
Tornado's maintainers point to in tornadoweb/tornado#2671 and #3172). A `unix://` node is fetched as
`http://<digest of its path>.unix.invalid/RPC2`, and `UnixSocketResolver` answers that host with
`(AF_UNIX, path)`; every other host goes to Tornado's default resolver. `.invalid` never resolves
(RFC 2606), so a host that somehow missed the table cannot reach anything.

Fault names and codes are supervisor's own (`supervisor.xmlrpc.Faults`).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import xmlrpc.client
from typing import Any

from supervisor.xmlrpc import Faults, getFaultDescription
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.netutil import Resolver
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from gateway.nodes import NodeConfig

# Answers larger than this are refused rather than parsed on the loop.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
# The XML-RPC methods that tail a process's log, by stream.
LOG_STREAMS = {"stdout": "supervisor.tailProcessStdoutLog", "stderr": "supervisor.tailProcessStderrLog"}


class RpcError(Exception):
    """The node could not be asked: unreachable, timed out, refused our credentials, answered garbage.

    `http_status` is the HTTP status of a non-200 answer (0 when there was no answer).
    """

    def __init__(self, message: str, http_status: int = 0) -> None:
        super().__init__(message)
        self.http_status = http_status


class RpcFault(RpcError):
    """The node answered with an XML-RPC fault: `code` is one of `supervisor.xmlrpc.Faults`, `name` its name."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        name = getFaultDescription(code)
        self.name = name if name != "UNKNOWN" else f"FAULT_{code}"
        # supervisord's fault strings repeat the fault's name ("BAD_NAME: nope"): keep it once.
        self.text = text = text.removeprefix(f"{self.name}: ")
        hint = " (is [rpcinterface:supervisor] configured on the node?)" if code == Faults.UNKNOWN_METHOD else ""
        detail = f": {text}" if text and text != self.name else ""
        super().__init__(f"{self.name}{detail}{hint}")


class UnixSocketResolver(Resolver):
    """Resolves the hosts `host_for` handed out to their unix socket; asks `resolver` about the others."""

    def initialize(self, resolver: Resolver) -> None:  # Tornado's Configurable calls this, not __init__
        self.resolver = resolver
        self.sockets: dict[str, str] = {}

    def host_for(self, path: str) -> str:
        """A host name standing for the socket at `path` (stable, and valid in a URL whatever the path)."""
        host = hashlib.sha256(path.encode()).hexdigest()[:32] + ".unix.invalid"
        self.sockets[host] = path
        return host

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        """`[(AF_UNIX, path)]` for a socket's host, else what the wrapped resolver says."""
        path = self.sockets.get(host)
        if path is not None:
            return [(socket.AF_UNIX, path)]
        return await self.resolver.resolve(host, port, family)

    def close(self) -> None:
        self.resolver.close()


class RpcClient:
    """Calls supervisord XML-RPC methods on nodes (`NodeConfig`), each call with its own timeout.

    Create it on the loop that will use it (Tornado binds the client to the running loop) and `close()`
    it when done. It never blocks: connection, request and answer are all asynchronous.
    """

    def __init__(self, max_clients: int = 100) -> None:
        self._resolver = UnixSocketResolver(resolver=Resolver())
        # A private client: its connection slots are not shared with (nor exhausted by) anything else
        # in the gateway, and closing it cannot affect another user of the shared instance. Simple, not
        # whatever AsyncHTTPClient is configured to be: the resolver is the simple client's hook.
        self._http = SimpleAsyncHTTPClient(
            force_instance=True, max_clients=max_clients, max_body_size=MAX_ANSWER_BYTES, resolver=self._resolver
        )

    async def call(self, node: NodeConfig, method: str, *params: Any, timeout: float) -> Any:
        """`method(*params)` on `node`, e.g. `call(node, "supervisor.getAllProcessInfo", timeout=3)`.

        :arg node: where and as whom to call (`http(s)://` or `unix://` url, Basic auth credentials).
        :arg method: the XML-RPC method name, with its namespace (`supervisor.…`, `system.…`).
        :arg params: its parameters (no None: supervisord's XML-RPC has no nil).
        :arg timeout: seconds for connecting, and again for the whole request.
        :returns: the decoded answer (`str`, `int`, `bool`, `list`, `dict`; binary as `bytes`).
        :raises RpcFault: the node answered with a fault (`code` from `supervisor.xmlrpc.Faults`).
        :raises RpcError: anything else: refused, timed out, HTTP 401 or another non-200 status
            (`http_status`), not an XML-RPC answer.
        """
        socket_path = node.socket_path
        url = f"http://{self._resolver.host_for(socket_path)}/RPC2" if socket_path is not None else node.url
        request = HTTPRequest(
            url,
            method="POST",
            body=xmlrpc.client.dumps(params, method, allow_none=False).encode("utf-8"),
            headers={"Content-Type": "text/xml; charset=utf-8"},
            auth_username=node.username or None,
            auth_password=node.password or None,
            auth_mode="basic",
            connect_timeout=timeout,
            request_timeout=timeout,
            follow_redirects=False,
        )
        try:
            response = await self._http.fetch(request, raise_error=False)
        except HTTPClientError as exc:  # 599: timeouts and similar client-side failures
            raise RpcError(_client_error(exc, timeout)) from None
        except (OSError, StreamClosedError, ssl.SSLError) as exc:
            raise RpcError(_socket_error(exc)) from None
        if response.code == 599:
            raise RpcError(_client_error(response.error, timeout))
        if response.code == 401:
            raise RpcError("HTTP 401: the node refused the configured username/password", 401)
        if response.code != 200:
            raise RpcError(f"HTTP {response.code} {response.reason}", response.code)
        try:
            (result,), _ = xmlrpc.client.loads(response.body, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            raise RpcFault(int(fault.faultCode), str(fault.faultString)) from None
        except Exception as exc:  # expat errors, wrong arity: the peer is not a supervisord
            raise RpcError(f"not an XML-RPC answer ({exc.__class__.__name__})") from None
        return result

    async def tail(
        self, node: NodeConfig, namespec: str, stream: str, offset: int, length: int, *, timeout: float
    ) -> tuple[str, int]:
        """supervisord's `tailProcessStdoutLog` / `tailProcessStderrLog`: the log's last bytes and its size.

        :arg namespec: the process (`group:name`, or `name` when the group is its own).
        :arg stream: `stdout` or `stderr` (a key of LOG_STREAMS).
        :arg offset: where the caller's previous read ended (0 the first time), in bytes.
        :arg length: how many bytes at most, counted from the end of the log.
        :returns: (text, new offset): at most `length` bytes from the end as UTF-8 text, and the log's
            size in bytes. A process with no such log file gives `("", 0)`.
        :raises RpcFault: BAD_NAME for an unknown process. :raises RpcError: as `call`.

        supervisord decodes the window as UTF-8 and answers HTTP 500 when it begins inside a multi-byte
        character; a window one to three bytes shorter begins on a character boundary.
        """
        method = LOG_STREAMS[stream]
        for shorter in range(4):
            try:
                data, new_offset, _overflow = await self.call(
                    node, method, namespec, offset, max(0, length - shorter), timeout=timeout
                )
                return str(data), int(new_offset)
            except RpcFault:
                raise
            except RpcError as exc:
                if exc.http_status != 500 or shorter == 3:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the private HTTP client (and its resolver)."""
        self._http.close()
        self._resolver.close()


def _client_error(exc: BaseException | None, timeout: float) -> str:
    text = str(exc or "")
    if "Timeout" in text or "timed out" in text.lower():
        return f"no answer within {timeout:g} s"
    if isinstance(exc, OSError | StreamClosedError):
        return _socket_error(exc)
    return text or "request failed"


def _socket_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, FileNotFoundError):
        return "no socket file there (is supervisord running?)"
    if isinstance(exc, PermissionError):
        return "permission denied on the socket (it is owner-only: run as supervisord's user)"
    if isinstance(exc, StreamClosedError):
        return "connection closed by the node"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return f"{exc.__class__.__name__}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
