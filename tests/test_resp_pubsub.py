"""The result stream's raw PSUBSCRIBE connection against a private Redis: delivery, AUTH, a Unix
socket, and a connection the server drops; behind Sentinel, a failover the old master lives through."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from celery import Celery

from gateway.aiocelery.resp import PatternSubscription, RedisAddress, SubscriptionError, command
from gateway.aiocelery.results import ResultListener
from tests.support.infra import missing_redis, require
from tests.support.runs import TestRun
from tests.support.sentinel import RedisSentinel
from tests.support.services import PrivateRedis

PASSWORD = "pw-test"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, password=PASSWORD)
    server.start()
    yield server
    server.stop()


def test_command_is_resp() -> None:
    assert command("PSUBSCRIBE", b"a*") == b"*2\r\n$10\r\nPSUBSCRIBE\r\n$2\r\na*\r\n"
    assert command("AUTH", "é") == b"*2\r\n$4\r\nAUTH\r\n$2\r\n\xc3\xa9\r\n"


def test_endpoint_is_what_redis_py_would_use() -> None:
    tcp = RedisAddress.of(aioredis.from_url("redis://u:p@h:7/1"))
    assert (tcp.host, tcp.port, tcp.username, tcp.password, tcp.path, tcp.ssl_context) == ("h", 7, "u", "p", None, None)
    unix = RedisAddress.of(aioredis.from_url("unix://:secret@/run/redis.sock?db=2"))
    assert (unix.path, unix.password) == ("/run/redis.sock", "secret")
    assert RedisAddress.of(aioredis.from_url("rediss://h:6380/0")).ssl_context is not None


async def _receive(url: str, publisher: redis.Redis) -> list[tuple[bytes, bytes]]:
    got: list[tuple[bytes, bytes]] = []
    sub = await PatternSubscription.open(
        RedisAddress.of(aioredis.from_url(url)), "cgx-*", lambda c, d: got.append((c, d))
    )
    try:
        for channel, data in (("cgx-1", b"one"), ("other-2", b"no"), ("cgx-3", b"\x00three")):
            await asyncio.to_thread(publisher.publish, channel, data)
        async with asyncio.timeout(5):
            while len(got) < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # nothing else arrives
    finally:
        sub.close()
    return got


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_pattern_messages_arrive_with_auth(private_redis: PrivateRedis, via: str) -> None:
    url = private_redis.url if via == "tcp" else f"unix://:{PASSWORD}@{private_redis.socket_path}"
    publisher = redis.Redis.from_url(private_redis.url)
    got = asyncio.run(_receive(url, publisher))
    assert got == [(b"cgx-1", b"one"), (b"cgx-3", b"\x00three")]


def test_a_wrong_password_is_refused(private_redis: PrivateRedis) -> None:
    endpoint = RedisAddress.of(aioredis.from_url(private_redis.url.replace(PASSWORD, "wrong")))
    with pytest.raises(SubscriptionError, match="refused"):
        asyncio.run(PatternSubscription.open(endpoint, "cgx-*", lambda c, d: None))


async def _dropped(url: str, admin: redis.Redis) -> str:
    sub = await PatternSubscription.open(RedisAddress.of(aioredis.from_url(url)), "cgx-*", lambda c, d: None)
    killed = await asyncio.to_thread(admin.client_kill_filter, _type="pubsub")
    with pytest.raises(SubscriptionError) as lost:
        async with asyncio.timeout(5):
            await sub.closed
    return f"{killed} {lost.value}"


def test_a_dropped_connection_completes_closed(private_redis: PrivateRedis) -> None:
    seen = asyncio.run(_dropped(private_redis.url, redis.Redis.from_url(private_redis.url)))
    assert seen.startswith("1 ")


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[RedisSentinel]:
    require(missing_redis())
    with TestRun() as run, RedisSentinel(tmp_path / "sentinel", run) as group:
        yield group


def sentinel_app(group: RedisSentinel) -> Celery:
    app = Celery("t", set_as_current=False)
    app.conf.update(
        result_backend=group.url,
        result_backend_transport_options={"master_name": group.master_name},
        result_serializer="json",
    )
    return app


async def _follow_a_switch(group: RedisSentinel) -> dict[str, object]:
    app = sentinel_app(group)
    listener = ResultListener.for_app(app, "gwx-")
    listener.start()
    seen: dict[str, object] = {}
    try:
        assert await listener.wait_available(10)
        old = group.master()
        assert listener.address is not None and listener.address.port == old.port
        waiter = listener.expect("gwx-1", asyncio.get_running_loop().time() + 60)
        # Stored without a PUBLISH (as if the message was lost in the switch): only a catch-up MGET finds it.
        meta = {"status": "SUCCESS", "result": 42, "traceback": None, "children": [], "task_id": "gwx-1"}
        await listener._redis.set("celery-task-meta-gwx-1", app.backend.encode(meta))
        await asyncio.sleep(0.5)
        seen["before_switch"] = waiter.done()
        # A failover the old master lives through (demoted to a replica, its connections kept open).
        sentinel = redis.Redis("127.0.0.1", group.sentinels[0].port)
        await asyncio.to_thread(sentinel.execute_command, "SENTINEL", "FAILOVER", group.master_name)
        new = await asyncio.to_thread(group.wait_failover, old)
        seen["result"] = (await asyncio.wait_for(waiter, 20))["result"]
        async with asyncio.timeout(20):
            while listener.address is None or listener.address.port != new.port or not listener.available:
                await asyncio.sleep(0.05)
        seen["subscribed_at_new_master"] = True
        # Commands follow the switch too: a write goes to the new master, not to the demoted one.
        await listener.mark_pending("gwx-2", "checkgate.add", 1e10)
        seen["written_to_new"] = redis.Redis("127.0.0.1", new.port).exists("celery-task-meta-gwx-2") == 1
    finally:
        await listener.close()
    return seen


def test_the_result_stream_follows_a_sentinel_failover(sentinel_group: RedisSentinel) -> None:
    assert asyncio.run(_follow_a_switch(sentinel_group)) == {
        "before_switch": False,
        "result": 42,
        "subscribed_at_new_master": True,
        "written_to_new": True,
    }


class ScriptedRedis(asyncio.Protocol):
    """A peer that confirms the PSUBSCRIBE, then does what the test says: `garbage` (bytes that are not
    RESP) or nothing at all (a server that stopped answering, PINGs included)."""

    def __init__(self, then: bytes | None) -> None:
        self.then = then

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"PSUBSCRIBE" in data:
            self.transport.write(b"*3\r\n$10\r\npsubscribe\r\n$5\r\ncgx-*\r\n:1\r\n")  # type: ignore[attr-defined]
            if self.then is not None:
                self.transport.write(self.then)  # type: ignore[attr-defined]


async def _against_scripted(then: bytes | None) -> str:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ScriptedRedis(then), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        address = RedisAddress("127.0.0.1", port, None, None, None)
        sub = await PatternSubscription.open(address, "cgx-*", lambda c, d: None, health_interval=0.2)
        with pytest.raises(SubscriptionError) as ended:
            async with asyncio.timeout(5):
                await sub.closed
        return str(ended.value)
    finally:
        server.close()


def test_a_reply_that_is_not_resp_ends_the_subscription() -> None:
    assert asyncio.run(_against_scripted(b"%%% not redis\r\n")).startswith("not a Redis reply")


def test_a_silent_server_is_dropped_after_two_health_intervals() -> None:
    assert asyncio.run(_against_scripted(None)) == "no reply from Redis for 0.4 s"
