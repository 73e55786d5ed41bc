"""The shipped supervisord.conf runs the whole node: every program RUNNING, a check answered, the console locked,
the stack's own Redis and broker account behind credentials generated once (issue #11), and the gateway's
operations console served from the first start (issue #16)."""

import base64
import contextlib
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from gateway.cli import node_env, supervisor_env
from tests.ops.helpers import BrokerAccounts, usable_rabbitmqctl
from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.node import ShippedNode
from tests.support.stack import ROOT, http_get

BIN = Path(sys.executable).parent


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ShippedNode]:
    ctl = usable_rabbitmqctl()
    if ctl is None and os.environ.get("CI"):
        pytest.fail("CI must provide a rabbitmqctl that reaches the local broker (the node's own vhost)")
    accounts = BrokerAccounts(ctl) if ctl else None
    node = ShippedNode(tmp_path, accounts.new("node") if accounts else None)
    try:
        yield node
    finally:
        node.stop()
        try:
            node.cleanup.cleanup()
        finally:
            if accounts is not None:
                accounts.delete()


def wait_for_add(gateway: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            code, body, _ = http_get(gateway + "/check/add?x=1&y=2", timeout=30)
            if code == 200 or time.monotonic() > deadline:
                break
        except OSError:
            pass
        time.sleep(0.5)
    assert (code, body["result"]) == (200, 3)


def raw_redis(port: int, command: bytes) -> bytes:
    """One inline command to 127.0.0.1:`port` without logging in; the first reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command + b"\r\n")
        return sock.makefile("rb").readline()


def command_lines() -> str:
    """Every process's command line on this machine, as `ps` shows them to any user."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return "\n".join(lines)


def process_environments() -> str:
    """Every process's environment on this machine (root reads them all)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            found.append(environ.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return "\n".join(found)


def inspect_replies(env: dict[str, str]) -> dict[str, dict]:
    """`celery inspect conf / stats / report` on the node's broker: what Flower's worker pages show."""
    app = Celery(broker=env["CHECKGATE_BROKER_URL"].replace("amqp://", "pyamqp://", 1))
    prefix = env["CHECKGATE_QUEUE_PREFIX"]
    app.conf.update(control_exchange=f"{prefix}celery", accept_content=["msgpack", "json"])
    try:
        inspect = app.control.inspect(timeout=5)
        return {"conf": inspect.conf() or {}, "stats": inspect.stats() or {}, "report": inspect.report() or {}}
    finally:
        app.close()


def test_supervisord_runs_the_whole_node(node: ShippedNode) -> None:
    env = node.start()
    node.wait_running()
    gateway = node.gateway
    wait_for_add(gateway)
    code, body, _ = http_get(gateway + "/check/sleep?ms=10")
    assert (code, body["result"]["slept_ms"]) == (200, 10)
    # Every queue of every declared check type has a worker consuming it.
    code, health, _ = http_get(gateway + "/health")
    assert (code, health["status"]) == (200, "ok"), health
    prefix = env["CHECKGATE_QUEUE_PREFIX"]
    assert {q.removeprefix(prefix) for q in health["queues"]} == {"add", "sleep", "http", "tcp", "dns", "tls"}
    assert health["queues"][prefix + "sleep"]["consumers"] == 2

    console = f"http://127.0.0.1:{env['CHECKGATE_SUPERVISOR_PORT']}/"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(console, timeout=10)
    assert refused.value.code == 401
    token = base64.b64encode(b"operator:s3cret-for-test").decode()
    request = urllib.request.Request(console, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert b"gateway" in response.read()

    # Issue #16: the gateway serves the node's own console from the first start (the browser test logs in).
    # Forwarding headers change nothing: the peer is the connection's (here loopback, so it answers).
    login = gateway + "/console/login"
    for headers in ({}, {"X-Forwarded-For": "10.0.0.7", "X-Real-IP": "10.0.0.7"}):
        with urllib.request.urlopen(urllib.request.Request(login, headers=headers), timeout=10) as response:
            assert response.status == 200 and b'id="password"' in response.read()

    # Issue #11: the stack's Redis and broker answer no one without the generated credentials, which are
    # private, nowhere on a command line, in a log or in the workers' settings, and the same next start.
    port = int(env["CHECKGATE_REDIS_PORT"])
    assert raw_redis(port, b"PING").startswith(b"-NOAUTH")
    assert raw_redis(port, b"KEYS *").startswith(b"-NOAUTH")
    # The answer came through it: workers stored the result there and the gateway read it from there;
    # beat holds its lock there.
    own = redis.Redis.from_url(env["CHECKGATE_RESULT_BACKEND"])
    try:
        assert own.keys("celery-task-meta-*")
        assert own.exists(f"checkgate:{prefix}beat::lock")
    finally:
        own.close()

    var = node.home / "var"
    console_login = (var / "console-credentials").read_text()
    secrets_ = {"redis": env["CHECKGATE_REDIS_PASSWORD"], "flower": env["CHECKGATE_FLOWER_PASSWORD"]}
    secrets_["console"] = console_login.strip().partition(":")[2]
    private = [var / "redis-credentials", var / "flower-credentials", var / "redis.conf"]
    private += [var / "console-credentials", var / "console.toml"]
    if "CHECKGATE_RABBITMQ_VHOST" in node.given:
        vhost = node.given["CHECKGATE_RABBITMQ_VHOST"]
        assert env["CHECKGATE_BROKER_URL"].endswith(f"@127.0.0.1:5672/{vhost}")
        secrets_["rabbitmq"] = env["CHECKGATE_RABBITMQ_PASSWORD"]
        private.append(var / "rabbitmq-credentials")
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    everything_ps_shows = command_lines()
    logs = "\n".join(p.read_text(errors="replace") for p in (var / "log").glob("*.log"))
    answers = inspect_replies(env)
    assert all(len(answers[kind]) == 7 for kind in answers), answers  # every worker answered each
    replies = json.dumps(answers, default=str)
    assert "redbeat_redis_url" in replies
    for name, password in secrets_.items():
        assert password not in everything_ps_shows, f"{name} password on a command line"
        assert password not in logs, f"{name} password in a log"
        assert password not in replies, f"{name} password in `celery inspect conf/stats/report`"
    # The console's password is only in its file (the gateway gets its scrypt hash): no process has it.
    assert secrets_["console"] not in process_environments()

    status = subprocess.run(
        [str(BIN / "checkgate"), "status", "--socket", str(var / "supervisor.sock")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(r"^\S+\s+redis\s+RUNNING", status.stdout, re.MULTILINE), status.stdout

    # A second start reuses every credential (and the broker account, which exists by now).
    node.stop()
    again = node.start()
    for key in ("CHECKGATE_RESULT_BACKEND", "CHECKGATE_BROKER_URL", "CHECKGATE_FLOWER_PASSWORD"):
        assert again[key] == env[key], key
    assert (var / "console-credentials").read_text() == console_login
    node.wait_running()
    wait_for_add(gateway)


def test_the_operators_urls_win_and_the_node_runs_no_redis_of_its_own(tmp_path: Path) -> None:
    given = {"CHECKGATE_BROKER_URL": BROKER_URL, "CHECKGATE_RESULT_BACKEND": BACKEND_URL, "PATH": os.environ["PATH"]}
    env = node_env(tmp_path, given)
    assert (env["CHECKGATE_BROKER_URL"], env["CHECKGATE_RESULT_BACKEND"]) == (BROKER_URL, BACKEND_URL)
    assert env["CHECKGATE_REDIS_NUMPROCS"] == "0"
    made = sorted(p.name for p in (tmp_path / "var").iterdir())
    # Nothing for Redis or RabbitMQ (metrics/: the gateway's processes share their metrics there).
    expected = ["console-credentials", "console.toml", "flower-credentials", "metrics", "supervisor-credentials"]
    assert made == [name for name in expected if name != "metrics" or env["CHECKGATE_PROCESSES"] != "1"]


def test_supervisor_password_is_generated_once_and_private(tmp_path: Path) -> None:
    env = supervisor_env(tmp_path, {})
    secret = tmp_path / "var" / "supervisor-credentials"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert env["CHECKGATE_SUPERVISOR_USER"] == "checkgate"
    assert len(env["CHECKGATE_SUPERVISOR_PASSWORD"]) >= 20
    assert supervisor_env(tmp_path, {})["CHECKGATE_SUPERVISOR_PASSWORD"] == env["CHECKGATE_SUPERVISOR_PASSWORD"]
    given = supervisor_env(tmp_path, {"CHECKGATE_SUPERVISOR_USER": "u", "CHECKGATE_SUPERVISOR_PASSWORD": "p"})
    assert (given["CHECKGATE_SUPERVISOR_USER"], given["CHECKGATE_SUPERVISOR_PASSWORD"]) == ("u", "p")


def test_each_check_type_has_a_worker_with_the_pool_it_declares() -> None:
    import configparser
    import re

    from tasks.registry import REGISTRY, load_checks

    load_checks()
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "supervisord.conf")
    pools = {}
    for section in parser.sections():
        command = parser.get(section, "command", fallback="")
        match = re.search(r"-Q %\(ENV_CHECKGATE_QUEUE_PREFIX\)s(\S+) .*-P (\S+)", command)
        if match:
            pools[match.group(1)] = match.group(2)
    builtin = {name: c for name, c in REGISTRY.items() if c.fn.__module__.startswith("tasks.checks.")}
    assert set(pools) == {c.queue for c in builtin.values()}
    for check in builtin.values():
        assert pools[check.queue] == ("prefork" if check.pool == "cpu" else "threads"), check.name
