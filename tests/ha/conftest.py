"""Many machines on one: RabbitMQ nodes, Redis with Sentinel and worker hosts (network namespaces) that
the tests start, break and stop. The smoke runs inside `make test`; `make faults` (CHECKGATE_FAULTS=full)
adds the 3-node cluster and the measured detection bound.

Everything started here carries one run id (tests/support/runs.py): it is stopped by the fixtures'
finalizers, and what a crashed earlier session left is swept when the next one starts.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import FULL
from tests.faults.load import REPORT, write_report
from tests.ha import measured
from tests.support import netns
from tests.support.infra import missing_rabbitmq, missing_redis, require
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.runs import TestRun
from tests.support.services import PrivateRabbit, PrivateRedis
from tests.support.stack import EXTRA_CHECKS, ROOT, Stack

HA_CHECKS = f"{EXTRA_CHECKS},tests.support.ha_checks"

full_only = pytest.mark.skipif(not FULL, reason="full scale only: make faults (CHECKGATE_FAULTS=full)")


def ha_stack(workdir: Path, run: TestRun, broker_url: str, backend_url: str, records_url: str, **env: str) -> Stack:
    """A stack on quorum queues with the HA test checks, its deliveries recorded in `records_url`'s Redis."""
    return Stack(
        workdir,
        f"cgh{secrets.token_hex(3)}_",
        broker_url,
        backend_url,
        {
            **run.env,
            "CHECKGATE_QUEUE_TYPE": "quorum",
            "CHECKGATE_CHECK_MODULES": HA_CHECKS,
            "CHECKGATE_HA_REDIS_URL": records_url,
            **env,
        },
    )


@pytest.fixture(scope="session")
def ha_run() -> Iterator[TestRun]:
    with TestRun() as run:
        yield run


@pytest.fixture(scope="session")
def network(ha_run: TestRun) -> Iterator[netns.Network]:
    """The bridge hosts are added to (one per session; each test adds its own hosts)."""
    require(netns.missing())
    with netns.Network(ha_run) as net:
        yield net


@pytest.fixture(scope="session")
def cluster(
    ha_run: TestRun, network: netns.Network, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RabbitCluster]:
    """Three RabbitMQ nodes clustered, listening on the bridge (and loopback); a test that kills a node
    starts it again before it ends."""
    require(missing_rabbitmq())
    with RabbitCluster(tmp_path_factory.mktemp("cluster"), ha_run, host=network.address) as nodes:
        yield nodes


@pytest.fixture(scope="session")
def bridge_redis(
    ha_run: TestRun, network: netns.Network, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateRedis]:
    """A Redis the hosts reach over the bridge: results and the tests' delivery records."""
    require(missing_redis())
    server = PrivateRedis(tmp_path_factory.mktemp("redis"), host=network.address, env=ha_run.env)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbit_node(ha_run: TestRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbit]:
    """One private RabbitMQ node on loopback, for the tests that need quorum queues but no cluster."""
    require(missing_rabbitmq())
    node = PrivateRabbit(tmp_path_factory.mktemp("rabbit"), name=f"{ha_run.name_prefix}q", env=ha_run.env)
    node.start()
    yield node
    node.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    faults_conftest = any(
        "faults/conftest" in str(getattr(p, "__file__", ""))
        for p in terminalreporter.config.pluginmanager.get_plugins()
    )
    if REPORT and not faults_conftest:  # tests/ha alone: print the fault rows it added
        table = write_report(ROOT / "var" / "faults" / "report-ha.json")
        terminalreporter.write_sep("=", "reliability report, many machines" + (" (full)" if FULL else " (smoke)"))
        terminalreporter.write_line(table)
    if measured.MEASUREMENTS:
        terminalreporter.write_sep("=", "high availability: measured (var/ha/measured.json)")
        for line in measured.write(ROOT / "var" / "ha" / "measured.json"):
            terminalreporter.write_line(line)
