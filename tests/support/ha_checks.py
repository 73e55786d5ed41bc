"""Check types only the high-availability tests load (through CHECKGATE_CHECK_MODULES): each records every
delivery it gets (which worker, when, whether the broker flagged it redelivered), so a test can tell when
a dead host's tasks reached a live one, what ran twice and what never ran; `crash` is a poison message.

Deliveries are appended as JSON to the Redis list `checkgate-ha-runs:<tag>` on CHECKGATE_HA_REDIS_URL.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import redis
from celery import current_task

from tasks.registry import Param, check

RUNS_KEY = "checkgate-ha-runs:"
_redis: redis.Redis | None = None

TAG = Param("tag", str, required=True, max_length=100, doc="unique per request: the key its deliveries go under")
MS = Param("ms", int, default=0, min=0, max=60_000, doc="how long the run takes")


def record_delivery(tag: str) -> dict[str, Any]:
    """Append this delivery to the tag's list: worker name, start (epoch s), the broker's redelivered flag."""
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["CHECKGATE_HA_REDIS_URL"], socket_timeout=5)
    request = current_task.request
    entry = {
        "worker": request.hostname,
        "started": time.time(),
        "redelivered": bool((request.delivery_info or {}).get("redelivered")),
    }
    _redis.rpush(RUNS_KEY + tag, json.dumps(entry))
    _redis.expire(RUNS_KEY + tag, 3600)
    return entry


def deliveries(client: redis.Redis, tag: str) -> list[dict[str, Any]]:
    """Every recorded delivery of `tag`, in order."""
    return [json.loads(raw) for raw in client.lrange(RUNS_KEY + tag, 0, -1)]


@check(params=(TAG, MS), queue="mark", default_timeout=60.0, max_timeout=300.0)
def mark(tag: str, ms: int) -> dict:
    """Record the delivery, then take `ms`: acknowledged after it ran, so a lost worker's are redelivered."""
    entry = record_delivery(tag)
    time.sleep(ms / 1000)
    return {"ok": True, **entry}


@check(params=(TAG, MS), queue="mark_once", default_timeout=60.0, max_timeout=300.0, idempotent=False)
def mark_once(tag: str, ms: int) -> dict:
    """Like `mark`, but declared not idempotent: acknowledged before it runs, so it runs at most once."""
    entry = record_delivery(tag)
    time.sleep(ms / 1000)
    return {"ok": True, **entry}


@check(params=(TAG,), queue="crash", default_timeout=60.0, max_timeout=300.0)
def crash(tag: str) -> None:
    """Record the delivery, then SIGKILL the process running it: a poison message (prefork: the pool child
    dies, Celery requeues the task, the next child takes it and dies too)."""
    record_delivery(tag)
    os.kill(os.getpid(), signal.SIGKILL)
