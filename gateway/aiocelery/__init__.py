"""aiocelery: send any Celery task and await its result from asyncio, without blocking the loop.

The library checkgate's gateway is built on (the role tornado-celery played for Celery 3 and Tornado 4),
usable from any asyncio program — Tornado, aiohttp, FastAPI/Starlette, plain asyncio:

    from gateway.aiocelery import CeleryClient

    client = CeleryClient(app)                      # any Celery app: RabbitMQ broker, Redis results
    task = await client.send_task("proj.add", (2, 3), countdown=5, priority=3)
    value = await task.get(timeout=10)              # or: await client.apply("proj.add", (2, 3), timeout=10)
    state = await client.fetch(task.id)             # state and value now, without waiting
    await client.close()

Public: `CeleryClient`, `AsyncTask`, `TaskResult` and the errors below. The modules under it:

- `messages`: protocol-2 task messages made by the Celery app's own code (templated per task type);
- `amqp`: a lean AMQP 0-9-1 connection that publishes them with confirms;
- `publisher`: that connection kept open on one node of the broker (kombu's failover list, read from
  the app's configuration), the queues declared as the workers declare them, unconfirmed publishes
  sent again where that is safe;
- `resp`: one raw Redis PSUBSCRIBE, parsed by hiredis in the socket callback;
- `backend`: where the result backend's Redis is (one server, or the master Sentinel names, followed);
- `results`: waiters resolved from it, MGET catch-up after reconnects, stored results by id;
- `client`: `CeleryClient`, which ties them together;
- `errors`: what they raise, each failure saying whose it is.
"""

from gateway.aiocelery.client import AsyncTask, CeleryClient, TaskResult
from gateway.aiocelery.errors import (
    BackendUnavailable,
    BrokerRefused,
    BrokerUnavailable,
    ClientClosed,
    DeadlinePassed,
    OutOfDescriptors,
    PublishUnconfirmed,
    ResultTimeout,
    Unroutable,
    UnsupportedBackend,
)
from gateway.aiocelery.messages import MessageFactory, OutgoingMessage

__all__ = [
    "AsyncTask",
    "BackendUnavailable",
    "BrokerRefused",
    "BrokerUnavailable",
    "CeleryClient",
    "ClientClosed",
    "DeadlinePassed",
    "MessageFactory",
    "OutOfDescriptors",
    "OutgoingMessage",
    "PublishUnconfirmed",
    "ResultTimeout",
    "TaskResult",
    "Unroutable",
    "UnsupportedBackend",
]
