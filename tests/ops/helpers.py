"""Real supervisord instances, processes and a webhook receiver for the operations tests.

Each supervisord runs from its own short directory under /tmp (a unix socket path must stay under 108
bytes), which is its home (`CHECKGATE_HOME`) with the test's environment as `CHECKGATE_BIN`, as `checkgate
run` sets them for the shipped sections; `.venv` is linked to the checkout's for sections of the tests' own.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from supervisor import childutils

from tests.support import stack
from tests.support.stack import ROOT

BIN = Path(sys.executable).parent
TEST_MODULES = "tests.support.extra_checks,tests.ops.probes"

BASE_CONF = """\
[unix_http_server]
file=%(here)s/var/supervisor.sock
chmod=0700

[supervisord]
identifier=checkgate-test
logfile=%(here)s/var/log/supervisord.log
pidfile=%(here)s/var/supervisord.pid
childlogdir=%(here)s/var/log
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%(here)s/var/supervisor.sock
"""


def _read_conf(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keep option names as written
    parser.read(path)
    return parser


def conf_sections(*names: str, overrides: dict[str, dict[str, str]] | None = None) -> str:
    """The named sections of the repository's supervisord.conf as text. `overrides` maps a section name
    to option values to replace, e.g. `{"program:beat": {"startsecs": "1"}}`."""
    shipped = _read_conf(ROOT / "supervisord.conf")
    out = []
    for name in names:
        if not shipped.has_section(name):
            raise KeyError(f"no section [{name}] in supervisord.conf")
        options = dict(shipped.items(name))
        options.update((overrides or {}).get(name, {}))
        out.append(f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in options.items()))
    return "\n".join(out)


class Supervisord:
    """One real supervisord with the given sections, driven over its unix socket."""

    def __init__(self, sections: str, env: dict[str, str]) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="cgops", dir="/tmp"))
        (self.home / "var" / "log").mkdir(parents=True)
        (self.home / ".venv").symlink_to(BIN.parent)
        self.conf = self.home / "supervisord.conf"
        self.conf.write_text(BASE_CONF + "\n" + sections)
        self.env = env
        self.socket = self.home / "var" / "supervisor.sock"
        self.url = f"unix://{self.socket}"

    def start(self) -> Supervisord:
        env = {**self.env, "CHECKGATE_HOME": str(self.home), "CHECKGATE_BIN": str(BIN)}
        subprocess.run([str(BIN / "supervisord"), "-c", str(self.conf)], env=env, check=True, cwd=self.home)
        wait_for(self.socket.exists, 10, "supervisord socket")
        return self

    @property
    def rpc(self) -> Any:
        """supervisor's own blocking client (fine in a test): the `supervisor` namespace over the socket."""
        return childutils.getRPCInterface({"SUPERVISOR_SERVER_URL": self.url}).supervisor

    def info(self, namespec: str) -> dict[str, Any]:
        return self.rpc.getProcessInfo(namespec)

    def wait_state(self, namespec: str, state: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until `namespec` is in `state`; return its process info."""
        last: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal last
            last = self.info(namespec)
            return last["statename"] == state

        wait_for(reached, timeout, lambda: f"{namespec} {state} (last: {last.get('statename')}) {self.log_tail()}")
        return last

    def log(self, name: str) -> str:
        path = self.home / "var" / "log" / name
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self) -> str:
        return self.log("supervisord.log")[-3000:]

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.rpc.shutdown()
        pidfile = self.home / "var" / "supervisord.pid"
        deadline = time.monotonic() + 60
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.home, ignore_errors=True)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str | Callable[[], str]) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.1)


def stack_env(prefix: str, backend_url: str, **extra: str) -> dict[str, str]:
    """The environment of an isolated deployment: queue prefix, test Redis db, test check modules."""
    env = {**os.environ, "CHECKGATE_QUEUE_PREFIX": prefix, "CHECKGATE_RESULT_BACKEND": backend_url}
    env.update(CHECKGATE_CHECK_MODULES=TEST_MODULES, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class Procs:
    """Plain subprocesses (workers, beats) with their output in files."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        stack.stop_processes(self.procs.values())


def cleanup_deployment(prefix: str, broker_url: str, backend_url: str, queues: Iterable[str]) -> None:
    """The shared test clean-up, also deleting beat's results (plain uuids) that name the deployment."""
    stack.cleanup_deployment(prefix, broker_url, backend_url, queues, scan_bodies=True)


class Webhook:
    """An HTTP receiver on 127.0.0.1 keeping the JSON bodies POSTed to it (answering `status` after `delay`)."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.bodies: list[dict[str, Any]] = []
        received, answer, pause = self.bodies, status, delay

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(json.loads(body))
                time.sleep(pause)
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
        """The first body received so far or within `timeout` that `predicate` accepts."""

        def found() -> dict[str, Any] | None:
            return next((body for body in list(self.bodies) if predicate(body)), None)

        return wait_for(found, timeout, lambda: f"a webhook body; got {self.bodies}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def usable_rabbitmqctl() -> str | None:
    """The path of a rabbitmqctl that can reach the local broker node (root can), else None."""
    ctl = shutil.which("rabbitmqctl", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if ctl is None:
        return None
    try:
        done = subprocess.run([ctl, "-q", "list_vhosts"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return ctl if done.returncode == 0 else None


class BrokerAccounts:
    """Vhosts and users a test makes on the shared broker, deleted by `delete()` (call it in `finally`)."""

    def __init__(self, ctl: str) -> None:
        self.ctl = ctl
        self.vhosts: set[str] = set()
        self.users: set[str] = set()

    def new(self, tag: str) -> tuple[str, str]:
        """A fresh random (vhost, user) pair, registered for deletion before anything makes them."""
        vhost, user = f"cgtest-{tag}-{secrets.token_hex(4)}", f"cgtest-{tag}-{secrets.token_hex(4)}"
        self.vhosts.add(vhost)
        self.users.add(user)
        return vhost, user

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.ctl, "-q", *args], capture_output=True, text=True, timeout=60)

    def delete(self) -> None:
        for vhost in self.vhosts:
            self.run("delete_vhost", vhost)  # its queues and exchanges go with it
        for user in self.users:
            self.run("delete_user", user)
        left = {v for v in self.vhosts if v in self.run("list_vhosts").stdout.split()}
        left |= {u for u in self.users if u in self.run("list_users").stdout.split()}
        assert not left, f"not deleted from the shared broker: {left}"
