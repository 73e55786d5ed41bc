"""The application's own health beside process state: the gateway's /health on each node.

A process can be RUNNING while the service it runs is useless (broker down, no consumer on a queue);
the gateway's /health says that, so the console fetches it on every poll of a node that names one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

# Health answers are a few KiB; anything larger is not a /health.
MAX_HEALTH_BYTES = 1024 * 1024


@dataclass
class Health:
    """One answer of a health endpoint, or why there was none."""

    url: str
    ok: bool = False
    http_status: int = 0
    status: str = "unknown"
    error: str = ""
    # queue name -> {"messages": ready count, "consumers": workers attached}
    queues: dict[str, dict[str, int]] = field(default_factory=dict)
    # Celery node -> {"transport": kombu's name, "client": "py-amqp" or "librabbitmq"}
    workers: dict[str, dict[str, str]] = field(default_factory=dict)
    broker_ok: bool | None = None
    backend_ok: bool | None = None
    inflight: int | None = None


class HealthProbe:
    """Fetches health endpoints without blocking, each with its own timeout."""

    def __init__(self) -> None:
        self._http = AsyncHTTPClient(force_instance=True, max_clients=50, max_body_size=MAX_HEALTH_BYTES)

    async def fetch(self, url: str, timeout: float) -> Health:
        """GET `url` (an http(s) health endpoint), waiting at most `timeout` seconds to connect and again
        for the whole answer; healthy means HTTP 200 (the gateway answers 200 for ok and degraded, 503
        for down). Never raises: a failure is a Health with `ok` False and `error` set."""
        health = Health(url=url)
        try:
            response = await self._http.fetch(
                url, connect_timeout=timeout, request_timeout=timeout, raise_error=False, follow_redirects=False
            )
        except HTTPClientError:
            health.error = f"no answer within {timeout:g} s"
            return health
        except OSError as exc:
            health.error = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
            return health
        except Exception as exc:  # stream closed, TLS errors: the endpoint is not answering properly
            health.error = f"{exc.__class__.__name__}: {exc}"
            return health
        health.http_status = response.code
        health.ok = response.code == 200
        try:
            body: Any = json.loads(response.body or b"{}")
        except ValueError:
            body = {}
        if isinstance(body, dict):
            health.status = str(body.get("status", "ok" if health.ok else "down"))
            health.queues = {str(k): v for k, v in (body.get("queues") or {}).items() if isinstance(v, dict)}
            health.workers = {str(k): v for k, v in (body.get("workers") or {}).items() if isinstance(v, dict)}
            health.broker_ok = (body.get("broker") or {}).get("ok")
            health.backend_ok = (body.get("backend") or {}).get("ok")
            health.inflight = body.get("inflight")
        if not health.ok and not health.error:
            health.error = f"HTTP {response.code}"
        return health

    def close(self) -> None:
        """Close the private HTTP client."""
        self._http.close()
