"""The console drives a node over supervisord's unix socket (`unix://`), as the local node is reached.

A console of its own (not the session cluster's): one node, a real supervisord from the ops helpers,
with its `[unix_http_server]` only; polled, shown, started/stopped and tailed through the socket.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.console.auth import hash_password
from gateway.console.config import parse_settings
from tests.console.cluster import Browser, ConsoleServer, wait_for
from tests.ops.helpers import Supervisord

PROGRAMS = """
[program:ticker]
command=/bin/sh -c 'while true; do echo "tick over the socket"; sleep 0.2; done'
startsecs=0
stdout_logfile=%(here)s/var/log/ticker.out
"""


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Browser, Supervisord]]:
    tmp = tmp_path_factory.mktemp("console-unix")
    sup = Supervisord(PROGRAMS, {**os.environ}).start()
    server = None
    try:
        sup.wait_state("ticker", "RUNNING")
        user = {"name": "op", "password_hash": hash_password("op-pw", "pbkdf2_sha256", 1000), "role": "operator"}
        raw = {
            "secret": secrets.token_urlsafe(32),
            "poll_interval": 0.5,
            "rpc_timeout": 2.0,
            "audit_db": str(tmp / "audit.sqlite3"),
            "nodes": [{"name": "local", "url": f"unix://{sup.socket}"}],
            "users": [user],
        }
        server = ConsoleServer(parse_settings(raw, Path(tmp), {})).start()
        browser = Browser(server.base)
        assert browser.login("op", "op-pw").status_code == 302
        yield browser, sup
    finally:
        if server is not None:
            server.stop()
        sup.shutdown()


def test_a_unix_socket_node_is_polled_acted_on_and_tailed(console: tuple[Browser, Supervisord]) -> None:
    browser, sup = console
    state = wait_for(lambda: (s := browser.state())["local"]["status"] == "ok" and s, 15, "local polled")
    node = state["local"]
    assert node["address"] == str(sup.socket)
    assert [(p["name"], p["state"]) for p in node["processes"]] == [("ticker", "RUNNING")]

    stopped = browser.act(scope="process", node="local", process="ticker", action="stop", confirm="yes")
    assert stopped.status_code == 200 and stopped.json()["result"] == "ok", stopped.text
    assert sup.info("ticker")["statename"] == "STOPPED"
    started = browser.act(scope="process", node="local", process="ticker", action="start")
    assert started.status_code == 200 and started.json()["result"] == "ok", started.text

    with browser.get("/tail/stream?node=local&process=ticker&stream=stdout", stream=True, timeout=20) as response:
        assert response.status_code == 200
        seen = ""
        for line in response.iter_lines(decode_unicode=True):
            seen += line + "\n"
            if "tick over the socket" in seen:
                break
    assert "event: log" in seen and "tick over the socket" in seen
