"""Server-Sent Events: board change notifications and the live tail of a process's log."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import tornado.web
from supervisor.xmlrpc import Faults
from tornado.iostream import StreamClosedError

from gateway.console.tail import LogTail
from gateway.console.web import ConsoleHandler
from gateway.supervisor_rpc import LOG_STREAMS, RpcError, RpcFault

TAIL_INTERVAL = 0.5
TAIL_RETRY = 2.0
KEEPALIVE = 15.0


class EventStream(ConsoleHandler):
    """Base of the Server-Sent Events endpoints."""

    closed = False

    def start_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # let the events through nginx unbuffered

    def on_connection_close(self) -> None:
        self.closed = True

    async def send(self, event: str | None, data: Any, event_id: str | None = None) -> bool:
        """Write one event (or a comment when `event` is None); False once the browser is gone."""
        if self.closed or self.console.stopping:
            return False
        if event is None:
            self.write(f": {data}\n\n")
        else:
            head = f"id: {event_id}\n" if event_id is not None else ""
            self.write(f"{head}event: {event}\ndata: {json.dumps(data)}\n\n")
        try:
            await self.flush()
        except StreamClosedError:
            self.closed = True
        return not self.closed


class StateStreamHandler(EventStream):
    """GET /console/events: a `state` event whenever what the board shows changed."""

    async def get(self) -> None:
        self.require("viewer")
        poller = self.console.poller
        assert poller is not None
        self.start_stream()
        seen = -1
        while True:
            version = await poller.wait_change(seen, KEEPALIVE)
            ok = await self.send("state", {"version": version}) if version != seen else await self.send(None, "ping")
            if not ok:
                break
            seen = version
        if not self.closed:
            self.finish()


class TailStreamHandler(EventStream):
    """GET /console/tail/stream?node=&process=&stream=: `log` events with what the process printed."""

    async def get(self) -> None:
        self.require("viewer")
        console = self.console
        node = console.settings.node(self.get_argument("node"))
        stream = self.get_argument("stream", "stdout")
        process = self.get_argument("process")
        if node is None or stream not in LOG_STREAMS:
            raise tornado.web.HTTPError(404, "no such node or stream")
        if console.tails >= console.settings.max_tails:
            raise tornado.web.HTTPError(503, "too many live tails open; close one")
        # Counted in the same step as the check (nothing awaited between), so tails opened at once
        # cannot pass the cap.
        console.tails += 1
        try:
            assert console.rpc is not None
            tail = LogTail(console.rpc, node, process, stream, console.settings.rpc_timeout)
            last = self.request.headers.get("Last-Event-ID", "")
            if last.isdigit():  # a reconnecting browser continues where it was, without repeats
                tail.offset = int(last)
            self.start_stream()
            await self._follow(tail)
        finally:
            console.tails -= 1
        if not self.closed:
            self.finish()

    async def _follow(self, tail: LogTail) -> None:
        quiet_since = time.monotonic()
        while not self.closed and not self.console.stopping:
            try:
                chunk = await tail.read()
            except RpcFault as fault:
                final = fault.code in (Faults.NO_FILE, Faults.BAD_NAME)
                message = str(fault)
                if fault.code == Faults.NO_FILE:
                    message = f"{tail.spec} has no {tail.stream} log file (redirect_stderr, or logging to none?)"
                await self.send("problem", {"message": message, "final": final})
                if final:
                    return
                await asyncio.sleep(TAIL_RETRY)
                continue
            except RpcError as exc:
                if not await self.send("problem", {"message": str(exc), "final": False}):
                    return
                await asyncio.sleep(TAIL_RETRY)
                continue
            if chunk.text or chunk.skipped or chunk.reset:
                data = {"text": chunk.text, "skipped": chunk.skipped, "reset": chunk.reset}
                if not await self.send("log", data, event_id=str(tail.offset)):
                    return
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE:
                if not await self.send(None, "ping"):
                    return
                quiet_since = time.monotonic()
            await asyncio.sleep(TAIL_INTERVAL)
