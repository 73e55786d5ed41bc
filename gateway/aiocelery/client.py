"""`CeleryClient`: publish Celery tasks and await their results on an asyncio loop, never blocking it.

The role tornado-celery played for Celery 3 and Tornado 4, for Celery 5 on asyncio. It ties together
the three parts of this package: `MessageFactory` (messages by the app's own code), `BrokerPublisher`
(RabbitMQ with confirms) and `ResultListener` (one Redis PSUBSCRIBE for all of this process's ids).
No `send_task`, `AsyncResult.get()`, blocking Redis call or thread pool runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from typing import Any

from celery import Celery

from gateway.aiocelery.errors import DeadlinePassed, PublishUnconfirmed
from gateway.aiocelery.messages import MessageFactory, OutgoingMessage
from gateway.aiocelery.publisher import BrokerPublisher
from gateway.aiocelery.results import ResultListener


class CeleryClient:
    """Publish tasks of `app` and await their results, all on the event loop.

    `publish_timeout`: seconds a publish may wait for the broker's confirm (at most the task's own
    timeout); `id_prefix`: the prefix of every task id this process issues (random when None; it must
    be unique per process, since results are matched to waiters by it).
    """

    def __init__(self, app: Celery, *, publish_timeout: float = 5.0, id_prefix: str | None = None) -> None:
        self.app = app
        self.id_prefix = id_prefix or f"gw{secrets.token_hex(5)}-"
        self.messages = MessageFactory(app, origin=f"checkgate-gateway@{socket.gethostname()}/{os.getpid()}")
        # Both read the app's configuration as the workers do (failover list, TLS, Sentinel) and raise
        # ValueError at once for what they cannot honour; TLS files are read here, not on the loop.
        self.broker = BrokerPublisher.for_app(app, publish_timeout)
        self.results = ResultListener.for_app(app, self.id_prefix)

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
        self, task_id: str, task_name: str, kwargs: dict[str, Any], *, timeout: float, ignore_result: bool = False
    ) -> OutgoingMessage:
        """A protocol-2 message for `task_name(**kwargs)` expiring `timeout` s from now (`MessageFactory.build`)."""
        return self.messages.build(task_id, task_name, kwargs, timeout=timeout, ignore_result=ignore_result)

    async def publish(self, message: OutgoingMessage, *, may_republish: bool = False) -> None:
        """Publish a built message; `may_republish`: the task may run twice, so a message whose broker
        node died before confirming it is sent again on the next (see `BrokerPublisher.publish`)."""
        await self.broker.publish(message, may_republish=may_republish)

    async def call(
        self,
        task_name: str,
        kwargs: dict[str, Any],
        *,
        timeout: float,
        task_id: str | None = None,
        may_republish: bool = False,
    ) -> tuple[str, dict | None, float]:
        """Run `task_name(**kwargs)` and wait up to `timeout` s: (task id, ready meta or None past the
        deadline, seconds from the publish to the result's arrival — the time the task was out of this
        process's hands).

        A deadline that passes while the broker has not yet confirmed the publish is a deadline like any
        other (None), not a broker fault. `may_republish` as for `publish`; without it, a message whose
        node died after it was sent may still run, so its result is awaited to the deadline all the same."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        task_id = task_id or self.new_id()
        message = self.build_message(task_id, task_name, kwargs, timeout=timeout)
        future = self.results.expect(task_id, deadline)
        meta = None
        publishing = loop.time()
        try:
            with contextlib.suppress(PublishUnconfirmed):  # it may be queued: its result is as welcome
                await self.publish(message, may_republish=may_republish)
            meta = await future
        except DeadlinePassed:
            meta = future.result() if future.done() else None
        finally:
            arrived = self.results.forget(task_id)
        away = arrived - publishing if meta is not None and arrived is not None else 0.0
        return task_id, meta, away
