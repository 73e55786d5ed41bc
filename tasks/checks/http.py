"""`http`: GET a URL and report the status code, whether it is healthy, and how long it took.

A target that is down or answers an error is a *successful* check with `ok: false` and a
machine-readable `reason`; only a check that could not run at all is a task failure.
"""

import http.client
import socket
import ssl
import time
from urllib.parse import urlsplit

from tasks.registry import Param, check

USER_AGENT = "checkgate/0.1"
MAX_BODY_BYTES = 64 * 1024
DEFAULT_IO_TIMEOUT = 10.0


def validate_url(url: str) -> None:
    """Accept only absolute http(s) URLs with a host; raise ValueError saying why not."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("scheme must be http or https")
    if not parts.hostname:
        raise ValueError("URL has no host")
    if port == 0:
        raise ValueError("port must be 1..65535")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError("URL must not contain whitespace or control characters")


def _io_timeout(deadline: float | None) -> float:
    if deadline is None:
        return DEFAULT_IO_TIMEOUT
    return max(0.1, min(DEFAULT_IO_TIMEOUT, deadline - time.time()))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, socket.gaierror):
        return "dns_error"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, http.client.HTTPException):
        return "protocol_error"
    return "connection_error"


@check(
    "http",
    params=(Param("url", str, required=True, doc="http:// or https:// URL to GET", validator=validate_url),),
    default_timeout=30.0,
    max_timeout=120.0,
)
def http_check(url: str, deadline: float | None = None) -> dict:
    """GET `url` (redirects are reported, not followed); ok when the status is below 400."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=_io_timeout(deadline))
    started = time.perf_counter()
    try:
        conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
        response = conn.getresponse()
        body = response.read(MAX_BODY_BYTES)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        return {"ok": False, "reason": _reason(exc), "detail": str(exc)[:200], "url": url, "elapsed_ms": elapsed_ms}
    finally:
        conn.close()
    elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
    result = {"ok": status < 400, "status_code": status, "url": url, "elapsed_ms": elapsed_ms, "body_bytes": len(body)}
    if status >= 400:
        result["reason"] = "status_code"
    return result
