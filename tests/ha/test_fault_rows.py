"""The many-machines rows of the reliability table: a fault under steady mixed load, through the gateway.

Topology (full, `make faults`): the gateway on one host (network namespace), workers on two others, a
3-node RabbitMQ cluster with quorum queues and Redis behind Sentinel, all reached over the bridge. The
load mixes sync idempotent checks (`mark`), sync checks declared not idempotent (`mark_once`) and async
idempotent ones (202, then `/result`). For each row: requests, answered, clean errors (503/504), lost (no
answer, a 5xx other than those, or an idempotent check — 202 or sync 504 — that never got its result),
duplicates (a `mark_once` that ran twice), and the time from the fault to full recovery (from then on
every request succeeded). The smoke (`make test`) runs the Sentinel row on one private node, no hosts.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.faults.conftest import FULL, scale
from tests.faults.load import REPORT, FaultRow, Outcome, run_load
from tests.ha import measured
from tests.ha.conftest import full_only, ha_stack
from tests.support.ha_checks import deliveries
from tests.support.infra import missing_redis, require
from tests.support.netns import Host, Network
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.runs import TestRun
from tests.support.sentinel import RedisSentinel
from tests.support.services import PrivateRabbit, PrivateRedis
from tests.support.stack import Stack, http_get

DEADLINE = 30  # each check's timeout: twice the 15 s dead-host bound
CLIENTS = int(scale(6, 12))
CONNECTED = re.compile(r"connected to broker node \[?([\d.:a-f]+?)\]?:(\d+)")


@dataclass
class Topology:
    """One deployment under test: its stack, the gateway's base URL and what a fault may act on."""

    stack: Stack
    gateway: str
    sentinel: RedisSentinel
    records: redis.Redis
    cluster: RabbitCluster | None = None
    hosts: dict[str, Host] | None = None


def path_for(prefix: str) -> Callable[[int, int], str]:
    kinds = ("mark", "mark_once", "mark&mode=async")

    def path(n: int, i: int) -> str:
        kind = kinds[(n + i) % 3]
        name, _, extra = kind.partition("&")
        query = f"tag={prefix}{n}-{i}&ms=300&timeout={DEADLINE}" + (f"&{extra}" if extra else "")
        return f"/check/{name}?{query}"

    return path


def tag_of(o: Outcome) -> str:
    return o.path.split("tag=")[1].split("&")[0]


def succeeded(o: Outcome) -> bool:
    return o.status == (202 if "mode=async" in o.path else 200)


def judge(
    topo: Topology, scenario: str, outcomes: list[Outcome], fault_at: float, note: str
) -> tuple[FaultRow, list[Outcome]]:
    """The row for `outcomes`: every idempotent check without a result is polled until its deadline
    (plus the detection bound) has passed."""
    gateway, records = topo.gateway, topo.records
    lost: list[Outcome] = [o for o in outcomes if o.status not in (200, 202, 503, 504)]
    waiting = [o for o in outcomes if "/mark?" in o.path and (o.status == 202 or o.status == 504)]
    poll_until = time.monotonic() + DEADLINE + 20
    for o in waiting:
        while True:
            status, _, _ = http_get(f"{gateway}/result/{o.body['id']}", timeout=10)
            if status == 200 or time.monotonic() > poll_until:
                break
            time.sleep(0.5)
        if status != 200:
            lost.append(o)
    duplicates = [o for o in outcomes if "mark_once" in o.path and len(deliveries(records, tag_of(o))) > 1]
    failed_after = [o.started for o in outcomes if not succeeded(o) and o.started >= fault_at]
    recovered = max(failed_after, default=fault_at)
    errors = Counter(
        f"{o.status} {o.body.get('error', '') if isinstance(o.body, dict) else ''}".strip()
        for o in outcomes
        if o.status in (503, 504)
    )
    if errors:
        note += "; " + ", ".join(f"{count}× {what}" for what, count in errors.most_common())
    row = FaultRow(
        scenario,
        len(outcomes),
        1,
        sum(o.status is not None for o in outcomes),
        sum(o.status in (503, 504) for o in outcomes),
        len(lost),
        len(duplicates),
        note,
        recovery_s=round(recovered - fault_at, 1),
    )
    REPORT.append(row)
    measured.record(f"fault row: {scenario}", **{k: v for k, v in vars(row).items() if k not in ("scenario", "note")})
    return row, lost


