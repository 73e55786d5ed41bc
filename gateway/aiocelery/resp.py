"""One Redis PSUBSCRIBE on a raw asyncio protocol: the result stream of the gateway.

redis-py's `PubSub.get_message` costs a task wake-up and several layers of Python per message; at
hundreds of results a second that was a tenth of the gateway's CPU. Here hiredis parses the bytes in
`data_received` and every message goes straight to a callback, on the loop, with no task in between.
Everything else the gateway asks Redis (GET, SET, MGET, PING) still goes through redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import hiredis
import redis.asyncio as aioredis


class SubscriptionError(ConnectionError):
    """The subscription could not be made, or its connection was lost."""


@dataclass(frozen=True)
class RedisAddress:
    """Where and how to connect: what redis-py would use for the same URL and options."""

    host: str
    port: int
    username: str | None
    password: str | None
    ssl_context: ssl.SSLContext | None
    # A Unix socket (unix:// URLs) instead of host and port.
    path: str | None = None

    @classmethod
    def of(cls, client: aioredis.Redis) -> RedisAddress:
        """The address of a redis-py client (its pool's connection settings, TLS context included)."""
        pool = client.connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        # Built once here, at start-up: creating a TLS context reads the CA file.
        context = conn.ssl_context.get() if hasattr(conn, "ssl_context") else None
        path = getattr(conn, "path", None) or None
        host, port = getattr(conn, "host", "localhost"), int(getattr(conn, "port", 6379))
        return cls(host, port, conn.username, conn.password, context, path)


def command(*args: str | bytes) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class PatternSubscription(asyncio.Protocol):
    """A connection subscribed to one pattern; `on_message(channel, data)` gets every pmessage.

    Silence is checked every `health_interval` seconds with a PING (allowed while subscribed): a
    connection that answers nothing for two intervals is dropped, and `closed` completes.
    """

    def __init__(self, pattern: str, on_message: Callable[[bytes, bytes], None], health_interval: float) -> None:
        self._pattern = pattern.encode()
        self._on_message = on_message
        self._health_interval = health_interval
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self._confirmed: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._heard = True
        self._timer: asyncio.TimerHandle | None = None
        # Why this side ended the connection (a refusal, a reply that is not RESP, silence), for `closed`.
        self._failure: SubscriptionError | None = None

    @classmethod
    async def open(
        cls,
        address: RedisAddress,
        pattern: str,
        on_message: Callable[[bytes, bytes], None],
        *,
        timeout: float = 5.0,
        health_interval: float = 10.0,
    ) -> PatternSubscription:
        """Connect, authenticate, subscribe; return once Redis confirmed the subscription."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            if address.path is not None:
                _, protocol = await loop.create_unix_connection(
                    lambda: cls(pattern, on_message, health_interval), address.path
                )
            else:
                _, protocol = await loop.create_connection(
                    lambda: cls(pattern, on_message, health_interval),
                    address.host,
                    address.port,
                    ssl=address.ssl_context,
                    server_hostname=address.host if address.ssl_context else None,
                )
            try:
                protocol._subscribe(address)
                await protocol._confirmed
            except BaseException:
                protocol.close()
                raise
        return protocol

    def _subscribe(self, address: RedisAddress) -> None:
        assert self._transport is not None
        auth = b""
        if address.password is not None:
            credentials = (address.username, address.password) if address.username else (address.password,)
            auth = command("AUTH", *credentials)
        self._transport.write(auth + command(b"PSUBSCRIBE", self._pattern))
        self._timer = asyncio.get_running_loop().call_later(self._health_interval, self._check_health)

    def close(self) -> None:
        """Drop the connection."""
        if self._transport is not None:
            self._transport.abort()

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._heard = True
        self._reader.feed(data)
        try:
            self._read_replies()
        except hiredis.ProtocolError as exc:
            # Not RESP (a wrong port, a proxy's banner, corruption): nothing after it can be trusted.
            self._fail(SubscriptionError(f"not a Redis reply: {exc}"))

    def _read_replies(self) -> None:
        while (reply := self._reader.gets()) is not False:
            if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
                self._on_message(reply[2], reply[3])
            elif isinstance(reply, hiredis.ReplyError):
                self._fail(SubscriptionError(f"Redis refused the subscription: {reply}"))
            elif reply == [b"psubscribe", self._pattern, 1] and not self._confirmed.done():
                self._confirmed.set_result(None)
            # Anything else is AUTH's +OK or a PING's pong: hearing it is all that counts.

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        error = self._failure or SubscriptionError(
            f"subscription connection lost ({exc!r})" if exc else "connection closed by Redis"
        )
        for future in (self._confirmed, self.closed):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a caller may no longer be waiting on it

    # ------------------------------------------------------------------------------------------------

    def _fail(self, error: SubscriptionError) -> None:
        self._failure = self._failure or error
        if not self._confirmed.done():
            self._confirmed.set_exception(error)
        self.close()

    def _check_health(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if not self._heard:
            self._fail(SubscriptionError(f"no reply from Redis for {2 * self._health_interval:g} s"))
            return
        self._heard = False
        with contextlib.suppress(Exception):
            self._transport.write(command(b"PING"))
        self._timer = asyncio.get_running_loop().call_later(self._health_interval, self._check_health)
