"""A lean AMQP 0-9-1 connection for the gateway's one job: publish task messages, with confirms.

aio-pika over aiormq cost ~30 % of the gateway's CPU per request (py-spy at sleep@60): per publish a
lock, a queue, a writer task and a drain future, a reader task for the confirm, and pamqp's generic
field-table encoder. Here the frames of a publish are encoded by `publish_frames` and all those of
one turn of the event loop go out in one write; the broker's ack resolves the caller's future
straight from `data_received`. Everything that is rare (handshake, declares, passive declares,
close, blocked, returns) goes through pamqp's codec, as in aiormq.

Used by `gateway.aiocelery.publisher.BrokerPublisher`, which reconnects; a connection here never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from pamqp import commands, frame, header, heartbeat
from pamqp.base import Frame
from pamqp.exceptions import PAMQPException

FRAME_END = b"\xce"
_FRAME_HEAD = struct.Struct(">BHI")
_ACK_HEAD = b"\x00\x3c\x00\x50"  # Basic.Ack: class 60, method 80
_ACK_BODY = struct.Struct(">QB")
_HEARTBEAT = frame.marshal(heartbeat.Heartbeat(), 0)
_PUBLISH_HEAD = struct.Struct(">HHH")  # class 60, method 40 (Basic.Publish), reserved ticket
_CONTENT_HEAD = struct.Struct(">HHQH")  # class 60, weight, body size, property flags
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT64 = struct.Struct(">q")
_DOUBLE = struct.Struct(">d")
DEFAULT_FRAME_MAX = 131072
PUBLISH_CHANNEL = 1


class AmqpError(ConnectionError):
    """The connection or a channel failed, or the broker refused something."""


class ChannelClosed(AmqpError):
    """The broker closed a channel (a passive declare of a missing queue does that, code 404)."""

    def __init__(self, channel: int, code: int, text: str) -> None:
        super().__init__(f"channel {channel} closed by the broker: {code} {text}")
        self.code = code


class Nacked(AmqpError):
    """The broker refused a published message (Basic.Nack): it is up, but will not take it (a full
    queue with `x-overflow: reject-publish`, an internal error)."""


class Unconfirmed(AmqpError):
    """The connection ended while a published message waited for its confirm.

    `sent`: its frames had been handed to the socket, so the broker may have queued it (a quorum queue
    may even have committed it); False: it never left this process, so it is certainly not queued.
    """

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(f"{reason} before the broker confirmed the message ({'sent' if sent else 'never sent'})")
        self.sent = sent


class Returned(Exception):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


@dataclass(frozen=True)
class AmqpParams:
    """Where and how to connect to one broker node (`publisher.broker_nodes` makes them from the Celery
    app's configuration, with kombu's URL parser)."""

    host: str
    port: int
    username: str
    password: str
    vhost: str
    # TLS when set; built once at start-up (it reads certificate files), shared by every node.
    ssl_context: ssl.SSLContext | None = None
    # The name sent as SNI and checked against the node's certificate (the node's host when None).
    server_hostname: str | None = None
    # Seconds: the heartbeat timeout asked for (0: none); the broker's offer caps it.
    heartbeat: float = 0
    # Seconds for TCP connect, TLS and the AMQP handshake together.
    connect_timeout: float = 4.0
    frame_max: int = DEFAULT_FRAME_MAX
    # TCP options set on the socket (level IPPROTO_TCP): py-amqp's defaults, as the workers use them.
    socket_settings: Mapping[int, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """host:port, for logs."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# The options py-amqp's SSLTransport takes in `broker_use_ssl` (its `_wrap_socket_sni` arguments), and
# those that only shape how its blocking socket is wrapped (meaningless on an asyncio transport).
TLS_OPTIONS = frozenset(
    {
        "keyfile",
        "certfile",
        "cert_reqs",
        "ca_certs",
        "server_hostname",
        "ciphers",
        "ssl_version",
        "tls_maximum_version",
        "tls_minimum_version",
    }
)
_TLS_SOCKET_OPTIONS = frozenset({"do_handshake_on_connect", "suppress_ragged_eofs"})


