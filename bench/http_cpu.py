"""The worker's CPU per `http` check: this tree's check against another revision's, in one run.

    .venv/bin/python -m bench.http_cpu [--seconds 10] [--rounds 3] [--threads 60] [--ref main]

A Tornado target answers ``GET /text`` (27 bytes) on 127.0.0.1 in a process of its own, so its CPU is
not counted. Each contender's check function is called from `--threads` threads (a Celery thread pool's
view of the check) for `--seconds`; the figure is the checking process's CPU time (user + system, all
threads, `time.process_time`) divided by the checks done. Contenders alternate within each round, and
the medians over rounds are printed with the ratio new / old. The other revision's `tasks/checks/http.py`
is read with `git show` and imported under another module name.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

TARGET = """
import sys, tornado.httpserver, tornado.ioloop, tornado.netutil, tornado.web
class Text(tornado.web.RequestHandler):
    def get(self):
        self.write(b"hello from checkgate tests\\n")
sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/text", Text)]))
server.add_sockets(sockets)
print(sockets[0].getsockname()[1], flush=True)
tornado.ioloop.IOLoop.current().start()
"""


def load_revision(ref: str) -> ModuleType:
    """`tasks/checks/http.py` as of git revision `ref`, imported as a module of its own."""
    from tasks.registry import REGISTRY

    source = subprocess.run(
        ["git", "show", f"{ref}:tasks/checks/http.py"], capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"http_{ref.replace('/', '_')}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    ours = REGISTRY["http"]
    spec.loader.exec_module(module)
    REGISTRY["http"] = ours  # the old module registered itself under the same name
    return module


def measure(check: Callable[..., dict[str, Any]], url: str, seconds: float, threads: int) -> tuple[int, int, float]:
    """(checks, failed checks, CPU seconds) of `threads` threads calling `check(url)` for `seconds`."""
    stop = time.monotonic() + seconds
    done = [0] * threads
    failed = [0] * threads

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            ok = check(url)["ok"]
            done[i] += 1
            failed[i] += not ok

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    cpu = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done), sum(failed), time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=60)
    parser.add_argument("--ref", default="main", help="the revision to compare against (default: main)")
    args = parser.parse_args()
    os.environ.setdefault("CHECKGATE_ALLOW_NETWORKS", "127.0.0.0/8")  # the target is on loopback

    from tasks.checks import http

    contenders = {f"old ({args.ref})": load_revision(args.ref).http_check, "new (this tree)": http.http_check}
    target = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None
        url = f"http://127.0.0.1:{target.stdout.readline().strip()}/text"
        per_check: dict[str, list[float]] = {name: [] for name in contenders}
        for round_ in range(args.rounds):
            for name, check in contenders.items():
                assert check(url)["ok"], name
                done, failed, cpu = measure(check, url, args.seconds, args.threads)
                per_check[name].append(cpu / done * 1e6)
                print(
                    f"round {round_ + 1} {name:16} {done:7d} checks ({failed} not ok) {done / args.seconds:7.0f}/s "
                    f"CPU {cpu:6.2f} s = {cpu / done * 1e6:5.0f} us/check",
                    flush=True,
                )
        medians = {name: statistics.median(values) for name, values in per_check.items()}
        old, new = medians.values()
        print(f"median CPU per check: old {old:.0f} us, new {new:.0f} us, new/old {new / old:.2f}")
    finally:
        target.terminate()
        target.wait()


if __name__ == "__main__":
    main()
