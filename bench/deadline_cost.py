"""What running every check under its deadline (tasks/deadline.py) costs per task.

    python -m bench.deadline_cost micro
        a no-op called directly and through `call_within`, in a pool thread (watchdog) and in the main
        thread (SIGALRM timer): the µs added per task.
    python -m bench.deadline_cost drain TREE [TREE…] [--task sleep|add] [-n 5000] [--pool threads] [-c 100]
        for each checkout TREE (e.g. this one and `git archive <commit>` of one before it), a real worker
        drains N no-op tasks published by Celery's own client; prints tasks/s (from the results'
        date_done) and the worker's CPU time per task, which other load on the machine disturbs less.

Uses the test services (RabbitMQ on 127.0.0.1, Redis db 13) under a random queue prefix, and deletes
what it created.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BROKER_URL = os.environ.get("CHECKGATE_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND_URL = os.environ.get("CHECKGATE_TEST_RESULT_BACKEND", "redis://127.0.0.1:6379/13")


def micro(n: int = 200_000) -> None:
    from tasks.deadline import call_within

    def noop() -> int:
        return 1

    def per_call(wrapped: bool) -> float:
        deadline = time.time() + 60
        began = time.perf_counter()
        for _ in range(n):
            if wrapped:
                call_within(deadline, noop, {})
            else:
                noop()
        return (time.perf_counter() - began) / n * 1e6

    def report(where: str) -> None:
        bare, wrapped = min(per_call(False) for _ in range(3)), min(per_call(True) for _ in range(3))
        print(f"{where}: bare {bare:.2f} µs, call_within {wrapped:.2f} µs, added {wrapped - bare:.2f} µs per task")

    report("main thread (SIGALRM timer)")
    pool_thread = threading.Thread(target=report, args=("pool thread (watchdog)",))
    pool_thread.start()
    pool_thread.join()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (prefork's pool processes)."""
    total = 0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for proc in [pid, *map(int, children)]:
        fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def drain(tree: Path, task: str, n: int, pool: str, concurrency: int) -> None:
    """One worker of checkout `tree` drains `n` tasks; runs in a child process that imports that tree."""
    prefix = f"cgbench{secrets.token_hex(3)}_"
    env = {
        **os.environ,
        "CHECKGATE_QUEUE_PREFIX": prefix,
        "CHECKGATE_BROKER_URL": BROKER_URL,
        "CHECKGATE_RESULT_BACKEND": BACKEND_URL,
        "PYTHONPATH": str(tree),
    }
    # This file runs as a script in the other checkout, which need not have it.
    argv = [sys.executable, __file__, "_drain", task, str(n), pool, str(concurrency)]
    run = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=900)
    print(f"{tree.name}: {(run.stdout or run.stderr).strip().splitlines()[-1]}")


def _drain_here(task: str, n: int, pool: str, concurrency: int) -> None:
    import redis

    from tasks.celery import app

    prefix = os.environ["CHECKGATE_QUEUE_PREFIX"]
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", prefix + task, "-P", pool]
    argv += ["-c", str(concurrency), "-n", f"{prefix}bench@%h", "--without-gossip", "--without-mingle", "-l", "error"]
    worker = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = redis.Redis.from_url(BACKEND_URL)
    keys: list[str] = []
    try:
        time.sleep(10)  # started and idle
        cpu_before = _cpu_seconds(worker.pid)
        kwargs = {"ms": 0} if task == "sleep" else {"x": 1, "y": 2}
        expires = datetime.now(UTC) + timedelta(seconds=900)
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                sent = app.send_task(f"checkgate.{task}", kwargs=kwargs, expires=expires, producer=producer)
                keys.append(f"celery-task-meta-{sent.id}")
        give_up = time.monotonic() + 600
        while sum(results.exists(*keys[i : i + 1000]) for i in range(0, n, 1000)) < n:
            if time.monotonic() > give_up:
                raise TimeoutError("the worker did not drain the tasks in 600 s")
            time.sleep(0.2)
        cpu = _cpu_seconds(worker.pid) - cpu_before
        done = sorted(
            datetime.fromisoformat(str(app.backend.decode_result(raw)["date_done"]))
            for i in range(0, n, 1000)
            for raw in results.mget(keys[i : i + 1000])
        )
        skip = n // 10  # warm-up
        span = (done[-1] - done[skip]).total_seconds()
        rate, cost = (n - skip) / span, cpu / n * 1e6
        print(f"{task} {pool} -c {concurrency}: {rate:.0f} tasks/s, worker CPU {cost:.0f} µs/task")
    finally:
        worker.terminate()
        worker.wait(60)
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(prefix + task)
        for i in range(0, len(keys), 1000):
            results.delete(*keys[i : i + 1000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("micro")
    cmp = sub.add_parser("drain")
    cmp.add_argument("trees", nargs="+", type=Path)
    cmp.add_argument("--task", choices=("sleep", "add"), default="sleep")
    cmp.add_argument("-n", type=int, default=5000)
    cmp.add_argument("--pool", default="threads")
    cmp.add_argument("-c", "--concurrency", type=int, default=100)
    inner = sub.add_parser("_drain")
    for name in ("task", "n", "pool", "concurrency"):
        inner.add_argument(name)
    args = parser.parse_args()
    if args.command == "micro":
        micro()
    elif args.command == "drain":
        for tree in args.trees:
            drain(tree.resolve(), args.task, args.n, args.pool, args.concurrency)
    else:
        _drain_here(args.task, int(args.n), args.pool, int(args.concurrency))


if __name__ == "__main__":
    main()
