"""SIGKILL workers every few seconds under load: every request answered, nothing lost, nothing run twice
that declared itself not idempotent."""

import random
import signal
import threading
import time

import redis

from tests.faults.conftest import scale
from tests.faults.load import REPORT, FaultRow, run_load
from tests.support.stack import Stack, http_get

RUNS_KEY = "checkgate-test-runs:"


def test_worker_kills_lose_nothing(new_stack: Stack) -> None:
    stack = new_stack
    gateway = stack.start_gateway("gw")
    names = ["count-a", "count-b", "once-a", "once-b"]
    queues = {"count-a": ["count"], "count-b": ["count"], "once-a": ["count_once"], "once-b": ["count_once"]}
    for name in names:
        stack.start_worker(name, queues[name], concurrency=20)
    duration = scale(8, 60)
    kills = 0
    stop = threading.Event()

    def killer() -> None:
        # What supervisord does for us in production: a killed worker is started again.
        nonlocal kills
        rng = random.Random(7)
        while not stop.wait(scale(2.0, 3.0)):
            victim = rng.choice(names)
            stack.kill(victim, signal.SIGKILL)
            kills += 1
            stack.start_worker(victim, queues[victim], concurrency=20)

    def path(n: int, i: int) -> str:
        kind = "count" if n % 2 else "count_once"
        return f"/check/{kind}?tag={stack.prefix}{n}-{i}&ms=300&timeout=20"

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        outcomes = run_load(gateway, path, clients=20, duration=duration)
    finally:
        stop.set()
        thread.join()

    unanswered = [o for o in outcomes if o.status not in (200, 504)]
    assert not unanswered, unanswered[:3]
    wrong = [o for o in outcomes if o.status == 200 and o.body["result"]["runs"] < 1]
    assert not wrong

    # Idempotent checks that timed out were redelivered: each must end with a result.
    lost = 0
    for o in outcomes:
        if o.status == 504 and "/count?" in o.path:
            deadline = time.monotonic() + 40
            while (status := http_get(f"{gateway}/result/{o.body['id']}")[0]) != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            lost += status != 200

    client = redis.Redis.from_url(stack.backend_url)
    runs = {key.decode(): int(client.get(key)) for key in client.scan_iter(f"{RUNS_KEY}{stack.prefix}*")}
    once_tags = {o.path.split("tag=")[1].split("&")[0] for o in outcomes if "count_once" in o.path}
    count_tags = {o.path.split("tag=")[1].split("&")[0] for o in outcomes if "/count?" in o.path}
    duplicated_once = [t for t in once_tags if runs.get(RUNS_KEY + t, 0) > 1]
    redelivered = sum(1 for t in count_tags if runs.get(RUNS_KEY + t, 0) > 1)
    clean = sum(o.status == 504 for o in outcomes)
    REPORT.append(
        FaultRow(
            "SIGKILL workers under load",
            len(outcomes),
            kills,
            sum(o.status == 200 for o in outcomes),
            clean,
            lost + len(unanswered),
            len(duplicated_once),
            f"{redelivered} idempotent tasks ran twice after redelivery (allowed)",
        )
    )
    assert kills >= 2
    assert lost == 0
    assert duplicated_once == []