def tls_context(options: Mapping[str, Any] | bool) -> tuple[ssl.SSLContext, str | None]:
    """The TLS context py-amqp (the workers' client) would build from Celery's `broker_use_ssl`, and the
    `server_hostname` it names (None: each node's own host).

    `options`: True (defaults: the system's CAs, certificate required), or py-amqp's dict: `ca_certs`,
    `certfile` + `keyfile` (a client certificate, for a broker that asks for one), `cert_reqs`, `ciphers`,
    `ssl_version`, `tls_minimum_version`, `tls_maximum_version`, `server_hostname`; or its other form,
    `{"context": {<ssl.create_default_context arguments>, "check_hostname": …}, …}`.
    One difference, on purpose: where certificates are verified, the gateway also checks the node's name
    (py-amqp does only when `server_hostname` is given).

    Raises `ValueError` naming any option it does not know (py-amqp would fail on it too, at connect
    time) and `OSError`/`ssl.SSLError` for unreadable certificate files: at start-up, never silently.
    """
    if options is True or options == {}:
        options = {}
    elif not isinstance(options, Mapping):
        raise ValueError(f"broker_use_ssl must be True or a dict of py-amqp's options, not {options!r}")
    options = dict(options)
    if options.get("server_side"):
        raise ValueError("broker_use_ssl: server_side=True makes no sense for a client")
    options.pop("server_side", None)
    for key in _TLS_SOCKET_OPTIONS:
        options.pop(key, None)
    if "context" in options:
        context_options = dict(options.pop("context") or {})
        check_hostname = context_options.pop("check_hostname", None)
        unknown = set(options) - {"server_hostname"}
        if unknown:
            raise ValueError(f"broker_use_ssl with 'context': unsupported options {sorted(unknown)}")
        context = ssl.create_default_context(**context_options)
        context.check_hostname = bool(check_hostname)
        return context, options.get("server_hostname")
    unknown = set(options) - TLS_OPTIONS
    if unknown:
        raise ValueError(f"broker_use_ssl: unsupported options {sorted(unknown)} (known: {sorted(TLS_OPTIONS)})")
    context = ssl.SSLContext(options.get("ssl_version") or ssl.PROTOCOL_TLS_CLIENT)
    if options.get("tls_maximum_version") is not None:
        context.maximum_version = options["tls_maximum_version"]
    if options.get("tls_minimum_version") is not None:
        context.minimum_version = options["tls_minimum_version"]
    if options.get("certfile") is not None:
        context.load_cert_chain(options["certfile"], options.get("keyfile"))
    elif options.get("keyfile") is not None:
        raise ValueError("broker_use_ssl: keyfile without certfile")
    if options.get("ca_certs") is not None:
        context.load_verify_locations(options["ca_certs"])
    if options.get("ciphers") is not None:
        context.set_ciphers(options["ciphers"])
    cert_reqs = options.get("cert_reqs")
    verify = ssl.CERT_REQUIRED if cert_reqs is None else ssl.VerifyMode(cert_reqs)
    # check_hostname must be off before verify_mode may be CERT_NONE.
    context.check_hostname = False
    context.verify_mode = verify
    context.check_hostname = verify != ssl.CERT_NONE
    if options.get("ca_certs") is None and verify != ssl.CERT_NONE:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context, options.get("server_hostname")


# Headers RabbitMQ itself reads on publish: sender-selected distribution, extra routing keys
# (https://www.rabbitmq.com/docs/sender-selected).
ROUTING_HEADERS = ("CC", "BCC")


def _shortstr(text: str) -> bytes:
    data = text.encode()
    if len(data) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {text[:40]!r}…")
    return bytes((len(data),)) + data


def _longstr(data: bytes) -> bytes:
    return _UINT32.pack(len(data)) + data


def _field_value(value: Any) -> bytes:
    # The types py-amqp (the workers' client) writes and reads; bool before int, as bool is an int.
    if isinstance(value, str):
        return b"S" + _longstr(value.encode())
    if isinstance(value, bool):
        return b"t\x01" if value else b"t\x00"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise TypeError(f"cannot put an integer beyond 64 bits in an AMQP field table: {value:.3g}")
        return b"I" + _INT32.pack(value) if -(2**31) <= value < 2**31 else b"l" + _INT64.pack(value)
    if value is None:
        return b"V"
    if isinstance(value, float):
        # RabbitMQ closes the whole connection (541) on an infinite or NaN double.
        if not math.isfinite(value):
            raise TypeError(f"cannot put {value!r} in an AMQP field table (RabbitMQ takes finite numbers only)")
        return b"d" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return b"S" + _longstr(value)
    if isinstance(value, Mapping):
        return b"F" + field_table(value)
    if isinstance(value, list | tuple):
        return b"A" + _longstr(b"".join(_field_value(item) for item in value))
    raise TypeError(f"cannot put a {type(value).__name__} in an AMQP field table")


