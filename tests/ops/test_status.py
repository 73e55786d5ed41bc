"""`checkgate status` against real supervisords: the table, the node filter and the exit codes."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import status
from tests.ops.helpers import Supervisord
from tests.support.stack import ROOT, free_port

PROGRAMS = """
[inet_http_server]
port=127.0.0.1:{port}
username=operator
password=s3cret-status

[program:idle]
command=/bin/sleep 300
startsecs=0

[group:grp]
programs=idle2

[program:idle2]
command=/bin/sleep 300
startsecs=0
"""


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Supervisord, int]]:
    """A small supervisord: `idle` and `grp:idle2`, on its unix socket and on an authenticated port."""
    port = free_port()
    sup = Supervisord(PROGRAMS.format(port=port), {**os.environ}).start()
    try:
        sup.wait_state("idle", "RUNNING")
        sup.wait_state("grp:idle2", "RUNNING")
        yield sup, port
    finally:
        sup.shutdown()


def run_status(*args: str, **env: str) -> tuple[int, list[str], str]:
    """`checkgate status` (as `python -m gateway.cli status`): exit code, stdout lines, stderr."""
    argv = [sys.executable, "-m", "gateway.cli", "status", *args]
    full_env = {k: v for k, v in os.environ.items() if k != "CHECKGATE_CONSOLE_CONFIG"}
    full_env.update(PYTHONPATH=str(ROOT), **env)
    result = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout.splitlines(), result.stderr


def columns(line: str) -> list[str]:
    return line.split(None, 3)


def test_all_running_is_exit_0_with_the_node_in_front(node: tuple[Supervisord, int]) -> None:
    sup, _ = node
    code, lines, err = run_status("--socket", str(sup.socket), CHECKGATE_NODE="alpha")
    assert code == 0, (lines, err)
    assert [columns(line)[:3] for line in lines] == [["alpha", "grp:idle2", "RUNNING"], ["alpha", "idle", "RUNNING"]]
    assert columns(lines[0])[3].startswith("pid ")


def test_default_is_the_unix_socket_beside_supervisord_conf(node: tuple[Supervisord, int], capsys) -> None:
    sup, _ = node
    args = argparse.Namespace(console_config=None, socket=None, node=None, tag=None, timeout=5.0)
    assert status.run(args, home=sup.home) == 0
    assert "idle" in capsys.readouterr().out


def test_a_stopped_process_is_exit_3(node: tuple[Supervisord, int]) -> None:
    sup, _ = node
    sup.rpc.stopProcess("grp:idle2")
    try:
        code, lines, _ = run_status("--socket", str(sup.socket), CHECKGATE_NODE="alpha")
    finally:
        sup.rpc.startProcess("grp:idle2")
    assert code == 3
    assert columns(lines[0])[:3] == ["alpha", "grp:idle2", "STOPPED"]


def test_console_config_nodes_in_parallel_with_unreachable_ones(node: tuple[Supervisord, int], tmp_path: Path) -> None:
    sup, port = node
    dead = free_port()
    config = tmp_path / "console.toml"
    config.write_text(
        f"""
[[nodes]]
name = "web-1"
url = "http://127.0.0.1:{port}"
username = "operator"
password = "s3cret-status"
tags = ["web"]

[[nodes]]
name = "sock-1"
url = "unix://{sup.socket}"
tags = ["local"]

[[nodes]]
name = "dead-1"
url = "http://127.0.0.1:{dead}"
tags = ["web"]

[[nodes]]
name = "badpw-1"
url = "http://127.0.0.1:{port}/RPC2"
username = "operator"
password = "wrong"

[[nodes]]
name = "env-1"
url = "http://127.0.0.1:{port}/RPC2"
username = "operator"
password_env = "NODE_PASSWORD"
health_url = "http://127.0.0.1:8888/health"