def under_load(topo: Topology, fault: Callable[[], str], settle: float) -> tuple[list[Outcome], float, str]:
    """Steady load; `fault()` after a few seconds (returns a note); keep the load on until every request
    started in the last `settle` seconds succeeded (or a cap)."""
    result: list[list[Outcome]] = []
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: result.append(
            run_load(topo.gateway, path_for(topo.stack.prefix), CLIENTS, 240, timeout=DEADLINE + 15, until=done)
        )
    )
    thread.start()
    try:
        time.sleep(scale(3, 5))
        fault_at = time.monotonic()
        note = fault()
        time.sleep(settle)
    finally:
        done.set()
        thread.join()
    return result[0], fault_at, note


# --- topologies -------------------------------------------------------------------------------------


@pytest.fixture
def sentinel_group(ha_run: TestRun, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisSentinel]:
    require(missing_redis())
    host = request.getfixturevalue("network").address if FULL else "127.0.0.1"
    with RedisSentinel(tmp_path / "sentinel", ha_run, host=host) as group:
        yield group


@pytest.fixture
def full_topology(
    ha_run: TestRun,
    network: Network,
    cluster: RabbitCluster,
    bridge_redis: PrivateRedis,
    sentinel_group: RedisSentinel,
    tmp_path: Path,
) -> Iterator[Topology]:
    """Gateway on host g, a worker on each of hosts a and b (each starting its failover list at another
    node), the 3-node cluster and Sentinel."""
    suffix = next(_hosts)
    hosts = {name: network.add_host(f"{name}{suffix}") for name in ("g", "a", "b")}
    stack = ha_stack(
        tmp_path / "stack",
        ha_run,
        cluster.url,
        sentinel_group.url,
        bridge_redis.url,
        CHECKGATE_SENTINEL_MASTER_NAME=sentinel_group.master_name,
    )
    try:
        for first, name in enumerate(("a", "b"), start=1):
            env = {"CHECKGATE_BROKER_URL": cluster.url_from(first)}
            stack.start_worker(name, ["mark", "mark_once"], concurrency=20, host=hosts[name], env=env)
        gateway = stack.start_gateway("gw", host=hosts["g"], CHECKGATE_PUBLISH_TIMEOUT="5")
        yield Topology(stack, gateway, sentinel_group, redis.Redis.from_url(bridge_redis.url), cluster, hosts)
    finally:
        stack.stop()
        for index, node in enumerate(cluster.nodes):
            if not node.running:
                cluster.restart(index)


_hosts = (f"{n}" for n in itertools.count(1))


@pytest.fixture
def smoke_topology(
    ha_run: TestRun, rabbit_node: PrivateRabbit, sentinel_group: RedisSentinel, tmp_path: Path
) -> Iterator[Topology]:
    """Everything on loopback: one private node (quorum queues), Sentinel, one worker and the gateway."""
    records = PrivateRedis(tmp_path / "records", env=ha_run.env)
    records.start()
    stack = ha_stack(
        tmp_path / "stack",
        ha_run,
        rabbit_node.url,
        sentinel_group.url,
        records.url,
        CHECKGATE_SENTINEL_MASTER_NAME=sentinel_group.master_name,
    )
    try:
        stack.start_worker("a", ["mark", "mark_once"], concurrency=20)
        gateway = stack.start_gateway("gw", CHECKGATE_PUBLISH_TIMEOUT="5")
        yield Topology(stack, gateway, sentinel_group, redis.Redis.from_url(records.url))
    finally:
        stack.stop()
        records.stop()


# --- the rows ---------------------------------------------------------------------------------------


def assert_row(row: FaultRow, lost: list[Outcome]) -> None:
    assert row.lost == 0, [(o.path, o.status, o.body) for o in lost[:5]]
    assert row.duplicates == 0, "a check declared not idempotent ran twice"
    assert row.answered == row.requests


