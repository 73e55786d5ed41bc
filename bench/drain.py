"""The drain: what the workers alone get through of one task, from a queue filled in advance — a bound.

`python -m bench.drain '<plan JSON>'` is one drain process, spoken to like a floor process
(bench.floor): it pauses the workers' consumers of the plan's queue (Celery's `cancel_consumer`
remote-control command), publishes `tasks` messages of the plan's task into it, prints `READY`, reads
the start time t0 (epoch seconds) from stdin, resumes the consumers at t0 (`add_consumer`), waits
until the measurement window [ceil(t0 + window_at), + window) has closed and the results of its tasks
are stored, and ends with one line: `BENCH_JSON {"streams": {name: stats}, "drain": {details}}`.

No front end runs meanwhile: no HTTP, no client waiting on results, no publishing during the window
(the queue is full before it opens). The rate is the number of results whose `date_done` (stamped by
the worker when it stores the result) falls in the window, divided by the window — as wrk counts
answers completed in it; the harness samples the workers' CPU over the same window. A window of a
whole number of task times counts every busy slot the same number of times.

If the queue ran dry before the window closed (`starved`: more published would have been needed), the
rate is taken over the part of the window the queue lasted, or, if that is under a second, over the
drain's last 90 % (the harness learns the rate and publishes more in the next round).

Messages are made by Celery's own `create_task_message` and serialized by kombu; only the write is
py-amqp's `basic_publish` without publisher confirms — `send_task` with confirms publishes ten times
slower, and the prefill is not measured, only waited for. They are transient (delivery mode 1): a deep
queue of persistent messages makes RabbitMQ write each to its message store and journal each ack, work
that the front ends' messages, consumed as soon as they arrive, mostly skip — a bound must not charge
the workers for the broker's disk. Task ids carry the run's queue prefix, and the results are deleted
once read.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import amqp
from kombu import Connection
from kombu.serialization import dumps

from bench.floor import MARKER, READY
from bench.scenarios import UNIQUE
from tasks.transport import with_transport

# Seconds after the window for the results of the tasks that ended in it to be stored and read.
STORE_GRACE_S = 0.5
# Results read from Redis per MGET.
CHUNK = 1000
# A window this short (s) of an emptied queue is too short to give a rate over the window.
MIN_RATE_SPAN_S = 1.0


def pyamqp_url(url: str) -> str:
    """`url` (the first node of a failover list) naming py-amqp, whatever else is installed or configured:
    kombu takes a bare `amqp://` for librabbitmq when that imports, and celeryconfig may have put the
    workers' `librabbitmq-celery://` there (tasks/transport.py). The prefill writes py-amqp messages."""
    return with_transport(url.split(";")[0].strip(), "pyamqp")


def control(app: Any, command: str, queue: str, nodes: list[str]) -> None:
    """`cancel_consumer` or `add_consumer` of `queue` on every node; raises unless each answered ok."""
    replies = getattr(app.control, command)(queue, destination=nodes, reply=True, timeout=10)
    answered = {node: body for reply in replies or [] for node, body in reply.items()}
    bad = {node: answered.get(node) for node in nodes if "ok" not in (answered.get(node) or {})}
    if bad:
        raise RuntimeError(f"{command} {queue}: no ok from {bad}")


def publish(app: Any, task: str, kwargs: dict[str, Any], count: int, expires: datetime) -> list[str]:
    """`count` messages of `task` on its queue, each kwargs with its own number where the plan says UNIQUE;
    the task ids, in order."""
    prefix = os.environ.get("CHECKGATE_QUEUE_PREFIX", "")
    queue = app.amqp.router.route({}, task)["queue"]
    ids = []
    with Connection(pyamqp_url(app.conf.broker_url), connect_timeout=10) as conn:
        channel = conn.default_channel
        for n in range(count):
            task_id = f"{prefix}drain-{uuid.uuid4().hex}"
            concrete = {k: n if v == UNIQUE else v for k, v in kwargs.items()}
            message = app.amqp.create_task_message(task_id, task, (), concrete, expires=expires)
            content_type, encoding, body = dumps(message.body, serializer=app.conf.task_serializer)
            props = {k: v for k, v in message.properties.items() if v is not None}
            channel.basic_publish(
                amqp.Message(
                    body,
                    content_type=content_type,
                    content_encoding=encoding,
                    application_headers=message.headers,
                    delivery_mode=1,
                    **props,
                ),
                exchange="",
                routing_key=queue.name,
            )
            ids.append(task_id)
    return ids