def field_table(table: Mapping[str, Any]) -> bytes:
    """An AMQP field table (the headers of a message)."""
    return _longstr(b"".join(_shortstr(key) + _field_value(value) for key, value in table.items()))


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    content_type: str,
    content_encoding: str,
    headers: Mapping[str, Any],
    message_id: str,
    expiration_ms: int | None,
    priority: int | None = None,
    frame_max: int = DEFAULT_FRAME_MAX,
) -> bytes:
    """Basic.Publish (mandatory) + content header + body frames of a persistent message.

    Properties: content type and encoding, headers, delivery mode 2, priority (0-255, when given),
    correlation id and message id (both the task id, as Celery sets the former), expiration (when
    given: None publishes without a TTL).
    """
    for name in ROUTING_HEADERS:
        value = headers.get(name)
        if value is not None and not (isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)):
            # RabbitMQ reads these as extra routing keys and closes the channel (406) on any other type.
            raise TypeError(f"header {name!r}: RabbitMQ takes an array of routing keys here")
    method = _PUBLISH_HEAD.pack(60, 40, 0) + _shortstr(exchange) + _shortstr(routing_key) + b"\x01"
    flags = 0x8000 | 0x4000 | 0x2000 | 0x1000 | 0x0400 | 0x0080
    if priority is not None:
        flags |= 0x0800
    if expiration_ms is not None:
        flags |= 0x0100
    properties = b"".join(
        (
            _shortstr(content_type),
            _shortstr(content_encoding),
            field_table(headers),
            b"\x02",
            b"" if priority is None else bytes((priority,)),
            _shortstr(message_id),
            b"" if expiration_ms is None else _shortstr(str(expiration_ms)),
            _shortstr(message_id),
        )
    )
    content = _CONTENT_HEAD.pack(60, 0, len(body), flags) + properties
    parts = [
        _FRAME_HEAD.pack(1, channel, len(method)),
        method,
        FRAME_END,
        _FRAME_HEAD.pack(2, channel, len(content)),
        content,
        FRAME_END,
    ]
    step = frame_max - 8  # a frame's head and end take 8 bytes of frame_max
    for start in range(0, len(body), step):
        chunk = body[start : start + step]
        parts += (_FRAME_HEAD.pack(3, channel, len(chunk)), chunk, FRAME_END)
    return b"".join(parts)


