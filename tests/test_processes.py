"""Several gateway processes on one port (CHECKGATE_PROCESSES, issue #15 part 1): both answer, /metrics and
/health describe the whole gateway, supervisord restarts a killed one, a rolling restart under load loses no
request, and a bad setting stops the start with a line naming its variable."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from configparser import RawConfigParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import gateway_processes_env, node_env
from gateway.config import ConfigError, Settings
from tests.support import netns
from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.infra import require
from tests.support.runs import TestRun
from tests.support.stack import ROOT, Stack, free_port, http_get

BIN = Path(sys.executable).parent


def get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """One GET on a new connection, closed after the answer (so the kernel picks a process each time)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def health_pid(port: int) -> int:
    _, body, _ = http_get(f"http://127.0.0.1:{port}/health", timeout=10)
    return body["process"]["pid"]


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An `add` worker of a stack of its own (its own queue prefix and results)."""
    with Stack(tmp_path_factory.mktemp("procs"), f"cgp{secrets.token_hex(3)}_", BROKER_URL, BACKEND_URL) as stack:
        stack.start_worker("add", ["add"], pool="threads", concurrency=8)
        yield stack


def test_two_processes_share_the_port_and_answer_as_one_gateway(workers: Stack, tmp_path: Path) -> None:
    """Two processes on one port both answer (each /health names its own); one scrape of either counts the
    requests both answered, and /health counts both processes."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # As supervisord starts them: the same environment but for the process number.
    common = {
        "CHECKGATE_PROCESSES": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "CHECKGATE_ID_PREFIX": f"{workers.prefix}gw-",
    }
    base = ""
    for num in ("0", "1"):
        base = workers.start_gateway(f"gw{num}", port=port, CHECKGATE_PROCESS_NUM=num, **common)
        # Its sibling may have answered the /health start_gateway waits for: wait for its own line.
        deadline = time.monotonic() + 30
        while "checkgate gateway on http" not in workers.logs[f"gw{num}"].read_text():
            assert time.monotonic() < deadline and workers.procs[f"gw{num}"].poll() is None
            time.sleep(0.1)
    by_pid: Counter[int] = Counter()
    for _ in range(40):
        by_pid[health_pid(port)] += 1
    assert len(by_pid) == 2, by_pid  # 2**-39 that the kernel sent all 40 to one process
    for x in range(10):
        status, body = get(port, f"/add?x={x}&y=1")
        assert status == 200, body
    for _ in range(4):  # whichever process answers the scrape
        code, text, _ = http_get(base + "/metrics")
        assert code == 200
        assert sample(text, "checkgate_http_responses_total", handler="health", code="200") >= 40
        assert sample(text, "checkgate_http_responses_total", handler="add", code="200") == 10
        assert sample(text, "checkgate_gateway_processes") == 2
        assert sample(text, "checkgate_broker_up") == 1
    _, health, _ = http_get(base + "/health")
    assert health["processes"] == 2
    # Each process issues ids of its own prefix: the one CHECKGATE_ID_PREFIX, then its number.
    ids = {get_json_id(port) for _ in range(16)}
    prefixes = {re.sub(r"[0-9a-f]{20}$", "", i) for i in ids}
    assert prefixes == {f"{workers.prefix}gw-p0-", f"{workers.prefix}gw-p1-"}
    # A process that stops leaves the live gauges; its counts stay in the sums.
    workers.kill("gw1", signal.SIGTERM)
    code, text, _ = http_get(base + "/metrics")
    assert sample(text, "checkgate_gateway_processes") == 1
    assert sample(text, "checkgate_http_responses_total", handler="add", code="200") == 10


def get_json_id(port: int) -> str:
    """The id of an async `add` check (whichever process took it)."""
    status, raw = get(port, "/check/add?x=1&y=1&mode=async")
    assert status == 202, raw
    return json.loads(raw)["id"]


