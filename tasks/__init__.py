"""The Celery app: `celery -A tasks worker -Q <queue>` runs the checks declared under `tasks.checks`."""

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import Celery

import tasks.schedule  # noqa: F401  (its task_postrun handler records the latest run of each scheduled check)
from tasks.registry import CheckType, load_checks

app = Celery("checkgate")
app.config_from_object("celeryconfig")


def deadline_of(expires: str | datetime | None) -> float | None:
    """The task's `expires` header as epoch seconds (naive values are UTC, as Celery reads them)."""
    if expires is None:
        return None
    when = expires if isinstance(expires, datetime) else datetime.fromisoformat(expires)
    if when.tzinfo is None:
        return (when - datetime(1970, 1, 1)).total_seconds()
    return when.timestamp()


def _task_body(check: CheckType) -> tuple[Callable[..., Any], bool]:
    """The function Celery runs for a check, and whether it must be bound to see its request."""
    fn = check.fn
    if not check.wants_deadline:
        return fn, False

    @functools.wraps(fn)
    def with_deadline(self: Any, **kwargs: Any) -> Any:
        return fn(deadline=deadline_of(self.request.expires), **kwargs)

    return with_deadline, True


for _check in load_checks().values():
    _body, _bind = _task_body(_check)
    # At-least-once (ack after running) only where a second run is harmless; otherwise at-most-once.
    _late = _check.idempotent
    app.task(_body, name=_check.task_name, bind=_bind, acks_late=_late, reject_on_worker_lost=_late)

__all__ = ["app", "deadline_of"]
