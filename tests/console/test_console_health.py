"""The console's reading of a gateway's /health: each worker's AMQP client is kept and shown."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado.template import Loader

import gateway.console
from gateway.console.health import HealthProbe

WORKERS = {
    "cgt_add@h1": {"transport": "librabbitmq-celery", "client": "librabbitmq"},
    "cgt_http@h2": {"transport": "amqp", "client": "py-amqp"},
}


@pytest.fixture
def health_url() -> Iterator[str]:
    body = json.dumps(
        {"status": "ok", "broker": {"ok": True}, "backend": {"ok": True}, "queues": {}, "workers": WORKERS}
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health"
    server.shutdown()
    server.server_close()


def test_each_workers_client_is_read_and_shown(health_url: str) -> None:
    async def fetch():
        probe = HealthProbe()
        try:
            return await probe.fetch(health_url, timeout=5)
        finally:
            probe.close()

    health = asyncio.run(fetch())
    assert health.ok and health.workers == WORKERS
    templates = Path(gateway.console.__file__).parent / "templates"
    html = Loader(str(templates)).load("_health.html").generate(state=SimpleNamespace(health=health)).decode()
    assert "cgt_add@h1</code> librabbitmq" in html and "cgt_http@h2</code> py-amqp" in html
