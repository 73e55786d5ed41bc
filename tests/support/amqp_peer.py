"""A scripted AMQP 0-9-1 broker on 127.0.0.1, for the cases a real RabbitMQ will not produce on demand: a
peer that goes silent, sends a broken frame or a header that cannot be decoded, nacks or drops the
connection with publishes unconfirmed. It speaks just enough (pamqp's codec) for the gateway's
connection: the handshake, channels, confirm mode, declares, and Basic.Publish, which it answers as the
test's `on_publish(peer, delivery_tag, message_id)` says (by default: ack).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from pamqp import commands, frame, header, heartbeat
from pamqp.base import Frame

from gateway.aiocelery.amqp import FRAME_END


class PeerConnection(asyncio.Protocol):
    """One client connection to the scripted broker."""

    def __init__(self, broker: ScriptedBroker) -> None:
        self.broker = broker
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.started = False
        self.tag = 0
        self.method: commands.Basic.Publish | None = None
        self.message_id: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.broker.connections.append(self)
        self.send(
            commands.Connection.Start(server_properties={"product": "scripted"}, mechanisms="PLAIN", locales="en_US")
        )

    def send(self, value: Frame | heartbeat.Heartbeat, channel: int = 0) -> None:
        """Write one frame (pamqp's encoding)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame.marshal(value, channel))

    def send_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def ack(self, tag: int, multiple: bool = False) -> None:
        self.send(commands.Basic.Ack(tag, multiple), 1)

    def nack(self, tag: int, multiple: bool = False) -> None:
        self.send(commands.Basic.Nack(tag, multiple), 1)

    def drop(self) -> None:
        """Abort the TCP connection (a node that died: a RST, no Connection.Close)."""
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.started:
            if len(self.buffer) < 8:
                return
            self.buffer = self.buffer[8:]  # AMQP\x00\x00\x09\x01
            self.started = True
        while len(self.buffer) >= 8:
            try:
                used, channel, value = frame.unmarshal(self.buffer)
            except Exception:  # an incomplete frame: wait for more
                return
            self.buffer = self.buffer[used:]
            self.on_frame(channel, value)

    def on_frame(self, channel: int, value: Any) -> None:
        broker = self.broker
        replies = {
            commands.Connection.StartOk: lambda: self.send(
                commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=broker.heartbeat)
            ),
            commands.Connection.Open: lambda: self.send(commands.Connection.OpenOk()),
            commands.Channel.Open: lambda: self.send(commands.Channel.OpenOk(), channel),
            commands.Confirm.Select: lambda: self.send(commands.Confirm.SelectOk(), channel),
            commands.Queue.Declare: lambda: self.send(commands.Queue.DeclareOk(value.queue, 0, 0), channel),
            commands.Exchange.Declare: lambda: self.send(commands.Exchange.DeclareOk(), channel),
            commands.Queue.Bind: lambda: self.send(commands.Queue.BindOk(), channel),
            commands.Connection.Close: lambda: self.send(commands.Connection.CloseOk()),
            commands.Channel.Close: lambda: self.send(commands.Channel.CloseOk(), channel),
        }
        if isinstance(value, commands.Basic.Publish):
            self.method = value
        elif isinstance(value, header.ContentHeader):
            self.message_id = value.properties.message_id
            if value.body_size == 0:
                self._published()
        elif type(value).__name__ == "ContentBody":
            self._published()
        elif type(value) in replies:
            replies[type(value)]()
        broker.received.append((channel, value))

    def _published(self) -> None:
        self.tag += 1
        self.broker.published.append(self.message_id or "")
        self.broker.on_publish(self, self.tag, self.message_id or "")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def ack_all(peer: PeerConnection, tag: int, message_id: str) -> None:
    peer.ack(tag)


class ScriptedBroker:
    """A listening scripted broker (an async context manager). `heartbeat`: the timeout it offers in
    Connection.Tune (0: none). `published`: every message id it received, in order; `received` every frame."""

    def __init__(self, on_publish: Callable[[PeerConnection, int, str], None] = ack_all, heartbeat: int = 0) -> None:
        self.on_publish = on_publish
        self.heartbeat = heartbeat
        self.connections: list[PeerConnection] = []
        self.published: list[str] = []
        self.received: list[tuple[int, Any]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ScriptedBroker:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: self._accept(), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def _accept(self) -> PeerConnection:
        return PeerConnection(self)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def drop_all(self) -> None:
        for peer in self.connections:
            peer.drop()

    async def stop(self) -> None:
        """Stop listening and drop every connection (a node killed: its port now refuses)."""
        if self.server is not None:
            self.server.close()
            self.drop_all()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def broken_frame() -> bytes:
    """A method frame whose end octet is not 0xCE."""
    data = frame.marshal(commands.Basic.Ack(1, False), 1)
    assert data.endswith(FRAME_END)
    return data[:-1] + b"\x00"
