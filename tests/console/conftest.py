"""Session fixtures for the console: two real supervisord nodes, two dead ones, and the console itself."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator

import pytest

from gateway.console.config import parse_settings
from tests.console.cluster import (
    GATEWAY_CONF,
    TROUBLE_CONF,
    Cluster,
    ConsoleServer,
    Node,
    console_config,
    silent_listener,
)
from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.stack import ROOT, Stack, free_port


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("console")
    prefix = f"cgc{secrets.token_hex(3)}_"
    gateway_port = free_port()
    gateway_env = {
        "CHECKGATE_PORT": str(gateway_port),
        "CHECKGATE_QUEUE_PREFIX": prefix,
        "CHECKGATE_ID_PREFIX": f"{prefix}gw-",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    extra_a = TROUBLE_CONF + GATEWAY_CONF.format(python=sys.executable, root=ROOT)
    a = Node(tmp / "a", "node-a", extra=extra_a, env=gateway_env)
    b = Node(tmp / "b", "node-b", extra=TROUBLE_CONF)
    silent = silent_listener()
    cleanup = Stack(tmp, prefix, BROKER_URL, BACKEND_URL)
    server = None
    try:
        for node in (a.launch(), b.launch()):
            node.wait_up()
        health_url = f"http://127.0.0.1:{gateway_port}/health"
        late_port = free_port()
        raw = console_config(a, b, health_url, free_port(), silent.getsockname()[1], late_port, tmp)
        server = ConsoleServer(parse_settings(raw, tmp, {})).start()
        yield Cluster(a, b, health_url, late_port, server, tmp)
    finally:
        if server is not None:
            server.stop()
        for node in (a, b):
            node.stop()
        silent.close()
        cleanup.cleanup()
