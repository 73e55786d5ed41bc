"""The broker side: task messages published to RabbitMQ with confirms, on a connection that comes back.

`BrokerPublisher` keeps one `amqp.AmqpConnection` open to one node of the broker, declares the queues
exactly as the workers do (so tasks queue even before a worker starts), publishes mandatory and
persistent messages and waits for each confirm, and reads queue depth and consumers with passive
declares on a channel of their own.

Where to connect comes from the Celery app's configuration, read by kombu's own code as the workers
read it (`broker_nodes`): `broker_url` may be kombu's `;`-separated failover list, each URL with its
query options (`heartbeat`, `ssl`, `connect_timeout`, `login_method`); `broker_use_ssl` in full (client
certificates included), `broker_heartbeat`, `broker_connection_timeout`, `broker_failover_strategy`,
`broker_login_method` and the `frame_max`/`channel_max`/`socket_settings` of `broker_transport_options`.
What the gateway cannot honour is refused at start-up with `ValueError`, never ignored.

Failover follows kombu's rule: a node that fails is left for the next one at once, and the back-off
(tenacity's exponential with jitter, 0.2 s doubling to 5 s) comes only after a whole round of nodes
failed. `shuffle` spreads gateway processes over the nodes, the first connection included.

A publish whose node dies before it is confirmed (see `BrokerPublisher.publish`): a nack, or a message
that never left, is certainly not queued and is tried again on a live node while its deadline allows; a
message that was sent may already be queued (a quorum queue commits before it confirms), so it is sent
again (same task id) only when the caller said it may be (`may_republish`: an idempotent check, where a
duplicate only rewrites the same result), else the caller is told the outcome is unknown
(`PublishUnconfirmed`) and waits for the result itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from amqp.transport import DEFAULT_SOCKET_SETTINGS
from celery import Celery
from kombu import Queue
from kombu.connection import failover_strategies
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.utils.url import parse_url, sanitize_url
from pamqp import commands
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_never,
    wait_exponential_jitter,
)

from gateway.aiocelery.amqp import (
    DEFAULT_FRAME_MAX,
    PUBLISH_CHANNEL,
    AmqpConnection,
    AmqpError,
    AmqpParams,
    Nacked,
    Returned,
    Unconfirmed,
    tls_context,
)
from gateway.aiocelery.errors import BrokerRefused, BrokerUnavailable, DeadlinePassed, PublishUnconfirmed, Unroutable
from gateway.aiocelery.messages import OutgoingMessage
from gateway.ratelog import RateLimitedLog

log = logging.getLogger("checkgate.gateway")
ratelog = RateLimitedLog(log)

# Schemes of kombu's AMQP transports → TLS (librabbitmq speaks the same protocol; its name only picks a
# client). "librabbitmq-celery" is checkgate's librabbitmq transport for Celery workers (tasks/transport.py):
# celeryconfig rewrites a plain amqp:// to it or to pyamqp://, so every process reading that config sees it.
_AMQP_SCHEMES = {
    "amqp": False,
    "pyamqp": False,
    "librabbitmq": False,
    "librabbitmq-celery": False,
    "amqps": True,
    "pyamqps": True,
}
# URL query options kombu's Connection takes (anything else is a TypeError there, too).
_URL_OPTIONS = frozenset({"heartbeat", "ssl", "connect_timeout", "login_method", "insist"})
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off", ""})
# broker_transport_options the gateway applies; the others are Celery's or kombu's own (retry policy,
# polling…) or py-amqp's that mean nothing here, and are named in a warning at start-up.
_APPLIED_TRANSPORT_OPTIONS = frozenset({"frame_max", "channel_max", "socket_settings", "confirm_publish"})
# A nack comes from a live node that will not take the message now: a quorum queue electing a new
# leader after a node died (seen 0.1-0.4 s after the kill) or a queue at its length limit. Retried with a
# short back-off for at most this long (and within the deadline); past it the caller gets a 503.
NACK_RETRY_WINDOW = 2.0
# Seconds a publish that finds no connection waits for one: the next node's, when it takes over at once
# (21 ms measured after a node was killed, fault rows); during a longer outage callers get their 503 after this.
FAILOVER_GRACE_S = 1.0
# RabbitMQ's largest per-message TTL (ms): a larger `expiration` closes the channel (406 PRECONDITION_FAILED).
MAX_TTL_MS = 2**32 - 1
# Reconnect back-off after a whole round of nodes failed (seconds).
RECONNECT_INITIAL, RECONNECT_MAX = 0.2, 5.0


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{what}: expected a boolean, got {value!r}")


def broker_nodes(app: Celery) -> list[AmqpParams]:
    """One `AmqpParams` per node of the app's broker URL (its failover list, in the order written).

    The list is split by kombu's `Connection` (as Celery builds it for a producer) and every URL parsed
    by kombu's `parse_url`; options come from the URL's query first, then from the app's configuration
    (see the module docstring). No I/O but reading the TLS files named in `broker_use_ssl`.

    Raises `ValueError` naming what the gateway cannot honour: a non-AMQP transport, an unknown URL
    option, a login method other than PLAIN, an unknown `broker_use_ssl` option.
    """
    conf = app.conf
    connection = app.connection_for_write()  # kombu splits `;` lists (and checks each scheme) here
    urls = connection.alt or [conf.broker_write_url or conf.broker_url]
    use_ssl = conf.broker_use_ssl
    options = dict(conf.broker_transport_options or {})
    ignored = sorted(set(options) - _APPLIED_TRANSPORT_OPTIONS)
    if ignored:
        log.warning("broker_transport_options the gateway does not use: %s", ", ".join(ignored))
    if options.get("confirm_publish") is False:
        raise ValueError("broker_transport_options: confirm_publish=False; the gateway always publishes with confirms")
    socket_settings = {**_tcp_options(DEFAULT_SOCKET_SETTINGS), **_tcp_options(options.get("socket_settings") or {})}
    frame_max = min(int(options.get("frame_max") or DEFAULT_FRAME_MAX), DEFAULT_FRAME_MAX)
    tls_settings: tuple[ssl.SSLContext, str | None] | None = None  # built once (it reads files), shared
    nodes = []
    for url in urls:
        parts = parse_url(url)
        scheme = parts.pop("transport")
        if scheme not in _AMQP_SCHEMES:
            raise ValueError(f"broker URL {sanitize_url(url)}: the gateway speaks AMQP only, not {scheme!r}")
        query = {k: v for k, v in parts.items() if k not in ("hostname", "port", "userid", "password", "virtual_host")}
        unknown = sorted(set(query) - _URL_OPTIONS)
        if unknown:
            raise ValueError(f"broker URL {sanitize_url(url)}: unsupported options {unknown} (kombu takes none)")
        url_ssl = query.get("ssl")
        if isinstance(url_ssl, dict):
            raise ValueError(f"broker URL {sanitize_url(url)}: ssl_* options go in broker_use_ssl for AMQP")
        # The URL's `ssl` decides where it is given, else broker_use_ssl; amqps:// is TLS whatever they say.
        tls = _AMQP_SCHEMES[scheme] or (_flag(url_ssl, "ssl") if url_ssl is not None else bool(use_ssl))
        login = query.get("login_method") or conf.broker_login_method or "PLAIN"
        if login != "PLAIN":
            raise ValueError(f"broker login method {login!r}: the gateway logs in with PLAIN only")
        if tls and tls_settings is None:
            tls_settings = tls_context(use_ssl if isinstance(use_ssl, Mapping) else True)
        context, server_hostname = tls_settings if tls and tls_settings is not None else (None, None)
        heartbeat = query.get("heartbeat", conf.broker_heartbeat)
        timeout = query.get("connect_timeout", conf.broker_connection_timeout)
        nodes.append(
            AmqpParams(
                host=parts["hostname"] or "localhost",
                port=int(parts["port"] or (5671 if tls else 5672)),
                username=parts["userid"] if parts["userid"] is not None else (conf.broker_user or "guest"),
                password=parts["password"] if parts["password"] is not None else (conf.broker_password or "guest"),
                vhost=parts["virtual_host"] or conf.broker_vhost or "/",
                ssl_context=context,
                server_hostname=server_hostname,
                heartbeat=float(heartbeat or 0),
                connect_timeout=float(timeout or 4.0),
                frame_max=frame_max,
                socket_settings=socket_settings,
            )
        )
    return nodes


def _tcp_options(settings: Mapping[Any, int]) -> dict[int, int]:
    """py-amqp's socket settings (names such as "TCP_USER_TIMEOUT", or option numbers) as numbers."""
    out = {}
    for name, value in settings.items():
        if isinstance(name, int):
            out[name] = int(value)
        elif name == "TCP_USER_TIMEOUT":
            out[getattr(socket, "TCP_USER_TIMEOUT", 18)] = int(value)
        elif hasattr(socket, name):
            out[getattr(socket, name)] = int(value)
    return out


