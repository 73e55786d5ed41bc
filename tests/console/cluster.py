"""Real parts for the console tests: supervisord nodes on loopback ports and a console served in-process.

A node is a real supervisord with its own config, programs and XML-RPC port; the console is the real
Tornado app (`console_routes`) on its own loop in a thread, so the tests can use plain blocking clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import tornado.httpserver
import tornado.web

from gateway.console import Console, console_routes, start_console
from gateway.console.auth import hash_password
from gateway.console.config import ConsoleSettings
from tests.support.stack import free_port

BIN = Path(sys.executable).parent
T = TypeVar("T")

PRINTER = """\
import itertools, sys, time
for i in itertools.count():
    print(f"tick {i}", flush=True)
    print(f"err {i}", file=sys.stderr, flush=True)
    time.sleep(0.2)
"""

NODE_CONF = """\
[inet_http_server]
port=127.0.0.1:{port}
username={user}
password={password}

[supervisord]
identifier={name}
logfile=%(here)s/supervisord.log
pidfile=%(here)s/supervisord.pid
childlogdir=%(here)s/log
loglevel=warn

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[group:app]
programs=sleeper,printer

[program:sleeper]
command=sleep 1000
startsecs=1
stopwaitsecs=5

[program:printer]
command={python} -u %(here)s/printer.py
startsecs=0
stopwaitsecs=5
stdout_logfile=%(here)s/log/printer.out
stderr_logfile=%(here)s/log/printer.err
"""

# A process that keeps crashing (restart loop) and one that never starts (FATAL).
TROUBLE_CONF = """
[program:crasher]
command=sh -c "sleep 0.3; echo crash >&2; exit 3"
startsecs=0
autorestart=true

[program:broken]
command=sh -c "echo cannot start >&2; exit 1"
startsecs=1
startretries=0
"""

# The real gateway as one of the node's programs, for the application-health column.
GATEWAY_CONF = """
[program:gateway]
command={python} -m gateway
directory={root}
startsecs=1
stopwaitsecs=10
"""


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, requests.RequestException, xmlrpc.client.Error):
            last = probe()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Node:
    """A supervisord run from its own directory, on its own XML-RPC port."""

    user = "node"
    password = "node-pass-for-tests"

    def __init__(
        self, home: Path, name: str, port: int | None = None, extra: str = "", env: dict[str, str] | None = None
    ):
        self.home, self.name = home, name
        self.port = port or free_port()
        home.mkdir(parents=True, exist_ok=True)
        (home / "log").mkdir(exist_ok=True)
        (home / "printer.py").write_text(PRINTER)
        conf = NODE_CONF.format(
            port=self.port, user=self.user, password=self.password, name=name, python=sys.executable
        )
        (home / "supervisord.conf").write_text(conf + extra)
        self.env = {**os.environ, **(env or {})}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/RPC2"

    def rpc(self) -> Any:
        """A blocking XML-RPC proxy (fine in a test; the console itself never uses one)."""
        return xmlrpc.client.ServerProxy(f"http://{self.user}:{self.password}@127.0.0.1:{self.port}/RPC2")

    def launch(self) -> Node:
        """Start supervisord (it daemonizes) without waiting for it."""
        subprocess.run([str(BIN / "supervisord"), "-c", str(self.home / "supervisord.conf")], env=self.env, check=True)
        return self

    def wait_up(self) -> Node:
        wait_for(lambda: self.rpc().supervisor.getState()["statename"] == "RUNNING", 15, f"{self.name} up")
        return self

    def start(self) -> Node:
        return self.launch().wait_up()

    def info(self, spec: str) -> dict[str, Any]:
        return self.rpc().supervisor.getProcessInfo(spec)

    def stop(self) -> None:
        with contextlib.suppress(OSError, xmlrpc.client.Error):
            self.rpc().supervisor.shutdown()
        pidfile = self.home / "supervisord.pid"
        deadline = time.monotonic() + 20
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def silent_listener() -> socket.socket:
    """A port that accepts connections and never answers: a hung node."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