def _fail_future(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail `future` unless it is done, and mark the error seen: its waiter may have gone away, and
    asyncio would log it as never retrieved."""
    if not future.done():
        future.set_exception(error)
        future.exception()


@dataclass
class _Pending:
    future: asyncio.Future[None]
    message_id: str
    timer: asyncio.TimerHandle


class AmqpConnection(asyncio.Protocol):
    """One connection; channel 1 is in confirm mode for publishing, others serve RPCs (declares).

    `closed` completes (with an exception) when the connection ends for any reason; every publish
    and RPC in flight fails with `AmqpError` then.
    """

    def __init__(self, params: AmqpParams) -> None:
        self._params = params
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._outbox: list[bytes] = []
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.blocked: str | None = None
        self.frame_max = DEFAULT_FRAME_MAX
        self._open_channels: set[int] = set()
        self._channel_max = 2047
        self._last_channel = PUBLISH_CHANNEL
        self._rpc_locks: dict[int, asyncio.Lock] = {}
        self._waiters: dict[int, tuple[tuple[type[Frame], ...], asyncio.Future[Frame]]] = {}
        self._delivery_tag = 0
        # The delivery tag of the last publish handed to the socket (see `Unconfirmed.sent`).
        self._flushed_tag = 0
        self._pending: dict[int, _Pending] = {}
        self._returned: set[str] = set()
        # A Basic.Return arrives as three frames: the method, then the header (which names the message).
        self._returning: dict[int, commands.Basic.Return] = {}
        self._heard = self._loop.time()
        self._heartbeat_timer: asyncio.TimerHandle | None = None

    # --- opening and closing ---------------------------------------------------------------------

    @classmethod
    async def open(cls, params: AmqpParams, timeout: float | None = None) -> AmqpConnection:
        """Connect, log in, open the vhost and the confirming publish channel, all within `timeout`
        seconds (`params.connect_timeout` by default: a vanished host drops the SYN, and the kernel
        alone would wait minutes).

        Raises `AmqpError` (refused login, a broker that closes the connection, a bad frame),
        `OSError` (refused connect, TLS verification) or `TimeoutError`.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(params.connect_timeout if timeout is None else timeout):
            transport, conn = await loop.create_connection(
                lambda: cls(params),
                params.host,
                params.port,
                ssl=params.ssl_context,
                server_hostname=(params.server_hostname or params.host) if params.ssl_context else None,
            )
            sock = transport.get_extra_info("socket")
            if sock is not None:
                for option, value in params.socket_settings.items():
                    with contextlib.suppress(OSError):  # an option this kernel lacks
                        sock.setsockopt(socket.IPPROTO_TCP, option, value)
            try:
                await conn._handshake()
                await conn.open_channel(PUBLISH_CHANNEL)
                await conn.rpc(PUBLISH_CHANNEL, commands.Confirm.Select(), commands.Confirm.SelectOk)
            except BaseException:
                conn.abort()
                raise
        return conn

    async def _handshake(self) -> None:
        start = self._expect(0, commands.Connection.Start)
        self._write(bytes(header.ProtocolHeader().marshal()))
        started = cast(commands.Connection.Start, await start)
        if "PLAIN" not in str(started.mechanisms).split():
            raise AmqpError(f"the broker offers no PLAIN login ({started.mechanisms})")
        capabilities = {
            "publisher_confirms": True,
            "basic.nack": True,
            "connection.blocked": True,
            "authentication_failure_close": True,
        }
        properties = {"product": "checkgate", "capabilities": capabilities, "connection_name": "checkgate-gateway"}
        p = self._params
        tune = self._expect(0, commands.Connection.Tune)
        self._send(0, commands.Connection.StartOk(properties, "PLAIN", f"\0{p.username}\0{p.password}"))
        tuned = cast(commands.Connection.Tune, await tune)
        self.frame_max = min(tuned.frame_max or p.frame_max, p.frame_max)
        # RabbitMQ's rule: the smaller of both offers, unless one is 0 (then the other); AMQP's unit is s.
        asked = max(1, round(p.heartbeat)) if p.heartbeat else 0
        beat = min(tuned.heartbeat, asked) if tuned.heartbeat and asked else tuned.heartbeat or asked
        self._channel_max = min(tuned.channel_max or 2047, 2047)
        self._send(0, commands.Connection.TuneOk(self._channel_max, self.frame_max, beat))
        await self.rpc(0, commands.Connection.Open(p.vhost), commands.Connection.OpenOk)
        if beat:
            self._heartbeat_timer = self._loop.call_later(beat / 2, self._beat, beat)

    async def open_channel(self, channel: int | None = None) -> int:
        """Open `channel`, or a channel with a number not used before on this connection; return it."""
        if channel is None:
            channel = self._last_channel + 1 if self._last_channel < self._channel_max else PUBLISH_CHANNEL + 1
            self._last_channel = channel
        await self.rpc(channel, commands.Channel.Open(), commands.Channel.OpenOk)
        self._open_channels.add(channel)
        return channel

    def close_channel(self, channel: int) -> None:
        """Give up `channel` (say, after an RPC on it went unanswered): ask the broker to close it and
        forget it; a late reply on it then finds nobody waiting."""
        if channel in self._open_channels:
            self._open_channels.discard(channel)
            with contextlib.suppress(AmqpError):
                self._send(channel, commands.Channel.Close(200, "abandoned", 0, 0))
        if (waiter := self._waiters.pop(channel, None)) is not None:
            _fail_future(waiter[1], AmqpError(f"channel {channel} closed"))

    def channel_open(self, channel: int) -> bool:
        """Whether `channel` is open."""
        return channel in self._open_channels

    @property
    def is_open(self) -> bool:
        """True until the connection ends."""
        return not self.closed.done() and self.channel_open(PUBLISH_CHANNEL)

    async def close(self, timeout: float = 2.0) -> None:
        """Close politely (Connection.Close, wait for Close-Ok), or drop it after `timeout`."""
        if self.closed.done():
            return
        with contextlib.suppress(AmqpError, TimeoutError):
            async with asyncio.timeout(timeout):
                await self.rpc(0, commands.Connection.Close(200, "bye", 0, 0), commands.Connection.CloseOk)
        self.abort()
        with contextlib.suppress(AmqpError):
            await self.closed

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            self._transport.abort()

    # --- publishing ------------------------------------------------------------------------------

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        content_type: str,
        content_encoding: str,
        headers: Mapping[str, Any],
        message_id: str,
        expiration_ms: int | None,
        timeout: float,
        priority: int | None = None,
    ) -> asyncio.Future[None]:
        """Send a persistent, mandatory message on the publish channel; the future completes when the
        broker confirms it, or fails with `Returned` (unroutable), `AmqpError` (nack, connection or
        channel lost, broker blocked) or `TimeoutError` after `timeout` seconds."""
        if not self.is_open:
            raise AmqpError("connection is closed")
        if self.blocked is not None:
            # RabbitMQ stops reading a blocked publisher's socket (memory or disk alarm): refuse now
            # rather than let the caller wait out its deadline.
            raise AmqpError(f"broker blocked publishing: {self.blocked}")
        data = publish_frames(
            PUBLISH_CHANNEL,
            exchange,
            routing_key,
            body,
            content_type=content_type,
            content_encoding=content_encoding,
            headers=headers,
            message_id=message_id,
            expiration_ms=expiration_ms,
            priority=priority,
            frame_max=self.frame_max,
        )
        self._write(data)
        self._delivery_tag += 1
        tag = self._delivery_tag
        future: asyncio.Future[None] = self._loop.create_future()
        timer = self._loop.call_later(timeout, self._expire, tag)
        self._pending[tag] = _Pending(future, message_id, timer)
        return future

    def _expire(self, tag: int) -> None:
        pending = self._pending.pop(tag, None)
        if pending is not None:
            _fail_future(pending.future, TimeoutError(f"no confirm within the deadline (delivery tag {tag})"))

    def _confirm(self, tag: int, multiple: bool, error: Exception | None = None) -> None:
        tags = [t for t in self._pending if t <= tag] if multiple else [tag]
        for t in tags:
            pending = self._pending.pop(t, None)
            if pending is None:
                continue
            pending.timer.cancel()
            if pending.message_id in self._returned:
                self._returned.discard(pending.message_id)
                _fail_future(pending.future, Returned(pending.message_id))
            elif error is not None:
                _fail_future(pending.future, error)
            elif not pending.future.done():
                pending.future.set_result(None)

    # --- RPCs ------------------------------------------------------------------------------------

    async def rpc(self, channel: int, method: Frame, *replies: type[Frame]) -> Frame:
        """Send `method` on `channel` and wait for its reply (one RPC at a time per channel)."""
        lock = self._rpc_locks.setdefault(channel, asyncio.Lock())
        async with lock:
            reply = self._expect(channel, *replies)
            try:
                self._send(channel, method)
                return await reply
            finally:
                if self._waiters.get(channel, (None, None))[1] is reply:
                    del self._waiters[channel]

    def _expect(self, channel: int, *types: type[Frame]) -> asyncio.Future[Frame]:
        if self.closed.done():
            raise AmqpError("connection is closed")
        future: asyncio.Future[Frame] = self._loop.create_future()
        self._waiters[channel] = (types, future)
        return future

    def _send(self, channel: int, method: Frame) -> None:
        self._write(frame.marshal(method, channel))

    def _write(self, data: bytes) -> None:
        """Queue `data` for the socket; what is queued in one turn of the event loop goes out in one
        write. A write to a loopback socket runs the whole TCP path of both ends (one publish per write
        was a seventh of the gateway's CPU); a burst of requests now costs one write, not one each."""
        if self._transport is None or self._transport.is_closing():
            raise AmqpError("connection is closed")
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(data)

    def _flush(self) -> None:
        data, self._outbox = b"".join(self._outbox), []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self._flushed_tag = self._delivery_tag

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._heard = self._loop.time()
        buffer = self._buffer
        buffer += data
        offset = 0
        try:
            while len(buffer) - offset >= 8:
                kind, channel, size = _FRAME_HEAD.unpack_from(buffer, offset)
                end = offset + 7 + size
                if len(buffer) <= end:
                    break
                if buffer[end] != 0xCE:
                    raise AmqpError("framing error: a frame does not end with 0xCE")
                if kind == 1 and size == 13 and buffer[offset + 7 : offset + 11] == _ACK_HEAD:
                    tag, bits = _ACK_BODY.unpack_from(buffer, offset + 11)
                    self._confirm(tag, bool(bits & 1))
                elif kind != 8:  # heartbeats only show the broker is there
                    _, _, value = frame.unmarshal(bytes(buffer[offset : end + 1]))
                    self._on_frame(channel, value)
                offset = end + 1
        except (AmqpError, PAMQPException, ValueError, struct.error) as exc:
            self._fail(exc if isinstance(exc, AmqpError) else AmqpError(f"bad frame from the broker: {exc!r}"))
        finally:
            del buffer[:offset]

    def _on_frame(self, channel: int, value: Any) -> None:
        if isinstance(value, commands.Basic.Nack):
            self._confirm(value.delivery_tag, value.multiple, Nacked("the broker refused the message (nack)"))
        elif isinstance(value, commands.Basic.Return):
            self._returning[channel] = value
        elif isinstance(value, header.ContentHeader):
            if channel in self._returning:
                del self._returning[channel]
                if value.properties.message_id:
                    self._returned.add(value.properties.message_id)
        elif isinstance(value, commands.Channel.Close):
            self._send(channel, commands.Channel.CloseOk())
            self._channel_closed(channel, ChannelClosed(channel, value.reply_code or 0, value.reply_text))
        elif isinstance(value, commands.Connection.Close):
            self._send(0, commands.Connection.CloseOk())
            self._fail(AmqpError(f"the broker closed the connection: {value.reply_code} {value.reply_text}"))
        elif isinstance(value, commands.Connection.Blocked):
            self.blocked = value.reason or "blocked"
        elif isinstance(value, commands.Connection.Unblocked):
            self.blocked = None
        elif (waiter := self._waiters.get(channel)) is not None and isinstance(value, waiter[0]):
            del self._waiters[channel]
            if not waiter[1].done():
                waiter[1].set_result(value)
        # Anything else (a body frame of a return, Channel.Flow…) needs nothing from a publisher.

    def _channel_closed(self, channel: int, error: AmqpError) -> None:
        self._open_channels.discard(channel)
        if (waiter := self._waiters.pop(channel, None)) is not None:
            _fail_future(waiter[1], error)
        if channel == PUBLISH_CHANNEL:
            # Confirms of what was published there will never come: start over on a new connection.
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        self._finish(error)
        self._flush()  # a Close-Ok queued in this turn still goes out before the connection is dropped
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(AmqpError(f"connection lost ({exc!r})" if exc else "connection closed"))

    def _finish(self, error: Exception) -> None:
        """Fail everything in flight with `error`, once."""
        if self._heartbeat_timer is not None:
            self._heartbeat_timer.cancel()
        self._open_channels.clear()
        waiters, self._waiters = self._waiters, {}
        for _, future in waiters.values():
            _fail_future(future, error)
        pending, self._pending = self._pending, {}
        for tag, entry in pending.items():
            entry.timer.cancel()
            _fail_future(entry.future, Unconfirmed(str(error), sent=tag <= self._flushed_tag))
        _fail_future(self.closed, error)

    def _beat(self, interval: int) -> None:
        if self.closed.done():
            return
        if self._loop.time() - self._heard > 2 * interval:
            self._fail(AmqpError(f"no frame from the broker for {2 * interval} s"))
            return
        with contextlib.suppress(AmqpError):
            self._write(_HEARTBEAT)
        self._heartbeat_timer = self._loop.call_later(interval / 2, self._beat, interval)
