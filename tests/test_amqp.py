"""The gateway's AMQP publishing connection: its hand-made frames against pamqp's decoder, and its
behaviour against the real RabbitMQ (confirms, returns, a channel closed by a 404, a nack, a refused
login). The protocol's edge cases a broker will not produce on demand (silence, a broken frame, an
undecodable header, a dropped connection with publishes unconfirmed) are in test_amqp_peer.py, the
broker URL and TLS settings in test_broker_config.py."""

import asyncio

import pytest
from pamqp import commands, decode, frame

from gateway.aiocelery.amqp import (
    AmqpConnection,
    AmqpError,
    AmqpParams,
    ChannelClosed,
    Nacked,
    Returned,
    field_table,
    publish_frames,
)
from gateway.aiocelery.publisher import broker_nodes
from tests.support.env import BROKER_URL, RUN_PREFIX
from tests.test_broker_config import celery_app


def node(url: str) -> AmqpParams:
    """The connection parameters the gateway uses for `url` (one node), through the Celery app."""
    return broker_nodes(celery_app(broker_url=url))[0]


HEADERS = {
    "lang": "py",
    "task": "checkgate.sleep",
    "retries": 0,
    "big": 2**40,
    "negative": -5,
    "flag": True,
    "off": False,
    "nothing": None,
    "ratio": 0.5,
    "raw": b"\x00\x01",
    "nested": {"a": "b", "n": 1},
    "list": ["x", 2, None],
    "unicode": "é ✓",
}


def frames_of(data: bytes) -> list[tuple[int, object]]:
    out = []
    while data:
        used, channel, value = frame.unmarshal(data)
        out.append((channel, value))
        data = data[used:]
    return out


def test_field_table_decodes_to_the_same_values() -> None:
    _, decoded = decode.field_table(field_table(HEADERS))
    expected = {**HEADERS, "raw": HEADERS["raw"], "list": ["x", 2, None]}
    assert {k: (v.encode() if isinstance(v, str) and k == "raw" else v) for k, v in decoded.items()} == expected


def test_field_table_refuses_what_amqp_cannot_carry() -> None:
    with pytest.raises(TypeError, match="set"):
        field_table({"x": {1, 2}})


@pytest.mark.parametrize("value", ["x", 1, ["a", 2]])
@pytest.mark.parametrize("name", ["CC", "BCC"])
def test_routing_headers_rabbitmq_would_refuse_never_reach_it(name: str, value: object) -> None:
    """RabbitMQ reads CC/BCC as arrays of routing keys and closes the channel (406) on anything else."""
    publish = dict(content_type="application/json", content_encoding="utf-8", message_id="gw-1", expiration_ms=None)
    with pytest.raises(TypeError, match=name):
        publish_frames(1, "ex", "q", b"{}", headers={name: value}, **publish)  # type: ignore[arg-type]
    assert publish_frames(1, "ex", "q", b"{}", headers={name: ["q2"]}, **publish)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 10, 131072 - 8, 131072 - 7, 300_000])
