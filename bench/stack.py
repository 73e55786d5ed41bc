"""The bench's own deployment: isolated names, the shared worker pool, and process handling.

Like tests/support/stack.py: every queue and exchange carries a random prefix (`cgb<hex>_`) and
results go to the bench's own Redis db, so a run neither sees nor disturbs other users of the same
RabbitMQ and Redis; `cleanup()` deletes what the run created. Every process is started in its own
process group (gunicorn and prefork workers have children) and dies with the harness.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis
from kombu import Connection

ROOT = Path(__file__).resolve().parents[1]
BROKER_URL = os.environ.get("CHECKGATE_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND_URL = os.environ.get("CHECKGATE_BENCH_RESULT_BACKEND", "redis://127.0.0.1:6379/14")
BENCH_QUEUES = ("add", "sleep")
# The AMQP client the workers consume with: the variable of issue #17 (tasks/transport.py on that branch:
# auto, pyamqp or librabbitmq). The bench always sets it, so that `auto` never picks for it; a checkout
# that does not read it consumes with py-amqp, which `verify_transport` notices.
TRANSPORT_ENV = "CHECKGATE_BROKER_TRANSPORT"
WORKER_TRANSPORTS = ("pyamqp", "librabbitmq")
ADD_CONCURRENCY = 2
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_PR_SET_PDEATHSIG = 1


def require_local(url: str) -> None:
    """The bench only ever talks to this machine."""
    host = urlsplit(url).hostname or "127.0.0.1"
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"bench: {url} is not on 127.0.0.1; the bench only runs against local services")


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Proc:
    """A started process group and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pgid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _group_stats(pgid: int) -> dict[int, list[str]]:
    """pid → the fields of /proc/<pid>/stat after the command name, for every live process of group `pgid`."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) start at the last ')'.
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            out[int(entry.name)] = fields
    return out


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group `pgid`."""
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(f[11]) + int(f[12]) for f in _group_stats(pgid).values()) / ticks


def group_size(pgid: int) -> int:
    """How many running processes process group `pgid` has (zombies, dead but not yet reaped, left out)."""
    return sum(fields[0] != "Z" for fields in _group_stats(pgid).values())


