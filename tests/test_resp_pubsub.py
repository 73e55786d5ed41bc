"""The result stream's raw PSUBSCRIBE connection against a private Redis: delivery, AUTH, a Unix
socket, and a connection the server drops."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from gateway.aiocelery.resp import PatternSubscription, RedisAddress, SubscriptionError, command
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