FailoverStrategy = str | Callable[[Iterable[Any]], Iterator[Any]] | None


def node_order(nodes: list[AmqpParams], strategy: FailoverStrategy) -> Iterator[int]:
    """Endless node indexes in the order of kombu's failover strategy (`round-robin`, `shuffle`, or a
    callable taking the list), starting with the strategy's first pick."""
    if strategy is None or isinstance(strategy, str):
        name = strategy or "round-robin"
        if name not in failover_strategies:
            raise ValueError(f"broker_failover_strategy {name!r}: not one of {sorted(failover_strategies)}")
        strategy = failover_strategies[name]
    return iter(strategy(range(len(nodes))))


class BrokerPublisher:
    """Publishes task messages to RabbitMQ with confirms (`amqp.AmqpConnection`) on one node of the
    broker at a time; moves to another node and reconnects by itself.

    `nodes`: where the broker can be reached (`broker_nodes`), tried in `failover_strategy`'s order;
    `queues`: declared on every connection as the workers declare them; `publish_timeout`: seconds a
    publish may wait for its confirm (at most its own deadline).
    """

    def __init__(
        self,
        nodes: list[AmqpParams],
        queues: list[Queue],
        publish_timeout: float,
        failover_strategy: FailoverStrategy = None,
    ) -> None:
        if not nodes:
            raise ValueError("no broker node to connect to")
        self.nodes = nodes
        self._order = node_order(nodes, failover_strategy)
        self._queues = queues
        self._publish_timeout = publish_timeout
        self._connection: AmqpConnection | None = None
        self.node: AmqpParams | None = None
        self._stats_channel: int | None = None
        self._connector: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        # Completed with each new connection: publishes waiting to be sent again wait on it.
        self._next_connection: asyncio.Future[AmqpConnection] | None = None
        self._declared = False
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def for_app(cls, app: Celery, publish_timeout: float) -> BrokerPublisher:
        """The publisher of `app`'s tasks: its broker nodes (`broker_nodes`), failover strategy and
        task queues. Raises `ValueError` for a configuration the gateway cannot honour."""
        conf = app.conf
        queues = list(app.amqp.queues.values())  # task_queues, or the default queue when it is unset
        return cls(broker_nodes(app), queues, publish_timeout, conf.broker_failover_strategy)

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
        while True:
            retrying = AsyncRetrying(
                stop=stop_never,
                wait=wait_exponential_jitter(multiplier=RECONNECT_INITIAL, max=RECONNECT_MAX, jitter=RECONNECT_INITIAL),
                retry=retry_if_exception_type((TimeoutError, OSError)),  # AmqpError is an OSError
                before_sleep=lambda state: log.warning(
                    "no broker node reachable (%r); next round in %.1fs",
                    state.outcome.exception() if state.outcome else None,
                    state.upcoming_sleep,
                ),
            )
            connection, node = await retrying(self._connect_round)
            if self._declared:
                # The queues exist (durable, and quorum queues replicated): declared again in the
                # background, on a channel of its own, because a quorum queue whose leader was on the lost
                # node answers a declare only once it elected another (5 s measured), and publishes must
                # not wait for that.
                task = asyncio.create_task(self._declare_again(connection), name="checkgate-broker-declare")
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            self._declared = True
            self._connection, self.node, self._stats_channel = connection, node, None
            self._connected.set()
            if self._next_connection is not None and not self._next_connection.done():
                self._next_connection.set_result(connection)
            self._next_connection = None
            log.info("connected to broker node %s", node.address)
            try:
                with contextlib.suppress(AmqpError):
                    await connection.closed
            finally:
                self._connected.clear()
                self._connection = None
                await connection.close()
            log.warning("connection to broker node %s lost; moving to the next node", node.address)

    async def _connect_round(self) -> tuple[AmqpConnection, AmqpParams]:
        """Try each node once, in the strategy's order, moving on at once; raise the last error."""
        error: BaseException | None = None
        for _ in self.nodes:
            node = self.nodes[next(self._order)]
            try:
                return await self._connect(node), node
            except (TimeoutError, OSError) as exc:
                log.warning("broker node %s not reachable: %r", node.address, exc)
                error = exc
        assert error is not None
        raise error

    async def _connect(self, node: AmqpParams) -> AmqpConnection:
        # Every attempt has its own deadline (node.connect_timeout): a vanished host drops the SYN.
        async with asyncio.timeout(node.connect_timeout * 2):
            connection = await AmqpConnection.open(node)
            try:
                if not self._declared:
                    await self._declare(connection, PUBLISH_CHANNEL)
            except BaseException:
                connection.abort()
                raise
        return connection

    async def _declare_again(self, connection: AmqpConnection) -> None:
        channel = None
        try:
            channel = await connection.open_channel()
            await self._declare(connection, channel)
        except AmqpError as exc:
            log.warning("declaring the queues again failed: %r", exc)
        finally:
            if channel is not None and connection.is_open:
                connection.close_channel(channel)

    async def _declare(self, connection: AmqpConnection, channel: int) -> None:
        """Declare the queues exactly as the workers do, so tasks queue even before a worker starts."""
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

    async def _another_connection(self, old: AmqpConnection, timeout: float) -> AmqpConnection | None:
        """A connection other than `old` (the next node's), waiting up to `timeout` s; None if none came."""
        current = self._connection
        if current is not None and current is not old and current.is_open:
            return current
        loop = asyncio.get_running_loop()
        if self._next_connection is None or self._next_connection.done():
            self._next_connection = loop.create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(self._next_connection), timeout)
        except TimeoutError:
            return None

    def _send(self, connection: AmqpConnection, msg: OutgoingMessage, remaining: float) -> asyncio.Future[None]:
        return connection.publish(
            msg.exchange,
            msg.routing_key,
            msg.body,
            content_type=msg.content_type,
            content_encoding=msg.content_encoding,
            headers=msg.headers,
            message_id=msg.task_id,
            # The broker's TTL is what is left of the deadline, also when the message is sent again (none
            # for a task without expiry: the library's send_task may publish such).
            # RabbitMQ refuses a TTL above 2^32-1 ms by closing the channel (406): beyond it the broker keeps
            # the message that long, and the worker still drops it at its `expires` header.
            expiration_ms=None if msg.expiration is None else min(MAX_TTL_MS, max(1, int(remaining * 1000))),
            timeout=min(self._publish_timeout, remaining),
            priority=msg.priority,
        )

    async def publish(self, msg: OutgoingMessage, *, may_republish: bool = False) -> None:
        """Publish and wait for the broker's confirm, within the message's own deadline (`msg.expiration`
        seconds from now) and at most `publish_timeout` for a confirm.

        `may_republish`: the task may run twice (idempotent), so a message sent but not confirmed when
        its node died is sent again, with the same id, on the next node.

        With no connection open it waits up to `FAILOVER_GRACE_S` (within the deadline) for the next
        node's, so that callers do not see a node's loss when another takes over at once.

        Raises `BrokerUnavailable` (no connection, or no confirm within `publish_timeout`),
        `BrokerRefused` (nacked, and still nacked after retrying for `NACK_RETRY_WINDOW`), `Unroutable`
        (no queue for its routing key), `DeadlinePassed` (the deadline ended the wait) and
        `PublishUnconfirmed` (sent, its node lost before the confirm, not to be sent again: it may run).
        """
        loop = asyncio.get_running_loop()
        # A message without expiry (None) may wait for its confirm up to the configured cap only.
        waiting = self._publish_timeout if msg.expiration is None else msg.expiration
        deadline = loop.time() + waiting
        connection = self._connection
        if connection is None or not connection.is_open:
            connection = await self._another_connection(connection, min(FAILOVER_GRACE_S, waiting))
            if connection is None:
                raise BrokerUnavailable("broker connection is down")
        try:
            await self._send(connection, msg, deadline - loop.time())
            return
        except (Nacked, Unconfirmed) as exc:
            error: Exception = exc
        except Exception as exc:  # mapped below
            raise self._publish_error(msg, exc, deadline) from exc
        await self._publish_again(msg, connection, error, deadline, may_republish)

    async def _publish_again(
        self, msg: OutgoingMessage, connection: AmqpConnection, error: Exception, deadline: float, may_republish: bool
    ) -> None:
        """The slow path of `publish` after a nack or a lost connection: send again while that is safe and
        the deadline allows, with tenacity's back-off (50 ms doubling to 0.5 s, jittered)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent_any = False

        def retryable(exc: BaseException) -> bool:
            nonlocal sent_any
            if isinstance(exc, Unconfirmed):
                sent_any = sent_any or exc.sent
                return may_republish or not exc.sent
            return isinstance(exc, Nacked)

        def stop(state: RetryCallState) -> bool:
            at = loop.time() + (state.upcoming_sleep or 0.0)
            nacked = state.outcome is not None and isinstance(state.outcome.exception(), Nacked)
            return at >= deadline or (nacked and at - started > NACK_RETRY_WINDOW)

        attempts = AsyncRetrying(
            retry=retry_if_exception(retryable),
            wait=wait_exponential_jitter(multiplier=0.05, max=0.5, jitter=0.05),
            stop=stop,
            reraise=True,
        )
        try:
            async for attempt in attempts:
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        raise error
                    # After a nack the node is alive (its queue was electing a leader); after a loss, the next.
                    if not (isinstance(error, Nacked) and connection.is_open):
                        replacement = await self._another_connection(connection, deadline - loop.time())
                        if replacement is None:
                            break
                        connection = replacement
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    ratelog.log(logging.INFO, "publish again", "sending %s again after %r", msg.task_id, error)
                    try:
                        await self._send(connection, msg, remaining)
                    except Exception as exc:
                        error = exc
                        raise
                    return
        except (Nacked, Unconfirmed) as exc:
            error = exc
        except Exception as exc:  # mapped below
            raise self._publish_error(msg, exc, deadline) from exc
        if isinstance(error, Unconfirmed) and error.sent and not may_republish:
            ratelog.log(logging.WARNING, "publish unconfirmed", "publish of %s unconfirmed: %r", msg.task_id, error)
            raise PublishUnconfirmed(f"broker connection lost before the confirm of task {msg.task_id}") from error
        if isinstance(error, Nacked) and loop.time() < deadline:
            ratelog.log(logging.WARNING, "publish refused", "publish of %s refused: %r", msg.task_id, error)
            raise BrokerRefused(f"publish refused: {error}") from error
        if sent_any:
            # A copy may be queued: the caller's deadline, not an outage, ended it (504 with the id).
            raise DeadlinePassed(f"deadline passed before task {msg.task_id} was confirmed on a live node") from error
        ratelog.log(logging.WARNING, "publish failed", "publish of %s failed: %r", msg.task_id, error)
        raise BrokerUnavailable(f"publish failed: {error}") from error

    def _publish_error(self, msg: OutgoingMessage, exc: Exception, deadline: float) -> Exception:
        """What a failed publish raises to its caller."""
        if isinstance(exc, Returned):
            return Unroutable(f"no queue bound for routing key {msg.routing_key!r}")
        if isinstance(exc, TimeoutError):
            if msg.expiration is not None and deadline - asyncio.get_running_loop().time() <= 0.001:
                # The caller's own deadline, not the broker's health, ended the wait.
                return DeadlinePassed(f"deadline of {msg.expiration:g}s passed before the broker confirmed")
            ratelog.log(logging.WARNING, "publish timeout", "publish of %s not confirmed: %r", msg.task_id, exc)
            return BrokerUnavailable(f"publish failed: {exc}")
        if isinstance(exc, AmqpError):
            ratelog.log(logging.WARNING, "publish failed", "publish of %s failed: %r", msg.task_id, exc)
            return BrokerUnavailable(f"publish failed: {exc}")
        return exc

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
        for task in list(self._background):
            task.cancel()
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
