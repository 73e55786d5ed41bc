"""The shipped supervisord.conf runs the whole node: every program RUNNING, a check answered, the console locked."""

import base64
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import supervisor_env
from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.stack import ROOT, Stack, free_port, http_get

BIN = Path(sys.executable).parent


def supervisorctl(conf: Path, *args: str) -> str:
    result = subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), *args], capture_output=True, text=True)
    return result.stdout


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """The repository's supervisord.conf, run from a copy so its var/ is the test's own."""
    home = tmp_path / "node"
    home.mkdir()
    shutil.copy(ROOT / "supervisord.conf", home / "supervisord.conf")
    (home / "supervisord.d").mkdir()
    (home / ".venv").symlink_to(BIN.parent)
    (home / "var" / "log").mkdir(parents=True)
    cleanup = Stack(tmp_path, f"cgs{os.getpid()}_", BROKER_URL, BACKEND_URL)
    empty_schedule = tmp_path / "schedule.toml"  # a developer's own schedule.toml must not fire here
    empty_schedule.write_text("")
    env = {
        **os.environ,
        "CHECKGATE_QUEUE_PREFIX": cleanup.prefix,
        "CHECKGATE_PORT": str(free_port()),
        "CHECKGATE_SUPERVISOR_PORT": str(free_port()),
        "CHECKGATE_SUPERVISOR_USER": "operator",
        "CHECKGATE_SUPERVISOR_PASSWORD": "s3cret-for-test",
        "CHECKGATE_FLOWER_PORT": str(free_port()),
        "CHECKGATE_FLOWER_USER": "operator",
        "CHECKGATE_FLOWER_PASSWORD": "flower-for-test",
        "CHECKGATE_SCHEDULE": str(empty_schedule),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("CHECKGATE_CHECK_MODULES", None)  # the shipped check types only: each has its worker program
    subprocess.run([str(BIN / "supervisord"), "-c", str(home / "supervisord.conf")], env=env, check=True)
    try:
        yield home / "supervisord.conf", env
    finally:
        supervisorctl(home / "supervisord.conf", "shutdown")
        deadline = time.monotonic() + 60
        while (home / "var" / "supervisord.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        cleanup.cleanup()


def test_supervisord_runs_the_whole_node(node: tuple[Path, dict[str, str]]) -> None:
    conf, env = node
    programs = {
        "gateway",
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
    deadline = time.monotonic() + 90
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = dict(line.split()[:2] for line in supervisorctl(conf, "status").splitlines() if line.strip())
        if set(states) == programs and set(states.values()) == {"RUNNING"}:
            break
        time.sleep(1)
    else:
        pytest.fail(f"not all RUNNING: {states}")

    gateway = f"http://127.0.0.1:{env['CHECKGATE_PORT']}"
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