[[nodes]]
name = "userinfo-1"
url = "http://operator:s3cret-status@127.0.0.1:{port}/RPC2"
"""
    )
    code, lines, err = run_status(CHECKGATE_CONSOLE_CONFIG=str(config), NODE_PASSWORD="s3cret-status")
    assert code == 4, (lines, err)
    by_node: dict[str, list[list[str]]] = {}
    for line in lines:
        by_node.setdefault(columns(line)[0], []).append(columns(line))
    assert [row[1:3] for row in by_node["web-1"]] == [["grp:idle2", "RUNNING"], ["idle", "RUNNING"]]
    assert len(by_node["sock-1"]) == 2
    assert by_node["dead-1"][0][1:3] == ["-", "UNREACHABLE"] and "refused" in by_node["dead-1"][0][3].lower()
    assert by_node["badpw-1"][0][2] == "UNREACHABLE" and "401" in by_node["badpw-1"][0][3]
    assert len(by_node["env-1"]) == len(by_node["userinfo-1"]) == 2
    assert "s3cret-status" not in "\n".join(lines)  # a URL with credentials is printed without them

    # Filters: only healthy nodes selected → 0; a tag that only a dead node and a live one share → 4.
    assert run_status("--console-config", str(config), "--node", "web-1", "--node", "sock-1", NODE_PASSWORD="x")[0] == 0
    code, lines, _ = run_status("--console-config", str(config), "--tag", "web", NODE_PASSWORD="x")
    assert code == 4 and {columns(line)[0] for line in lines} == {"web-1", "dead-1"}
    code, _, err = run_status("--console-config", str(config), "--node", "nope", NODE_PASSWORD="x")
    assert code == 2 and "no node matches" in err


def test_bad_console_config_names_the_entry(tmp_path: Path) -> None:
    config = tmp_path / "console.toml"
    config.write_text('[[nodes]]\nname = "a"\nurl = "http://127.0.0.1:1"\n[[nodes]]\nname = "b"\n')
    code, lines, err = run_status(CHECKGATE_CONSOLE_CONFIG=str(config))
    assert (code, lines) == (2, [])
    assert f"{config}: nodes[1] (b): 'url' must be a non-empty string" in err
    config.write_text('[[nodes]]\nname = "a"\nurl = "http://127.0.0.1:1"\npassword_env = "UNSET_FOR_TEST"\n')
    code, _, err = run_status(CHECKGATE_CONSOLE_CONFIG=str(config))
    assert code == 2 and "nodes[0] (a): environment variable UNSET_FOR_TEST (password_env) is empty or unset" in err
    assert "Traceback" not in err


def test_http_with_credentials_in_the_url_and_a_relative_unix_socket(node: tuple[Supervisord, int]) -> None:
    """The two transports side by side, from a config file: http(s) with user:pass@, and unix:// whose
    relative path is taken from the config file's directory."""
    sup, port = node
    config = sup.home / "status-console.toml"
    config.write_text(
        f"""
[[nodes]]
name = "over-http"
url = "http://operator:s3cret-status@127.0.0.1:{port}"

[[nodes]]
name = "over-unix"
url = "unix://var/supervisor.sock"
"""
    )
    code, lines, err = run_status("--console-config", str(config), "--timeout", "10")
    assert code == 0, (lines, err)
    rows = [columns(line)[:3] for line in lines]
    expected = [["grp:idle2", "RUNNING"], ["idle", "RUNNING"]]
    assert [row[1:] for row in rows if row[0] == "over-http"] == expected
    assert [row[1:] for row in rows if row[0] == "over-unix"] == expected


def test_a_missing_socket_and_a_node_that_never_answers_are_unreachable(tmp_path: Path) -> None:
    """Neither hangs the command: each costs at most its own timeout and is a line with the reason."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    config = tmp_path / "console.toml"
    config.write_text(
        f"""
[[nodes]]
name = "no-socket"
url = "unix://{tmp_path}/nothing-here.sock"

[[nodes]]
name = "silent"
url = "http://127.0.0.1:{silent.getsockname()[1]}"
"""
    )
    try:
        code, lines, err = run_status("--console-config", str(config), "--timeout", "1")
    finally:
        silent.close()
    assert code == 4, (lines, err)
    by_node = {columns(line)[0]: columns(line) for line in lines}
    assert by_node["no-socket"][1:3] == ["-", "UNREACHABLE"] and "no socket file" in by_node["no-socket"][3]
    assert by_node["silent"][2] == "UNREACHABLE" and "no answer within 1 s" in by_node["silent"][3]
