"""Task messages built by the Celery app's own code, fast: protocol 2, as `send_task` would publish them.

`app.amqp.create_task_message` and kombu's serializer make every message, so real workers accept them
unchanged; only the network write is ours (`publisher`). `create_task_message` costs tens of
microseconds a call (37 µs measured, with serialization): `MessageFactory` runs it twice per task type
and option set, with different ids, arguments and deadlines, keeps what did not change as that type's
template, and fills in per message only what differs (id, root id, expiry, args and kwargs repr) — 13 µs
a message. A test asserts template messages equal Celery's own, header order included; a message of an
unexpected shape is built by Celery's code every time, and so is every message with an option the
template does not cover (countdown, eta, queue, priority, headers, time limits, shadow).

Two entry points: `build` (the gateway's hot path: keyword arguments and a deadline) and `build_task`
(the library's `send_task`: any of Celery's usual options). `python -m bench.message_cost` measures both.
"""

from __future__ import annotations

import logging
import numbers
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from celery.app.routes import MapRoute
from dateutil.parser import isoparse
from kombu import Exchange, Queue
from kombu.compression import compress
from kombu.serialization import dumps

log = logging.getLogger("checkgate.gateway")

# A task's expiry as `send_task` takes it: seconds from now, an absolute time (naive: UTC), or ISO 8601.
Expiry = float | datetime | str


@dataclass(frozen=True)
class Route:
    """Where a task's messages go: AMQP exchange and routing key, and a priority the route sets."""

    exchange: str
    routing_key: str
    priority: int | None = None


def route_of(app: Celery, task_name: str, options: dict[str, Any] | None = None) -> Route:
    """Exchange and routing key for a task, by the rules Celery's own `send_task` applies.

    `options` may name a `queue` (a name, or a kombu Queue); otherwise the app's `task_routes`, then its
    default queue, decide. A queue on a direct exchange is published to the default exchange with the
    queue's name as routing key; other exchange types are published to the queue's exchange with its
    routing key (`celery.app.amqp.AMQP.send_task_message`). Raises `celery.exceptions.QueueNotFound` for
    a queue the app does not know when it creates no missing queues.
    """
    amqp = app.amqp
    route = amqp.router.route(dict(options or {}), task_name)
    queue: Queue | str | None = route.get("queue")
    exchange: Exchange | str | None = route.get("exchange")
    routing_key: str | None = route.get("routing_key")
    exchange_type: str | None = route.get("exchange_type")
    qname = None
    if queue is None and exchange is None:
        queue = amqp.default_queue
    if isinstance(queue, str):
        qname, queue = queue, amqp.queues[queue]
    elif queue is not None:
        qname = queue.name
    if exchange_type is None:
        exchange_type = getattr(getattr(queue, "exchange", None), "type", None) or "direct"
    if (not exchange or not routing_key) and exchange_type == "direct":
        exchange, routing_key = "", qname
    elif exchange is None:
        assert queue is not None
        exchange = (queue.exchange.name if queue.exchange is not None else "") or amqp.default_exchange.name
        routing_key = routing_key or queue.routing_key or app.conf.task_default_routing_key
    if isinstance(exchange, Exchange):
        exchange = exchange.name
    return Route(str(exchange or ""), str(routing_key or ""), route.get("priority"))


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
    # Seconds the broker keeps it unconsumed (AMQP `expiration`); None: no TTL.
    expiration: float | None
    # AMQP priority (0-255; the queue's x-max-priority caps it); None: none sent.
    priority: int | None = None


# What `create_task_message` fills in per message on the template path; every other header is the same
# for all messages of one task type (and ignore_result, and whether it expires).
PER_MESSAGE_HEADERS = frozenset({"id", "root_id", "expires", "argsrepr", "kwargsrepr"})
# Headers of the task protocol itself: `headers=` may add others, never replace these (a caller who
# could set `task` would run another task than the one routed and allowed).
PROTOCOL_HEADERS = frozenset(
    {
        "lang",
        "task",
        "meth",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
        "compression",
    }
)
# The body's third part: no callbacks, errbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_NO_ARGS: tuple[Any, ...] = ()


def _repr(value: Any) -> str:
    # Celery's saferepr costs ~15 µs a call; argsrepr/kwargsrepr are for logs and Flower only.
    return repr(value)[:256]


def expiry(expires: Expiry | None, now: datetime) -> tuple[datetime | None, float | None]:
    """`expires` as (absolute time, seconds from `now` clamped at 0), or (None, None) for no expiry.

    Seconds are relative to `now`; a naive datetime or ISO string is taken as UTC (as workers read it).
    Raises ValueError for a value that is none of these (or NaN), or one no datetime can hold (1e300 s).
    """
    if expires is None:
        return None, None
    if isinstance(expires, str):
        try:
            expires = isoparse(expires)
        except ValueError:
            raise ValueError(f"expires: not an ISO 8601 time: {expires[:40]!r}") from None
    if isinstance(expires, datetime):
        at = expires if expires.tzinfo is not None else expires.replace(tzinfo=UTC)
        return at, max(0.0, (at - now).total_seconds())
    if isinstance(expires, bool) or not isinstance(expires, numbers.Real) or expires != expires:
        raise ValueError(f"expires: seconds, a datetime or an ISO 8601 string, got {expires!r}")
    try:
        seconds = float(expires)
        return now + timedelta(seconds=seconds), max(0.0, seconds)
    except OverflowError:
        raise ValueError(f"expires: {expires!r} seconds is beyond any time a datetime holds") from None


