"""Check types only the operations tests load (through CHECKGATE_CHECK_MODULES)."""

import os
import time

import redis

from tasks.registry import Param, check

BEAT_KEY = "checkgate-test-beat:"
HOLD_KEY = "checkgate-test-hold:"
TAG = Param("tag", str, required=True, max_length=100, doc="the Redis list this run writes to (carry the prefix)")
_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["CHECKGATE_RESULT_BACKEND"])
    return _redis


def _record(key: str, value: str) -> None:
    _client().rpush(key, value)
    _client().expire(key, 600)


@check(params=(TAG,), queue="beatprobe", default_timeout=5.0, max_timeout=10.0)
def beat_probe(tag: str, deadline: float | None = None) -> dict:
    """Record this run's deadline: its publish time plus the entry's fixed `expires`."""
    _record(BEAT_KEY + tag, repr(deadline))
    return {"ok": True, "deadline": deadline}


@check(
    params=(TAG, Param("ms", int, default=0, min=0, max=20_000)), queue="hold", default_timeout=30.0, max_timeout=60.0
)
def hold(tag: str, ms: int) -> dict:
    """Record `start`, sleep `ms`, record `done`: shows whether a stopped worker let a running task finish."""
    _record(HOLD_KEY + tag, "start")
    time.sleep(ms / 1000)
    _record(HOLD_KEY + tag, "done")
    return {"ok": True}
