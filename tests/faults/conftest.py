"""Fault tests: real processes killed and restarted under load. `CHECKGATE_FAULTS=full` for the long run.

The default (smoke) scale runs inside `make test`; `make faults` runs the full scale and prints the
reliability table (also written to var/faults/report.json).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.load import REPORT, write_report
from tests.support.stack import ROOT, free_port

FULL = os.environ.get("CHECKGATE_FAULTS", "smoke") == "full"


def scale(smoke: float, full: float) -> float:
    """The smoke or the full figure of a knob."""
    return full if FULL else smoke


class PrivateRabbit:
    """A RabbitMQ node of the test's own (own port, own data dir), so stopping it disturbs nobody."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.node = f"cgt{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        (workdir / "plugins").write_text("[].")
        (workdir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        self.env = {
            **os.environ,
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "plugins"),
            "RABBITMQ_PID_FILE": str(workdir / "pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen([server], env=self.env, stdout=log, stderr=log, start_new_session=True)
        self._wait_port(up=True, timeout=90)

    def ctl(self, *args: str) -> None:
        subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node, *args], env=self.env, check=True)

    def stop_app(self) -> None:
        self.ctl("stop_app")
        self._wait_port(up=False, timeout=30)

    def start_app(self) -> None:
        self.ctl("start_app")
        self._wait_port(up=True, timeout=60)

    def _wait_port(self, up: bool, timeout: float) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if (sock.connect_ex(("127.0.0.1", self.port)) == 0) == up:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"RabbitMQ {self.node} not {'up' if up else 'down'}: see {self.workdir}/server.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def private_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbit]:
    if not os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server") or shutil.which("epmd") is None:
        pytest.skip("rabbitmq-server is not installed here")
    rabbit = PrivateRabbit(tmp_path_factory.mktemp("rabbit"))
    rabbit.start()
    yield rabbit
    rabbit.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        table = write_report(ROOT / "var" / "faults" / "report.json")
        terminalreporter.write_sep("=", "reliability report" + (" (full)" if FULL else " (smoke)"))
        terminalreporter.write_line(table)
