"""Celery workers consuming over librabbitmq (tasks/transport.py, `CHECKGATE_BROKER_TRANSPORT=librabbitmq`):
what acks_late, prefetch, queue bindings and warm shutdown promise on py-amqp holds there too.

One stack for the module (its own prefix; a gateway publishing as always); each test starts the workers
it needs and leaves its queues empty. Skipped (failed under CI) where librabbitmq does not import.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from kombu import Connection

from tasks.transport import SCHEME, with_transport
from tests.support.env import BROKER_URL
from tests.support.stack import Stack, http_get, http_get_in_background


@pytest.fixture(scope="module")
def lr_stack(librabbitmq_stack: Stack) -> Stack:
    return librabbitmq_stack


@pytest.fixture(scope="module")
def lr_gateway(lr_stack: Stack) -> str:
    return lr_stack.start_gateway("gw")


def queue_counts(stack: Stack, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of the stack's `queue`, by a passive declare over py-amqp."""
    with Connection(with_transport(BROKER_URL, "pyamqp"), connect_timeout=10) as conn:
        _, ready, consumers = conn.default_channel.queue_declare(queue=stack.prefix + queue, passive=True)
    return ready, consumers


def stats(stack: Stack, node: str) -> dict:
    out = stack.client_app().control.inspect(destination=[node], timeout=5).stats() or {}
    return out[node]


def stats_all(stack: Stack) -> dict:
    return stack.client_app().control.inspect(timeout=2).stats() or {}


