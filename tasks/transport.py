"""The AMQP client the workers consume with: py-amqp, or librabbitmq (the C client) through kombu.

`CHECKGATE_BROKER_TRANSPORT` picks it for every process that loads celeryconfig (workers, beat, Flower,
the `celery` CLI); the gateway publishes with its own client whatever it says (gateway/aiocelery):

- ``pyamqp``: kombu's py-amqp transport. AMQP heartbeats (`broker_heartbeat`: a silent worker host is
  dropped by the broker within 3T, README "Running on many machines") and TLS (``amqps://``).
- ``librabbitmq``: `Transport` below, registered with kombu as ``librabbitmq-celery://``. Faster per
  message (README "Worker transports" has the figures), but no TLS and no AMQP heartbeats under kombu.
- ``auto`` (the default): librabbitmq where it imports, the URLs are plain ``amqp://`` and every broker
  node is on this host (127.0.0.1, ::1, localhost); py-amqp otherwise. Why: with the broker on the
  worker's own host there is no silent host to detect (a worker that dies closes its socket; a host that
  dies takes the broker with it), while a remote broker must find a vanished worker host by its missing
  heartbeats, which librabbitmq does not send. Without heartbeats the broker notices such a host only by
  TCP keepalive on its own AMQP listener, which RabbitMQ does not set as shipped. Measured
  (tests/ha/test_detection_transports.py): a cut librabbitmq host was not dropped within 60 s by a
  stock node, and within 15.0 and 14.8 s by a node whose listener keeps alive after 5 s, every 5 s, 2
  probes (py-amqp with heartbeat 5 s: 14.3, 14.6 s). Remote hosts therefore stay on py-amqp unless an
  operator configures the broker so (README "Worker transports") and asks for ``librabbitmq``.

TLS: a ``amqps://`` URL (or `broker_use_ssl`) always stays on py-amqp, whatever the setting: librabbitmq
has no TLS (kombu's transport raises NotImplementedError at connect). Asked for explicitly, the fallback
is logged (a warning in every process that loads celeryconfig).

Why a subclass under its own scheme and not kombu's ``librabbitmq://``: kombu 5.x (5.7 here) calls
``Channel.basic_consume(..., on_cancel=...)`` for every consumer (kombu.entity.Queue.consume, since
kombu PR #1953 exposed py-amqp's cancel callback), and librabbitmq's `Channel.basic_consume` takes no such
keyword, so the stock transport fails with a TypeError at the first consumer. The fix belongs upstream
(kombu's librabbitmq Channel should accept and keep the callback), but librabbitmq is a deprecated
transport there and its fork is a ``.dev`` release; a kombu release with the fix would still need every
deployment to upgrade kombu in step. So the narrowest change is ours, under a name of its own: kombu's
``amqp``/``librabbitmq`` meanings are untouched, and a worker reports ``librabbitmq-celery`` in `celery
inspect stats` (``broker.transport``) and in its announcement for /health and the console
(tasks/presence.py).

Liveness of the broker, from the worker's side: with no heartbeats, an idle worker whose broker node
vanished would wait on a silent socket for ever. `Transport.establish_connection` turns on TCP
keepalive on the librabbitmq socket (TCP_KEEPIDLE = TCP_KEEPINTVL = T, TCP_KEEPCNT = 2, so ≤ 3T as with
heartbeats, T = `broker_heartbeat`, 5 s) and TCP_USER_TIMEOUT = 3T for written bytes (an ack) that stay
unacknowledged. That is the worker noticing the broker; it does not make the broker notice the worker.

Settling a delivery after a reconnect (a task that ran through a broker restart): kombu detaches the old
channels from their dead connection, and librabbitmq's ack then raised AttributeError, which Celery takes
for an unrecoverable error (the worker died; seen in tests/faults/test_broker_restart.py, 2 runs of 3).
`Channel.basic_ack`/`basic_reject` raise librabbitmq's ConnectionError instead, which kombu logs as
"Couldn't ack", as with py-amqp; the broker has requeued the delivery already.

Broker-initiated cancels (a queue deleted under its consumers) do not reach kombu through librabbitmq:
tried here, deleting a consumed queue raised nothing and called nothing, the consumer just stopped
receiving, where py-amqp would call `on_cancel`. checkgate's queues are durable and never deleted while
workers run.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from kombu.transport import TRANSPORT_ALIASES

log = logging.getLogger("checkgate.transport")

VARIABLE = "CHECKGATE_BROKER_TRANSPORT"
CHOICES = ("auto", "pyamqp", "librabbitmq")
# The kombu scheme of `Transport` below; what `celery inspect stats` reports as `broker.transport`.
SCHEME = "librabbitmq-celery"
TRANSPORT_ALIASES.setdefault(SCHEME, "tasks.transport:Transport")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# How often a librabbitmq connection in an event loop drains what it already buffered (Transport below).
BUFFER_CHECK_S = 0.2
# Schemes whose URL `with_transport` may re-point at another client: plain AMQP (never TLS ones).
_PLAIN_AMQP = frozenset({"amqp", "pyamqp", "librabbitmq", SCHEME})
_TLS_AMQP = frozenset({"amqps", "pyamqps"})


def librabbitmq_available() -> bool:
    """Whether librabbitmq (the [librabbitmq] extra) imports in this process."""
    try:
        import librabbitmq  # noqa: F401
    except ImportError:
        return False
    return True


def _urls(broker_url: str | Sequence[str]) -> list[str]:
    return [u.strip() for u in (broker_url.split(";") if isinstance(broker_url, str) else broker_url) if u.strip()]


def _query_ssl(url: str) -> bool:
    value = dict(parse_qsl(urlsplit(url).query)).get("ssl", "")
    return value.lower() not in ("", "0", "false", "no", "off")


def choose(
    setting: str,
    broker_url: str | Sequence[str],
    *,
    use_ssl: bool = False,
    available: Callable[[], bool] = librabbitmq_available,
) -> str:
    """The kombu transport the workers use: ``"pyamqp"`` or `SCHEME`.

    `setting` is `CHECKGATE_BROKER_TRANSPORT` (one of `CHOICES`; ValueError naming the variable
    otherwise), `broker_url` Celery's (a ``;`` failover list or a list), `use_ssl` whether
    `broker_use_ssl` is set. Rules: the module docstring. An explicit ``librabbitmq`` that cannot be had
    (not importable, TLS) falls back to py-amqp with a warning rather than a worker that cannot start.
    """
    value = (setting or "auto").strip().lower()
    if value not in CHOICES:
        raise ValueError(f"{VARIABLE}={setting!r}: expected one of {', '.join(CHOICES)}")
    if value == "pyamqp":
        return "pyamqp"
    urls = _urls(broker_url)
    schemes = {u.partition("://")[0].lower() for u in urls}
    # kombu also reads TLS from the URL's query (amqp://h/?ssl=1)
    tls = use_ssl or bool(schemes & _TLS_AMQP) or any(_query_ssl(u) for u in urls)
    plain = bool(urls) and schemes <= _PLAIN_AMQP
    reason = ""
    if tls:
        reason = "the broker URL uses TLS (amqps://), which librabbitmq lacks"
    elif not plain:
        reason = f"the broker URL is not AMQP ({', '.join(sorted(schemes))})"
    elif not available():
        reason = "librabbitmq is not installed (the [librabbitmq] extra)"
    if reason:
        if value == "librabbitmq":
            log.warning("%s=librabbitmq: using py-amqp, as %s", VARIABLE, reason)
        return "pyamqp"
    if value == "librabbitmq":
        return SCHEME
    local = all((urlsplit(u).hostname or "localhost").lower() in LOOPBACK_HOSTS for u in urls)
    return SCHEME if local else "pyamqp"


def with_transport(broker_url: str, transport: str) -> str:
    """`broker_url` with every plain-AMQP URL of its failover list on `transport`'s scheme.

    The scheme itself is rewritten, not Celery's `broker_transport`: kombu applies a `transport`
    argument to the first URL only and takes each failover URL's own scheme when it switches nodes
    (kombu.connection.Connection.switch), and it turns a bare ``amqp://`` into its stock librabbitmq
    transport whenever librabbitmq imports. TLS URLs and other schemes are left as they are.
    """
    out = []
    for url in _urls(broker_url):
        scheme, sep, rest = url.partition("://")
        out.append(f"{transport}://{rest}" if sep and scheme.lower() in _PLAIN_AMQP else url)
    return ";".join(out)


def keepalive_options(heartbeat: float) -> dict[int, int]:
    """TCP options (IPPROTO_TCP level → value) that bound a silent broker by ~3 × `heartbeat` seconds."""
    t = max(1, round(heartbeat or 5))
    options = {socket.TCP_KEEPIDLE: t, socket.TCP_KEEPINTVL: t, socket.TCP_KEEPCNT: 2}
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        options[socket.TCP_USER_TIMEOUT] = 3 * t * 1000
    return options


def set_keepalive(fileno: int, options: Mapping[int, int]) -> None:
    """SO_KEEPALIVE and `options` on the socket `fileno` (a duplicate descriptor, closed at once)."""
    sock = socket.socket(fileno=os.dup(fileno))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in options.items():
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
    finally:
        sock.close()


try:
    from kombu.transport import librabbitmq as _stock
except ImportError:  # librabbitmq not installed: `choose` never picks SCHEME, nothing resolves it
    _stock = None  # type: ignore[assignment]

if _stock is not None:

    class Message(_stock.Message):
        """kombu's librabbitmq message with its body as bytes: librabbitmq hands a memoryview, which Celery's
        prefork pool cannot pickle to its child ("cannot pickle memoryview objects": the worker dies at its
        first task). One copy of the body; task messages are a few hundred bytes."""

        def __init__(self, channel: Any, props: Any, info: Any, body: Any) -> None:
            super().__init__(channel, props, info, bytes(body) if isinstance(body, memoryview) else body)

    class Channel(_stock.Channel):
        """kombu's librabbitmq channel, taking kombu 5.x's `on_cancel` keyword (see the module docstring)."""

        Message = Message

        def basic_consume(self, *args: Any, on_cancel: Callable[[str], Any] | None = None, **kwargs: Any) -> str:
            """librabbitmq's `basic_consume`; `on_cancel` is kept per consumer tag but never called, as
            librabbitmq does not receive the broker's cancel notifications."""
            tag = super().basic_consume(*args, **kwargs)
            if on_cancel is not None:
                self.__dict__.setdefault("cancel_callbacks", {})[tag] = on_cancel
            return tag

        def basic_ack(self, delivery_tag: int, multiple: bool = False) -> Any:
            """librabbitmq's ack; a ConnectionError (one of the transport's connection errors, which kombu's
            `ack_log_error` logs) when the channel's connection is gone, where librabbitmq raises
            AttributeError on its None: a task that ends after a reconnect must not kill the worker."""
            self._require_connection("ack", delivery_tag)
            return super().basic_ack(delivery_tag, multiple)

        def basic_reject(self, delivery_tag: int, requeue: bool = True) -> Any:
            """librabbitmq's reject, with `basic_ack`'s error when the connection is gone."""
            self._require_connection("reject", delivery_tag)
            return super().basic_reject(delivery_tag, requeue)

        def _require_connection(self, what: str, delivery_tag: int) -> None:
            if self.connection is None:
                # The broker requeued the delivery when the connection closed (acks_late: it runs again).
                raise _stock.ConnectionError(f"cannot {what} delivery {delivery_tag}: its connection is closed")

        def basic_cancel(self, consumer_tag: str, **kwargs: Any) -> Any:
            self.__dict__.get("cancel_callbacks", {}).pop(consumer_tag, None)
            return super().basic_cancel(consumer_tag, **kwargs)

    class Connection(_stock.Connection):
        Channel = Channel
        Message = Message

    class Transport(_stock.Transport):
        """kombu's librabbitmq transport with `Channel` above and TCP keepalive on its socket."""

        Connection = Connection
        driver_name = "librabbitmq"

        def register_with_event_loop(self, connection: Any, loop: Any) -> None:
            """kombu's reader on the socket, plus a drain of what librabbitmq already buffered every
            `BUFFER_CHECK_S`: frames that arrive while a synchronous call (basic.consume, basic.qos) waits for
            its reply are read from the socket into rabbitmq-c's buffer then, and the socket is not readable
            again until the broker sends more, which it does not while those deliveries stay unacknowledged.
            Seen in `make bench`'s drain (2 deliveries held, 1950 waiting, nothing run for seconds) on the first
            drain after the workers started, in 3 runs of 3 before this; Celery cancels the timer with the
            connection's other entries when it reconnects."""
            super().register_with_event_loop(connection, loop)
            loop.call_repeatedly(BUFFER_CHECK_S, self._drain_buffered, connection)

        @staticmethod
        def _drain_buffered(connection: Any) -> None:
            if not connection.connected:
                return
            try:
                for _ in range(1000):  # bounded: a busy socket is the reader's to drain
                    connection.drain_events(timeout=0)
            except TimeoutError:  # librabbitmq's socket.timeout: nothing buffered or readable
                return

        def establish_connection(self) -> Any:
            """Connect (kombu's stock way), then set `keepalive_options` from the client's heartbeat
            (Celery's `broker_heartbeat`, which this transport cannot use as AMQP heartbeats)."""
            conn = super().establish_connection()
            try:
                set_keepalive(conn.fileno(), keepalive_options(self.client.heartbeat or 5))
            except (OSError, ValueError) as exc:  # a platform without these options: keepalive is a bound, not a need
                log.warning("librabbitmq connection: TCP keepalive not set (%s)", exc)
            return conn
