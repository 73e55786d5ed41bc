"""The contenders: how each is started, told apart when ready, asked for a check, and stopped.

All of them use the bench's workers and broker. A contender is started afresh for every cell and
stopped after it: a saturated blocking peer still holds hundreds of queued requests when the load
ends, and they must not spill into the next cell.

HTTP front ends: checkgate (one process, and `checkgate-multi`: N processes on one port), the article's
blocking Flask+gunicorn, Flower's apply API, FastAPI+uvicorn, and `bare` — Tornado+uvloop doing no
work, the floor of a Python front end's CPU per answer. Without HTTP (`Direct`): the floor (Celery's
own client, bench.floor) and the drain (the workers alone, bench.drain: a bound).

A contender runs the scenario kinds in its `kinds`; one that cannot run here (a package missing, a
feature the checkout lacks) raises `Skip` with the reason, and the report shows it as skipped.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families

from bench.floor import READY, merge
from bench.load import MARKER, Target
from bench.scenarios import DRAINED_KINDS, KINDS, Scenario, Stream
from bench.stack import BenchStack, Proc, free_port

# gunicorn sizing of the article's blocking baseline: 10 workers × 3 threads.
FLASK_WORKERS = 10
FLASK_THREADS = 3
WARM_CONCURRENCY = FLASK_WORKERS * FLASK_THREADS
# anyio's default thread limiter, which Starlette's run_in_threadpool uses.
FASTAPI_THREADS = 40
# The multi-process gateway of issue #15 part 1, started as supervisord starts it: N commands on one port,
# each told how many share it (CHECKGATE_PROCESSES=N: it binds with SO_REUSEPORT), its number
# (CHECKGATE_PROCESS_NUM) and the directory their metrics are merged from (PROMETHEUS_MULTIPROC_DIR).
PROCESSES_ENV = "CHECKGATE_PROCESSES"
PROCESS_NUM_ENV = "CHECKGATE_PROCESS_NUM"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# What gateway/server.py logs once a process listens.
LISTENING = "checkgate gateway on http"


class Skip(Exception):
    """This contender cannot run here (a package or a feature is missing); the message says which."""


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


def http(
    url: str, method: str = "GET", body: str | bytes = "", timeout: float = 30.0, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One request, a JSON `body` if any, with `headers` added: (status, parsed JSON body or text)."""
    data = (body.encode() if isinstance(body, str) else body) or None
    request = urllib.request.Request(url, data=data, method=method)
    if data:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
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
    # The scenario kinds it is run in.
    kinds: ClassVar[tuple[str, ...]] = KINDS
    # Whether its processes are a front end whose CPU per answer the report gives.
    front_end: ClassVar[bool] = True
    # Whether its answers are the workers' tasks, so that bounds and the ratios to peers apply to its rate.
    runs_tasks: ClassVar[bool] = True
    # Whether it sends the workers anything (their CPU per answer is then reported).
    uses_workers: ClassVar[bool] = True
    # Modules it needs (the `[bench]` extra); missing ones make it Skip.
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, stack: BenchStack) -> None:
        self.stack = stack
        self.proc: Proc | None = None
        self.base = ""

    @classmethod
    def describe(cls) -> str:
        """The label the report shows."""
        return cls.label

    def check_requirements(self) -> None:
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise Skip(f"{', '.join(missing)} not installed (pip install -e '.[bench]')")

    def start(self, cell: int) -> None:
        self.check_requirements()
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

    def pgids(self) -> list[int]:
        """Process groups whose CPU is the contender's."""
        return [self.proc.pgid] if self.proc else []

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


class FlowerApplyAPI:
    """Asked the way a client of Flower's REST API asks: ``POST /api/task/apply/<task>`` with JSON
    kwargs; the answer's ``result`` counts when its ``state`` is SUCCESS."""

    base: str

    def target(self, stream: Stream) -> Target:
        body = json.dumps({"kwargs": stream.params}, separators=(",", ":"))
        return Target(f"{self.base}/api/task/apply/checkgate.{stream.check}", "POST", body)

    def result_of(self, body: Any) -> Any:
        if isinstance(body, dict) and body.get("state") == "SUCCESS":
            return body.get("result")
        return None