def done_times(app: Any, ids: list[str]) -> tuple[list[float], int]:
    """(epoch seconds each stored result was done, ascending; how many of those failed), then deleted."""
    client = app.backend.client
    times: list[float] = []
    failed = 0
    for start in range(0, len(ids), CHUNK):
        keys = [f"celery-task-meta-{i}" for i in ids[start : start + CHUNK]]
        for raw in client.mget(keys):
            if raw is None:
                continue
            meta = app.backend.decode_result(raw)
            done = datetime.fromisoformat(str(meta["date_done"]))
            if done.tzinfo is None:
                done = done.replace(tzinfo=UTC)  # Celery stores UTC
            times.append(done.timestamp())
            failed += meta.get("status") != "SUCCESS"
        client.delete(*keys)
    return sorted(times), failed


def rate(times: list[float], published: int, window_start: float, window_end: float) -> dict[str, Any]:
    """The drain's stats over the window, from the results' done times (ascending); see the module docstring."""
    window_s = window_end - window_start
    in_window = sum(window_start <= t < window_end for t in times)
    starved = len(times) >= published and bool(times) and times[-1] < window_end
    rps = in_window / window_s
    span = window_s
    if starved:
        span = times[-1] - window_start
        if span >= MIN_RATE_SPAN_S:
            rps = in_window / span
        else:
            skip = len(times) // 10
            span = times[-1] - times[skip] if len(times) > skip + 1 else 0.0
            rps = (len(times) - 1 - skip) / span if span > 0 else 0.0
    return {"rps": round(rps, 2), "requests": in_window, "starved": starved, "rate_span_s": round(span, 2)}


def run(plan: dict[str, Any], t0_source: Any) -> dict[str, Any]:
    """Pause, fill, wait for t0 from `t0_source` (a readable line), resume, measure; see the module docstring."""
    from tasks.celery import app

    stream, queue, nodes = plan["stream"], plan["queue"], plan["nodes"]
    window_s = plan["window"]
    expires = datetime.now(UTC) + timedelta(seconds=stream["window_at"] + window_s + 120)
    control(app, "cancel_consumer", queue, nodes)
    resumed = False
    try:
        ids = publish(app, stream["task"], stream["kwargs"], plan["tasks"], expires)
        print(READY, flush=True)
        t0 = float(t0_source.readline())
        time.sleep(max(0.0, t0 - time.time()))
        control(app, "add_consumer", queue, nodes)
        resumed = True
    finally:
        if not resumed:
            control(app, "add_consumer", queue, nodes)
    window_start = math.ceil(t0 + stream["window_at"])
    window_end = window_start + window_s
    time.sleep(max(0.0, window_end + max(STORE_GRACE_S, stream["task_s"]) - time.time()))
    times, failed = done_times(app, ids)
    measured = rate(times, len(ids), window_start, window_end)
    stats = {
        "rps": measured["rps"],
        "requests": measured["requests"],
        "window_s": window_s,
        # Not a closed loop: a task's time in the queue depends only on how many were published.
        "p50_ms": None,
        "p90_ms": None,
        "p99_ms": None,
        "max_ms": None,
        "errors": failed,
        "error_detail": {"task_failed": failed},
        "total_requests": len(times),
    }
    details = {"published": len(ids), "done": len(times), **measured}
    return {"streams": {stream["name"]: stats}, "drain": details}


def main() -> int:
    plan = json.loads(sys.argv[1])
    out = run(plan, sys.stdin)
    print(MARKER + json.dumps(out, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
