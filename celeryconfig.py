"""Celery settings shared by the workers and the gateway.

Queues, exchange and routes come from the check registry: one durable queue per check type on one
direct exchange, each task routed to its type's queue. Every URL and name can be overridden from the
environment (`CHECKGATE_*`), so one file serves a laptop, CI and a fleet of worker machines.
"""

import os
import ssl
from urllib.parse import unquote, urlsplit, urlunsplit

from kombu import Exchange, Queue
from kombu.utils.url import url_to_parts

from gateway.config import env_number
from tasks import locations, transport
from tasks.registry import load_checks

# A clustered broker is a kombu failover list, every node of the cluster: "amqp://…@h1:5672//;amqp://…@h2:5672//;…"
# (a client that loses its node goes to the next one at once, then round-robin with back-off).
broker_url = os.environ.get("CHECKGATE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# The order in which clients try the nodes of that list: kombu's "round-robin" (the list's order), or
# "shuffle", which spreads the clients (gateway processes, workers after their first node) over the nodes.
broker_failover_strategy = os.environ.get("CHECKGATE_BROKER_FAILOVER_STRATEGY", "round-robin")
# Redis behind Sentinel: "sentinel://h1:26379/0;sentinel://h2:26379/0;…" plus the name the sentinels know
# the master by (CHECKGATE_SENTINEL_MASTER_NAME); the backend asks them for the master again after a failover.
result_backend = os.environ.get("CHECKGATE_RESULT_BACKEND", "redis://127.0.0.1:6379/0")
SENTINEL_MASTER_NAME = os.environ.get("CHECKGATE_SENTINEL_MASTER_NAME", "")
if result_backend.startswith("sentinel://"):
    if not SENTINEL_MASTER_NAME:
        raise ValueError("CHECKGATE_RESULT_BACKEND is a sentinel:// list: set CHECKGATE_SENTINEL_MASTER_NAME too")
    result_backend_transport_options = {"master_name": SENTINEL_MASTER_NAME}

# TLS: amqps:// and rediss:// URLs are verified against these CA bundles (the system's when unset);
# a Redis password goes in the URL (rediss://:password@host:6380/0).
if broker_url.startswith(("amqps://", "pyamqps://")):
    broker_use_ssl = {"cert_reqs": ssl.CERT_REQUIRED}
    if os.environ.get("CHECKGATE_BROKER_CA"):
        broker_use_ssl["ca_certs"] = os.environ["CHECKGATE_BROKER_CA"]
    # A broker that requires client certificates (mutual TLS): workers and gateway present this one.
    if os.environ.get("CHECKGATE_BROKER_CERT"):
        broker_use_ssl["certfile"] = os.environ["CHECKGATE_BROKER_CERT"]
        broker_use_ssl["keyfile"] = os.environ.get("CHECKGATE_BROKER_KEY") or None
# The workers' AMQP client (tasks/transport.py): py-amqp, or librabbitmq where it is installed, the URL is
# plain amqp:// and the broker is on this host (CHECKGATE_BROKER_TRANSPORT=auto); amqps:// always py-amqp.
# Each URL of the list is rewritten to its transport's own scheme, so that neither kombu's silent switch of
# a bare amqp:// to its stock librabbitmq transport (whose consumers fail on kombu 5.x) nor a failover
# switch to another node can change it.
WORKER_TRANSPORT = transport.choose(os.environ.get(transport.VARIABLE, "auto"), broker_url)
broker_url = transport.with_transport(broker_url, WORKER_TRANSPORT)
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
# A quorum queue drops a message returned to it more than this many times (worker crashes, lost
# connections, requeues), so a poison message that kills whatever runs it cannot circle for ever. Dropped,
# not dead-lettered: a dead-letter exchange would also receive every message that expires unrun (the
# 504s of an overload), extra broker work exactly when it is busiest; each crash is in the worker's log.
# The arguments of a queue are fixed when it is first declared: changing the limit means deleting the
# queues (or overriding it with a RabbitMQ policy).
DELIVERY_LIMIT = env_number("CHECKGATE_DELIVERY_LIMIT", 5, minimum=1)
QUEUE_ARGUMENTS = {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT} if QUEUE_TYPE == "quorum" else None

check_exchange = Exchange(f"{QUEUE_PREFIX}checkgate", type="direct", durable=True)
_CHECKS = load_checks()
_QUEUE_NAMES = sorted({QUEUE_PREFIX + c.queue for c in _CHECKS.values()})
# Checks from several locations (tasks/locations.py): every check queue has a `<queue>@<location>` twin per
# location of the deployment (CHECKGATE_LOCATIONS), declared alike; a worker's own location
# (CHECKGATE_LOCATION) is declared too, so a worker whose environment lacks the list still finds its queues.
LOCATIONS = locations.configured()
WORKER_LOCATION = locations.worker_location()
WORKER_LOCATION_ONLY = locations.worker_location_only()
if WORKER_LOCATION_ONLY and not WORKER_LOCATION:
    raise ValueError("CHECKGATE_LOCATION_ONLY is set but CHECKGATE_LOCATION is not")
_LOCATED = sorted({*LOCATIONS, WORKER_LOCATION} - {""})
if _LOCATED and locations.SEPARATOR in QUEUE_PREFIX:
    raise ValueError(f"CHECKGATE_QUEUE_PREFIX: no {locations.SEPARATOR!r} with locations (it separates them)")
_QUEUE_NAMES += [locations.location_queue(name, where) for where in _LOCATED for name in _QUEUE_NAMES]

task_queues = tuple(
    Queue(
        name,
        check_exchange,
        routing_key=name,
        durable=True,
        queue_arguments=QUEUE_ARGUMENTS,
    )
    for name in _QUEUE_NAMES
)
task_routes = {c.task_name: {"queue": QUEUE_PREFIX + c.queue} for c in _CHECKS.values()}
task_default_queue = f"{QUEUE_PREFIX}celery"
task_default_queue_type = QUEUE_TYPE
# Celery's consumer minus native delayed delivery, which cannot serve a direct exchange (tasks/consumer.py).
worker_consumer = "tasks.consumer:Consumer"
control_exchange = f"{QUEUE_PREFIX}celery"
event_exchange = f"{QUEUE_PREFIX}celeryev"

# msgpack is smaller and faster than JSON for bodies and results; JSON stays accepted for other clients.
task_serializer = "msgpack"
result_serializer = "msgpack"
accept_content = ["msgpack", "json"]
result_accept_content = ["msgpack", "json"]

# Results live long enough for `/result/<id>` polling, then Redis expires them itself.
result_expires = env_number("CHECKGATE_RESULT_EXPIRES", 3600, minimum=1, unit="seconds")
# A check's result larger than this, encoded, is stored as `ok: false, reason: result_too_large` (tasks/results.py).
checkgate_max_result_bytes = env_number("CHECKGATE_MAX_RESULT_BYTES", 1024 * 1024, minimum=1024)
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

# Dead worker hosts, found fast. A host that vanishes (power, link) sends no FIN: RabbitMQ notices only
# that nothing arrives any more. It checks every heartbeat timeout T and closes the connection after two
# checks without a byte, 2T–3T after the last one (rabbit_heartbeat.erl), and requeues the connection's
# unacknowledged tasks at once. T is the smaller of the broker's offer (60 s by default: 120–180 s, past
# every check's deadline) and ours, so 5 s here bounds the detection by 15 s (measured: README, "Running on
# many machines"). The worker checks every T/4 (checkrate 4) and sends a heartbeat when it sent nothing
# since the last one, so only a consumer loop stalled for more than ~7 s would be taken for dead; an idle
# connection carries one 8-byte heartbeat frame each way every 2.5 s (measured: 0.4 frames/s).
# (py-amqp workers. librabbitmq workers send no heartbeats: T sets their socket's TCP keepalive instead, and
# the broker needs keepalive of its own to drop their hosts; tasks/transport.py, README "Worker transports".)
broker_heartbeat = env_number("CHECKGATE_BROKER_HEARTBEAT", 5, minimum=0, unit="seconds")
broker_heartbeat_checkrate = 4
# The worker's side of a vanished broker node: py-amqp aborts a connection whose written data stays
# unacknowledged for 1 s (its TCP_USER_TIMEOUT default); one that stops answering without any write
# outstanding is caught by its missing heartbeats within 2T. (A longer TCP_USER_TIMEOUT would suit lossy
# long-distance links better, but py-amqp takes it only as an int-keyed socket option, and that dict in
# the transport options makes every worker's `celery inspect stats` reply undecodable to msgpack clients:
# Flower's worker page and `checkgate status`-style tools break.)
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
_beat_url = os.environ.get("CHECKGATE_BEAT_REDIS_URL", result_backend)
redbeat_key_prefix = f"checkgate:{QUEUE_PREFIX}beat:"
redbeat_lock_timeout = env_number("CHECKGATE_BEAT_LOCK_TIMEOUT", 30, minimum=1, unit="seconds")
# Options for RedBeat's Redis client (unset, RedBeat would fall back to the broker's transport options).
redbeat_redis_options = {}
if _beat_url.startswith("sentinel://"):
    # RedBeat speaks Sentinel through its own form: a redis-sentinel:// URL and the sentinels as options.
    _sentinels = [url_to_parts(part) for part in _beat_url.split(";")]
    redbeat_redis_options = {
        "sentinels": [(p.hostname, p.port or 26379) for p in _sentinels],
        "service_name": SENTINEL_MASTER_NAME,
        "db": int(_sentinels[0].path or 0),
        "password": _sentinels[0].password,
    }
    redbeat_redis_url = "redis-sentinel://"
else:
    _beat_redis = urlsplit(_beat_url)
    redbeat_redis_url = urlunsplit(_beat_redis._replace(netloc=_beat_redis.netloc.rpartition("@")[2]))
    if _beat_redis.username:
        redbeat_redis_options["username"] = unquote(_beat_redis.username)
    if _beat_redis.password:
        redbeat_redis_options["password"] = unquote(_beat_redis.password)
if redbeat_redis_url.startswith("rediss://"):
    redbeat_redis_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if os.environ.get("CHECKGATE_BACKEND_CA"):
        redbeat_redis_use_ssl["ssl_ca_certs"] = os.environ["CHECKGATE_BACKEND_CA"]
