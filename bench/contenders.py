"""The contenders: how each is started, told apart when ready, asked for a check, and stopped.

All of them use the bench's workers and broker. A contender is started afresh for every cell and
stopped after it: a saturated blocking peer still holds hundreds of queued requests when the load
ends, and they must not spill into the next cell.
"""

from __future__ import annotations

import json
import math
import select
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families

from bench.floor import READY, merge
from bench.load import MARKER, Target
from bench.scenarios import Stream
from bench.stack import BenchStack, Proc, free_port

# gunicorn sizing of the article's blocking baseline: 10 workers × 3 threads.
FLASK_WORKERS = 10
FLASK_THREADS = 3
WARM_CONCURRENCY = FLASK_WORKERS * FLASK_THREADS


def overhead_buckets(text: str) -> dict[str, list[tuple[float, int]]]:
    """The buckets of `checkgate_gateway_overhead_seconds` in a /metrics text, read with prometheus_client's
    parser: type → [(le, cumulative count)], ascending, ending with (inf, count)."""
    out: dict[str, list[tuple[float, int]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "checkgate_gateway_overhead_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                out.setdefault(sample.labels["type"], []).append((float(sample.labels["le"]), int(sample.value)))
    return {type_name: sorted(buckets) for type_name, buckets in out.items()}


def http(url: str, method: str = "GET", body: str = "", timeout: float = 30.0) -> tuple[int, Any]:
    """One request: (status, parsed JSON body or text)."""
    data = body.encode() if body else None
    request = urllib.request.Request(url, data=data, method=method)
    if data:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Contender:
    """Base: one process (group) serving HTTP on a free port of 127.0.0.1."""

    name: ClassVar[str]
    label: ClassVar[str]

    def __init__(self, stack: BenchStack) -> None:
        self.stack = stack
        self.proc: Proc | None = None
        self.base = ""

    def start(self, cell: int) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.proc = self.stack.spawn(f"{self.name}-{cell}", self.argv(port), self.env(port, cell))
        self.wait_ready(timeout=60)

    def argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def env(self, port: int, cell: int) -> dict[str, str]:
        return self.stack.env

    def ready_path(self) -> str:
        return "/health"

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.popen.returncode}): {self.proc.tail()}")
            try:
                status, last = http(self.base + self.ready_path(), timeout=5)
                if status == 200 and self.is_up(last):
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s (last answer {last!r}): {self.proc.tail()}")

    def is_up(self, body: Any) -> bool:
        return True

    def self_time(self) -> dict[str, list[tuple[float, int]]] | None:
        """The contender's own histogram of its time per answer, by check type, if it keeps one."""
        return None

    def stop(self) -> None:
        if self.proc is not None:
            self.stack.stop(self.proc.name, grace=3.0)
            self.proc = None

    def pgid(self) -> int | None:
        return self.proc.pgid if self.proc else None

    def target(self, stream: Stream) -> Target:
        """The request that runs `stream`'s check once."""
        return Target(f"{self.base}/check/{stream.check}?{urllib.parse.urlencode(stream.params)}")

    def result_of(self, body: Any) -> Any:
        return body.get("result") if isinstance(body, dict) else None

    def warm(self, streams: tuple[Stream, ...]) -> None:
        """Requests of every stream, checked for the right answer: a broken peer fails fast.

        Up to 30 at once (every thread of the blocking peer), three rounds of short tasks: pools,
        connections and lazy imports are set up before the clock starts.
        """
        with ThreadPoolExecutor(max_workers=WARM_CONCURRENCY) as pool:
            for given in streams:
                stream = given.concrete(7)  # one fixed number will do for warm-up
                target = self.target(stream)
                count = min(stream.clients, WARM_CONCURRENCY) * (3 if stream.task_s <= 0.5 else 1)
                calls = [
                    pool.submit(http, target.url, target.method, target.body, stream.task_s + 30) for _ in range(count)
                ]
                for call in calls:
                    status, body = call.result(timeout=stream.task_s + 90)
                    if status != 200 or self.result_of(body) != stream.expected():
                        raise RuntimeError(f"{self.name} answered {status} {str(body)[:300]} to {target}")


class Checkgate(Contender):
    """This project's gateway: `python -m gateway`."""

    name = "checkgate"
    label = "checkgate"

    def argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", "gateway"]

    def env(self, port: int, cell: int) -> dict[str, str]:
        # A distinct id prefix per process, as the gateway requires.
        return {**self.stack.env, "CHECKGATE_PORT": str(port), "CHECKGATE_ID_PREFIX": f"{self.stack.prefix}gw{cell}-"}

    def is_up(self, body: Any) -> bool:
        return isinstance(body, dict) and body["broker"]["ok"] and body["backend"]["ok"]

    def self_time(self) -> dict[str, list[tuple[float, int]]] | None:
        """checkgate_gateway_overhead_seconds from /metrics: type → [(le, cumulative count)]."""
        status, text = http(self.base + "/metrics", timeout=60)
        if status != 200 or not isinstance(text, str):
            return None
        return overhead_buckets(text)


class Blocking(Contender):
    """The original article's baseline: Flask under gunicorn, a thread blocked per request."""

    name = "blocking"
    label = f"Flask+gunicorn {FLASK_WORKERS}×{FLASK_THREADS}"

    def argv(self, port: int) -> list[str]:
        argv = [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(FLASK_WORKERS)]
        argv += ["--threads", str(FLASK_THREADS), "-b", f"127.0.0.1:{port}", "--backlog", "4096"]
        # Import once in the master (no connection is opened before the fork), not 10 times.
        argv += ["--preload", "--log-level", "warning", "-c", "python:bench.peers.gunicorn_conf"]
        argv += ["bench.peers.flask_app:app"]
        return argv