class Checkgate(Contender):
    """This project's gateway: `python -m gateway`."""

    name = "checkgate"
    label = "checkgate"

    def argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", "gateway"]

    def env(self, port: int, cell: int) -> dict[str, str]:
        # An id prefix of the run (each process of checkgate-multi ends it with its number); one process,
        # whatever the default.
        env = {**self.stack.env, "CHECKGATE_PORT": str(port), "CHECKGATE_ID_PREFIX": f"{self.stack.prefix}gw{cell}-"}
        return {**env, PROCESSES_ENV: "1"}

    def is_up(self, body: Any) -> bool:
        return isinstance(body, dict) and body["broker"]["ok"] and body["backend"]["ok"]

    def self_time(self) -> dict[str, list[tuple[float, int]]] | None:
        """checkgate_gateway_overhead_seconds from /metrics: type → [(le, cumulative count)]."""
        status, text = http(self.base + "/metrics", timeout=60)
        if status != 200 or not isinstance(text, str):
            return None
        return overhead_buckets(text)


class CheckgateMulti(Checkgate):
    """checkgate as `processes` gateway processes on one port (issue #15 part 1), for 1 → N.

    Started as supervisord.conf's `[program:gateway]` starts them: N `python -m gateway` sharing the port
    (each with CHECKGATE_PROCESSES=N, its CHECKGATE_PROCESS_NUM, and an empty PROMETHEUS_MULTIPROC_DIR of the
    cell, so /metrics, which `self_time` reads, sums them all), up once each has logged that it listens.
    A checkout whose gateway cannot share its port (the second process cannot bind) has every cell
    skipped, saying so.
    """

    name = "checkgate-multi"
    label = "checkgate ×N"
    kinds = ("unique", "sleep")
    processes: ClassVar[int] = max(2, os.cpu_count() or 2)
    # A Skip's reason once a start found the gateway cannot share its port; None until then.
    mode: ClassVar[str | None] = None

    def __init__(self, stack: BenchStack) -> None:
        super().__init__(stack)
        self.procs: list[Proc] = []

    @classmethod
    def describe(cls) -> str:
        return f"checkgate ×{cls.processes} processes"

    def start(self, cell: int) -> None:
        cls = type(self)
        if cls.mode is not None:
            raise Skip(cls.mode)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        metrics_dir = self.stack.logdir / f"{self.name}-{cell}-metrics"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
        for n in range(self.processes):
            env = {
                **self.env(port, cell),
                PROCESSES_ENV: str(self.processes),
                PROCESS_NUM_ENV: str(n),
                MULTIPROC_DIR_ENV: str(metrics_dir),
            }
            self.procs.append(self.stack.spawn(f"{self.name}-{cell}-{n}", self.argv(port), env))
        self.proc = self.procs[0]
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                exited = [p for p in self.procs if p.popen.poll() is not None]
                if exited:
                    tail = exited[0].tail()
                    if "Address already in use" in tail or "EADDRINUSE" in tail:
                        cls.mode = f"the gateway serves one process per port here: {PROCESSES_ENV} is not supported"
                        raise Skip(cls.mode)
                    raise RuntimeError(f"{exited[0].name} exited ({exited[0].popen.returncode}): {tail}")
                # Each process logs this line (gateway/server.py) once it listens.
                if all(LISTENING in p.tail(20000) for p in self.procs):
                    self.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
                    return
                time.sleep(0.2)
            raise TimeoutError(f"{self.processes} gateway processes not all up after 60 s")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in self.procs:
            self.stack.stop(proc.name, grace=3.0)
        self.procs, self.proc = [], None

    def pgids(self) -> list[int]:
        return [p.pgid for p in self.procs]


class Blocking(Contender):
    """The original article's baseline: Flask under gunicorn, a thread blocked per request."""

    name = "blocking"
    label = f"Flask+gunicorn {FLASK_WORKERS}×{FLASK_THREADS}"
    requires = ("flask", "gunicorn")

    def argv(self, port: int) -> list[str]:
        argv = [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(FLASK_WORKERS)]
        argv += ["--threads", str(FLASK_THREADS), "-b", f"127.0.0.1:{port}", "--backlog", "4096"]
        # Import once in the master (no connection is opened before the fork), not 10 times.
        argv += ["--preload", "--log-level", "warning", "-c", "python:bench.peers.gunicorn_conf"]
        argv += ["bench.peers.flask_app:app"]
        return argv


class Flower(FlowerApplyAPI, Contender):
    """Flower's `POST /api/task/apply/<task>`: publishes, then waits for the result in a thread."""

    name = "flower"
    label = "Flower apply API"
    requires = ("flower",)

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


