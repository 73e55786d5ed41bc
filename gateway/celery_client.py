"""The non-blocking Celery client: the role tornado-celery played, for Celery 5 on asyncio.

Messages are built by the Celery app's own code (`app.amqp.create_task_message` and kombu's
serializers), so real workers accept them; only the network I/O is ours:

* `BrokerPublisher` writes them to RabbitMQ (gateway/amqp.py), with publisher confirms, mandatory
  routing and automatic reconnection;
* `ResultListener` holds one Redis PSUBSCRIBE per gateway process on `celery-task-meta-<prefix>*`
  (every task id this process issues carries that prefix; gateway/resp_pubsub.py speaks it) and
  resolves the waiting request when its task reaches a ready state; after every reconnect it MGETs
  what it may have missed;
* `CeleryClient` ties them together for the HTTP handlers.

Nothing here blocks the event loop, and no thread stands in for async I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from celery import Celery, states
from kombu import Queue
from kombu.serialization import dumps
from pamqp import commands
from redis.exceptions import RedisError

from gateway.amqp import PUBLISH_CHANNEL, AmqpConnection, AmqpError, AmqpParams, Nacked, Returned
from gateway.ratelog import RateLimitedLog
from gateway.resp_pubsub import Endpoint, PatternSubscription, SubscriptionError
from tasks.registry import CheckType

log = logging.getLogger("checkgate.gateway")
ratelog = RateLimitedLog(log)

KEY_PREFIX = "celery-task-meta-"
READY_STATES = frozenset(states.READY_STATES)
_GLOB_SPECIAL = frozenset("*?[]\\")
# The final state `/result` reports for a task whose deadline (plus EXPIRY_GRACE_S) passed without a
# result: it expired in the queue (the broker drops it unrun, storing nothing), or a worker got it
# after its deadline (Celery stores REVOKED "expired"), or it ran out of its time without a word.
EXPIRED = "EXPIRED"
# Seconds after a task's deadline before its PENDING marker reads EXPIRED. A task that started before
# its deadline stops at it (every check bounds its own I/O by the deadline) and then needs only to
# store its result; this covers that last step, a worker's clock running a little behind the
# gateway's, and a Redis write retried once. A real result stored later still replaces the marker.
EXPIRY_GRACE_S = 5.0
# Errors that mean this process is out of file descriptors, not that a service is down.
_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE})


class BrokerUnavailable(ConnectionError):
    """RabbitMQ cannot take the task now (down, reconnecting, refusing, or too slow to confirm)."""


class BrokerRefused(BrokerUnavailable):
    """RabbitMQ is up but refused the task (nack): shed load, do not report an outage."""


class BackendUnavailable(ConnectionError):
    """Redis cannot deliver results now (down or reconnecting)."""


class OutOfDescriptors(BackendUnavailable):
    """This gateway process has no file descriptor left for a new connection (EMFILE/ENFILE): the
    gateway is overloaded, the service it wanted to reach may be fine."""


class Unroutable(RuntimeError):
    """The broker returned the message: no queue is bound for its routing key."""


class DeadlinePassed(TimeoutError):
    """The request's own deadline passed before the broker confirmed the publish. The message carries
    the same expiry, so if it reached the queue it is dropped there, or run only before that deadline."""


def backend_error(exc: BaseException) -> BackendUnavailable:
    """The BackendUnavailable for a Redis/OS error: `OutOfDescriptors` when that is the cause."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _OUT_OF_FDS:
            return OutOfDescriptors(f"out of file descriptors: {cause}")
        cause = cause.__cause__ or cause.__context__
    return BackendUnavailable(str(exc))


def undecodable_meta(task_id: str) -> dict[str, Any]:
    """What stands for a stored result this gateway cannot decode (the workers' result_serializer or
    the accepted content differs from the gateway's, or something else wrote the key): a FAILURE that
    says so — a 502, rather than a 500 on /result or a false 504 for a result that did arrive."""
    message = "the task's stored result cannot be decoded by the gateway (result_serializer or accept_content differ?)"
    return {
        "status": states.FAILURE,
        "result": {"exc_type": "UndecodableResult", "exc_message": [message], "exc_module": "gateway"},
        "traceback": None,
        "task_id": task_id,
    }


