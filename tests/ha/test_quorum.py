"""Quorum queues with our celeryconfig (CHECKGATE_QUEUE_TYPE=quorum): a check runs through one, the
broker drops a message whose TTL (the caller's deadline) passed, and a poison message stops at the
delivery limit. One private node here (the smoke); the 3-node cluster is in test_cluster.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from kombu import Connection

from tests.ha.conftest import ha_stack
from tests.support.ha_checks import deliveries
from tests.support.infra import missing_redis, require
from tests.support.runs import TestRun
from tests.support.services import PrivateRabbit, PrivateRedis
from tests.support.stack import Stack, http_get


@pytest.fixture(scope="module")
def results(ha_run: TestRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    require(missing_redis())
    server = PrivateRedis(tmp_path_factory.mktemp("redis"), env=ha_run.env)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def quorum_stack(
    ha_run: TestRun, rabbit_node: PrivateRabbit, results: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A prefork worker (a killed pool child is a WorkerLostError, requeued) on the `mark` and `crash` queues;
    a delivery limit of 2 keeps the poison test short (each delivery costs a pool child)."""
    stack = ha_stack(
        tmp_path_factory.mktemp("stack"),
        ha_run,
        rabbit_node.url,
        results.url,
        results.url,
        CHECKGATE_DELIVERY_LIMIT="2",
    )
    try:
        stack.start_worker("w", ["mark", "crash"], pool="prefork", concurrency=2)
        yield stack
    finally:
        stack.stop()


def delivery_limit(app: Celery) -> int:
    """The x-delivery-limit every check queue of `app` is declared with."""
    limits = {q.queue_arguments["x-delivery-limit"] for q in app.conf.task_queues}
    assert len(limits) == 1
    return limits.pop()


def message_count(app: Celery, queue: str) -> int:
    with Connection(app.conf.broker_url) as conn:
        return conn.default_channel.queue_declare(queue, passive=True).message_count


def test_a_check_runs_through_a_quorum_queue(
    quorum_stack: Stack, rabbit_node: PrivateRabbit, results: PrivateRedis
) -> None:
    app = quorum_stack.client_app()
    tag = f"{quorum_stack.prefix}e2e"
    answer = app.send_task("checkgate.mark", kwargs={"tag": tag, "ms": 0}, expires=30).get(timeout=30)
    assert answer["ok"] is True
    assert answer["worker"] == f"{quorum_stack.prefix}w@{answer['worker'].split('@')[1]}"
    queue = rabbit_node.queues("type", "arguments")[f"{quorum_stack.prefix}mark"]
    assert queue["type"] == "quorum"
    # rabbitmqctl shows arguments as [name, type, value] triples
    assert {name: value for name, _, value in queue["arguments"]}["x-delivery-limit"] == delivery_limit(app) == 2


def test_the_gateway_declares_the_quorum_queues_as_the_workers_do(quorum_stack: Stack) -> None:
    """Its declaration (arguments from the same celeryconfig, delivery limit included) must be equivalent
    to the workers', or RabbitMQ closes its channel with PRECONDITION_FAILED."""
    gateway = quorum_stack.start_gateway("gw")
    status, body, _ = http_get(f"{gateway}/check/mark?tag={quorum_stack.prefix}via-gw&ms=0&timeout=20")
    assert status == 200, body
    assert body["result"]["ok"] is True
    quorum_stack.kill("gw")


def test_the_broker_drops_a_task_whose_deadline_passed(quorum_stack: Stack) -> None:
    """Per-message TTL on a quorum queue (RabbitMQ >= 3.10): no worker consumes `mark_once` here."""
    app = quorum_stack.client_app()
    queue = f"{quorum_stack.prefix}mark_once"
    app.send_task("checkgate.mark_once", kwargs={"tag": "late", "ms": 0}, expires=1)
    app.send_task("checkgate.mark_once", kwargs={"tag": "in-time", "ms": 0}, expires=120)
    deadline = time.monotonic() + 30
    while (count := message_count(app, queue)) != 1:
        assert count == 2 and time.monotonic() < deadline, f"{count} messages in {queue}"
        time.sleep(0.2)
    time.sleep(1)  # and the one in time stays
    assert message_count(app, queue) == 1
    with Connection(app.conf.broker_url) as conn:
        conn.default_channel.queue_purge(queue)


def test_a_poison_message_stops_at_the_delivery_limit(quorum_stack: Stack, results: PrivateRedis) -> None:
    app = quorum_stack.client_app()
    limit = delivery_limit(app)
    client = redis.Redis.from_url(results.url)
    tag = f"{quorum_stack.prefix}poison"
    poison = app.send_task("checkgate.crash", kwargs={"tag": tag}, expires=120)
    queue = f"{quorum_stack.prefix}crash"
    deadline = time.monotonic() + 90
    # Each delivery kills the pool child that runs it; Celery requeues (reject_on_worker_lost) until the
    # queue has returned it `limit` times, then drops it.
    while len(deliveries(client, tag)) < limit + 1 or message_count(app, queue) != 0:
        assert time.monotonic() < deadline, f"{len(deliveries(client, tag))} deliveries so far"
        time.sleep(0.2)
    time.sleep(3)  # no further delivery comes
    assert len(deliveries(client, tag)) == limit + 1
    assert message_count(app, queue) == 0
    assert poison.state == "PENDING"  # dropped unrun: nothing stored (the caller's deadline answers it)
    # The worker lived through it: the next check runs.
    assert app.send_task("checkgate.mark", kwargs={"tag": f"{tag}-after", "ms": 0}, expires=30).get(timeout=30)["ok"]
