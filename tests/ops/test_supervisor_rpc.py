"""The one XML-RPC client (gateway/supervisor_rpc.py) against a real supervisord: unix socket and http."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import pytest
from supervisor.xmlrpc import Faults

from gateway.nodes import NodeConfig
from gateway.supervisor_rpc import RpcClient, RpcError, RpcFault
from tests.ops.helpers import Supervisord
from tests.support.stack import free_port

PASSWORD = "s3cret-rpc"
# `wide` writes 3000 two-byte characters and a newline to stderr: 6001 bytes, so a window of the last
# 4000 bytes begins in the middle of a character.
PROGRAMS = """
[inet_http_server]
port=127.0.0.1:{port}
username=operator
password={password}

[program:wide]
command=/bin/sh -c 'printf "%%s\\n" "$WIDE" >&2; exec sleep 300'
environment=WIDE="{wide}"
startsecs=0
stderr_logfile=%(here)s/var/log/wide.err
"""


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Supervisord, int]]:
    port = free_port()
    sup = Supervisord(PROGRAMS.format(port=port, password=PASSWORD, wide="é" * 3000), {**os.environ}).start()
    try:
        sup.wait_state("wide", "RUNNING")
        yield sup, port
    finally:
        sup.shutdown()


def call(node: NodeConfig, method: str, *params: object, timeout: float = 10) -> object:
    async def go() -> object:
        rpc = RpcClient()
        try:
            return await rpc.call(node, method, *params, timeout=timeout)
        finally:
            rpc.close()

    return asyncio.run(go())


def test_over_the_unix_socket_and_over_http_with_basic_auth(node: tuple[Supervisord, int]) -> None:
    sup, port = node
    over_unix = NodeConfig("u", sup.url)
    over_http = NodeConfig("h", f"http://127.0.0.1:{port}/RPC2", "operator", PASSWORD)
    for target in (over_unix, over_http):
        assert call(target, "supervisor.getState") == {"statecode": 1, "statename": "RUNNING"}
        assert [p["name"] for p in call(target, "supervisor.getAllProcessInfo")] == ["wide"]


def test_errors_are_told_apart(node: tuple[Supervisord, int], tmp_path) -> None:
    sup, port = node
    with pytest.raises(RpcFault) as fault:
        call(NodeConfig("u", sup.url), "supervisor.getProcessInfo", "nope")
    assert (fault.value.code, fault.value.name) == (Faults.BAD_NAME, "BAD_NAME")
    assert str(fault.value) == "BAD_NAME: nope"  # supervisord's own "BAD_NAME: nope", the name said once
    with pytest.raises(RpcFault, match=r"UNKNOWN_METHOD.*rpcinterface"):
        call(NodeConfig("u", sup.url), "supervisor.noSuchMethod")
    with pytest.raises(RpcError) as denied:
        call(NodeConfig("h", f"http://127.0.0.1:{port}/RPC2", "operator", "wrong"), "supervisor.getState")
    assert denied.value.http_status == 401 and not isinstance(denied.value, RpcFault)
    with pytest.raises(RpcError, match="no socket file"):
        call(NodeConfig("gone", f"unix://{tmp_path}/gone.sock"), "supervisor.getState")
    with pytest.raises(RpcError, match="connection refused"):
        call(NodeConfig("dead", f"http://127.0.0.1:{free_port()}/RPC2"), "supervisor.getState")


def test_a_node_that_never_answers_delays_nobody_else(node: tuple[Supervisord, int]) -> None:
    """The hung call waits out its own timeout while the live node's call, started after it, finishes first."""
    sup, _ = node
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    finished: list[str] = []

    async def one(rpc: RpcClient, name: str, target: NodeConfig, timeout: float) -> None:
        try:
            await rpc.call(target, "supervisor.getState", timeout=timeout)
        except RpcError as exc:
            finished.append(f"{name}: {exc}")
        else:
            finished.append(name)

    async def both() -> None:
        rpc = RpcClient()
        hung_node = NodeConfig("s", f"http://127.0.0.1:{silent.getsockname()[1]}/RPC2")
        try:
            hung = asyncio.create_task(one(rpc, "silent", hung_node, 2))
            await asyncio.sleep(0)  # the hung call is connected and waiting before the live one starts
            await one(rpc, "live", NodeConfig("u", sup.url), 10)
            await hung
        finally:
            rpc.close()

    try:
        asyncio.run(both())
    finally:
        silent.close()
    assert finished == ["live", "silent: no answer within 2 s"]


def test_tail_steps_over_a_window_that_begins_inside_a_character(node: tuple[Supervisord, int]) -> None:
    sup, _ = node
    target = NodeConfig("u", sup.url)
    # What supervisord does with that window by itself: it fails to decode it.
    with pytest.raises(RpcError) as raw:
        call(target, "supervisor.tailProcessStderrLog", "wide", 0, 4000)
    assert raw.value.http_status == 500

    async def tail() -> tuple[str, int]:
        rpc = RpcClient()
        try:
            return await rpc.tail(target, "wide", "stderr", 0, 4000, timeout=10)
        finally:
            rpc.close()

    text, offset = asyncio.run(tail())
    assert offset == 6001 and text == "é" * 1999 + "\n"