def test_redis_master_killed(request: pytest.FixtureRequest) -> None:
    topo: Topology = request.getfixturevalue("full_topology" if FULL else "smoke_topology")

    def fault() -> str:
        old = topo.sentinel.kill_master()
        started = time.monotonic()
        new = topo.sentinel.wait_failover(old)
        return f"replica promoted {time.monotonic() - started:.1f}s after the kill (port {old.port} → {new.port})"

    outcomes, fault_at, note = under_load(topo, fault, settle=scale(10, 20))
    row, lost = judge(topo, "Redis master killed (Sentinel failover)", outcomes, fault_at, note)
    log = topo.stack.logs["gw"].read_text(errors="replace")
    assert "the Redis master moved" in log or "result subscription lost" in log
    assert_row(row, lost)


def assert_host_row(row: FaultRow, lost: list[Outcome]) -> None:
    """A worker host's row: nothing lost, and no check declared not idempotent ran twice.

    Celery acknowledges such a task just before running it; an ack written as the link goes is lost and
    the broker delivers the task again to the other host. `tasks.run_once` keeps that copy from running."""
    assert row.lost == 0, [(o.path, o.status, o.body) for o in lost[:5]]
    assert row.answered == row.requests
    assert row.duplicates == 0, "a check declared not idempotent ran on both sides of the cut"


@full_only
def test_broker_node_the_gateway_uses_is_killed(full_topology: Topology) -> None:
    topo = full_topology
    assert topo.cluster is not None
    port = int(CONNECTED.findall(topo.stack.logs["gw"].read_text())[-1][1])
    victim = topo.cluster.index_of_port(port)

    def fault() -> str:
        topo.cluster.kill(victim)
        return f"node {topo.cluster.nodes[victim].node} (the gateway's) SIGKILLed"

    outcomes, fault_at, note = under_load(topo, fault, settle=20)
    moved = [int(p) for _, p in CONNECTED.findall(topo.stack.logs["gw"].read_text())]
    assert moved[-1] != port, "the gateway did not move to another node"
    row, lost = judge(topo, "broker node the gateway uses killed", outcomes, fault_at, note)
    assert_row(row, lost)


@full_only
def test_broker_node_restarted_rejoins(full_topology: Topology) -> None:
    topo = full_topology
    assert topo.cluster is not None
    victim = 2
    topo.cluster.kill(victim)
    time.sleep(3)

    def fault() -> str:
        started = time.monotonic()
        topo.cluster.restart(victim)
        return f"node {topo.cluster.nodes[victim].node} back in the cluster after {time.monotonic() - started:.1f}s"

    outcomes, fault_at, note = under_load(topo, fault, settle=15)
    row, lost = judge(topo, "broker node restarted and rejoins", outcomes, fault_at, note)
    assert_row(row, lost)


@full_only
def test_worker_host_dies_silently(full_topology: Topology) -> None:
    topo = full_topology
    assert topo.hosts is not None

    def fault() -> str:
        topo.hosts["a"].cut()
        topo.hosts["a"].kill_all()  # power lost: its processes are gone and no FIN ever leaves
        return "host a cut and its processes killed (no FIN, no RST)"

    outcomes, fault_at, note = under_load(topo, fault, settle=30)
    row, lost = judge(topo, "worker host dies silently", outcomes, fault_at, note)
    assert_host_row(row, lost)


@full_only
def test_worker_host_partitioned_then_healed(full_topology: Topology) -> None:
    topo = full_topology
    assert topo.hosts is not None
    healed: list[float] = []

    def fault() -> str:
        topo.hosts["a"].cut()
        threading.Timer(20, lambda: (topo.hosts["a"].heal(), healed.append(time.monotonic()))).start()
        return "host a cut off for 20 s, then healed"

    outcomes, fault_at, note = under_load(topo, fault, settle=40)
    back = [d for o in outcomes if o.started > healed[0] for d in deliveries(topo.records, tag_of(o))]
    assert any(d["worker"].startswith(f"{topo.stack.prefix}a@") for d in back), "host a's worker did not come back"
    row, lost = judge(topo, "worker host partitioned, then healed", outcomes, fault_at, note)
    assert_host_row(row, lost)