@pytest.mark.parametrize("value", ["0", "-1", "two", "257", "1.5"])
def test_bad_processes_value_names_the_variable(value: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^CHECKGATE_PROCESSES="):
        Settings.from_env({"CHECKGATE_PROCESSES": value})
    with pytest.raises(ConfigError, match=r"^CHECKGATE_PROCESSES="):
        node_env(tmp_path, {**os.environ, "CHECKGATE_PROCESSES": value})
    done = subprocess.run(
        [sys.executable, "-m", "gateway"],
        env={**os.environ, "CHECKGATE_PROCESSES": value, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"checkgate gateway: CHECKGATE_PROCESSES={value!r}: expected an integer"), done.stderr
    assert "Traceback" not in done.stderr


def test_default_is_the_number_of_cores() -> None:
    assert Settings.from_env({}).processes == len(os.sched_getaffinity(0))
    with pytest.raises(ConfigError, match=r"^CHECKGATE_PROCESS_NUM='x'"):
        Settings.from_env({"CHECKGATE_PROCESS_NUM": "x"})


# The shipped supervisord.conf's gateway program, run by a supervisord of the test's own.
SUPERVISORD_HEAD = """
[unix_http_server]
file={home}/var/supervisor.sock
chmod=0700

[supervisord]
logfile={home}/var/log/supervisord.log
pidfile={home}/var/supervisord.pid
childlogdir={home}/var/log

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

"""


def shipped_gateway_program() -> str:
    """The `[group:gateway]` and `[program:gateway]` sections of the shipped supervisord.conf, as text."""
    parser = RawConfigParser(interpolation=None, inline_comment_prefixes=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "supervisord.conf")
    out = []
    for section in ("group:gateway", "program:gateway"):
        out.append(f"[{section}]")
        out += [f"{key}={value}" for key, value in parser.items(section)]
        out.append("")
    return "\n".join(out)


class Node:
    """supervisord running the shipped gateway program (2 processes) over `workers`' stack, inside `island`
    (a namespace of its own where net.ipv4.tcp_migrate_req=1, see `island`): the gateway's port is its
    127.0.0.1, so the test's own requests are made from inside too (`netns.entered`)."""

    def __init__(self, workers: Stack, home: Path, island: netns.Loopback, run: TestRun) -> None:
        self.home = home
        self.island = island
        (home / "var" / "log").mkdir(parents=True)
        self.port = free_port()
        conf = home / "supervisord.conf"
        conf.write_text(SUPERVISORD_HEAD.format(home=home) + shipped_gateway_program())
        given = {
            **workers.env,
            "CHECKGATE_PORT": str(self.port),
            "CHECKGATE_PROCESSES": "2",
            "CHECKGATE_ID_PREFIX": f"{workers.prefix}sv",
            "CHECKGATE_HOME": str(home),
            "CHECKGATE_BIN": str(BIN),
            **run.env,
        }
        # What `checkgate run` adds for the gateway: the process count, checked, and the metrics directory.
        self.env = gateway_processes_env(home, given)
        self.socket = home / "var" / "supervisor.sock"
        self.proc = subprocess.Popen(
            island.command([str(BIN / "supervisord"), "-n", "-c", str(conf)]), env=self.env, stdout=subprocess.DEVNULL
        )

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "supervisorctl"), "-s", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.stdout

    def pids(self) -> dict[str, int]:
        """RUNNING gateway processes: name → pid."""
        out = {}
        for line in self.ctl("status").splitlines():
            found = re.match(r"(\S+)\s+RUNNING\s+pid (\d+)", line)
            if found:
                out[found[1]] = int(found[2])
        return out

    def wait_answering(self, pids: set[int], timeout: float = 60) -> None:
        """Until every process of `pids` has answered a /health on the port."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while not pids <= seen:
            assert time.monotonic() < deadline, f"not answering: {pids - seen}; {self.ctl('status')}"
            try:
                with netns.entered(self.island.namespace):
                    seen.add(health_pid(self.port))
            except OSError:
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def loopback_ports(*urls: str) -> list[int]:
    """The ports of service URLs on the root namespace's loopback (amqp://…@127.0.0.1:5672//, redis://…)."""
    return [urlsplit(url.split(";")[0]).port or {"amqp": 5672, "redis": 6379}[urlsplit(url).scheme] for url in urls]


@pytest.fixture(scope="module")
def island() -> Iterator[tuple[netns.Loopback, TestRun]]:
    """A network namespace of the test's own where net.ipv4.tcp_migrate_req=1, reaching the shared RabbitMQ
    and Redis through forwarders. Without the setting, a connection that completes its handshake in the
    microseconds between a stopping process's last accept() and its close is reset by the kernel
    (measured in the root namespace: 1 of 14,578 requests over 12 restarts, 8 clients, load average 12);
    the README tells operators to set it, and the gateway warns when it is off."""
    require(netns.missing())
    with (
        TestRun() as run,
        netns.Loopback(run, loopback_ports(BROKER_URL, BACKEND_URL), {"net.ipv4.tcp_migrate_req": "1"}) as lo,
    ):
        yield lo, run


@pytest.fixture(scope="module")
def node(
    workers: Stack, island: tuple[netns.Loopback, TestRun], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    node = Node(workers, tmp_path_factory.mktemp("node"), *island)
    try:
        deadline = time.monotonic() + 60
        while len(node.pids()) < 2:
            assert time.monotonic() < deadline, node.ctl("status")
            time.sleep(0.3)
        node.wait_answering(set(node.pids().values()))
        yield node
    finally:
        node.stop()


class Load:
    """A steady stream of /add requests from `clients` threads inside `namespace`, each on a new connection,
    counted."""

    def __init__(self, port: int, namespace: str, clients: int = 4, keepalive: int = 0) -> None:
        self.port = port
        self.namespace = namespace
        self.sent = 0
        self.answers: Counter[Any] = Counter()
        self.failures: list[str] = []
        # Keep-alive clients: answers that said `Connection: close`, requests resent on a new connection
        # after a kept one was closed before any answer (RFC 9112 9.3.1 allows it for GET).
        self.told_to_close = 0
        self.resent = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n, False), daemon=True) for n in range(clients)]
        self.threads += [
            threading.Thread(target=self._run, args=(clients + n, True), daemon=True) for n in range(keepalive)
        ]

    def _run(self, n: int, keepalive: bool) -> None:
        with netns.entered(self.namespace):
            if keepalive:
                self._send_kept(n)
            else:
                self._send(n)

    def _count(self, outcome: Any) -> None:
        with self.lock:
            self.answers[outcome] += 1
            if outcome != 200:
                self.failures.append(str(outcome))

    def _send_kept(self, n: int) -> None:
        """Requests one after the other on one connection, a new one only when the server closes it."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        x = 0
        while not self.done.is_set():
            x += 1
            with self.lock:
                self.sent += 1
            for attempt in (1, 2):
                reused = conn.sock is not None
                try:
                    conn.request("GET", f"/add?x={x}&y={n}")
                    response = conn.getresponse()
                    body = response.read()
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                    conn.close()
                    if attempt == 1 and reused:
                        with self.lock:
                            self.resent += 1
                        continue
                    outcome: Any = f"{type(exc).__name__}: {exc}"
                    break
                except OSError as exc:
                    conn.close()
                    outcome = f"{type(exc).__name__}: {exc}"
                    break
                if response.getheader("Connection") == "close":
                    with self.lock:
                        self.told_to_close += 1
                ok = response.status == 200 and f'"result":{x + n}'.encode() in body
                outcome = 200 if ok else f"{response.status} {body[:200]!r}"
                break
            self._count(outcome)
        conn.close()

    def _send(self, n: int) -> None:
        x = 0
        while not self.done.is_set():
            x += 1
            with self.lock:
                self.sent += 1
            try:
                status, body = get(self.port, f"/add?x={x}&y={n}")
                ok = status == 200 and body.startswith(b"{") and f'"result":{x + n}'.encode() in body
                outcome: Any = status if ok else f"{status} {body[:200]!r}"
            except OSError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            self._count(outcome)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_rolling_restart_under_load_loses_nothing(node: Node) -> None:
    """`checkgate restart-gateway` replaces both processes, one at a time, while requests keep coming on new
    connections and on a kept one: every request sent is answered 200 with its sum, and the kept
    connection is told to close by the stopping process rather than closed under a request."""
    before = node.pids()
    with Load(node.port, node.island.namespace, keepalive=1) as load:
        time.sleep(1.0)
        done = subprocess.run(
            node.island.command([str(BIN / "checkgate"), "restart-gateway", "--ready-timeout", "60"]),
            env=node.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        time.sleep(1.0)
    assert done.returncode == 0, done.stdout + done.stderr
    after = node.pids()
    assert set(after) == set(before) and not set(after.values()) & set(before.values()), (before, after)
    assert load.failures == [], load.answers
    assert load.answers[200] == load.sent > 50, load.answers
    assert load.resent == 0 and load.told_to_close >= 1, (load.resent, load.told_to_close)


def test_a_killed_process_comes_back_and_load_keeps_being_answered(node: Node) -> None:
    before = node.pids()
    victim = sorted(before)[0]
    with Load(node.port, node.island.namespace, clients=2) as load:
        time.sleep(0.5)
        os.kill(before[victim], signal.SIGKILL)
        time.sleep(0.5)
        at_kill = load.sent
        deadline = time.monotonic() + 60
        while node.pids().get(victim) in (None, before[victim]):
            assert time.monotonic() < deadline, node.ctl("status")
            time.sleep(0.2)
        node.wait_answering({node.pids()[victim]})
        time.sleep(0.5)
    # Only requests the killed process held when it died may fail (one per client at most).
    assert len(load.failures) <= 2, load.answers
    assert load.answers[200] >= load.sent - 2 and load.sent > at_kill + 10, load.answers