def test_workers_consume_over_librabbitmq_and_say_so(lr_stack: Stack, lr_gateway: str) -> None:
    # prefork, as the add workers run under supervisord: the pool pickles each message body to its child.
    lr_stack.start_worker("adder", ["add"], pool="prefork", concurrency=1)
    status, body, _ = http_get(f"{lr_gateway}/add?x=20&y=22")
    assert (status, body["result"]) == (200, 42), body
    node = body["worker"]
    assert node.startswith(f"{lr_stack.prefix}adder@")
    assert stats(lr_stack, node)["broker"]["transport"] == SCHEME
    # /health names each worker's client (the console shows the same): one on py-amqp beside it.
    lr_stack.start_worker("py", ["add"], pool="threads", concurrency=1, env={"CHECKGATE_BROKER_TRANSPORT": "pyamqp"})
    py_node = next(n for n in stats_all(lr_stack) if n.startswith(f"{lr_stack.prefix}py@"))
    deadline = time.monotonic() + 20
    while True:
        _, health, _ = http_get(f"{lr_gateway}/health")
        if {node, py_node} <= set(health["workers"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert health["workers"][node] == {"transport": SCHEME, "client": "librabbitmq"}, health["workers"]
    assert health["workers"][py_node]["client"] == "py-amqp", health["workers"]
    for name in ("adder", "py"):
        lr_stack.kill(name, signal.SIGTERM)


def test_acks_late_task_of_a_sigkilled_worker_is_redelivered(lr_stack: Stack, lr_gateway: str) -> None:
    lr_stack.start_worker("doomed", ["sleep"], pool="threads", concurrency=2)
    answer = http_get_in_background(f"{lr_gateway}/check/sleep?ms=1000&timeout=60", 60)
    lr_stack.wait_for_log("doomed", "Task checkgate.sleep[")
    lr_stack.kill("doomed", signal.SIGKILL)
    assert not answer.done()
    lr_stack.start_worker("heir", ["sleep"], pool="threads", concurrency=2)
    status, body, _ = answer.result(timeout=60)
    assert status == 200, body
    assert body["result"] == {"ok": True, "slept_ms": 1000}
    assert body["worker"].startswith(f"{lr_stack.prefix}heir@")
    lr_stack.kill("heir", signal.SIGTERM)


def test_a_worker_holds_one_message_per_slot(lr_stack: Stack, lr_gateway: str) -> None:
    lr_stack.start_worker("single", ["sleep"], pool="threads", concurrency=1)
    answers = [http_get_in_background(f"{lr_gateway}/check/sleep?ms=600&timeout=60", 60) for _ in range(3)]
    lr_stack.wait_for_log("single", "Task checkgate.sleep[")
    time.sleep(0.3)
    # Prefetch 1 (worker_prefetch_multiplier 1 × 1 slot): two of the three wait in the queue, not in the worker.
    assert queue_counts(lr_stack, "sleep") == (2, 1)
    for answer in answers:
        status, body, _ = answer.result(timeout=60)
        assert status == 200, body
    lr_stack.kill("single", signal.SIGTERM)


def test_a_worker_takes_nothing_from_a_queue_it_is_not_bound_to(lr_stack: Stack, lr_gateway: str) -> None:
    lr_stack.start_worker("only-add", ["add"], pool="threads", concurrency=2)
    status, body, _ = http_get(f"{lr_gateway}/check/sleep?ms=0&mode=async&timeout=30")
    assert status == 202, body
    status, added, _ = http_get(f"{lr_gateway}/add?x=1&y=2")
    assert (status, added["result"]) == (200, 3), added
    time.sleep(0.5)
    assert queue_counts(lr_stack, "sleep") == (1, 0)
    assert "Task checkgate.sleep[" not in lr_stack.logs["only-add"].read_text(errors="replace")
    # The sleep check runs once a worker of its own queue is there, and the queue is left empty.
    lr_stack.start_worker("sleeper", ["sleep"], pool="threads", concurrency=2)
    status, done, _ = http_get(f"{lr_gateway}/result/{body['id']}")
    deadline = time.monotonic() + 20
    while done.get("state") != "SUCCESS" and time.monotonic() < deadline:
        time.sleep(0.1)
        status, done, _ = http_get(f"{lr_gateway}/result/{body['id']}")
    assert done["state"] == "SUCCESS", done
    for name in ("only-add", "sleeper"):
        lr_stack.kill(name, signal.SIGTERM)


def test_warm_shutdown_finishes_and_acks_the_running_task(lr_stack: Stack, lr_gateway: str) -> None:
    lr_stack.start_worker("leaving", ["sleep"], pool="threads", concurrency=2)
    answer = http_get_in_background(f"{lr_gateway}/check/sleep?ms=1500&timeout=60", 60)
    lr_stack.wait_for_log("leaving", "Task checkgate.sleep[")
    lr_stack.kill("leaving", signal.SIGTERM)  # returns once the worker exited
    status, body, _ = answer.result(timeout=10)
    assert status == 200, body
    assert body["worker"].startswith(f"{lr_stack.prefix}leaving@")
    # Acknowledged before the worker left: nothing back in the queue to run again.
    assert queue_counts(lr_stack, "sleep") == (0, 0)
    assert "succeeded in" in Path(lr_stack.logs["leaving"]).read_text(errors="replace")


def test_consumers_resumed_under_a_full_queue_run_its_tasks(lr_stack: Stack, lr_gateway: str) -> None:
    """Deliveries that arrive while librabbitmq waits for a reply (here basic.consume of `add_consumer`)
    sit in its buffer with the socket quiet: without the transport's buffer drain the worker held its two
    prefetched tasks and ran nothing (0 of 2,000 in 10 s)."""
    from datetime import UTC, datetime, timedelta

    from celery.result import AsyncResult

    from bench.drain import control, publish

    lr_stack.start_worker("resumed", ["add"], pool="prefork", concurrency=2)
    app = lr_stack.client_app()
    node = next(n for n in stats_all(lr_stack) if n.startswith(f"{lr_stack.prefix}resumed@"))
    for warm in [app.send_task("checkgate.add", kwargs={"x": i, "y": 1}) for i in range(100)]:
        warm.get(timeout=30)
    time.sleep(0.5)
    queue = lr_stack.prefix + "add"
    control(app, "cancel_consumer", queue, [node])
    ids = publish(app, "checkgate.add", {"x": 1, "y": 2}, 300, datetime.now(UTC) + timedelta(seconds=60))
    control(app, "add_consumer", queue, [node])
    deadline = time.monotonic() + 20
    for task_id in ids:
        AsyncResult(task_id, app=app).get(timeout=max(0.1, deadline - time.monotonic()))
    lr_stack.kill("resumed", signal.SIGTERM)
