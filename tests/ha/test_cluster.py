"""Checks on a 3-node RabbitMQ cluster with quorum queues: the worker (and Celery's own client) follow
the cluster when the node they use is killed, and the node comes back into the cluster with its data."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import redis
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from tests.ha import measured
from tests.ha.conftest import full_only, ha_stack
from tests.support.ha_checks import deliveries
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.runs import TestRun
from tests.support.services import PrivateRedis

pytestmark = full_only

CONNECTED = re.compile(r"Connected to amqp://[^@]+@[^:]+:(\d+)//")


def connected_ports(log: Path) -> list[int]:
    """The AMQP port of every broker node the worker connected to, in order (from its log)."""
    return [int(port) for port in CONNECTED.findall(log.read_text(errors="replace"))]


def test_a_killed_node_moves_workers_and_clients_to_the_others(
    ha_run: TestRun, cluster: RabbitCluster, bridge_redis: PrivateRedis, tmp_path: Path
) -> None:
    stack = ha_stack(tmp_path, ha_run, cluster.url, bridge_redis.url, bridge_redis.url)
    records = redis.Redis.from_url(bridge_redis.url)
    try:
        stack.start_worker("w", ["mark"], concurrency=10)
        app = stack.client_app()
        assert app.send_task("checkgate.mark", kwargs={"tag": f"{stack.prefix}first", "ms": 0}, expires=30).get(
            timeout=30
        )["ok"]
        queue = f"{stack.prefix}mark"
        assert sorted(cluster.quorum_members(queue)) == sorted(n.node for n in cluster.nodes)

        victim = cluster.index_of_port(connected_ports(stack.logs["w"])[-1])
        sent: list[tuple[str, AsyncResult]] = []
        refused: list[float] = []
        stop = threading.Event()

        def load() -> None:
            # Celery's client publishes with confirms and retries on the next node of the failover list;
            # while the queue elects a new leader the broker nacks: a refusal the caller sees, not a loss.
            i = 0
            while not stop.is_set():
                tag = f"{stack.prefix}{i}"
                try:
                    sent.append((tag, app.send_task("checkgate.mark", kwargs={"tag": tag, "ms": 300}, expires=60)))
                except OperationalError:
                    refused.append(time.time())
                i += 1
                time.sleep(0.05)

        thread = threading.Thread(target=load)
        thread.start()
        try:
            time.sleep(3)
            killed_at = time.time()
            cluster.kill(victim)
            deadline = time.monotonic() + 60
            while len(ports := connected_ports(stack.logs["w"])) < 2:
                assert time.monotonic() < deadline, "the worker did not reconnect to another node"
                time.sleep(0.2)
            assert cluster.index_of_port(ports[-1]) != victim
            time.sleep(5)
        finally:
            stop.set()
            thread.join()

        # Every check published before, during and after the kill ran (some twice: redelivered from the
        # dead node's channel, or published again after an unconfirmed first try; `mark` is idempotent).
        assert all(result.get(timeout=60)["ok"] for _, result in sent)
        resumed = min(
            d["started"] for tag, _ in sent for d in deliveries(records, tag) if d["started"] > killed_at + 0.05
        )
        measured.record(
            "broker node the worker used killed",
            worker_resumed_after=resumed - killed_at,
            accepted=len(sent),
            lost=0,
            refused=len(refused),
            refused_from=refused[0] - killed_at if refused else None,
            refused_until=refused[-1] - killed_at if refused else None,
        )

        restarted = time.monotonic()
        cluster.restart(victim)
        members = cluster.nodes[victim].queues("members", "online")[queue]
        assert sorted(members["online"]) == sorted(n.node for n in cluster.nodes)
        measured.record("killed node restarted", replica_online_after=time.monotonic() - restarted)
        assert app.send_task("checkgate.mark", kwargs={"tag": f"{stack.prefix}last", "ms": 0}, expires=30).get(
            timeout=30
        )["ok"]
    finally:
        stack.stop()
        for index, node in enumerate(cluster.nodes):
            if not node.running:
                cluster.restart(index)
