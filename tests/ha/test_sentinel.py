"""Workers store results through Sentinel (`CHECKGATE_RESULT_BACKEND=sentinel://…;…` and
CHECKGATE_SENTINEL_MASTER_NAME) and keep storing them when the master dies and a replica is promoted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha import measured
from tests.ha.conftest import ha_stack
from tests.support.infra import missing_redis, require
from tests.support.runs import TestRun
from tests.support.sentinel import RedisSentinel
from tests.support.services import PrivateRabbit


@pytest.fixture
def sentinel_group(ha_run: TestRun, tmp_path: Path) -> Iterator[RedisSentinel]:
    require(missing_redis())
    with RedisSentinel(tmp_path / "sentinel", ha_run) as group:
        yield group


def test_a_worker_keeps_storing_results_across_a_failover(
    ha_run: TestRun, rabbit_node: PrivateRabbit, sentinel_group: RedisSentinel, tmp_path: Path
) -> None:
    group = sentinel_group
    master = group.master()
    stack = ha_stack(
        tmp_path / "stack",
        ha_run,
        rabbit_node.url,
        group.url,
        master.url,
        CHECKGATE_SENTINEL_MASTER_NAME=group.master_name,
    )
    try:
        stack.start_worker("w", ["sleep"], concurrency=10)
        app = stack.client_app()
        # Two waves of one-second checks: the master dies as the first ends, so the second ends while
        # there is no master (the worker retries the write) or after the switch.
        before = [app.send_task("checkgate.sleep", kwargs={"ms": 1000}, expires=120) for _ in range(20)]
        deadline = time.monotonic() + 30
        while not any(r.ready() for r in before):
            assert time.monotonic() < deadline, "no result before the failover"
            time.sleep(0.05)
        killed = time.monotonic()
        old = group.kill_master()
        new = group.wait_failover(old)
        promoted = time.monotonic()
        after = [app.send_task("checkgate.sleep", kwargs={"ms": 10}, expires=120) for _ in range(10)]
        # Every check has its result on the new master: written before the kill (and replicated), retried
        # by the worker while there was no master, or written after the switch.
        assert [r.get(timeout=60)["slept_ms"] for r in before + after] == [1000] * 20 + [10] * 10
        measured.record(
            "Redis master killed (Sentinel failover)",
            promoted_after=promoted - killed,
            all_results_stored_after=time.monotonic() - killed,
        )
        assert group.master() is new
        retried = stack.logs["w"].read_text().count("Failed operation _store_result. Retrying")
        assert retried > 0, "no result was written during the failover: the test did not test it"
    finally:
        stack.stop()
