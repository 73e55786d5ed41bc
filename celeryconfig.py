"""Celery settings shared by the workers and the gateway.

Queues, exchange and routes come from the check registry: one durable queue per check type on one
direct exchange, each task routed to its type's queue. Every URL and name can be overridden from the
environment (`CHECKGATE_*`), so one file serves a laptop, CI and a fleet of worker machines.
"""

import os
import ssl
from urllib.parse import unquote, urlsplit, urlunsplit

from kombu import Exchange, Queue

from tasks.registry import load_checks

broker_url = os.environ.get("CHECKGATE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
result_backend = os.environ.get("CHECKGATE_RESULT_BACKEND", "redis://127.0.0.1:6379/0")

# TLS: amqps:// and rediss:// URLs are verified against these CA bundles (the system's when unset);
# a Redis password goes in the URL (rediss://:password@host:6380/0).
if broker_url.startswith(("amqps://", "pyamqps://")):
    broker_use_ssl = {"cert_reqs": ssl.CERT_REQUIRED}
    if os.environ.get("CHECKGATE_BROKER_CA"):
        broker_use_ssl["ca_certs"] = os.environ["CHECKGATE_BROKER_CA"]
if result_backend.startswith("rediss://"):
    redis_backend_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if os.environ.get("CHECKGATE_BACKEND_CA"):
        redis_backend_use_ssl["ssl_ca_certs"] = os.environ["CHECKGATE_BACKEND_CA"]

# A prefix on every queue and exchange name lets several deployments (or a test run) share one
# broker without seeing each other's tasks, broadcasts or events.
QUEUE_PREFIX = os.environ.get("CHECKGATE_QUEUE_PREFIX", "")
# "quorum" replicates queues across a RabbitMQ cluster; "classic" suits a single broker.
QUEUE_TYPE = os.environ.get("CHECKGATE_QUEUE_TYPE", "classic")
if QUEUE_TYPE not in ("classic", "quorum"):
    raise ValueError(f"CHECKGATE_QUEUE_TYPE must be classic or quorum, not {QUEUE_TYPE!r}")

check_exchange = Exchange(f"{QUEUE_PREFIX}checkgate", type="direct", durable=True)
_CHECKS = load_checks()
_QUEUE_NAMES = sorted({QUEUE_PREFIX + c.queue for c in _CHECKS.values()})

task_queues = tuple(
    Queue(
        name,
        check_exchange,
        routing_key=name,
        durable=True,
        queue_arguments={"x-queue-type": "quorum"} if QUEUE_TYPE == "quorum" else None,
    )
    for name in _QUEUE_NAMES
)
task_routes = {c.task_name: {"queue": QUEUE_PREFIX + c.queue} for c in _CHECKS.values()}
task_default_queue = f"{QUEUE_PREFIX}celery"
control_exchange = f"{QUEUE_PREFIX}celery"
event_exchange = f"{QUEUE_PREFIX}celeryev"

# msgpack is smaller and faster than JSON for bodies and results; JSON stays accepted for other clients.
task_serializer = "msgpack"
result_serializer = "msgpack"
accept_content = ["msgpack", "json"]
result_accept_content = ["msgpack", "json"]

# Results live long enough for `/result/<id>` polling, then Redis expires them itself.
result_expires = int(os.environ.get("CHECKGATE_RESULT_EXPIRES", "3600"))
# Stores the worker's hostname with the result, which the gateway reports as `worker`.
result_extended = True
# A worker that cannot reach Redis when a task ends keeps retrying the write (exponential backoff up
# to 10 s, ~2.5 min in all) instead of dropping the result: a Redis restart must not lose answers.
result_backend_always_retry = True
result_backend_max_retries = 20

# A task is acknowledged only once it ran, so a worker that dies mid-task has it redelivered.
task_acks_late = True
task_reject_on_worker_lost = True
# On a lost broker connection the unacked tasks are redelivered anyway; stop running them here.
worker_cancel_long_running_tasks_on_connection_loss = True
worker_prefetch_multiplier = 1
worker_disable_rate_limits = True
broker_connection_retry_on_startup = True
broker_transport_options = {"confirm_publish": True}

task_publish_retry = True
task_publish_retry_policy = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 1}

timezone = "UTC"
enable_utc = True

# Scheduled checks (tasks/schedule.py): beat reads schedule.toml beside this file (or CHECKGATE_SCHEDULE)
# when it starts, validated like gateway requests, and keeps the schedule in Redis with RedBeat. Every node
# may run a beat: the one holding the Redis lock fires, the others wait and take over within
# redbeat_lock_timeout after it dies (at once after a clean stop, which releases the lock).
beat_scheduler = "tasks.schedule:ScheduleFileScheduler"
# Beat wakes at least this often and extends its lock each time: keep it well below the lock timeout.
beat_max_loop_interval = 5
# The URL's user and password go to RedBeat's client as options: `celery inspect conf` (Flower's worker
# page) masks a `password` key and the broker and *backend* URLs, but would show redbeat_redis_url whole.
_beat_redis = urlsplit(os.environ.get("CHECKGATE_BEAT_REDIS_URL", result_backend))
redbeat_redis_url = urlunsplit(_beat_redis._replace(netloc=_beat_redis.netloc.rpartition("@")[2]))
redbeat_key_prefix = f"checkgate:{QUEUE_PREFIX}beat:"
redbeat_lock_timeout = int(os.environ.get("CHECKGATE_BEAT_LOCK_TIMEOUT", "30"))
# Options for RedBeat's Redis client (unset, RedBeat would fall back to the broker's transport options).
redbeat_redis_options = {}
if _beat_redis.username:
    redbeat_redis_options["username"] = unquote(_beat_redis.username)
if _beat_redis.password:
    redbeat_redis_options["password"] = unquote(_beat_redis.password)
if redbeat_redis_url.startswith("rediss://"):
    redbeat_redis_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if os.environ.get("CHECKGATE_BACKEND_CA"):
        redbeat_redis_use_ssl["ssl_ca_certs"] = os.environ["CHECKGATE_BACKEND_CA"]
