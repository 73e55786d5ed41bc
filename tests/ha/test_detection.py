"""A worker host vanishes mid-load (its link cut: no FIN, no RST) and the broker must notice within the
documented bound, so that the host's unacknowledged checks run on the other host before their deadline.

Two hosts (network namespaces) run a worker each against the 3-node cluster (quorum queues); host `a`
is cut while it runs `mark` (acknowledged late: redelivered) and `mark_once` (acknowledged early: at
most once) checks. Each run measures, from the cut: when a node closed `a`'s connection for missed
heartbeats (its log), and when the first of `a`'s checks started again on `b`. Then `a` is reconnected
and its worker must come back by itself (a partition that heals). CHECKGATE_HA_RUNS sets the number of
runs (default 5); CHECKGATE_BROKER_HEARTBEAT=60 measures the old setting (which fails the test).
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path

import redis
from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout

from tests.ha import measured
from tests.ha.conftest import full_only, ha_stack
from tests.support.ha_checks import deliveries
from tests.support.netns import Host, Network
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.runs import TestRun
from tests.support.services import PrivateRedis

pytestmark = full_only

RUNS = int(os.environ.get("CHECKGATE_HA_RUNS", "5"))
HEARTBEAT = int(os.environ.get("CHECKGATE_BROKER_HEARTBEAT", "5"))
TASK_MS = 3000
DEADLINE = 60.0  # each check's expiry (AMQP TTL and Celery `expires`): the caller's deadline
# A node's log: "<UTC time> [error] <pid> closing AMQP connection <pid> (<peer ip>:<port> -> …):"
# followed by "… missed heartbeats from client, timeout: 5s".
CLOSED = re.compile(r"^(\S+ \S+) \[error\] (<[\d.]+>) closing AMQP connection \S+ \(([\d.]+):\d+ ->", re.M)


def heartbeat_closes(cluster: RabbitCluster, address: str, after: float) -> list[float]:
    """Epoch times at which any node closed a connection from `address` for missed heartbeats."""
    times = []
    for node in cluster.nodes:
        text = node.log_path.read_text(errors="replace")
        for match in CLOSED.finditer(text):
            rest = text[match.end() : match.end() + 300]
            if match.group(3) == address and "missed heartbeats" in rest.split("closing AMQP", 1)[0]:
                when = datetime.fromisoformat(match.group(1)).timestamp()
                if when > after:
                    times.append(when)
    return times


def publish_batch(app: Celery, prefix: str, count: int) -> list[tuple[str, str, object]]:
    """`count` checks, alternately `mark` and `mark_once`: (task name, tag, AsyncResult)."""
    batch = []
    for i in range(count):
        name = "checkgate.mark" if i % 2 == 0 else "checkgate.mark_once"
        tag = f"{prefix}{i}"
        batch.append((name, tag, app.send_task(name, kwargs={"tag": tag, "ms": TASK_MS}, expires=DEADLINE)))
    return batch


def wait_for_delivery_on(records: redis.Redis, tags: list[str], worker: str, timeout: float) -> float:
    """The start time of the first delivery of any of `tags` on `worker`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        starts = [d["started"] for t in tags for d in deliveries(records, t) if d["worker"].startswith(worker)]
        if starts:
            return min(starts)
        time.sleep(0.05)
    raise TimeoutError(f"no delivery on {worker} within {timeout} s")


def test_a_vanished_worker_host_is_detected_and_its_checks_redelivered(
    ha_run: TestRun, network: Network, cluster: RabbitCluster, bridge_redis: PrivateRedis, tmp_path: Path
) -> None:
    hosts: dict[str, Host] = {name: network.add_host(f"det{name}") for name in ("a", "b")}
    stack = ha_stack(tmp_path, ha_run, cluster.url, bridge_redis.url, bridge_redis.url)
    records = redis.Redis.from_url(bridge_redis.url)
    try:
        for first, (name, host) in enumerate(hosts.items()):
            # Each host starts its failover list at another node, as a fleet spreads over the cluster.
            stack.start_worker(
                name,
                ["mark", "mark_once"],
                concurrency=10,
                host=host,
                env={"CHECKGATE_BROKER_URL": cluster.url_from(first)},
            )
        app = stack.client_app()
        worker_a, worker_b = f"{stack.prefix}a@", f"{stack.prefix}b@"
        for run in range(RUNS):
            batch = publish_batch(app, f"{stack.prefix}r{run}-", 40)
            published_at = time.monotonic()
            tags = [tag for _, tag, _ in batch]
            wait_for_delivery_on(records, tags, worker_a, timeout=60)
            time.sleep(0.5)
            cut_at = time.time()
            hosts["a"].cut()

            # Idempotent checks must all end (on b) before their deadline; none of the others runs twice.
            late = []
            for name, tag, result in batch:
                if name == "checkgate.mark":
                    try:
                        result.get(timeout=max(0.1, published_at + DEADLINE - time.monotonic()))
                    except ResultTimeout:
                        late.append(tag)
            deadline = time.monotonic() + 3 * HEARTBEAT + 30
            while not (closes := heartbeat_closes(cluster, hosts["a"].address, cut_at)):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            redelivered = [
                d["started"]
                for t in tags
                for d in deliveries(records, t)
                if d["redelivered"] and d["worker"].startswith(worker_b) and d["started"] > cut_at
            ]
            twice = [t for name, t, _ in batch if name == "checkgate.mark_once" and len(deliveries(records, t)) > 1]
            ran_on_a = sum(1 for t in tags for d in deliveries(records, t) if d["worker"].startswith(worker_a))

            hosts["a"].heal()
            healed_at = time.time()
            # The healed host's worker finds the broker again by itself.
            probe = publish_batch(app, f"{stack.prefix}r{run}-probe-", 30)
            back = wait_for_delivery_on(records, [t for _, t, _ in probe], worker_a, timeout=120)
            for _, _, result in probe:
                result.get(timeout=DEADLINE)
            measured.record(
                f"worker host vanished (heartbeat {HEARTBEAT} s), run {run + 1}",
                detected_after=min(closes) - cut_at if closes else None,
                first_redelivered_after=min(redelivered) - cut_at if redelivered else None,
                redelivered=len(redelivered),
                started_on_vanished_host=ran_on_a,
                idempotent_late=len(late),
                ran_twice_not_idempotent=len(twice),
                back_after_heal=back - healed_at,
            )
            assert closes, "no node closed the vanished host's connection for missed heartbeats"
            assert min(closes) - cut_at <= 20, "detection beyond the 20 s target"
            assert late == [], f"{len(late)} idempotent checks got no result before their deadline"
            assert twice == [], "checks declared not idempotent ran twice"
    finally:
        stack.stop()