def test_publish_frames_decode_with_pamqp(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = publish_frames(
        1,
        "ex",
        "cg_sleep",
        body,
        content_type="application/x-msgpack",
        content_encoding="binary",
        headers=HEADERS,
        message_id="gw-1",
        expiration_ms=30000,
    )
    frames = frames_of(data)
    assert all(channel == 1 for channel, _ in frames)
    method, content = frames[0][1], frames[1][1]
    assert isinstance(method, commands.Basic.Publish)
    assert (method.exchange, method.routing_key, method.mandatory, method.immediate) == ("ex", "cg_sleep", True, False)
    assert content.body_size == size
    props = content.properties
    assert props.content_type == "application/x-msgpack"
    assert props.content_encoding == "binary"
    assert props.delivery_mode == 2
    assert props.correlation_id == props.message_id == "gw-1"
    assert props.expiration == "30000"
    assert props.headers["task"] == "checkgate.sleep" and props.headers["big"] == 2**40
    chunks = [value.value for _, value in frames[2:]]
    assert all(len(c) <= 131072 - 8 for c in chunks)
    assert b"".join(chunks) == body
    assert len(chunks) == -(-size // (131072 - 8))


@pytest.mark.parametrize(("priority", "expiration_ms"), [(None, None), (0, None), (9, 1500), (255, 1)])
def test_publish_frames_priority_and_no_expiration(priority: int | None, expiration_ms: int | None) -> None:
    data = publish_frames(
        1,
        "",
        "q",
        b"{}",
        content_type="application/json",
        content_encoding="utf-8",
        headers={"task": "t"},
        message_id="id-1",
        expiration_ms=expiration_ms,
        priority=priority,
    )
    props = frames_of(data)[1][1].properties
    assert props.priority == priority
    assert props.expiration == (None if expiration_ms is None else str(expiration_ms))
    assert (props.delivery_mode, props.message_id, props.correlation_id) == (2, "id-1", "id-1")
    assert props.headers == {"task": "t"}


async def _against_rabbit() -> dict[str, object]:
    queue = f"{RUN_PREFIX}amqp_unit"
    seen: dict[str, object] = {}
    conn = await AmqpConnection.open(node(BROKER_URL))
    try:
        await conn.rpc(1, commands.Queue.Declare(queue=queue, auto_delete=False), commands.Queue.DeclareOk)
        common = {"content_type": "text/plain", "content_encoding": "utf-8", "expiration_ms": 60000, "timeout": 5}
        # Confirmed: the future completes with None. Many at once: acks may come as "multiple".
        results = await asyncio.gather(
            *(conn.publish("", queue, b"hi", headers={"n": n}, message_id=f"m{n}", **common) for n in range(200))
        )
        seen["confirmed"] = results.count(None)
        # Unroutable: the broker returns it before its ack.
        with pytest.raises(Returned):
            await conn.publish("", f"{RUN_PREFIX}nowhere", b"x", headers={}, message_id="lost", **common)
        seen["returned"] = True
        # A passive declare of a missing queue closes its own channel only.
        stats = await conn.open_channel()
        with pytest.raises(ChannelClosed) as closed:
            await conn.rpc(stats, commands.Queue.Declare(queue=f"{RUN_PREFIX}missing", passive=True))
        seen["closed_code"] = closed.value.code
        seen["stats_channel_open"] = conn.channel_open(stats)
        await conn.publish("", queue, b"after", headers={}, message_id="after", **common)
        ok = await conn.rpc(1, commands.Queue.Declare(queue=queue, passive=True), commands.Queue.DeclareOk)
        seen["messages"] = ok.message_count
        await conn.rpc(1, commands.Queue.Delete(queue=queue), commands.Queue.DeleteOk)
    finally:
        await conn.close()
    seen["closed"] = conn.closed.done() and not conn.is_open
    with pytest.raises(AmqpError):
        conn.publish("", queue, b"late", headers={}, message_id="late", **common)
    return seen


def test_confirms_returns_and_a_closed_channel_against_rabbitmq() -> None:
    seen = asyncio.run(_against_rabbit())
    assert seen == {
        "confirmed": 200,
        "returned": True,
        "closed_code": 404,
        "stats_channel_open": False,
        "messages": 201,
        "closed": True,
    }


def test_a_wrong_password_is_refused() -> None:
    params = node(BROKER_URL.replace("guest:guest", "guest:wrong"))
    with pytest.raises(AmqpError, match=r"ACCESS_REFUSED|403"):
        asyncio.run(AmqpConnection.open(params))


async def _nacked() -> list[str]:
    """A queue at its length limit with `x-overflow: reject-publish`: RabbitMQ nacks what it cannot take."""
    queue = f"{RUN_PREFIX}amqp_full"
    arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
    conn = await AmqpConnection.open(node(BROKER_URL))
    outcomes = []
    common = {"content_type": "text/plain", "content_encoding": "utf-8", "expiration_ms": 60000, "timeout": 5}
    try:
        await conn.rpc(1, commands.Queue.Declare(queue=queue, arguments=arguments), commands.Queue.DeclareOk)
        for n in range(3):
            try:
                await conn.publish("", queue, b"x", headers={}, message_id=f"f{n}", **common)
                outcomes.append("ack")
            except Nacked:
                outcomes.append("nack")
        outcomes.append("open" if conn.is_open else "closed")
        await conn.rpc(1, commands.Queue.Delete(queue=queue), commands.Queue.DeleteOk)
    finally:
        await conn.close()
    return outcomes


def test_a_nack_fails_only_its_publish() -> None:
    assert asyncio.run(_nacked()) == ["ack", "nack", "nack", "open"]
