"""The broker side: task messages published to RabbitMQ with confirms, on a connection that comes back.

`BrokerPublisher` keeps one `amqp.AmqpConnection` open (reconnecting with a deadline on every attempt),
declares the queues exactly as the workers do (so tasks queue even before a worker starts), publishes
mandatory and persistent messages and waits for each confirm, and reads queue depth and consumers with
passive declares on a channel of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from kombu import Queue
from kombu.transport.base import to_rabbitmq_queue_arguments
from pamqp import commands

from gateway.aiocelery.amqp import PUBLISH_CHANNEL, AmqpConnection, AmqpError, AmqpParams, Nacked, Returned
from gateway.aiocelery.errors import BrokerRefused, BrokerUnavailable, DeadlinePassed, Unroutable
from gateway.aiocelery.messages import OutgoingMessage
from gateway.ratelog import RateLimitedLog

log = logging.getLogger("checkgate.gateway")
ratelog = RateLimitedLog(log)


def amqp_url(broker_url: str) -> str:
    """Turn a kombu broker URL (amqp://, pyamqp://, librabbitmq://, amqps://…) into amqp:// or amqps://."""
    scheme, sep, rest = broker_url.partition("://")
    if not sep:
        raise ValueError(f"broker URL has no scheme: {broker_url!r}")
    if scheme in ("amqp", "pyamqp", "librabbitmq"):
        return "amqp://" + rest
    if scheme in ("amqps", "pyamqps"):
        return "amqps://" + rest
    raise ValueError(f"the gateway speaks AMQP only; unsupported broker scheme {scheme!r}")


class BrokerPublisher:
    """Publishes task messages to RabbitMQ with confirms (`amqp.AmqpConnection`); reconnects by itself."""

    def __init__(
        self, url: str, queues: list[Queue], publish_timeout: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._params = AmqpParams.from_url(url, ssl_context)
        self._queues = queues
        self._publish_timeout = publish_timeout
        self._connection: AmqpConnection | None = None
        self._stats_channel: int | None = None
        self._connector: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    @property
    def available(self) -> bool:
        """True while a connection and its confirming channel are open."""
        return self._connection is not None and self._connection.is_open

    def _open_connection(self) -> AmqpConnection:
        """The connection, or `BrokerUnavailable` when there is none open."""
        connection = self._connection
        if connection is None or not connection.is_open:
            raise BrokerUnavailable("broker connection is down")
        return connection

    def start(self) -> None:
        """Connect in the background, and again whenever the connection or the channel is lost."""
        self._connector = asyncio.create_task(self._keep_connected(), name="checkgate-broker-connect")

    async def wait_available(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a connection."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.available

    async def _keep_connected(self) -> None:
        # Every attempt has a deadline: a connect to a RabbitMQ that is still starting up can hang.
        delay = 0.2
        while True:
            try:
                connection = await asyncio.wait_for(self._connect(), 15)
            except (TimeoutError, OSError) as exc:  # AmqpError is an OSError
                log.warning("broker not reachable (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._connection, self._stats_channel = connection, None
            self._connected.set()
            log.info("connected to broker")
            delay = 0.2
            try:
                with contextlib.suppress(AmqpError):
                    await connection.closed
            finally:
                self._connected.clear()
                self._connection = None
                await connection.close()
            log.warning("broker connection lost; reconnecting")

    async def _connect(self) -> AmqpConnection:
        connection = await AmqpConnection.open(self._params)
        try:
            await self._declare(connection)
        except BaseException:
            connection.abort()
            raise
        return connection

    async def _declare(self, connection: AmqpConnection) -> None:
        """Declare the queues exactly as the workers do, so tasks queue even before a worker starts."""
        channel = PUBLISH_CHANNEL
        for q in self._queues:
            declare = commands.Queue.Declare(
                queue=q.name,
                durable=q.durable,
                exclusive=q.exclusive,
                auto_delete=q.auto_delete,
                # kombu's own merge: x-max-priority, x-expires, x-message-ttl and x-max-length come
                # from the Queue's attributes, as the workers declare them.
                arguments=to_rabbitmq_queue_arguments(
                    q.queue_arguments or {},
                    expires=q.expires,
                    message_ttl=q.message_ttl,
                    max_length=q.max_length,
                    max_length_bytes=q.max_length_bytes,
                    max_priority=q.max_priority,
                ),
            )
            await connection.rpc(channel, declare, commands.Queue.DeclareOk)
            if q.exchange is not None and q.exchange.name:
                exchange = q.exchange
                await connection.rpc(
                    channel,
                    commands.Exchange.Declare(
                        exchange=exchange.name,
                        exchange_type=exchange.type,
                        durable=exchange.durable,
                        auto_delete=exchange.auto_delete,
                    ),
                    commands.Exchange.DeclareOk,
                )
                bind = commands.Queue.Bind(queue=q.name, exchange=exchange.name, routing_key=q.routing_key or "")
                await connection.rpc(channel, bind, commands.Queue.BindOk)

    async def publish(self, msg: OutgoingMessage) -> None:
        """Publish and wait for the broker's confirm; raise `BrokerUnavailable` or `Unroutable`."""
        connection = self._open_connection()
        # A burst of thousands of publishes queues in the socket; each may wait for its confirm as long
        # as its own deadline allows, up to the configured cap.
        # A message without expiry (None) waits for the configured cap only.
        expiration = self._publish_timeout if msg.expiration is None else msg.expiration
        cut_by_deadline = msg.expiration is not None and expiration <= self._publish_timeout
        try:
            await connection.publish(
                msg.exchange,
                msg.routing_key,
                msg.body,
                content_type=msg.content_type,
                content_encoding=msg.content_encoding,
                headers=msg.headers,
                message_id=msg.task_id,
                expiration_ms=None if msg.expiration is None else max(1, int(msg.expiration * 1000)),
                timeout=min(self._publish_timeout, expiration),
                priority=msg.priority,
            )
        except Returned as exc:
            raise Unroutable(f"no queue bound for routing key {msg.routing_key!r}") from exc
        except TimeoutError as exc:
            if cut_by_deadline:
                # The caller's own deadline, not the broker's health, ended the wait.
                raise DeadlinePassed(f"deadline of {msg.expiration:g}s passed before the broker confirmed") from exc
            ratelog.log(logging.WARNING, "publish timeout", "publish of %s not confirmed: %r", msg.task_id, exc)
            raise BrokerUnavailable(f"publish failed: {exc}") from exc
        except Nacked as exc:
            ratelog.log(logging.WARNING, "publish refused", "publish of %s refused: %r", msg.task_id, exc)
            raise BrokerRefused(f"publish refused: {exc}") from exc
        except AmqpError as exc:
            ratelog.log(logging.WARNING, "publish failed", "publish of %s failed: %r", msg.task_id, exc)
            raise BrokerUnavailable(f"publish failed: {exc}") from exc

    async def queue_stats(self) -> dict[str, dict[str, int]]:
        """Messages ready and consumers attached, per queue (a passive declare each).

        Runs on a channel of its own: a passive declare of a queue deleted behind our back closes its
        channel, which must never be the one tasks are published on.
        """
        connection = self._open_connection()
        stats = {}
        channel = self._stats_channel
        try:
            async with asyncio.timeout(self._publish_timeout):
                if channel is None or not connection.channel_open(channel):
                    channel = self._stats_channel = await connection.open_channel()
                for q in self._queues:
                    declare = commands.Queue.Declare(queue=q.name, passive=True)
                    ok = await connection.rpc(channel, declare, commands.Queue.DeclareOk)
                    assert isinstance(ok, commands.Queue.DeclareOk)
                    stats[q.name] = {"messages": ok.message_count, "consumers": ok.consumer_count}
        except (TimeoutError, AmqpError) as exc:
            if channel is not None:
                # Its replies are now out of step with its requests: the next call opens another.
                connection.close_channel(channel)
            self._stats_channel = None
            raise BrokerUnavailable(f"queue stats failed: {exc}") from exc
        return stats

    async def close(self) -> None:
        """Stop connecting and close the connection."""
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