class Flower(Contender):
    """Flower's `POST /api/task/apply/<task>`: publishes, then waits for the result in a thread."""

    name = "flower"
    label = "Flower apply API"

    def argv(self, port: int) -> list[str]:
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "flower", "--address=127.0.0.1", f"--port={port}"]
        # No events: Flower would otherwise switch task events on in the shared workers, which then
        # cost every later contender CPU. The apply API does not need them.
        argv += ["--enable_events=False", "--logging=warning"]
        return argv

    def env(self, port: int, cell: int) -> dict[str, str]:
        # Flower 2 refuses its API without auth unless told; the bench is 127.0.0.1 only.
        return {**self.stack.env, "FLOWER_UNAUTHENTICATED_API": "true"}

    def ready_path(self) -> str:
        return "/healthcheck"

    def target(self, stream: Stream) -> Target:
        body = json.dumps({"kwargs": stream.params}, separators=(",", ":"))
        return Target(f"{self.base}/api/task/apply/checkgate.{stream.check}", "POST", body)

    def result_of(self, body: Any) -> Any:
        if isinstance(body, dict) and body.get("state") == "SUCCESS":
            return body.get("result")
        return None


class Floor(Contender):
    """Celery's own client, no HTTP: `procs` bench.floor processes sharing the clients."""

    name = "floor"
    label = "Celery client (floor)"
    # Celery's client costs a few ms of CPU per task (send_task, a publish confirm, a SUBSCRIBE and an
    # UNSUBSCRIBE per result): one process tops out below what the workers drain, so several share
    # the clients. 0: one process per 250 clients, 2 to 4.
    procs = 0

    def start(self, cell: int) -> None:
        self.cell = cell

    def warm(self, streams: tuple[Stream, ...]) -> None:
        pass  # every bench.floor process warms itself up before the clock starts

    def target(self, stream: Stream) -> Target:
        raise TypeError("the floor is not addressed over HTTP")

    def process_count(self, streams: tuple[Stream, ...]) -> int:
        if self.procs:
            return self.procs
        return min(4, max(2, math.ceil(sum(s.clients for s in streams) / 250)))

    def launch(self, streams: tuple[Stream, ...], window: int, ready_timeout: float = 90) -> FloorRun:
        """Start the floor processes, each with a share of every stream's clients; return once all are warm."""
        count = self.process_count(streams)
        popens = []
        for n in range(count):
            plan = {
                "window": window,
                "streams": [
                    {
                        "name": s.name,
                        "task": f"checkgate.{s.check}",
                        "kwargs": s.params,
                        # Clients split as evenly as possible; a process may get none of a small stream.
                        # Client i of process n is client i * count + n of the stream, for the ramp.
                        "clients": s.clients // count + (1 if n < s.clients % count else 0),
                        "first_client": n,
                        "client_stride": count,
                        "all_clients": s.clients,
                        "ramp_s": s.ramp_s,
                        "start": s.start,
                        "window_at": s.window_at,
                        "task_s": s.task_s,
                    }
                    for s in streams
                ],
            }
            log = self.stack.logdir / f"floor-{self.cell}-{n}.log"
            with log.open("ab") as err:
                popens.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.floor", json.dumps(plan)],
                        cwd=self.stack.env["PYTHONPATH"],
                        env=self.stack.env,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                        start_new_session=True,
                    )
                )
        run = FloorRun(popens, self.stack.logdir / f"floor-{self.cell}-0.log", window)
        try:
            run.wait_ready(ready_timeout)
        except BaseException:
            run.kill()
            raise
        return run


class FloorRun:
    """Running bench.floor processes of one cell."""

    def __init__(self, popens: list[subprocess.Popen[str]], log: Path, window: int) -> None:
        self.popens = popens
        self.log = log
        self.window = window

    @property
    def pgids(self) -> list[int]:
        return [p.pid for p in self.popens]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for popen in self.popens:
            assert popen.stdout is not None
            ready, _, _ = select.select([popen.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = popen.stdout.readline().strip() if ready else ""
            if line != READY:
                raise RuntimeError(f"floor not ready ({line!r}): {self.log.read_text(errors='replace')[-2000:]}")

    def go(self, t0: float) -> None:
        """Tell every process the start time."""
        for popen in self.popens:
            assert popen.stdin is not None
            popen.stdin.write(f"{t0}\n")
            popen.stdin.flush()

    def result(self, timeout: float) -> dict[str, dict[str, Any]]:
        """Stats per stream, merged over the processes."""
        deadline = time.monotonic() + timeout
        outputs = []
        for popen in self.popens:
            try:
                out, _ = popen.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                out = ""
            line = next((ln for ln in out.splitlines() if ln.startswith(MARKER)), None)
            if popen.poll() != 0 or line is None:
                self.kill()
                raise RuntimeError(f"floor failed ({popen.returncode}): {self.log.read_text(errors='replace')[-2000:]}")
            outputs.append(json.loads(line[len(MARKER) :]))
        return merge(outputs, self.window)

    def kill(self) -> None:
        for popen in self.popens:
            if popen.poll() is None:
                popen.kill()
                popen.wait()


CONTENDERS: dict[str, type[Contender]] = {c.name: c for c in (Checkgate, Blocking, Flower, Floor)}
