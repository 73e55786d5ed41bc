"""The gateway's AMQP connection and publisher against a scripted broker (tests/support/amqp_peer.py), for
what a real RabbitMQ will not do on demand: a peer that goes silent (missed heartbeats), a framing error,
a header the connection cannot decode, Connection.Close and Connection.Blocked at chosen moments, nacks,
and a node that dies between a publish and its confirm — and what the publisher then does: move to the
next node at once, send again what may be sent again, and say so when the outcome is unknown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from pamqp import commands, frame, header

from gateway.aiocelery.amqp import AmqpConnection, AmqpError, AmqpParams, Nacked, Unconfirmed
from gateway.aiocelery.errors import BrokerRefused, PublishUnconfirmed
from gateway.aiocelery.messages import OutgoingMessage
from gateway.aiocelery.publisher import BrokerPublisher
from tests.support.amqp_peer import PeerConnection, ScriptedBroker, broken_frame

COMMON = {"content_type": "text/plain", "content_encoding": "utf-8", "expiration_ms": 60000, "timeout": 5}


def params(port: int, heartbeat: float = 0) -> AmqpParams:
    return AmqpParams("127.0.0.1", port, "guest", "guest", "/", heartbeat=heartbeat, connect_timeout=2)


def run(coro: Callable[[], Awaitable[object]]) -> object:
    return asyncio.run(asyncio.wait_for(coro(), 30))


def silent(peer: PeerConnection, tag: int, message_id: str) -> None:
    """Never confirm."""


async def publish_then(broker: ScriptedBroker, act: Callable[[PeerConnection], None]) -> tuple[BaseException, str]:
    """Open a connection, publish one message (unconfirmed), do `act` to the peer; return what the
    publish raised and why the connection ended."""
    conn = await AmqpConnection.open(params(broker.port, heartbeat=broker.heartbeat))
    future = conn.publish("", "q", b"body", headers={}, message_id="m1", **COMMON)
    while not broker.published:
        await asyncio.sleep(0.01)
    act(broker.connections[-1])
    with pytest.raises(AmqpError) as ended:
        await conn.closed
    with pytest.raises(Exception) as failed:
        await future
    return failed.value, str(ended.value)


def test_missed_heartbeats_end_the_connection() -> None:
    async def scenario() -> tuple[BaseException, str, float]:
        async with ScriptedBroker(silent, heartbeat=1) as broker:
            started = time.monotonic()
            failed, why = await publish_then(broker, lambda peer: None)  # the peer just goes quiet
            return failed, why, time.monotonic() - started

    failed, why, took = run(scenario)
    assert "no frame from the broker for 2 s" in why
    assert isinstance(failed, Unconfirmed) and failed.sent
    assert took < 10


def test_a_framing_error_ends_the_connection() -> None:
    async def scenario() -> tuple[BaseException, str]:
        async with ScriptedBroker(silent) as broker:
            return await publish_then(broker, lambda peer: peer.send_raw(broken_frame()))

    failed, why = run(scenario)
    assert "framing error" in why
    assert isinstance(failed, Unconfirmed) and failed.sent


def test_an_undecodable_header_from_the_broker_ends_the_connection() -> None:
    def returned_with_bad_headers(peer: PeerConnection) -> None:
        peer.send(commands.Basic.Return(312, "NO_ROUTE", "", "q"), 1)
        good = frame.marshal(header.ContentHeader(0, 4, commands.Basic.Properties(headers={"n": 1})), 1)
        # The header table's one value has field type "b" (short-short int); make it "Z", which no peer knows.
        assert b"\x01nb" in good
        peer.send_raw(good.replace(b"\x01nb", b"\x01nZ"))

    async def scenario() -> tuple[BaseException, str]:
        async with ScriptedBroker(silent) as broker:
            return await publish_then(broker, returned_with_bad_headers)

    failed, why = run(scenario)
    assert "bad frame from the broker" in why
    assert isinstance(failed, Unconfirmed)


def test_a_broker_sent_connection_close() -> None:
    async def scenario() -> tuple[BaseException, str, list]:
        async with ScriptedBroker(silent) as broker:
            close = commands.Connection.Close(320, "CONNECTION_FORCED - broker forced connection closure", 0, 0)
            failed, why = await publish_then(broker, lambda peer: peer.send(close))
            await asyncio.sleep(0.1)
            return failed, why, [v for _, v in broker.received if isinstance(v, commands.Connection.CloseOk)]

    failed, why, close_oks = run(scenario)
    assert "closed the connection: 320 CONNECTION_FORCED" in why
    assert isinstance(failed, Unconfirmed) and failed.sent
    assert close_oks, "the connection did not answer Close with Close-Ok"


def test_a_publish_that_never_left_is_known_unsent() -> None:
    async def scenario() -> BaseException:
        async with ScriptedBroker(silent) as broker:
            conn = await AmqpConnection.open(params(broker.port))
            future = conn.publish("", "q", b"body", headers={}, message_id="m1", **COMMON)
            conn.abort()  # in the same turn of the loop: its frames were never written
            with pytest.raises(Unconfirmed) as failed:
                await future
            return failed.value

    assert run(scenario).sent is False


def test_nacks_fail_their_publishes_only() -> None:
    def nack_even(peer: PeerConnection, tag: int, message_id: str) -> None:
        if tag == 4:
            peer.nack(4, multiple=True)  # 1..4, of which 1 and 3 were acked already
        elif tag % 2:
            peer.ack(tag)

    async def scenario() -> list[str]:
        async with ScriptedBroker(nack_even) as broker:
            conn = await AmqpConnection.open(params(broker.port))
            futures = [conn.publish("", "q", b"b", headers={}, message_id=f"m{n}", **COMMON) for n in range(1, 6)]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            assert conn.is_open
            await conn.close()
            return ["ack" if o is None else type(o).__name__ for o in outcomes]

    assert run(scenario) == ["ack", "Nacked", "ack", "Nacked", "ack"]


def test_a_header_of_an_unexpected_type_is_refused_before_anything_is_sent() -> None:
    async def scenario() -> tuple[str, list[str]]:
        async with ScriptedBroker() as broker:
            conn = await AmqpConnection.open(params(broker.port))
            with pytest.raises(TypeError) as refused:
                conn.publish("", "q", b"b", headers={"when": object()}, message_id="bad", **COMMON)
            await conn.publish("", "q", b"b", headers={"n": 1}, message_id="good", **COMMON)
            await conn.close()
            return str(refused.value), broker.published

    why, published = run(scenario)
    assert "cannot put a object in an AMQP field table" in why
    assert published == ["good"]


def test_a_blocked_broker_refuses_publishes_at_once_until_unblocked() -> None:
    async def scenario() -> list[str]:
        async with ScriptedBroker() as broker:
            conn = await AmqpConnection.open(params(broker.port))
            broker.connections[-1].send(commands.Connection.Blocked("low on memory"))
            await asyncio.sleep(0.1)
            seen = []
            try:
                conn.publish("", "q", b"b", headers={}, message_id="m1", **COMMON)
            except AmqpError as exc:
                seen.append(str(exc))
            broker.connections[-1].send(commands.Connection.Unblocked())
            await asyncio.sleep(0.1)
            await conn.publish("", "q", b"b", headers={}, message_id="m2", **COMMON)
            seen.append("published")
            await conn.close()
            return seen

    assert run(scenario) == ["broker blocked publishing: low on memory", "published"]


# --- the publisher: failover and what is sent again ---------------------------------------------------


def message(task_id: str, expiration: float = 10.0) -> OutgoingMessage:
    return OutgoingMessage(task_id, "", "q", b"body", {"id": task_id}, "text/plain", "utf-8", expiration)


async def connected(publisher: BrokerPublisher) -> None:
    publisher.start()
    assert await publisher.wait_available(10)


def test_a_dead_node_is_skipped_at_once() -> None:
    async def scenario() -> tuple[int, list[str]]:
        async with ScriptedBroker() as live:
            dead = ScriptedBroker()
            await dead.__aenter__()
            await dead.stop()  # its port now refuses
            publisher = BrokerPublisher([params(dead.port), params(live.port)], [], 5.0, "round-robin")
            await connected(publisher)
            await publisher.publish(message("t1"))
            port = publisher.node.port if publisher.node else 0
            await publisher.close()
            return port == live.port, live.published

    assert run(scenario) == (True, ["t1"])


def unconfirmed_then_dead(broker: ScriptedBroker) -> Callable[[PeerConnection, int, str], None]:
    """The node takes the first message, then dies before confirming it (a RST, no Close)."""

    def act(peer: PeerConnection, tag: int, message_id: str) -> None:
        asyncio.get_running_loop().call_later(0.05, peer.drop)

    return act


@pytest.mark.parametrize("may_republish", [True, False])
def test_a_message_sent_to_a_node_that_died_unconfirmed(may_republish: bool) -> None:
    async def scenario() -> tuple[str, list[str], list[str]]:
        async with ScriptedBroker() as first, ScriptedBroker() as second:
            first.on_publish = unconfirmed_then_dead(first)
            publisher = BrokerPublisher([params(first.port), params(second.port)], [], 5.0, "round-robin")
            await connected(publisher)
            try:
                await publisher.publish(message("t1"), may_republish=may_republish)
                outcome = "confirmed"
            except PublishUnconfirmed:
                outcome = "unknown"
            await publisher.close()
            return outcome, first.published, second.published

    outcome, first, second = run(scenario)
    assert first == ["t1"]
    if may_republish:
        # The same task id, sent again on the next node: a duplicate only rewrites the same result.
        assert (outcome, second) == ("confirmed", ["t1"])
    else:
        # It may be queued on the dead node's queue replica: never sent twice, the caller is told.
        assert (outcome, second) == ("unknown", [])


def test_a_nack_is_retried_briefly_then_refused() -> None:
    def nack_first_two(peer: PeerConnection, tag: int, message_id: str) -> None:
        (peer.ack if tag > 2 else peer.nack)(tag)

    def nack_all(peer: PeerConnection, tag: int, message_id: str) -> None:
        peer.nack(tag)

    async def scenario() -> tuple[list[str], list[str], float]:
        async with ScriptedBroker(nack_first_two) as electing, ScriptedBroker(nack_all) as full:
            publisher = BrokerPublisher([params(electing.port)], [], 5.0)
            await connected(publisher)
            await publisher.publish(message("t1"), may_republish=False)  # nacked twice, then taken
            await publisher.close()
            publisher = BrokerPublisher([params(full.port)], [], 5.0)
            await connected(publisher)
            started = time.monotonic()
            with pytest.raises(BrokerRefused):
                await publisher.publish(message("t2", expiration=30))
            took = time.monotonic() - started
            await publisher.close()
            return electing.published, full.published, took

    electing, full, took = run(scenario)
    assert electing == ["t1", "t1", "t1"]
    assert len(full) > 2 and set(full) == {"t2"}
    assert took < 10  # the retry window, not the 30 s deadline


def test_nacked_never_means_unconfirmed() -> None:
    assert not issubclass(Nacked, Unconfirmed)
