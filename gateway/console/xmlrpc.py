"""Non-blocking XML-RPC to supervisord: Tornado's HTTP client carries what xmlrpc.client encodes.

`xmlrpc.client.ServerProxy` does blocking socket I/O, which would stall the gateway's loop for as long
as a node takes to answer (forever, for a node that accepts but never replies). Only the encoding and
decoding are borrowed from the standard library; the request itself is an AsyncHTTPClient fetch with a
connect and a request timeout, so a dead node costs its own timeout and nothing else.
"""

from __future__ import annotations

import ssl
import xmlrpc.client
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError

from gateway.console.config import NodeConfig

# supervisor/xmlrpc.py Faults, by code, for readable messages.
FAULT_NAMES = {
    1: "UNKNOWN_METHOD",
    2: "INCORRECT_PARAMETERS",
    3: "BAD_ARGUMENTS",
    4: "SIGNATURE_UNSUPPORTED",
    6: "SHUTDOWN_STATE",
    10: "BAD_NAME",
    11: "BAD_SIGNAL",
    20: "NO_FILE",
    21: "NOT_EXECUTABLE",
    30: "FAILED",
    40: "ABNORMAL_TERMINATION",
    50: "SPAWN_ERROR",
    60: "ALREADY_STARTED",
    70: "NOT_RUNNING",
    80: "SUCCESS",
    90: "ALREADY_ADDED",
    91: "STILL_RUNNING",
    92: "CANT_REREAD",
}
ALREADY_STARTED = 60
NOT_RUNNING = 70
NO_FILE = 20
# Answers larger than this are refused rather than parsed on the loop.
MAX_ANSWER_BYTES = 32 * 1024 * 1024


class RpcError(Exception):
    """The node could not be asked: unreachable, timed out, refused our credentials, answered garbage."""


class RpcFault(RpcError):
    """The node answered with an XML-RPC fault (e.g. BAD_NAME, SPAWN_ERROR)."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.name = FAULT_NAMES.get(code, f"FAULT_{code}")
        self.text = text
        hint = " (is [rpcinterface:supervisor] configured on the node?)" if code == 1 else ""
        detail = f": {text}" if text and text != self.name else ""
        super().__init__(f"{self.name}{detail}{hint}")


class RpcClient:
    """Calls supervisord XML-RPC methods on configured nodes, each call with its own timeout."""

    def __init__(self, max_clients: int = 100) -> None:
        # A private client: its connection slots are not shared with (nor exhausted by) anything else
        # in the gateway, and closing it cannot affect another user of the shared instance.
        self._http = AsyncHTTPClient(force_instance=True, max_clients=max_clients, max_body_size=MAX_ANSWER_BYTES)

    async def call(self, node: NodeConfig, method: str, *params: Any, timeout: float) -> Any:
        """`method(*params)` on `node`; raises RpcFault for a fault, RpcError for anything else."""
        request = HTTPRequest(
            node.url,
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
            raise RpcError("HTTP 401: the node refused the configured username/password")
        if response.code != 200:
            raise RpcError(f"HTTP {response.code} {response.reason}")
        try:
            (result,), _ = xmlrpc.client.loads(response.body, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            raise RpcFault(int(fault.faultCode), str(fault.faultString)) from None
        except Exception as exc:  # expat errors, wrong arity: the peer is not a supervisord
            raise RpcError(f"not an XML-RPC answer ({exc.__class__.__name__})") from None
        return result

    def close(self) -> None:
        """Close the private HTTP client."""
        self._http.close()


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
    if isinstance(exc, StreamClosedError):
        return "connection closed by the node"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return f"{exc.__class__.__name__}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
