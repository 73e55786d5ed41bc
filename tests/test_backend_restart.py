"""Redis restarting under waiting requests: the gateway resubscribes, fetches what it missed, loses nothing."""

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.env import BROKER_URL
from tests.support.services import PrivateRedis
from tests.support.stack import Stack, http_get

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_waiting_requests_survive_a_redis_restart(tmp_path: Path, private_redis: PrivateRedis) -> None:
    with Stack(tmp_path, f"cgr{private_redis.port}_", BROKER_URL, f"redis://127.0.0.1:{private_redis.port}/0") as stack:
        gateway = stack.start_gateway("gw")
        stack.start_worker("sleep", ["sleep"], pool="threads", concurrency=30)
        with ThreadPoolExecutor(20) as pool:
            waiting = [pool.submit(http_get, f"{gateway}/check/sleep?ms={1500 + i}&timeout=40", 60) for i in range(20)]
            time.sleep(0.5)
            private_redis.stop()
            time.sleep(0.3)
            started = time.monotonic()
            status, body, headers = http_get(gateway + "/check/sleep?ms=1")
            assert time.monotonic() - started < 5
            assert (status, body["error"]) == (503, "result backend unavailable")
            assert "Retry-After" in headers
            time.sleep(2.5)  # the tasks finish meanwhile; workers retry storing their results
            private_redis.start()
            answers = [future.result(timeout=60) for future in waiting]
        assert [status for status, _, _ in answers] == [200] * 20
        assert [body["result"]["slept_ms"] for _, body, _ in answers] == [1500 + i for i in range(20)]
        _, metrics, _ = http_get(gateway + "/metrics")
        assert "checkgate_waiting_results 0" in metrics
        assert "checkgate_backend_up 1" in metrics
