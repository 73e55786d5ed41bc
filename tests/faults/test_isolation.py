"""A flood of one slow check type does not raise the latency of another: each type has its own queue."""

import statistics
import threading

from tests.faults.conftest import scale
from tests.faults.load import REPORT, FaultRow, run_load
from tests.support.stack import Stack


def p50_ms(outcomes: list) -> float:
    return statistics.median(o.ended - o.started for o in outcomes) * 1000


def test_flooded_slow_type_leaves_fast_type_alone(new_stack: Stack) -> None:
    gateway = new_stack.start_gateway("gw")
    new_stack.start_worker("sleep", ["sleep"], concurrency=20)
    new_stack.start_worker("add", ["add"], concurrency=4)
    add = lambda n, i: f"/check/add?x={n}&y={i}"  # noqa: E731
    alone = run_load(gateway, add, clients=4, duration=scale(3, 10))
    # 100 callers on 20 slots of 2 s tasks: the sleep queue stays ~80 deep for the whole run.
    flood_done = threading.Event()
    flood: list = []
    thread = threading.Thread(
        target=lambda: flood.extend(
            run_load(
                gateway, lambda n, i: "/check/sleep?ms=2000&timeout=60", clients=100, duration=60, until=flood_done
            )
        )
    )
    thread.start()
    try:
        flooded = run_load(gateway, add, clients=4, duration=scale(6, 20))
    finally:
        flood_done.set()
        thread.join()
    assert all(o.status == 200 for o in alone + flooded)
    assert all(o.status in (200, 504) for o in flood)
    assert min(o.ended - o.started for o in flood) >= 2.0
    before, during = p50_ms(alone), p50_ms(flooded)
    # With one shared queue every add would wait behind ~80 two-second sleeps (seconds, not ms).
    assert during < max(5 * before, 100), (before, during)
    REPORT.append(
        FaultRow(
            "flood of 2 s sleep checks (100 callers, 20 slots)",
            len(flooded) + len(flood),
            0,
            sum(o.status == 200 for o in flooded + flood),
            sum(o.status == 504 for o in flood),
            0,
            0,
            f"add p50 {before:.1f} ms alone → {during:.1f} ms during the flood",
        )
    )
