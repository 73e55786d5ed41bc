"""What the asyncio Celery client raises: each failure says whose it is, so a caller can answer honestly.

An outage (`BrokerUnavailable`, `BackendUnavailable`) is not load shedding (`BrokerRefused`), not this
process's own exhaustion (`OutOfDescriptors`), not a missing queue (`Unroutable`) and not the caller's
own deadline (`DeadlinePassed`) nor an outcome nobody can know (`PublishUnconfirmed`, a kind of it). An
HTTP front answers 503 for the first four, with different words, and 504 with the id for the last two.
"""

from __future__ import annotations

import errno

from celery.exceptions import TimeoutError as CeleryTimeoutError

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


class PublishUnconfirmed(DeadlinePassed):
    """The message was sent, then its broker node was lost before confirming it, and the caller did not
    allow sending it again (`may_republish=False`: a task that must not run twice). It may be queued (a
    quorum queue commits before it confirms) and run: its result, if any, comes as for any other task.
    Like a passed deadline, the honest answer is the id to poll, never a 503 that invites a retry."""


def backend_error(exc: BaseException) -> BackendUnavailable:
    """The BackendUnavailable for a Redis/OS error: `OutOfDescriptors` when that is the cause."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _OUT_OF_FDS:
            return OutOfDescriptors(f"out of file descriptors: {cause}")
        cause = cause.__cause__ or cause.__context__
    return BackendUnavailable(str(exc))


class UnsupportedBackend(ValueError):
    """The app's result backend cannot be awaited without blocking: only Redis (redis://, rediss://,
    sentinel://) publishes each result as it is stored. Raised when a `CeleryClient` is made."""


class ClientClosed(RuntimeError):
    """The `CeleryClient` was closed: nothing more is published, and waits still open end with this."""


class ResultTimeout(CeleryTimeoutError, TimeoutError):
    """No result within the `timeout` given (seconds). The task may still run and store one later: read
    it by `task_id`. Both `celery.exceptions.TimeoutError` (as `AsyncResult.get` raises) and the
    built-in `TimeoutError` (as asyncio raises) catch it."""

    def __init__(self, task_id: str, timeout: float) -> None:
        super().__init__(f"task {task_id} not ready within {timeout:g} s")
        self.task_id = task_id
        self.timeout = timeout
