"""Checks from several locations, end to end: two sites as network namespaces (`west`, `east`), each with a
worker of its location (CHECKGATE_LOCATION; west's takes the plain queues too, east's only its own:
CHECKGATE_LOCATION_ONLY), a RabbitMQ node and a Redis on the bridge, and a gateway
(CHECKGATE_LOCATIONS=west,east) in the root namespace. The same tcp check answers differently from each
site (its target listens on west's own loopback only); then east goes dark mid-load (its link cut: no
FIN, no RST) and comes back.

What a caller sees when a site goes dark, in order:
1. from the cut until the broker drops east's consumer (missed heartbeats, ≤ 3 × heartbeat): requests are
   still published to east; east's part is a per-location 504 at the deadline, so `require=any` still
   answers 200 (west passed) and `require=all` answers 504 (undecided), and `location=east` answers 504;
2. from the next passive declare on (≤ 1 s later): `location=east` and `location=west,east` are immediate
   503s naming east, and `location=all` answers from west alone with `skipped: ["east"]`;
3. once healed, east's worker reconnects by itself and east answers again.

The smoke (in `make test`) uses a 3 s heartbeat (bound 9 s); `make faults` the default 5 s (bound 15 s),
more clients and a longer load.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.faults.conftest import FULL
from tests.ha import measured
from tests.support.infra import missing_rabbitmq, require
from tests.support.netns import Host, Network
from tests.support.runs import TestRun
from tests.support.services import PrivateRabbit, PrivateRedis
from tests.support.stack import Stack, free_port, http_get

HEARTBEAT = 5 if FULL else 3
CLIENTS = 12 if FULL else 4
TIMEOUT = 2.0  # each load request's deadline, seconds
# Load keeps running this long after east was dropped (its checks then go to west alone): a client first
# waits out the request it was in (up to TIMEOUT), then sends under the new state.
AFTER_DROP_S = TIMEOUT + (5.0 if FULL else 1.0)

LISTEN = """
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.close()
"""


@pytest.fixture(scope="module")
def site_broker(ha_run: TestRun, network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbit]:
    """One RabbitMQ node the sites reach over the bridge."""
    require(missing_rabbitmq())
    node = PrivateRabbit(
        tmp_path_factory.mktemp("site-broker"), name=f"{ha_run.name_prefix}loc", host=network.address, env=ha_run.env
    )
    node.start()
    yield node
    node.stop()


@dataclass
class Sites:
    stack: Stack
    gateway: str
    hosts: dict[str, Host]
    target_port: int


@pytest.fixture(scope="module")
def sites(
    ha_run: TestRun,
    network: Network,
    site_broker: PrivateRabbit,
    bridge_redis: PrivateRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sites]:
    stack = Stack(
        tmp_path_factory.mktemp("sites"),
        f"cgl{secrets.token_hex(3)}_",
        site_broker.url,
        bridge_redis.url,
        {**ha_run.env, "CHECKGATE_LOCATIONS": "west,east", "CHECKGATE_BROKER_HEARTBEAT": str(HEARTBEAT)},
    )
    hosts = {name: network.add_host(f"loc{name}") for name in ("west", "east")}
    port = free_port()
    target = subprocess.Popen(
        hosts["west"].command([sys.executable, "-c", LISTEN, str(port)]), stdout=subprocess.PIPE, text=True
    )
    try:
        assert target.stdout is not None and target.stdout.readline().strip() == "listening"
        with ThreadPoolExecutor(2) as pool:
            started = [
                pool.submit(
                    stack.start_worker,
                    name,
                    ["sleep", "tcp"],
                    concurrency=2 * CLIENTS + 10,
                    host=host,
                    # west takes the plain queues too; east only the checks asked of it.
                    env={"CHECKGATE_LOCATION": name, "CHECKGATE_LOCATION_ONLY": "1" if name == "east" else "0"},
                )
                for name, host in hosts.items()
            ]
            gateway = stack.start_gateway("gw")
            for future in started:
                future.result()
        wait_for(lambda: all(live(gateway, "sleep").values()), 30, "both sites live at the gateway")
        yield Sites(stack, gateway, hosts, port)
    finally:
        for host in hosts.values():
            host.heal()
        target.kill()
        target.wait()
        stack.stop()


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll `condition()` until true; return when it became so (monotonic). Fails the test past `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)
    return time.monotonic()


def live(gateway: str, check: str) -> dict[str, bool]:
    """Whether the gateway counts a live consumer of `check` in each location (/checks)."""
    _, body, _ = http_get(f"{gateway}/checks")
    (described,) = (c for c in body["checks"] if c["name"] == check)
    return {where: bool(info["consumers"]) for where, info in described["locations"].items()}


def test_the_same_check_answers_from_each_site(sites: Sites) -> None:
    tcp = f"{sites.gateway}/check/tcp?host=127.0.0.1&port={sites.target_port}&timeout=10"
    status, body, _ = http_get(f"{tcp}&location=west")
    assert (status, body["location"], body["result"]["ok"]) == (200, "west", True), body
    assert body["worker"].startswith(f"{sites.stack.prefix}west@")
    status, stored, _ = http_get(f"{sites.gateway}/result/{body['id']}")  # where it ran, from the worker's meta
    assert (status, stored["location"], stored["result"]) == (200, "west", body["result"])
    status, body, _ = http_get(f"{tcp}&location=west,east")
    assert (status, body["ok"], body["passed"], body["failed"]) == (200, False, 1, 1), body
    east = body["locations"]["east"]
    assert (east["status"], east["result"]["ok"], east["result"]["reason"]) == (200, False, "connection_refused")
    assert east["worker"].startswith(f"{sites.stack.prefix}east@")
    status, body, _ = http_get(f"{tcp}&location=all&require=any")
    assert (status, body["ok"], set(body["locations"])) == (200, True, {"west", "east"})
    status, text, _ = http_get(f"{tcp}&location=all&format=prometheus")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {s.labels["location"]: s.value for s in families["probe_success"].samples} == {"west": 1.0, "east": 0.0}
    # west consumes the plain queues besides its own, east its own only; neither the other's.
    status, health, _ = http_get(f"{sites.gateway}/health")
    assert health["locations"]["west"]["live"] and health["locations"]["east"]["live"]
    consumers = {name: q["consumers"] for name, q in health["queues"].items() if "tcp" in name}
    prefix = sites.stack.prefix
    assert consumers == {f"{prefix}tcp": 1, f"{prefix}tcp@west": 1, f"{prefix}tcp@east": 1}
    status, body, _ = http_get(tcp)  # no location: the plain queue, which only west consumes
    assert (status, body["result"]["ok"]) == (200, True) and body["worker"].startswith(f"{prefix}west@")


@dataclass
class Answer:
    sent: float  # monotonic
    took: float
    query: str
    status: int
    body: Any


def load(gateway: str, queries: list[str], stop: threading.Event, answers: list[Answer]) -> None:
    """One client: the queries in turn until `stop`, each answer kept (an exception as status 0)."""
    turn = 0
    while not stop.is_set():
        query = queries[turn % len(queries)]
        turn += 1
        sent = time.monotonic()
        try:
            status, body, _ = http_get(f"{gateway}/check/sleep?ms=200&timeout={TIMEOUT:g}&{query}", timeout=60)
        except Exception as exc:  # kept: the test reports it with the rest
            status, body = 0, repr(exc)
        answers.append(Answer(sent, time.monotonic() - sent, query, status, body))


def test_a_site_going_dark_mid_load(sites: Sites) -> None:
    gateway, east = sites.gateway, sites.hosts["east"]
    any_of = "location=all&require=any"
    both = "location=west,east"  # require=all
    answers: list[Answer] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=load, args=(gateway, [any_of, both, "location=east"], stop, answers))
        for _ in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    try:
        time.sleep(1.5)
        cut = time.monotonic()
        east.cut()
        # A new request for east alone, every 0.25 s, until the gateway refuses it at once.
        probes: list[Answer] = []

        def refused() -> bool:
            sent = time.monotonic()
            status, body, _ = http_get(f"{gateway}/check/sleep?ms=1&timeout=0.5&location=east")
            probes.append(Answer(sent, time.monotonic() - sent, "location=east", status, body))
            return status == 503

        dropped = wait_for(refused, 3 * HEARTBEAT + 30, "east refused after its link was cut", interval=0.25)
        time.sleep(AFTER_DROP_S)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
        east.heal()
    healed = time.monotonic()
    back = wait_for(
        lambda: http_get(f"{gateway}/check/sleep?ms=1&timeout=5&location=east")[0] == 200,
        60,
        "east answering again after the heal",
        interval=0.5,
    )

    # The refusal names east and comes at once; before it, east's probes waited for their deadline.
    refusal = probes[-1]
    assert refusal.body["locations"] == ["east"] and "east" in refusal.body["error"]
    assert refusal.took < 0.5
    assert all(p.status == 504 and p.body["location"] == "east" for p in probes[:-1]), [p.status for p in probes]
    # The broker's heartbeat bound plus one passive declare (1 s) and the probe interval.
    assert dropped - cut <= 3 * HEARTBEAT + 1 + 1, f"east refused {dropped - cut:.1f} s after the cut"

    before = [a for a in answers if a.sent + a.took < cut]
    gap = [a for a in answers if a.sent > cut and a.sent + a.took < dropped - 1]
    after = [a for a in answers if a.sent > dropped]
    assert [a for a in answers if a.status == 0] == []
    assert before and gap and after, (len(before), len(gap), len(after), [(a.sent - cut, a.took) for a in answers])
    for a in before:  # both sites up: every form answers 200
        assert a.status == 200, a.body
        assert a.body.get("ok", True) is True and a.body.get("result", {}).get("ok", True) is True, a.body
    for a in gap:  # east silent: its part times out
        if a.query == any_of:
            assert (a.status, a.body["ok"], a.body["locations"]["east"]["status"]) == (200, True, 504), a.body
        elif a.query == both:
            assert (a.status, a.body["ok"], a.body["locations"]["west"]["status"]) == (504, None, 200), a.body
        else:
            assert (a.status, a.body["location"], a.body["state"]) == (504, "east", "PENDING"), a.body
    for a in after:  # east's consumer dropped: refused at once, or left out by location=all
        if a.query == any_of:
            assert (a.status, a.body["ok"], set(a.body["locations"]), a.body["skipped"]) == (
                200,
                True,
                {"west"},
                ["east"],
            ), a.body
        else:
            assert (a.status, a.body["locations"]) == (503, ["east"]), a.body
            assert a.took < 0.5
    measured.record(
        f"location dark (heartbeat {HEARTBEAT} s)",
        refused_after_cut=dropped - cut,
        answers_before=len(before),
        answers_in_gap=len(gap),
        answers_after=len(after),
        back_after_heal=back - healed,
    )
