"""The gateway's AMQP connection against a real RabbitMQ node of the HA tests' own (tests/ha's session
node: its alarm and forced close disturb nobody): a memory alarm blocks publishers (Connection.Blocked,
then Unblocked) and an operator's forced close (Connection.Close 320). The same cases, and those no
broker produces on demand, run against a scripted broker in tests/test_amqp_peer.py."""

from __future__ import annotations

import asyncio

import pytest
from pamqp import commands

from gateway.aiocelery.amqp import AmqpConnection, AmqpError
from gateway.aiocelery.publisher import broker_nodes
from tests.support.services import PrivateRabbit
from tests.test_broker_config import celery_app


async def _blocked_then_closed(node: PrivateRabbit) -> list[str]:
    seen = []
    common = {"content_type": "text/plain", "content_encoding": "utf-8", "expiration_ms": 60000, "timeout": 5}
    conn = await AmqpConnection.open(broker_nodes(celery_app(broker_url=node.url))[0])
    await conn.rpc(1, commands.Queue.Declare(queue="q"), commands.Queue.DeclareOk)
    # A memory alarm: RabbitMQ blocks every publishing connection (Connection.Blocked).
    await asyncio.to_thread(node.ctl, "set_vm_memory_high_watermark", "0")
    try:
        # RabbitMQ blocks a connection when it next publishes; the one publish that tells it stays unconfirmed.
        # (Its confirm comes once the alarm clears: the CLI calls around it take seconds on a busy machine.)
        first = conn.publish("", "q", b"x", headers={}, message_id="first", **{**common, "timeout": 120})
        for _ in range(100):
            if conn.blocked is not None:
                break
            await asyncio.sleep(0.05)
        try:
            conn.publish("", "q", b"x", headers={}, message_id="refused", **common)
        except AmqpError as exc:
            seen.append(str(exc))
    finally:
        await asyncio.to_thread(node.ctl, "set_vm_memory_high_watermark", "0.4")
    await first
    for _ in range(100):
        if conn.blocked is None:
            break
        await asyncio.sleep(0.05)
    await conn.publish("", "q", b"x", headers={}, message_id="after", **common)
    seen.append("unblocked")
    # A broker-sent Connection.Close (an operator closing it, a node shutting down).
    await asyncio.to_thread(node.ctl, "close_all_connections", "test: closed by the operator")
    with pytest.raises(AmqpError) as closed:
        await asyncio.wait_for(conn.closed, 10)
    seen.append(str(closed.value))
    return seen


def test_a_real_broker_blocks_publishers_and_closes_connections(rabbit_node: PrivateRabbit) -> None:
    blocked, unblocked, closed = asyncio.run(_blocked_then_closed(rabbit_node))
    assert blocked.startswith("broker blocked publishing: ") and "memory" in blocked
    assert unblocked == "unblocked"
    assert "closed the connection: 320 CONNECTION_FORCED" in closed and "closed by the operator" in closed
