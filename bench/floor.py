"""The floor: the same tasks fed by Celery's own client, no HTTP — what the workers can drain.

`python -m bench.floor '<plan JSON>'` is one floor process. It warms up (one round trip per task),
prints `READY`, reads the start time t0 (epoch seconds) from stdin, then runs its share of the plan's
streams as closed loops in one thread: each client slot publishes with `app.send_task` and, when the
result arrives through Celery's Redis result consumer (`AsyncResult.then` + `drain_events`),
publishes the next. It ends with one line: `BENCH_JSON {"streams": {name: raw counts and latencies}}`.

A latency runs from the moment a client wants to send (its previous answer seen, or the start) to
the moment its answer is seen, as wrk measures an HTTP contender: a client that waits while the
process publishes for others waits on the clock, as it would waiting in a gateway's socket.

The harness runs several such processes (a single thread publishing with confirms would itself be the
bottleneck at thousands of tasks per second) and merges them with `merge`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bench.scenarios import UNIQUE

MARKER = "BENCH_JSON "
READY = "READY"
# Outstanding tasks older than this beyond their task time are looked up directly: pub/sub is
# at-most-once, and a lost notification must not stall a client slot for the rest of the cell.
SWEEP_AFTER_S = 5.0
# Seconds the process stays after its last window (collecting, not sending): the harness samples
# CPU at the window's end, and a process that already exited would drop out of the sum.
LINGER_S = 0.5


@dataclass
class Loop:
    """One stream's closed loop in this process and what it measured."""

    name: str
    task: str
    kwargs: dict[str, Any]
    clients: int
    start: float
    window_start: float
    window_end: float
    task_s: float
    # When each of this process's clients sends its first request, latest first (popped as due).
    starts: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    in_window: int = 0
    errors: int = 0

    def raw(self) -> dict[str, Any]:
        return {"in_window": self.in_window, "errors": self.errors, "latencies_ms": self.latencies_ms}


def run(plan: dict[str, Any], t0_source: Any) -> dict[str, Any]:
    """Warm up, wait for t0 from `t0_source` (a readable line), run the loops, return raw results."""
    from tasks.celery import app

    prefix = os.environ.get("CHECKGATE_QUEUE_PREFIX", "")
    window_s = plan["window"]
    consumer = app.backend.result_consumer
    pending: dict[str, tuple[Loop, float, Any]] = {}
    # (result, when it arrived): finishing one means publishing the next, so several that arrive in
    # one drain are finished one after another; each keeps the time it was seen.
    done: deque[tuple[Any, float]] = deque()

    serials = itertools.count(os.getpid() * 1_000_000)

    def new_id() -> str:
        return f"{prefix}floor-{uuid.uuid4().hex}"

    def kwargs_of(spec_kwargs: dict[str, Any]) -> dict[str, Any]:
        # A number of its own per task where the plan says UNIQUE, as wrk does for HTTP contenders.
        return {k: next(serials) if v == UNIQUE else v for k, v in spec_kwargs.items()}

    def send(loop: Loop, wanted: float) -> None:
        task_id = new_id()
        result = app.send_task(loop.task, kwargs=kwargs_of(loop.kwargs), task_id=task_id)
        pending[task_id] = (loop, wanted, result)
        # Called from drain_events (or at once when the result is already buffered): only note it.
        result.then(lambda r: done.append((r, time.time())))

    def finish(result: Any, now: float) -> None:
        entry = pending.pop(result.id, None)
        if entry is None:
            return
        loop, sent, _ = entry
        if result.state == "SUCCESS":
            loop.latencies_ms.append(round((now - sent) * 1000, 2))
            if loop.window_start <= now < loop.window_end:
                loop.in_window += 1
        else:
            loop.errors += 1
        if now < loop.window_end:
            send(loop, now)

    # Warm-up: connections and the result subscription exist before the clock starts.
    for spec in plan["streams"]:
        app.send_task(spec["task"], kwargs=kwargs_of(spec["kwargs"]), task_id=new_id()).get(timeout=60)
    print(READY, flush=True)
    t0 = float(t0_source.readline())
    time.sleep(max(0.0, t0 - time.time()))

    # The harness's clock: windows fall on the same whole seconds as wrk's and the CPU samples.
    loops = []
    for spec in plan["streams"]:
        window_start = math.ceil(t0 + spec["window_at"])
        start = t0 + spec["start"]
        # The same ramp as wrk's: client g of the stream starts g/clients of the way through it.
        ramp_step = spec["ramp_s"] / spec["all_clients"]
        firsts = [spec["first_client"] + i * spec["client_stride"] for i in range(spec["clients"])]
        starts = sorted((start + g * ramp_step for g in firsts), reverse=True)
        loops.append(
            Loop(
                spec["name"],
                spec["task"],
                spec["kwargs"],
                spec["clients"],
                start,
                window_start,
                window_start + window_s,
                spec["task_s"],
                starts,
            )
        )
    end = max(loop.window_end for loop in loops) + LINGER_S
    last_sweep = time.time()
    while time.time() < end:
        now = time.time()
        for loop in loops:
            while loop.starts and now >= loop.starts[-1]:
                send(loop, loop.starts.pop())
        next_start = min((loop.starts[-1] for loop in loops if loop.starts), default=math.inf)
        consumer.drain_events(timeout=max(0.001, min(0.05, next_start - now)))
        while done:
            finish(*done.popleft())
        if now - last_sweep > 1.0:
            last_sweep = now
            for task_id, (loop, sent, result) in list(pending.items()):
                if now - sent > loop.task_s + SWEEP_AFTER_S and task_id in pending and result.ready():
                    finish(result, time.time())
    return {"streams": {loop.name: loop.raw() for loop in loops}}


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))]


def merge(outputs: list[dict[str, Any]], window_s: float) -> dict[str, dict[str, Any]]:
    """The floor processes' raw results → the stats wrk gives for an HTTP contender, per stream."""
    names = outputs[0]["streams"].keys()
    stats = {}
    for name in names:
        parts = [o["streams"][name] for o in outputs]
        lat = sorted(v for p in parts for v in p["latencies_ms"])
        good = sum(p["in_window"] for p in parts)
        errors = sum(p["errors"] for p in parts)
        stats[name] = {
            "rps": round(good / window_s, 2),
            "requests": good,
            "window_s": window_s,
            "p50_ms": percentile(lat, 50),
            "p90_ms": percentile(lat, 90),
            "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else None,
            "errors": errors,
            "error_detail": {"task_failed": errors},
            "total_requests": len(lat),
        }
    return stats


def main() -> int:
    plan = json.loads(sys.argv[1])
    out = run(plan, sys.stdin)
    print(MARKER + json.dumps(out, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