class MessageFactory:
    """Protocol-2 task messages for one Celery app, routed by the app's own rules (see module docstring).

    `origin` names the publisher in every message (Celery's `origin` header: shown by Flower and logs).
    """

    def __init__(self, app: Celery, origin: str | None = None) -> None:
        self.app = app
        self._origin = origin or f"aiocelery@{socket.gethostname()}/{os.getpid()}"
        self._serializer = app.conf.task_serializer
        self._compression = app.conf.task_compression
        self._routes: dict[str, Route] = {}
        # (task name, queue name) → route, for messages sent to a queue other than the task's own.
        self._queue_routes: dict[tuple[str, str], Route] = {}
        # Routes chosen by task name alone can be kept per name; a router function may look at the
        # arguments, so then every message is routed afresh.
        self._routes_by_name = all(isinstance(r, MapRoute) for r in app.amqp.router.routes)
        self._templates: dict[tuple[str, bool, bool], dict[str, Any] | None] = {}

    def build(
        self,
        task_id: str,
        task_name: str,
        kwargs: dict[str, Any],
        *,
        timeout: float,
        ignore_result: bool = False,
        queue: str | None = None,
    ) -> OutgoingMessage:
        """A message running `task_name(**kwargs)`, expiring `timeout` seconds from now (broker TTL and
        the `expires` header); `ignore_result` asks the worker to store no result (fire and forget);
        `queue` routes it to that queue of the app instead of the task's own (as `send_task(queue=…)`).

        The gateway's hot path: always the per-type template (when Celery's shape allows it)."""
        key = (task_name, ignore_result, True)
        if key not in self._templates:
            self._templates[key] = self._template(*key)
        expires = datetime.now(UTC) + timedelta(seconds=timeout)
        template = self._templates[key]
        if template is None:
            headers, body = self.celery_message(task_id, task_name, _NO_ARGS, kwargs, expires, ignore_result)
        else:
            headers = template.copy()
            headers["id"] = headers["root_id"] = task_id
            headers["expires"] = expires.isoformat()
            headers["argsrepr"] = "()"
            headers["kwargsrepr"] = _repr(kwargs)
            body = (_NO_ARGS, kwargs, _EMBED)
        if queue is None:
            route = self._routes.get(task_name) or self._route(task_name)
        else:
            route = self._queue_routes.get((task_name, queue)) or self._route_to(task_name, queue)
        return self._message(task_id, route, headers, body, timeout, None)

    def build_task(
        self,
        task_id: str,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        expires: Expiry | None = None,
        countdown: float | None = None,
        eta: datetime | str | None = None,
        queue: str | Queue | None = None,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
        ignore_result: bool = False,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        shadow: str | None = None,
    ) -> OutgoingMessage:
        """A message running `task_name(*args, **kwargs)` with Celery's `send_task` options.

        `expires`: seconds from now, a datetime (naive: UTC) or ISO 8601 string; the worker drops (REVOKED)
        a task it receives later, and the broker drops it unconsumed then (AMQP TTL). `countdown` (seconds)
        or `eta` (a datetime or ISO 8601 string): run no earlier. `queue`: a queue name or kombu Queue,
        instead of the app's `task_routes`. `priority`: 0-255 (the queue's x-max-priority caps it; a route's
        priority otherwise). `headers`: extra message headers (not the protocol's own). `ignore_result`:
        the worker stores no result. `time_limit`/`soft_time_limit`: seconds, overriding the task's.
        `shadow`: another name for logs.

        Raises TypeError for args that are not a list or tuple, kwargs that are not a mapping, or a header
        AMQP cannot carry; ValueError for a bad option (the message names it); kombu's EncodeError when
        the app's serializer cannot encode the arguments.
        """
        if isinstance(args, str | bytes) or not isinstance(args, list | tuple):
            raise TypeError(f"args must be a list or tuple, not {type(args).__name__}")
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs must be a mapping, not {type(kwargs).__name__}")
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise ValueError(f"priority: an integer 0-255, got {priority!r}")
        if priority is not None and not 0 <= priority <= 255:
            raise ValueError(f"priority: an integer 0-255, got {priority}")
        if headers:
            clash = sorted(PROTOCOL_HEADERS.intersection(headers))
            if clash:
                raise ValueError(f"headers: {clash[0]!r} is a header of the task protocol itself")
        now = datetime.now(UTC)
        expires_at, expiration = expiry(expires, now)
        simple = (
            countdown is None
            and eta is None
            and queue is None
            and priority is None
            and not headers
            and time_limit is None
            and soft_time_limit is None
            and shadow is None
        )
        template = None
        if simple:
            key = (task_name, ignore_result, expires_at is not None)
            if key not in self._templates:
                self._templates[key] = self._template(*key)
            template = self._templates[key]
        if template is not None:
            message_headers = template.copy()
            message_headers["id"] = message_headers["root_id"] = task_id
            if expires_at is not None:
                message_headers["expires"] = expires_at.isoformat()
            message_headers["argsrepr"] = _repr(args)
            message_headers["kwargsrepr"] = _repr(kwargs)
            body: Any = (args, kwargs, _EMBED)
            route = self._routes.get(task_name) or self._route(task_name)
        else:
            if isinstance(eta, str):
                try:
                    eta = isoparse(eta)
                except ValueError:
                    raise ValueError(f"eta: not an ISO 8601 time: {eta[:40]!r}") from None
            if countdown is not None and (
                isinstance(countdown, bool) or not isinstance(countdown, numbers.Real) or countdown != countdown
            ):
                raise ValueError(f"countdown: a number of seconds, got {countdown!r}")
            try:
                message_headers, body = self.celery_message(
                    task_id,
                    task_name,
                    args,
                    kwargs,
                    expires_at,
                    ignore_result,
                    countdown=countdown,
                    eta=eta,
                    time_limit=time_limit,
                    soft_time_limit=soft_time_limit,
                    shadow=shadow,
                )
            except OverflowError:
                # Celery adds a countdown to now: 1e300 s is no datetime.
                raise ValueError(f"countdown: {countdown!r} seconds is beyond any time a datetime holds") from None
            if headers:
                message_headers.update(headers)
            route = self._route(task_name, {"queue": queue} if queue is not None else None)
        return self._message(
            task_id, route, message_headers, body, expiration, route.priority if priority is None else priority
        )

    def _route_to(self, task_name: str, queue: str) -> Route:
        route = self._queue_routes[task_name, queue] = route_of(self.app, task_name, {"queue": queue})
        return route

    def _route(self, task_name: str, options: dict[str, Any] | None = None) -> Route:
        route = route_of(self.app, task_name, options)
        if options is None and self._routes_by_name:
            self._routes[task_name] = route
        return route

    def _message(
        self,
        task_id: str,
        route: Route,
        headers: dict[str, Any],
        body: Any,
        expiration: float | None,
        priority: int | None,
    ) -> OutgoingMessage:
        content_type, content_encoding, data = dumps(body, serializer=self._serializer)
        if isinstance(data, str):
            data = data.encode(content_encoding)
        if self._compression:
            # As kombu's Producer.publish: the body compressed, its type in the `compression` header.
            data, headers["compression"] = compress(data, self._compression)
        return OutgoingMessage(
            task_id=task_id,
            exchange=route.exchange,
            routing_key=route.routing_key,
            body=data,
            headers=headers,
            content_type=content_type,
            content_encoding=content_encoding,
            expiration=expiration,
            priority=priority,
        )

    def celery_message(
        self,
        task_id: str,
        task_name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        expires: datetime | None,
        ignore_result: bool,
        **options: Any,
    ) -> tuple[dict[str, Any], Any]:
        """Headers and body of the message Celery's own code makes for this task (`options`: more of
        `create_task_message`'s arguments: countdown, eta, time_limit, soft_time_limit, shadow)."""
        message = self.app.amqp.create_task_message(
            task_id,
            task_name,
            args,
            kwargs,
            expires=expires,
            # None defers to the task's own setting; only fire mode overrides it.
            ignore_result=True if ignore_result else None,
            origin=self._origin,
            argsrepr=_repr(args),
            kwargsrepr=_repr(kwargs),
            **options,
        )
        # Headers at their defaults are left out: workers read them with .get(), and every header costs
        # AMQP field-table encoding on each publish (the biggest CPU item of a publish).
        headers = {k: v for k, v in message.headers.items() if v is not None and v != {} and v != [None, None]}
        return headers, message.body

    def _template(self, task_name: str, ignore_result: bool, expires: bool) -> dict[str, Any] | None:
        """The headers every message of this task shares, or None if Celery's messages differ from the
        shape the fast path fills in (then every message is made by Celery's code)."""
        now = datetime.now(UTC)
        a_expires, b_expires = (now, now + timedelta(1)) if expires else (None, None)
        probes = (("probe-a", (1,), {"a": 1}, a_expires), ("probe-b", (2, 3), {"b": 2}, b_expires))
        made = [
            (self.celery_message(task_id, task_name, args, kwargs, at, ignore_result), args, kwargs)
            for task_id, args, kwargs, at in probes
        ]
        (a_headers, _), (b_headers, _) = made[0][0], made[1][0]
        varying = {k for k in a_headers.keys() | b_headers.keys() if a_headers.get(k) != b_headers.get(k)}
        expected = PER_MESSAGE_HEADERS if expires else PER_MESSAGE_HEADERS - {"expires"}
        same_shape = all(
            tuple(body[0]) == args and body[1] == kwargs and body[2] == _EMBED for (_, body), args, kwargs in made
        )
        if varying != expected or not same_shape:
            log.warning("Celery's task message for %s has an unexpected shape; building each one in full", task_name)
            return None
        return a_headers
