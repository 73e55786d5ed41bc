"""aiocelery: publish Celery tasks and await their results from asyncio, without blocking the loop.

The part of checkgate that tornado-celery was for Celery 3 and Tornado 4:

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

from gateway.aiocelery.client import CeleryClient
from gateway.aiocelery.errors import (
    BackendUnavailable,
    BrokerRefused,
    BrokerUnavailable,
    DeadlinePassed,
    OutOfDescriptors,
    PublishUnconfirmed,
    Unroutable,
)
from gateway.aiocelery.messages import MessageFactory, OutgoingMessage

__all__ = [
    "BackendUnavailable",
    "BrokerRefused",
    "BrokerUnavailable",
    "CeleryClient",
    "DeadlinePassed",
    "MessageFactory",
    "OutOfDescriptors",
    "OutgoingMessage",
    "PublishUnconfirmed",
    "Unroutable",
]
