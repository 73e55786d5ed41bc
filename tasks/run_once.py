"""At most once, for real: a check declared not idempotent runs only if its task id was never claimed.

Celery acknowledges such a task (``acks_late`` off) just before running it. An AMQP ack is never
confirmed: one written as a worker host's link goes is lost, the broker requeues the message when it drops
that connection, and another worker runs it too, while the cut-off host ran (or runs) its copy. The HA
fault rows saw it: 1 to 3 runs twice per ~1,000 checks declared not idempotent when a worker host died or
was partitioned (README, "High availability"). The broker cannot close that gap; the result store can.

Before running, the worker claims the task id in the result backend's Redis with ``SET key NX EX``
(atomic: exactly one claim succeeds, on a Sentinel-managed master too, through the backend's own client).
A copy whose id is claimed is not run and stores nothing (`celery.exceptions.Ignore`): the caller's answer
is the first run's result, or, when that run died with its host, the 504 that at-most-once promises. A
worker that cannot reach Redis to claim does not run the check either (it could not store the result;
`ClaimUnavailable`, a FAILURE the worker logs). Idempotent checks skip all of this: their redelivery is
the point.

The claim lives until the task's deadline plus `CLAIM_SLACK` (a task cannot be delivered after its
``expires``: the worker discards it as expired), so claims do not pile up. Cost: one Redis round trip per
run of a check declared not idempotent; backends that are not Redis are not guarded (and logged once).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.exceptions import Ignore

log = logging.getLogger(__name__)

KEY_PREFIX = "checkgate-run-once-"
# Seconds a claim outlives the task's deadline: clocks of workers and the gateway may differ a little.
CLAIM_SLACK = 60.0
_warned_backends: set[str] = set()


class ClaimUnavailable(RuntimeError):
    """The result backend could not be asked to claim a run: the check was not run (at most once)."""


def claim_or_ignore(task: Any, deadline: float) -> None:
    """Claim the run of `task` (a bound Celery task inside its run) or raise `Ignore` when its id is
    already claimed, i.e. this delivery is a copy of one that ran or runs elsewhere.

    `deadline` is the task's deadline in epoch seconds (`tasks.deadline.task_deadline`). Raises
    `ClaimUnavailable` when Redis cannot be reached. A task without an id (called in-line) is not guarded.
    """
    task_id = task.request.id
    if not task_id or task.request.is_eager:
        return
    client = getattr(task.app.backend, "client", None)
    if not isinstance(client, redis.Redis):
        name = type(task.app.backend).__name__
        if name not in _warned_backends:
            _warned_backends.add(name)
            log.warning("result backend %s: checks declared not idempotent are not guarded against a second run", name)
        return
    ttl = max(1, int(deadline - time.time() + CLAIM_SLACK))
    try:
        claimed = client.set(KEY_PREFIX + task_id, task.request.hostname or "?", nx=True, ex=ttl)
    except redis.RedisError as exc:
        raise ClaimUnavailable(f"cannot claim the run in the result backend ({exc}); not run") from None
    if not claimed:
        log.warning("task %s[%s] was delivered again after it was claimed; not run twice", task.name, task_id)
        raise Ignore()
