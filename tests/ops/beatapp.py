"""The Celery app with the scheduling settings proposed for celeryconfig.py, at test speed.

`celery -A tests.ops.beatapp beat|worker` runs what `celery -A tasks ...` will run once the proposed
lines are in celeryconfig.py and tasks/__init__.py, with a 1 s beat loop and a short RedBeat lock so a
failover fits in a test.
"""

import os

import celeryconfig
import tasks.schedule  # noqa: F401  (the line proposed for tasks/__init__.py: records scheduled runs)
from tasks.celery import app

app.conf.update(
    beat_scheduler="tasks.schedule:ScheduleFileScheduler",
    beat_max_loop_interval=int(os.environ.get("CHECKGATE_TEST_BEAT_LOOP", "1")),
    redbeat_redis_url=celeryconfig.redbeat_redis_url,
    redbeat_key_prefix=f"checkgate:{celeryconfig.QUEUE_PREFIX}beat:",
    redbeat_lock_timeout=int(os.environ.get("CHECKGATE_TEST_BEAT_LOCK", "3")),
    redbeat_redis_options=celeryconfig.redbeat_redis_options,
)

__all__ = ["app"]
