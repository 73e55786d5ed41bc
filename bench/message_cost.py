"""CPU per task message, before it reaches the socket: the gateway's hot path and the library's calls.

    python -m bench.message_cost [-n 20000] [--repeat 7] [TREE …]

For each checkout TREE (default: this one; e.g. also `git archive <commit>` of an earlier one, to
compare before/after in the same run), a child process measures, best of `repeat` rounds of `n`:

- `gateway`: what `CeleryClient.call` does per message — `MessageFactory.build` (the per-type template)
  plus `amqp.publish_frames` (the bytes for the wire) — for `checkgate.add(x, y)`;
- `send_task`: the library's `MessageFactory.build_task` for args and kwargs (the template path
  `send_task` takes when no option needs Celery's own code), plus the frames;
- `send_task+priority`: the same with `priority` and `countdown` (Celery's `create_task_message` each
  time), plus the frames;
- `celery`: Celery's `app.amqp.create_task_message` plus kombu's `dumps` alone (the reference; no frames).

No network: the numbers are this process's CPU time (`time.process_time`) per message, so other load on
the machine moves them less than wall time would (caches and frequency still do); compare the trees
within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time, uuid
from datetime import UTC, datetime, timedelta
from kombu.serialization import dumps
from gateway.aiocelery.amqp import publish_frames
from gateway.aiocelery.messages import MessageFactory
from tasks.celery import app

n, repeat = int(sys.argv[1]), int(sys.argv[2])
factory = MessageFactory(app, origin="bench@host/1")
ids = [f"gwbench-{i:020d}" for i in range(n)]


def frames(m):
    return publish_frames(1, m.exchange, m.routing_key, m.body, content_type=m.content_type,
                          content_encoding=m.content_encoding, headers=m.headers, message_id=m.task_id,
                          expiration_ms=max(1, int(m.expiration * 1000)) if m.expiration is not None else 0)


def gateway():
    for i in range(n):
        frames(factory.build(ids[i], "checkgate.add", {"x": i, "y": 2}, timeout=30.0))


def send_task():
    for i in range(n):
        frames(factory.build_task(ids[i], "checkgate.add", (i, 2), {}, expires=30.0))


def send_task_priority():
    for i in range(n):
        frames(factory.build_task(ids[i], "checkgate.add", (i, 2), {}, expires=30.0, priority=5, countdown=1))


def celery():
    expires = datetime.now(UTC) + timedelta(seconds=30)
    for i in range(n):
        m = app.amqp.create_task_message(ids[i], "checkgate.add", (), {"x": i, "y": 2}, expires=expires)
        dumps(m.body, serializer=app.conf.task_serializer)


cases = {"gateway": gateway, "celery": celery}
if hasattr(factory, "build_task"):
    cases["send_task"] = send_task
    cases["send_task+priority"] = send_task_priority
best = {name: float("inf") for name in cases}
for _ in range(repeat):
    for name, case in cases.items():  # interleaved, so a burst of other load hits every case alike
        began = time.process_time()  # CPU time of this process: other load on the machine counts less
        case()
        best[name] = min(best[name], (time.process_time() - began) / n * 1e6)
print(json.dumps(best))
"""


def measure(tree: Path, n: int, repeat: int) -> dict[str, float]:
    """Best µs per message of each case in checkout `tree` (run in a child process of its own)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "CHECKGATE_QUEUE_PREFIX": "bench_"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n), str(repeat)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", type=Path, default=[ROOT])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="child processes per tree, interleaved")
    args = parser.parse_args()
    results: dict[Path, list[dict[str, float]]] = {tree: [] for tree in args.trees}
    for _ in range(args.rounds):
        for tree in args.trees:
            results[tree].append(measure(tree.resolve(), args.n, args.repeat))
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; µs per message")
    for tree, rounds in results.items():
        best = {name: min(r[name] for r in rounds) for name in rounds[0]}
        print(f"{tree}: " + ", ".join(f"{name} {us:.1f}" for name, us in best.items()))
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"({started}; n={args.n}, best of {args.repeat} × {args.rounds} rounds)")


if __name__ == "__main__":
    main()