class ConsoleServer:
    """The console's routes in a Tornado app on its own loop in a thread."""

    def __init__(self, settings: ConsoleSettings, xheaders: bool = False) -> None:
        self.settings = settings
        # xheaders: X-Real-IP names the peer, so a test can stand for a client on another machine.
        self.xheaders = xheaders
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}{settings.base_path}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="console-server", daemon=True)

    def start(self) -> ConsoleServer:
        self._thread.start()
        self._ready.wait(20)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        console = Console(self.settings)
        server = tornado.httpserver.HTTPServer(tornado.web.Application(console_routes(console)), xheaders=self.xheaders)
        server.listen(self.port, "127.0.0.1")
        await start_console(console)
        self._ready.set()
        await self._stop.wait()
        server.stop()
        await console.stop()
        await server.close_all_connections()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)


class Browser:
    """A logged-in HTTP client of the console (requests keeps the session and XSRF cookies)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        # As a browser's: every POST names the page it comes from (the console refuses those that do not).
        parts = urlsplit(base)
        self.http.headers["Origin"] = f"{parts.scheme}://{parts.netloc}"

    def login(self, name: str, password: str) -> requests.Response:
        self.http.get(f"{self.base}/login", timeout=10)
        form = {"name": name, "password": password, "_xsrf": self.xsrf}
        return self.http.post(f"{self.base}/login", data=form, timeout=10, allow_redirects=False)

    @property
    def xsrf(self) -> str:
        return self.http.cookies.get("_xsrf", "")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(f"{self.base}{path}", timeout=kwargs.pop("timeout", 10), **kwargs)

    def state(self) -> dict[str, Any]:
        response = self.get("/api/state")
        response.raise_for_status()
        return {node["name"]: node for node in response.json()["nodes"]}

    def act(self, timeout: float = 60, with_xsrf: bool = True, **form: Any) -> requests.Response:
        data = {"_xsrf": self.xsrf, **form} if with_xsrf else dict(form)
        return self.http.post(f"{self.base}/action", data=data, timeout=timeout)


PASSWORDS = {"admin": "admin-pw-1", "op": "operator-pw-2", "view": "viewer-pw-3"}
ROLES = {"admin": "admin", "op": "operator", "view": "viewer"}


@dataclass
class Cluster:
    """What the console tests share."""

    a: Node
    b: Node
    gateway_url: str
    late_port: int
    server: ConsoleServer
    tmp: Path

    @property
    def base(self) -> str:
        return self.server.base


def console_config(
    a: Node, b: Node, health_url: str, dead_port: int, silent_port: int, late_port: int, tmp: Path
) -> dict[str, Any]:
    """The console's config document (as the TOML file would decode)."""
    node = {"username": Node.user, "password": Node.password}
    return {
        "secret": secrets.token_urlsafe(32),
        "poll_interval": 0.5,
        "rpc_timeout": 1.0,
        "retry_max": 1.0,
        "action_timeout": 20,
        "health_timeout": 20,
        "loop_starts": 3,
        "loop_window": 60,
        "audit_db": str(tmp / "audit.sqlite3"),
        "nodes": [
            {"name": "node-a", "url": a.url, **node, "tags": ["web", "eu"], "health_url": health_url},
            {"name": "node-b", "url": b.url, **node, "tags": ["worker"]},
            {"name": "dead", "url": f"http://127.0.0.1:{dead_port}/RPC2", **node},
            {"name": "silent", "url": f"http://127.0.0.1:{silent_port}/RPC2", **node},
            {"name": "late", "url": f"http://127.0.0.1:{late_port}/RPC2", **node},
        ],
        "groups": [
            {"name": "sleepers", "programs": ["app:sleeper"], "description": "sleep 1000 on every node"},
            {"name": "web-printers", "programs": ["app:printer"], "tags": ["web"]},
        ],
        "users": [
            {"name": name, "password_hash": hash_password(PASSWORDS[name]), "role": ROLES[name]} for name in PASSWORDS
        ],
    }