@dataclass
class BenchStack:
    """Names, environment, workers and helper processes of one bench run."""

    logdir: Path
    broker_url: str = BROKER_URL
    backend_url: str = BACKEND_URL
    prefix: str = field(default_factory=lambda: f"cgb{secrets.token_hex(3)}_")
    procs: dict[str, Proc] = field(default_factory=dict)
    # Set by start_workers: worker slots and Celery node names per queue, and the transport asked for.
    slots: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, list[str]] = field(default_factory=dict)
    transport: str | None = None

    def __post_init__(self) -> None:
        require_local(self.broker_url)
        require_local(self.backend_url)
        self.logdir.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        """Environment of every child: the run's names and services, this checkout on the path."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHECKGATE_")}
        env.update(
            CHECKGATE_QUEUE_PREFIX=self.prefix,
            CHECKGATE_BROKER_URL=self.broker_url,
            CHECKGATE_RESULT_BACKEND=self.backend_url,
            # Results of the peers carry Celery's own ids (no prefix to clean up by): let Redis expire them.
            CHECKGATE_RESULT_EXPIRES="900",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(ROOT),
        )
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start `argv` in a new process group, output to <logdir>/<name>.log."""
        log = self.logdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env or self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # If the harness is killed outright, its children go too. preexec_fn is unsafe with threads
                # running; the harness spawns from its only thread.
                preexec_fn=die_with_parent,
            )
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def stop(self, name: str, grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after `grace` seconds."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=grace)
        # Children (gunicorn and prefork workers) may outlive their leader: the whole group goes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)

    def stop_all(self, grace: float = 10.0) -> None:
        """Stop every process at once: SIGTERM to every group, SIGKILL to what is left after `grace` s."""
        self._stop_together(list(self.procs), grace)

    def _stop_together(self, names: list[str], grace: float) -> None:
        procs = [self.procs.pop(name) for name in names if name in self.procs]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)

    # --- workers ---------------------------------------------------------------------------------

    def start_workers(self, sleep_slots: int, sleep_processes: int = 2, transport: str | None = None) -> dict[str, str]:
        """The pool every contender shares: add = prefork -c 2; sleep = threads, `sleep_slots` in all;
        consuming with `transport` (one of WORKER_TRANSPORTS; None: what the checkout picks)."""
        threads = max(1, -(-sleep_slots // sleep_processes))
        self.transport = transport
        # Every process started from now on (gateway, floor, drain, the celery CLI) reads celeryconfig with the
        # same choice as the workers: the floor, Celery's own client, consumes over librabbitmq too when the
        # workers do, so that the comparison stays fair (issue #17); the gateway publishes with its own client.
        if transport:
            self.env[TRANSPORT_ENV] = transport
        else:
            self.env.pop(TRANSPORT_ENV, None)
        self.nodes = {}
        self._worker("w-add", "add", ["-P", "prefork", "-c", str(ADD_CONCURRENCY)])
        for n in range(sleep_processes):
            self._worker(f"w-sleep{n}", "sleep", ["-P", "threads", "-c", str(threads)], node=f"sleep{n}")
        self.wait_consumers({"add": 1, "sleep": sleep_processes}, timeout=90)
        self.slots = {"add": ADD_CONCURRENCY, "sleep": threads * sleep_processes}
        return {
            "add": f"prefork -c {ADD_CONCURRENCY} (1 process)",
            "sleep": f"threads -c {threads} × {sleep_processes} processes = {threads * sleep_processes} slots",
        }

    def _worker(self, name: str, queue: str, pool: list[str], node: str | None = None) -> Proc:
        nodename = f"{self.prefix}{node or queue}@{socket.gethostname()}"
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", self.prefix + queue, "-O", "fair"]
        argv += [*pool, "-n", nodename, "--without-gossip", "--without-mingle"]
        argv += ["-l", "warning"]
        self.nodes.setdefault(queue, []).append(nodename)
        env = {**self.env, TRANSPORT_ENV: self.transport} if self.transport else None
        return self.spawn(name, argv, env)

    def stop_workers(self) -> None:
        """Warm-stop every worker (running tasks finish), then forget them."""
        self._stop_together([n for n in self.procs if n.startswith("w-")], grace=20.0)
        self.nodes, self.slots = {}, {}

    def celery_cli(self, *args: str, timeout: float = 60.0) -> str:
        """`celery -A tasks <args>` against the run's workers (its names and services); its stdout."""
        argv = [sys.executable, "-m", "celery", "-A", "tasks", *args]
        done = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"celery {' '.join(args)} failed ({done.returncode}): {done.stderr[-1500:]}")
        return done.stdout

    def consumer_transports(self) -> dict[str, str]:
        """Celery node → the kombu transport its task consumer uses, as `celery inspect stats` reports it
        (kombu names py-amqp and its stock librabbitmq transport both `amqp`; issue #17's is
        `librabbitmq-celery`)."""
        nodes = [n for names in self.nodes.values() for n in names]
        out = self.celery_cli("inspect", "stats", "--json", "-d", ",".join(nodes), "--timeout", "10")
        replies = json.loads(out[out.index("{") :])
        return {node: str(stats.get("broker", {}).get("transport")) for node, stats in replies.items()}

    def verify_transport(self) -> dict[str, str]:
        """Raise unless every worker consumes with the transport asked for; the transports reported."""
        reported = self.consumer_transports()
        missing = [n for names in self.nodes.values() for n in names if n not in reported]
        wrong = {n: t for n, t in reported.items() if ("librabbitmq" in t) != (self.transport == "librabbitmq")}
        if missing or wrong:
            raise RuntimeError(
                f"workers asked for {self.transport} ({TRANSPORT_ENV}) consume with {wrong or reported}"
                f"{f', no answer from {missing}' if missing else ''}: this checkout does not honour {TRANSPORT_ENV}"
            )
        return reported

    def resume_consumers(self) -> None:
        """Every queue consumed by its workers again: after a drain (bench.drain) that did not resume them."""
        counts = self.queue_counts()
        for queue, names in self.nodes.items():
            if counts[queue][1] < len(names):
                self.celery_cli(
                    "control", "add_consumer", self.prefix + queue, "-d", ",".join(names), "--timeout", "10"
                )

    def worker_pgids(self) -> dict[str, list[int]]:
        """Process groups of the workers, by queue."""
        out: dict[str, list[int]] = {}
        for name, proc in self.procs.items():
            if name.startswith("w-"):
                out.setdefault("sleep" if "sleep" in name else "add", []).append(proc.pgid)
        return out

    def check_alive(self) -> None:
        """Raise when a worker died (its log tells why)."""
        for name, proc in self.procs.items():
            if name.startswith("w-") and proc.popen.poll() is not None:
                raise RuntimeError(f"worker {name} exited ({proc.popen.returncode}): {proc.tail()}")

    # --- broker and backend ----------------------------------------------------------------------

    def _connection(self) -> Connection:
        # py-amqp explicitly: librabbitmq, where installed, lacks what the passive declares need.
        return Connection(self.broker_url.replace("amqp://", "pyamqp://", 1), connect_timeout=10)

    def queue_counts(self) -> dict[str, tuple[int, int]]:
        """(ready messages, consumers) of the bench queues."""
        out = {}
        with self._connection() as conn:
            channel = conn.default_channel
            for queue in BENCH_QUEUES:
                try:
                    _, messages, consumers = channel.queue_declare(self.prefix + queue, passive=True)
                except Exception:  # not declared yet (passive declare of a missing queue)
                    channel = conn.channel()
                    messages, consumers = 0, 0
                out[queue] = (messages, consumers)
        return out

    def wait_consumers(self, expected: dict[str, int], timeout: float) -> None:
        """Wait until each queue has its workers consuming."""
        deadline = time.monotonic() + timeout
        counts: dict[str, tuple[int, int]] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            counts = self.queue_counts()
            if all(counts[q][1] >= n for q, n in expected.items()):
                return
            time.sleep(0.3)
        raise TimeoutError(f"workers not consuming after {timeout:.0f} s: {counts}")

    def settle(self, task_s: float) -> None:
        """Empty the queues after a cell and let the tasks already running finish.

        A stopped peer may leave tasks behind (Flask and Flower publish without expiry); the next
        contender must find every worker slot free.
        """
        self.purge()
        time.sleep(task_s + 0.3)
        self.purge()

    def purge(self) -> None:
        with self._connection() as conn:
            channel = conn.default_channel
            for queue in BENCH_QUEUES:
                with contextlib.suppress(Exception):
                    channel.queue_purge(self.prefix + queue)

    def backend_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.backend_url, socket_timeout=10)

    def cleanup(self) -> None:
        """Delete the run's queues, exchanges and prefixed Redis keys (best effort: the bench's own
        `--cleanup` runs it after a harness that died, when some of them may be gone already)."""
        from tasks.registry import load_checks  # imports the check modules only, not celeryconfig

        with contextlib.suppress(Exception):
            cleanup_deployment(
                self.prefix, self.broker_url, self.backend_url, {c.queue for c in load_checks().values()}
            )


