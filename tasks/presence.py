"""Each worker says which AMQP client it consumes with, where the gateway reads it without blocking.

`/health` lists the workers and their client (py-amqp or librabbitmq, issue #17). Celery's own way to
ask them, ``app.control.inspect().stats()``, is a blocking broadcast (a kombu publish, then waiting for
replies on a queue of its own) that the gateway may neither run on its loop nor push into a thread pool.
So the workers announce themselves instead: from `worker_ready` on, a daemon thread of each worker writes
``HSET checkgate:workers:<queue prefix> <node> {"transport", "seen"}`` every `ANNOUNCE_S` seconds through
the result backend's Redis client (Sentinel-aware, the one results go through), refreshes the hash's
expiry, and removes its field at `worker_shutdown`. The gateway reads the hash with its asyncio Redis
client and shows the entries seen within `STALE_S` (a SIGKILLed worker drops out then).

Cost: one HSET and one EXPIRE per worker every 10 s. Result backends that are not Redis announce nothing
(the list is then empty; the queues' consumer counts in `/health` still say who consumes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any

import redis
from celery.signals import worker_shutdown

from tasks.schedule import deployment_prefix

log = logging.getLogger(__name__)

KEY_PREFIX = "checkgate:workers:"
ANNOUNCE_S = 10.0
# An entry older than this is a worker that stopped announcing (killed, or its host gone).
STALE_S = 3 * ANNOUNCE_S
# kombu's transport names → the AMQP client a person knows.
CLIENTS = {
    "amqp": "py-amqp",
    "pyamqp": "py-amqp",
    "amqps": "py-amqp",
    "librabbitmq": "librabbitmq",
    "librabbitmq-celery": "librabbitmq",  # tasks/transport.py's scheme
}

_stop = threading.Event()


def presence_key(queue_prefix: str) -> str:
    """The Redis hash of the workers of the deployment whose queues carry `queue_prefix`."""
    return KEY_PREFIX + queue_prefix


def client_of(transport: str) -> str:
    """The AMQP client a kombu transport name stands for ("py-amqp", "librabbitmq", or the name)."""
    return CLIENTS.get(transport, transport or "unknown")


def read_entries(raw: dict[Any, Any], now: float) -> dict[str, dict[str, str]]:
    """Node → {"transport", "client"} of the hash's fields seen within `STALE_S` of `now` (epoch seconds);
    fields that are not this module's JSON are skipped."""
    out: dict[str, dict[str, str]] = {}
    for node, value in raw.items():
        try:
            entry = json.loads(value)
            seen = float(entry["seen"])
            transport = str(entry["transport"])
        except (ValueError, TypeError, KeyError):
            continue
        if now - seen <= STALE_S:
            name = node.decode() if isinstance(node, bytes) else str(node)
            out[name] = {"transport": transport, "client": client_of(transport)}
    return out


def start_announcing(sender: Any = None, **_: Any) -> None:
    """Celery's `worker_ready` handler (connected by tasks/celery.py): announce this worker until it stops."""
    app, node = sender.app, sender.hostname
    client = getattr(app.backend, "client", None)
    if not isinstance(client, redis.Redis):
        return
    key = presence_key(deployment_prefix())
    transport = str(app.connection_for_read().info().get("transport", ""))
    _stop.clear()

    def announce() -> None:
        while True:
            try:
                value = json.dumps({"transport": transport, "seen": time.time()})
                with client.pipeline() as pipe:
                    pipe.hset(key, node, value).expire(key, int(STALE_S)).execute()
            except redis.RedisError as exc:  # the backend away: the next round tries again
                log.debug("worker presence not written: %s", exc)
            if _stop.wait(ANNOUNCE_S):
                return

    threading.Thread(target=announce, name="checkgate-presence", daemon=True).start()

    def withdraw(**_: Any) -> None:
        _stop.set()
        with contextlib.suppress(redis.RedisError):  # else the entry goes stale by itself
            client.hdel(key, node)

    worker_shutdown.connect(withdraw, weak=False)
