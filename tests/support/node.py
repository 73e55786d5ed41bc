"""A whole node as `checkgate run` starts it, for tests: the shipped supervisord.conf, a temp home, own ports.

The node's home is a temp directory without a supervisord.conf of its own, so the conf is the one
`checkgate run` picks there (gateway.home.supervisord_conf: the shipped default) and the environment is
the one it makes (gateway.cli.node_env: generated credentials under the home's var/, the console's
config). supervisord daemonizes instead of being exec'd in the foreground; it is always driven over the
node's own socket (`-s`), never through the conf's [supervisorctl] section, which in a checkout names
the developer's own node.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.cli import node_env
from gateway.home import supervisord_conf
from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.stack import ROOT, Stack, free_port

BIN = Path(sys.executable).parent

# Every program of the shipped supervisord.conf (`redis` only when the node runs its own) but the gateway's
# processes, gateway:gateway-0 … (CHECKGATE_PROCESSES of them: `gateway_programs`).
PROGRAMS = {
    "workers:worker-add",
    "workers:worker-sleep-0",
    "workers:worker-sleep-1",
    "workers:worker-http",
    "workers:worker-tcp",
    "workers:worker-dns",
    "workers:worker-tls",
    "alerts",
    "monitor:flower",
    "monitor:beat",
}


class ShippedNode:
    """One node of the shipped supervisord.conf in `tmp_path/node`, isolated by its own queue prefix.

    :arg broker_account: (vhost, user) for the stack's own RabbitMQ account (made by `checkgate run`'s
        code with rabbitmqctl); None: the tests' broker URL as given.
    :arg own_redis: run the stack's own Redis on a free port (else the tests' Redis db, as given).
    """

    def __init__(self, tmp_path: Path, broker_account: tuple[str, str] | None = None, own_redis: bool = True) -> None:
        self.home = tmp_path / "node"
        (self.home / "var" / "log").mkdir(parents=True)
        self.conf = supervisord_conf(self.home)
        self.socket = self.home / "var" / "supervisor.sock"
        self.cleanup = Stack(tmp_path, f"cgs{os.getpid()}_", BROKER_URL, BACKEND_URL)
        empty_schedule = tmp_path / "schedule.toml"  # a developer's own schedule.toml must not fire here
        empty_schedule.write_text("")
        self.given = {
            **os.environ,
            "CHECKGATE_QUEUE_PREFIX": self.cleanup.prefix,
            "CHECKGATE_PORT": str(free_port()),
            "CHECKGATE_SUPERVISOR_PORT": str(free_port()),
            "CHECKGATE_SUPERVISOR_USER": "operator",
            "CHECKGATE_SUPERVISOR_PASSWORD": "s3cret-for-test",
            "CHECKGATE_FLOWER_PORT": str(free_port()),
            "CHECKGATE_REDIS_PORT": str(free_port()),
            "CHECKGATE_SCHEDULE": str(empty_schedule),
            "PYTHONPATH": str(ROOT),
        }
        self.given.pop("CHECKGATE_CHECK_MODULES", None)  # the shipped check types only: each has its worker
        self.given.pop("CHECKGATE_CONSOLE_CONFIG", None)  # the node's own console, as on a first run
        self.given.pop("CHECKGATE_HOME", None)
        if own_redis:
            self.given.pop("CHECKGATE_RESULT_BACKEND", None)  # the tests' shared Redis: the node runs its own
        if broker_account is not None:
            vhost, user = broker_account
            self.given.pop("CHECKGATE_BROKER_URL", None)
            self.given.update(CHECKGATE_RABBITMQ_VHOST=vhost, CHECKGATE_RABBITMQ_USER=user)
        self.programs = PROGRAMS | ({"redis"} if own_redis else set())
        self.env: dict[str, str] = {}

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.given['CHECKGATE_PORT']}"

    def supervisorctl(self, *args: str) -> str:
        """supervisorctl against this node's socket; its output."""
        argv = [str(BIN / "supervisorctl"), "-s", f"unix://{self.socket}", *args]
        return subprocess.run(argv, capture_output=True, text=True).stdout

    def start(self) -> dict[str, str]:
        """`checkgate run` without the exec: the environment, then supervisord (daemonized)."""
        self.env = node_env(self.home, self.given)
        subprocess.run([str(BIN / "supervisord"), "-c", str(self.conf)], env=self.env, check=True)
        return self.env

    def gateway_programs(self) -> set[str]:
        """The gateway's processes as supervisorctl names them (`start` has chosen how many)."""
        return {f"gateway:gateway-{n}" for n in range(int(self.env["CHECKGATE_PROCESSES"]))}

    def wait_running(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        programs = self.programs | self.gateway_programs()
        while time.monotonic() < deadline:
            states = dict(line.split()[:2] for line in self.supervisorctl("status").splitlines() if line.strip())
            if set(states) == programs and set(states.values()) == {"RUNNING"}:
                return
            time.sleep(1)
        pytest.fail(f"not all RUNNING: {states}")

    def stop(self) -> None:
        self.supervisorctl("shutdown")
        deadline = time.monotonic() + 60
        while (self.home / "var" / "supervisord.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