# --- shared with the tests' harness (tests/support/stack.py) ---------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cleanup_deployment(
    prefix: str, broker_url: str, backend_url: str, queues: Iterable[str], scan_bodies: bool = False
) -> None:
    """Delete a deployment's queues and exchanges (its `queues` and Celery's own, each under `prefix`),
    and every Redis key that carries the prefix (results, run counters, beat's keys, schedule pointers).

    For the bench's and the tests' deployments on the shared RabbitMQ and Redis: RabbitMQ deletes a
    queue or exchange that is not there without complaint, and every call is bounded (10 s connect and
    socket timeouts). `scan_bodies` also deletes results whose ids do not carry the prefix (beat's plain
    uuids) but whose bodies name it. Raises what the broker or Redis raise (`OSError`, kombu's and
    redis-py's errors) when they cannot be reached.
    """
    # py-amqp explicitly: librabbitmq, where installed, lacks what the deletes need.
    with Connection(broker_url.replace("amqp://", "pyamqp://", 1), connect_timeout=10) as conn:
        channel = conn.default_channel
        for name in {*queues, "celery"}:
            channel.queue_delete(prefix + name)
        for exchange in ("checkgate", "celery.pidbox", "celeryev"):
            channel.exchange_delete(prefix + exchange)
        channel.exchange_delete(f"reply.{prefix}celery.pidbox")
    client = redis.Redis.from_url(backend_url, socket_timeout=10, socket_connect_timeout=10)
    try:
        keys = set(client.scan_iter(match=f"*{prefix}*", count=1000))
        if scan_bodies:
            for key in client.scan_iter(match="celery-task-meta-*", count=1000):
                if prefix.encode() in (client.get(key) or b""):
                    keys.add(key)
        batch = list(keys)
        for start in range(0, len(batch), 500):
            client.delete(*batch[start : start + 500])
    finally:
        client.close()
