"""The hosts of the HA tests: network namespaces on a private bridge that reach the root namespace's
servers, nothing beyond, and vanish without a word when cut."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

from tests.support import netns
from tests.support.infra import require
from tests.support.runs import REGISTRY, TestRun, sweep

CONNECT = """
import socket, sys, time
try:
    sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
except OSError as exc:
    print(type(exc).__name__, exc.errno, flush=True)
    sys.exit(0)
print("connected", flush=True)
time.sleep(60)
"""


def connect_from(host: netns.Host, address: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        host.command([sys.executable, "-c", CONNECT, address, str(port)]), stdout=subprocess.PIPE, text=True
    )


def test_a_host_reaches_the_bridge_and_nothing_else(network: netns.Network) -> None:
    host = network.add_host("reach")
    with socket.socket() as server:
        server.bind((network.address, 0))
        server.listen()
        client = connect_from(host, network.address, server.getsockname()[1])
        try:
            assert client.stdout is not None and client.stdout.readline().strip() == "connected"
            _, peer = server.accept()
            assert peer[0] == host.address
        finally:
            client.kill()
            client.wait()
    # No default route: an address outside the bridge's /24 is unreachable at once, nothing is sent.
    out = subprocess.run(
        host.command([sys.executable, "-c", CONNECT, "192.0.2.1", "80"]), capture_output=True, text=True, timeout=30
    )
    assert out.stdout.split() == ["OSError", "101"]  # ENETUNREACH
    assert "default" not in netns.ip("-n", host.namespace, "route", "show")


def test_a_cut_host_vanishes_silently_and_heals(network: netns.Network) -> None:
    host = network.add_host("cut")
    with socket.socket() as server:
        server.bind((network.address, 0))
        server.listen()
        client = connect_from(host, network.address, server.getsockname()[1])
        assert client.stdout is not None and client.stdout.readline().strip() == "connected"
        conn, _ = server.accept()
        with conn:
            host.cut()
            client.kill()  # its FIN goes nowhere: the server side must not see the connection end
            client.wait()
            conn.settimeout(2)
            try:
                data = conn.recv(1)
            except TimeoutError:
                data = None
            assert data is None, "the peer's close got through a cut link"
            host.heal()
            # Back on the wire, the host's kernel answers our next segment with a RST: now we know.
            conn.settimeout(10)
            conn.sendall(b"x")
            with contextlib.suppress(ConnectionResetError):
                assert conn.recv(1) == b""


def test_sweep_removes_what_a_dead_run_left() -> None:
    require(netns.missing())
    orphan = TestRun()
    # A run whose owner died: its registry entry names a process that has exited.
    dead = subprocess.Popen(["true"])
    dead.wait()
    REGISTRY.mkdir(parents=True, exist_ok=True)
    (REGISTRY / orphan.id).write_text(f"{dead.pid} 0\n")
    namespace = f"{orphan.name_prefix}-left"
    netns.ip("netns", "add", namespace)
    netns.ip("link", "add", f"{orphan.name_prefix}br", "type", "bridge")
    sleeper = subprocess.Popen(["sleep", "300"], env={**os.environ, **orphan.env})
    try:
        assert orphan.id in sweep()
        assert sleeper.wait(timeout=10) == -9
        assert namespace not in netns.ip("netns", "list")
        assert f"{orphan.name_prefix}br" not in netns.ip("link", "show")
        assert not (REGISTRY / orphan.id).exists()
    finally:
        sleeper.kill()
        netns.ip("netns", "del", namespace, check=False)
        netns.ip("link", "del", f"{orphan.name_prefix}br", check=False)