class CheckgateFlowerAPI(FlowerApplyAPI, Checkgate):
    """checkgate serving Flower's task API (`CHECKGATE_TASK_API`, issue #16): the Flower contender's very
    client, pointed at checkgate, so the two differ only in the server."""

    name = "checkgate-flower-api"
    label = "checkgate, Flower's apply API"

    def env(self, port: int, cell: int) -> dict[str, str]:
        return {**super().env(port, cell), "CHECKGATE_TASK_API": "checkgate.*"}


class FastAPI(Contender):
    """FastAPI under uvicorn (uvloop, httptools): `.delay()`, then `AsyncResult.get` in its thread pool."""

    name = "fastapi"
    label = f"FastAPI+uvicorn ({FASTAPI_THREADS} threads)"
    requires = ("fastapi", "uvicorn")

    def argv(self, port: int) -> list[str]:
        argv = [sys.executable, "-m", "uvicorn", "bench.peers.fastapi_app:app", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--backlog", "4096", "--no-access-log", "--log-level", "warning"]
        return argv


class Bare(Contender):
    """Tornado on uvloop answering with no work behind it (bench.peers.bare_app): the floor of a Python
    front end's CPU per answer, at the same rate and concurrency as the others."""

    name = "bare"
    label = "bare Tornado+uvloop (no work)"
    kinds = ("unique", "sleep")
    runs_tasks = False
    uses_workers = False
    requires = ("tornado", "uvloop")

    def argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", "bench.peers.bare_app", str(port)]


class Direct(Contender):
    """A contender without HTTP: child processes that load the workers themselves, spoken to by DirectRun."""

    def start(self, cell: int) -> None:
        self.cell = cell

    def warm(self, streams: tuple[Stream, ...]) -> None:
        pass  # the child processes warm up before they say READY

    def target(self, stream: Stream) -> Target:
        raise TypeError(f"{self.name} is not addressed over HTTP")

    def launch(self, scenario: Scenario, ready_timeout: float = 90) -> DirectRun:
        """Start the child processes; return once all are READY."""
        raise NotImplementedError

    def _spawn(self, module: str, plan: dict[str, Any], log: Path) -> subprocess.Popen[str]:
        with log.open("ab") as err:
            return subprocess.Popen(
                [sys.executable, "-m", module, json.dumps(plan)],
                cwd=self.stack.env["PYTHONPATH"],
                env=self.stack.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )


class Floor(Direct):
    """Celery's own client, no HTTP: `procs` bench.floor processes sharing the clients."""

    name = "floor"
    label = "Celery client (floor)"
    # Celery's client costs a few ms of CPU per task (send_task, a publish confirm, a SUBSCRIBE and an
    # UNSUBSCRIBE per result): one process tops out below what the workers drain, so several share
    # the clients. 0: one process per 250 clients, 2 to 4.
    procs = 0

    def process_count(self, streams: tuple[Stream, ...]) -> int:
        if self.procs:
            return self.procs
        return min(4, max(2, math.ceil(sum(s.clients for s in streams) / 250)))

    def launch(self, scenario: Scenario, ready_timeout: float = 90) -> DirectRun:
        """Start the floor processes, each with a share of every stream's clients; return once all are warm."""
        streams, window = scenario.streams, scenario.window
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
            popens.append(self._spawn("bench.floor", plan, self.stack.logdir / f"floor-{self.cell}-{n}.log"))
        run = DirectRun(popens, self.stack.logdir / f"floor-{self.cell}-0.log", lambda outs: merge(outs, window))
        run.wait_ready(ready_timeout)
        return run


class Drain(Direct):
    """The workers alone (bench.drain): the scenario's task from a queue filled in advance, no front end.

    Its rate is a bound of the scenario. The queue is filled with what the workers should get through in
    the lead-in, the window and a little more at the rate measured in an earlier drain of the same task
    on the same workers (× 1.5: sleep@60 and sleep@1000 drain the same task), else at
    min(slots / T, GUESS_RPS); a drain that runs dry says so (`starved`).
    """

    name = "drain"
    label = "workers alone (drain)"
    kinds = DRAINED_KINDS
    front_end = False
    runs_tasks = False  # it is the bound, not measured against one
    # The first drain of a task has no measured rate to size its queue by: a guess above any drain seen
    # here (add: 1,399 tasks/s on a quiet 2-core VM), as a queue that runs dry before the window opens
    # leaves the cell with no answers to measure (the smoke's single round always did at 300).
    GUESS_RPS = 2500.0
    MAX_TASKS = 40_000
    # Rates measured so far, by what was drained: (check, its parameters, worker transport).
    learned: ClassVar[dict[tuple[str, str, str], float]] = {}

    @staticmethod
    def key(scenario: Scenario) -> tuple[str, str, str]:
        stream = scenario.stream(scenario.primary)
        return stream.check, json.dumps(stream.params, sort_keys=True), scenario.transport

    def tasks_for(self, scenario: Scenario) -> int:
        stream = scenario.stream(scenario.primary)
        slots = self.stack.slots.get(stream.check, 1)
        known = self.learned.get(self.key(scenario))
        rate = 1.5 * known if known else self.GUESS_RPS
        if stream.task_s > 0:
            rate = min(rate, slots / stream.task_s)
        span = math.ceil(stream.window_at) + 1 + scenario.window + max(0.5, stream.task_s)
        return min(self.MAX_TASKS, math.ceil(rate * span) + slots)

    def launch(self, scenario: Scenario, ready_timeout: float = 180) -> DirectRun:
        stream = scenario.stream(scenario.primary)
        plan = {
            "window": scenario.window,
            "stream": {
                "name": stream.name,
                "task": f"checkgate.{stream.check}",
                "kwargs": stream.params,
                "window_at": stream.window_at,
                "task_s": stream.task_s,
            },
            "queue": self.stack.prefix + stream.check,
            "nodes": self.stack.nodes[stream.check],
            "tasks": self.tasks_for(scenario),
        }
        log = self.stack.logdir / f"drain-{self.cell}.log"
        popen = self._spawn("bench.drain", plan, log)

        def combine(outputs: list[dict[str, Any]]) -> dict[str, Any]:
            out = outputs[0]
            if out["streams"][stream.name]["rps"] > 0:
                type(self).learned[self.key(scenario)] = out["streams"][stream.name]["rps"]
            return {**out["streams"], "_drain": out["drain"]}

        run = DirectRun([popen], log, combine)
        run.wait_ready(ready_timeout)
        return run

    def stop(self) -> None:
        # A drain killed between pausing the consumers and resuming them must not leave them paused.
        self.stack.resume_consumers()


class DirectRun:
    """Running child processes of one Direct contender's cell: READY, then t0 on stdin, then one
    BENCH_JSON line each, which `combine` turns into the cell's stats per stream."""

    def __init__(
        self,
        popens: list[subprocess.Popen[str]],
        log: Path,
        combine: Callable[[list[dict[str, Any]]], dict[str, Any]],
    ) -> None:
        self.popens = popens
        self.log = log
        self.combine = combine

    @property
    def pgids(self) -> list[int]:
        return [p.pid for p in self.popens]

    def wait_ready(self, timeout: float) -> None:
        """Wait for every process's READY line; kill them all when one is not ready in time (or on any
        interruption), so no half-started run is left behind."""
        deadline = time.monotonic() + timeout
        try:
            for popen in self.popens:
                assert popen.stdout is not None
                ready, _, _ = select.select([popen.stdout], [], [], max(0.0, deadline - time.monotonic()))
                line = popen.stdout.readline().strip() if ready else ""
                if line != READY:
                    raise RuntimeError(
                        f"{self.log.stem} not ready ({line!r}): {self.log.read_text(errors='replace')[-2000:]}"
                    )
        except BaseException:
            self.kill()
            raise

    def go(self, t0: float) -> None:
        """Tell every process the start time."""
        for popen in self.popens:
            assert popen.stdin is not None
            popen.stdin.write(f"{t0}\n")
            popen.stdin.flush()

    def result(self, timeout: float) -> dict[str, dict[str, Any]]:
        """Stats per stream, combined over the processes."""
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
                raise RuntimeError(
                    f"{self.log.stem} failed ({popen.returncode}): {self.log.read_text(errors='replace')[-2000:]}"
                )
            outputs.append(json.loads(line[len(MARKER) :]))
        return self.combine(outputs)

    def kill(self) -> None:
        for popen in self.popens:
            if popen.poll() is None:
                popen.kill()
                popen.wait()


CONTENDERS: dict[str, type[Contender]] = {
    c.name: c for c in (Checkgate, CheckgateMulti, Blocking, Flower, CheckgateFlowerAPI, FastAPI, Bare, Floor, Drain)
}