def pending_marker(task_id: str, name: str, deadline: float) -> dict[str, Any]:
    """The meta the gateway stores for an id it handed out before any result: PENDING, with the task's
    deadline (epoch seconds) so that `settled` can tell when waiting is over."""
    return {
        "status": states.PENDING,
        "result": None,
        "traceback": None,
        "task_id": task_id,
        "name": name,
        "deadline": deadline,
    }


def settled(meta: dict[str, Any], now: float) -> dict[str, Any]:
    """The meta as `/result` reports it: a PENDING marker whose deadline passed more than EXPIRY_GRACE_S
    ago, and Celery's REVOKED "expired" (a worker got the task after its deadline), read EXPIRED."""
    status = meta.get("status")
    if status == states.PENDING:
        deadline = meta.get("deadline")
        if isinstance(deadline, int | float) and now > deadline + EXPIRY_GRACE_S:
            return {**meta, "status": EXPIRED}
    elif status == states.REVOKED:
        exc = meta.get("result")
        if (
            isinstance(exc, dict)
            and exc.get("exc_type") == "TaskRevokedError"
            and exc.get("exc_message")
            in (
                ["expired"],
                ("expired",),
                "expired",
            )
        ):
            return {**meta, "status": EXPIRED}
    return meta


def glob_escape(text: str) -> str:
    """Escape Redis glob characters so `text` matches only itself in a PSUBSCRIBE pattern."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


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


def route_of(app: Celery, task_name: str) -> tuple[str, str]:
    """Exchange and routing key for a task, by the rule Celery's own `send_task_message` applies.

    A queue on a direct exchange is published to the default exchange with the queue's name as
    routing key; other exchange types are published to the queue's exchange with its routing key.
    """
    queue: Queue = app.amqp.router.route({}, task_name)["queue"]
    if queue.exchange is None or queue.exchange.type == "direct":
        return "", queue.name
    return queue.exchange.name, queue.routing_key or app.conf.task_default_routing_key


@dataclass(frozen=True)
class OutgoingMessage:
    """A serialized Celery task message, ready for the wire."""

    task_id: str
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    content_type: str
    content_encoding: str
    expiration: float


# What `create_task_message` fills in per message for the gateway's tasks; every other header is the
# same for all messages of one task type (see CeleryClient._template).
PER_MESSAGE_HEADERS = frozenset({"id", "root_id", "expires", "kwargsrepr"})
# The body's third part: no callbacks, errbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _kwargsrepr(kwargs: dict[str, Any]) -> str:
    return repr(kwargs)[:256]


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class BrokerPublisher:
    """Publishes task messages to RabbitMQ with confirms (gateway/amqp.py); reconnects by itself."""

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
                arguments=q.queue_arguments,
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
        cut_by_deadline = msg.expiration <= self._publish_timeout
        try:
            await connection.publish(
                msg.exchange,
                msg.routing_key,
                msg.body,
                content_type=msg.content_type,
                content_encoding=msg.content_encoding,
                headers=msg.headers,
                message_id=msg.task_id,
                expiration_ms=max(1, int(msg.expiration * 1000)),
                timeout=min(self._publish_timeout, msg.expiration),
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


class ResultListener:
    """One PSUBSCRIBE for all of this process's task ids; resolves waiters on ready states."""

    def __init__(
        self,
        url: str,
        id_prefix: str,
        decode: Callable[[bytes], dict[str, Any]],
        encode: Callable[[dict[str, Any]], bytes],
        ssl_options: dict[str, Any] | None = None,
        result_expires: float = 3600.0,
    ) -> None:
        self._result_expires = result_expires
        self._redis = aioredis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10, **(ssl_options or {})
        )
        self._endpoint = Endpoint.of(self._redis)
        self._pattern = KEY_PREFIX + glob_escape(id_prefix) + "*"
        self._decode = decode
        self._encode = encode
        self._waiters: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        # Loop time each waited-for result arrived: the end of the time a task is out of our hands.
        self._arrived: dict[str, float] = {}
        self._subscribed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """True while the subscription is confirmed, so no result can slip by unseen."""
        return self._subscribed.is_set()

    @property
    def pending(self) -> int:
        """Requests waiting for a result."""
        return len(self._waiters)

    def start(self) -> None:
        """Subscribe in the background, resubscribing after every disconnect."""
        self._runner = asyncio.create_task(self._listen_forever(), name="checkgate-result-listener")

    async def wait_available(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the subscription to be confirmed."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        return self.available

    def expect(self, task_id: str, deadline: float) -> asyncio.Future[dict[str, Any] | None]:
        """Register interest in `task_id` (before publishing it): the future gets its ready meta, or None
        at `deadline` (loop time)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        self._waiters[task_id] = future
        # A timer rather than asyncio.wait_for: the latter costs an extra future and an extra trip
        # through a busy event loop for every answer.
        self._deadlines[task_id] = loop.call_at(deadline, _settle, future, None)
        return future

    def forget(self, task_id: str) -> float | None:
        """Drop the waiter for `task_id` (answered, timed out or abandoned); return when (loop time) its
        result arrived, or None."""
        self._waiters.pop(task_id, None)
        if (timer := self._deadlines.pop(task_id, None)) is not None:
            timer.cancel()
        return self._arrived.pop(task_id, None)

    async def _listen_forever(self) -> None:
        delay = 0.1
        while True:
            subscription = None
            try:
                subscription = await PatternSubscription.open(self._endpoint, self._pattern, self._deliver)
                self._subscribed.set()
                delay = 0.1
                log.info("subscribed to results on %s", self._pattern)
                await self._catch_up()
                await subscription.closed
            except (TimeoutError, SubscriptionError, RedisError, OSError) as exc:
                log.warning("result subscription lost (%s); resubscribing in %.1fs", exc, delay)
            finally:
                self._subscribed.clear()
                if subscription is not None:
                    subscription.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _catch_up(self) -> None:
        """Fetch results stored while we were not subscribed (pub/sub is at-most-once)."""
        ids = list(self._waiters)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            values = await self._redis.mget([KEY_PREFIX + task_id for task_id in chunk])
            for task_id, value in zip(chunk, values, strict=True):
                if value is not None:
                    self._resolve(task_id, value)

    def _deliver(self, channel: bytes, data: bytes) -> None:
        self._resolve(channel[len(KEY_PREFIX) :].decode(), data)

    def _resolve(self, task_id: str, payload: bytes) -> None:
        future = self._waiters.get(task_id)
        if future is None or future.done():
            return
        meta = self._decode_or_failure(task_id, payload)
        if meta.get("status") in READY_STATES:
            self._arrived[task_id] = future.get_loop().time()
            future.set_result(meta)

    def _decode_or_failure(self, task_id: str, payload: bytes) -> dict[str, Any]:
        try:
            return self._decode(payload)
        except Exception:
            ratelog.log(logging.ERROR, "undecodable", "undecodable result for %s", task_id, exc_info=True)
            return undecodable_meta(task_id)

    async def fetch(self, task_id: str) -> dict[str, Any] | None:
        """The stored meta of `task_id` (`undecodable_meta` if it cannot be decoded), or None when Redis
        has no such key."""
        try:
            value = await self._redis.get(KEY_PREFIX + task_id)
        except (RedisError, OSError) as exc:
            raise backend_error(exc) from exc
        return None if value is None else self._decode_or_failure(task_id, value)

    async def latest_runs(self, pointer_prefix: str, limit: int = 1000) -> dict[str, dict[str, Any]]:
        """Name → stored meta of the latest finished run of each scheduled check (see tasks/schedule.py:
        the worker keeps `<pointer_prefix><name>` → task id)."""
        try:
            pointers = []
            async for key in self._redis.scan_iter(match=glob_escape(pointer_prefix) + "*", count=500):
                pointers.append(key)
                if len(pointers) >= limit:
                    break
            if not pointers:
                return {}
            ids = await self._redis.mget(pointers)
            found = [(k.decode()[len(pointer_prefix) :], i.decode()) for k, i in zip(pointers, ids, strict=True) if i]
            metas = await self._redis.mget([KEY_PREFIX + task_id for _, task_id in found]) if found else []
        except (RedisError, OSError) as exc:
            raise backend_error(exc) from exc
        runs = {}
        for (name, task_id), meta in zip(found, metas, strict=True):
            if meta is not None:
                runs[name] = {**self._decode_or_failure(task_id, meta), "task_id": task_id}
        return runs

    async def mark_pending(self, task_id: str, name: str, deadline: float) -> None:
        """Store a PENDING marker (see `pending_marker`) unless a result is there, so `/result/<id>` knows
        the id meanwhile and reads EXPIRED once `deadline` (epoch seconds) is long past.

        Workers overwrite it with the real result (a stored PENDING never blocks a write). It is kept
        as long as a result would be (`result_expires`) after the deadline.
        """
        meta = pending_marker(task_id, name, deadline)
        ttl = deadline - time.time() + EXPIRY_GRACE_S + self._result_expires
        try:
            await self._redis.set(KEY_PREFIX + task_id, self._encode(meta), ex=max(1, int(ttl)), nx=True)
        except (RedisError, OSError) as exc:
            raise backend_error(exc) from exc

    async def ping(self) -> bool:
        """Whether Redis answers a PING."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        """Stop listening, fail nobody (waiters time out on their own deadline), close the pool."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self._redis.aclose()


class CeleryClient:
    """Publish Celery tasks for check types and await their results, all on the event loop."""

    def __init__(self, app: Celery, *, publish_timeout: float = 5.0, id_prefix: str | None = None) -> None:
        self.app = app
        conf = app.conf
        self.id_prefix = id_prefix or f"gw{secrets.token_hex(5)}-"
        self._origin = f"checkgate-gateway@{socket.gethostname()}/{os.getpid()}"
        self._serializer = conf.task_serializer
        self._routes: dict[str, tuple[str, str]] = {}
        self._templates: dict[tuple[str, bool], dict[str, Any] | None] = {}
        broker_ssl = conf.broker_use_ssl if isinstance(conf.broker_use_ssl, dict) else {}
        ssl_context = None
        if amqp_url(conf.broker_url).startswith("amqps://"):
            # Built once at start-up (reads the CA file) so no TLS set-up happens on the loop later.
            ssl_context = ssl.create_default_context(cafile=broker_ssl.get("ca_certs"))
        self.broker = BrokerPublisher(amqp_url(conf.broker_url), list(conf.task_queues), publish_timeout, ssl_context)
        backend_ssl = conf.redis_backend_use_ssl if conf.result_backend.startswith("rediss://") else None
        self.results = ResultListener(
            conf.result_backend,
            self.id_prefix,
            app.backend.decode,
            app.backend.encode,
            backend_ssl,
            result_expires=float(conf.result_expires or 86400),
        )

    async def start(self, wait: float = 0.0) -> None:
        """Start connecting to broker and backend; wait up to `wait` seconds for both."""
        self.broker.start()
        self.results.start()
        if wait:
            await asyncio.gather(self.broker.wait_available(wait), self.results.wait_available(wait))

    async def close(self) -> None:
        """Close both connections."""
        await asyncio.gather(self.broker.close(), self.results.close())

    def new_id(self) -> str:
        """A fresh task id carrying this process's prefix (so our PSUBSCRIBE sees its result)."""
        return self.id_prefix + secrets.token_hex(10)

    def build_message(
        self, task_id: str, check: CheckType, kwargs: dict[str, Any], *, timeout: float, ignore_result: bool = False
    ) -> OutgoingMessage:
        """A protocol-2 message for `check`, expiring `timeout` seconds from now (broker TTL and header)."""
        key = (check.task_name, ignore_result)
        if key not in self._templates:
            self._templates[key] = self._template(*key)
        expires = datetime.now(UTC) + timedelta(seconds=timeout)
        template = self._templates[key]
        if template is None:
            headers, body = self.celery_message(task_id, check.task_name, kwargs, expires, ignore_result)
        else:
            headers = template.copy()
            headers["id"] = headers["root_id"] = task_id
            headers["expires"] = expires.isoformat()
            headers["kwargsrepr"] = _kwargsrepr(kwargs)
            body = ((), kwargs, _EMBED)
        content_type, content_encoding, data = dumps(body, serializer=self._serializer)
        if isinstance(data, str):
            data = data.encode(content_encoding)
        route = self._routes.get(check.task_name)
        if route is None:
            route = self._routes[check.task_name] = route_of(self.app, check.task_name)
        exchange, routing_key = route
        return OutgoingMessage(
            task_id=task_id,
            exchange=exchange,
            routing_key=routing_key,
            body=data,
            headers=headers,
            content_type=content_type,
            content_encoding=content_encoding,
            expiration=timeout,
        )

    def celery_message(
        self, task_id: str, task_name: str, kwargs: dict[str, Any], expires: datetime, ignore_result: bool
    ) -> tuple[dict[str, Any], Any]:
        """Headers and body of the message Celery's own code makes for this task."""
        message = self.app.amqp.create_task_message(
            task_id,
            task_name,
            (),
            kwargs,
            expires=expires,
            # None defers to the task's own setting; only fire mode overrides it.
            ignore_result=True if ignore_result else None,
            origin=self._origin,
            argsrepr="()",
            kwargsrepr=_kwargsrepr(kwargs),
        )
        # Headers at their defaults are left out: workers read them with .get(), and every header costs
        # AMQP field-table encoding on each publish (the biggest CPU item of a publish).
        headers = {k: v for k, v in message.headers.items() if v is not None and v != {} and v != [None, None]}
        return headers, message.body

    def _template(self, task_name: str, ignore_result: bool) -> dict[str, Any] | None:
        """The headers every message of this task shares, or None if Celery's messages differ from the
        shape the fast path fills in (then every message is made by Celery's code).

        `create_task_message` costs tens of microseconds a call; here it runs twice per task type, with
        different ids, arguments and deadlines, and whatever differs is what each message fills in.
        """
        now = datetime.now(UTC)
        a_headers, a_body = self.celery_message("probe-a", task_name, {"a": 1}, now, ignore_result)
        b_headers, b_body = self.celery_message("probe-b", task_name, {"b": 2}, now + timedelta(1), ignore_result)
        varying = {k for k in a_headers.keys() | b_headers.keys() if a_headers.get(k) != b_headers.get(k)}
        same_shape = all(
            tuple(body[0]) == () and body[1] == kwargs and body[2] == _EMBED
            for body, kwargs in ((a_body, {"a": 1}), (b_body, {"b": 2}))
        )
        if varying != PER_MESSAGE_HEADERS or not same_shape:
            log.warning("Celery's task message for %s has an unexpected shape; building each one in full", task_name)
            return None
        return a_headers

    async def publish(self, message: OutgoingMessage) -> None:
        """Publish a built message (see `BrokerPublisher.publish` for the errors)."""
        await self.broker.publish(message)

    async def call(
        self, check: CheckType, kwargs: dict[str, Any], *, timeout: float, task_id: str | None = None
    ) -> tuple[str, dict | None, float]:
        """Run a check and wait up to `timeout` s: (task id, ready meta or None past the deadline, seconds
        from the publish to the result's arrival — the time the task was out of the gateway's hands).

        A deadline that passes while the broker has not yet confirmed the publish is a deadline like any
        other (None), not a broker fault."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        task_id = task_id or self.new_id()
        message = self.build_message(task_id, check, kwargs, timeout=timeout)
        future = self.results.expect(task_id, deadline)
        meta = None
        publishing = loop.time()
        try:
            await self.publish(message)
            meta = await future
        except DeadlinePassed:
            meta = future.result() if future.done() else None
        finally:
            arrived = self.results.forget(task_id)
        away = arrived - publishing if meta is not None and arrived is not None else 0.0
        return task_id, meta, away
