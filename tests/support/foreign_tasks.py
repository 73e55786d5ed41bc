"""A Celery app that is not checkgate's, for the library's tests: its own tasks, JSON everywhere, Celery's
default queue (under this run's prefix) plus a priority queue, stock settings otherwise.

Run by a stock worker: `celery -A tests.support.foreign_tasks worker -Q <PREFIX>celery`. The test process
and its workers agree on `PREFIX` through `FOREIGN_PREFIX` (tests/test_library.py sets it for the worker);
results go to the test Redis db (tests/support/env.py), broadcasts (revoke) to a prefixed exchange.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from kombu import Exchange, Queue

from tests.support.env import BACKEND_URL, BROKER_URL, RUN_PREFIX

PREFIX = os.environ.get("FOREIGN_PREFIX") or f"{RUN_PREFIX}f_"
DEFAULT_QUEUE = f"{PREFIX}celery"
PRIORITY_QUEUE = f"{PREFIX}prio"

# pyamqp:// as any Celery app must name it where librabbitmq is installed (the [librabbitmq] extra, which
# bootstrap installs): kombu takes a bare amqp:// for its stock librabbitmq transport then, whose consumers
# fail on kombu 5.x (README, "Worker transports"). checkgate's own processes get this from celeryconfig.
app = Celery("foreign", broker=BROKER_URL.replace("amqp://", "pyamqp://", 1), backend=BACKEND_URL, set_as_current=False)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_default_queue=DEFAULT_QUEUE,
    task_queues=(
        Queue(DEFAULT_QUEUE),
        Queue(PRIORITY_QUEUE, Exchange(PRIORITY_QUEUE), routing_key=PRIORITY_QUEUE, max_priority=10),
    ),
    control_exchange=f"{PREFIX}celery",
    event_exchange=f"{PREFIX}celeryev",
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    timezone="UTC",
)


class QuotaExceeded(Exception):
    """An exception class of the app's own (rebuilt by the client from its module and name)."""


def _redis() -> redis.Redis:
    return redis.Redis.from_url(BACKEND_URL)


@app.task(name="foreign.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="foreign.fail")
def fail(message: str, code: int = 42) -> None:
    raise ValueError(message, code)


@app.task(name="foreign.over_quota")
def over_quota(user: str) -> None:
    raise QuotaExceeded(f"{user} is over quota")


@app.task(name="foreign.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="foreign.request", bind=True)
def request(self: Any) -> dict[str, Any]:
    """What the worker saw of this message: eta, expires, priority, a custom header, when it ran."""
    req = self.request
    return {
        "eta": req.eta,
        "expires": req.expires,
        "priority": (req.delivery_info or {}).get("priority"),
        "tenant": getattr(req, "x-tenant", None),
        "ran_at": time.time(),
        "args": list(req.args or ()),
        "kwargs": dict(req.kwargs or {}),
    }


@app.task(name="foreign.record", acks_late=True)
def record(key: str, value: str, hold: float = 0.0) -> str:
    """Append `value` to the Redis list `key` (under PREFIX), then sleep `hold` seconds: a trace that it
    ran and in which order. Acknowledged after running: a busy solo worker takes nothing more meanwhile."""
    client = _redis()
    client.rpush(PREFIX + key, value)
    client.expire(PREFIX + key, 600)
    client.close()
    time.sleep(hold)
    return value
