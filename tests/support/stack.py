"""A real checkgate stack for tests: workers and gateways as subprocesses, isolated by a name prefix.

Every queue and exchange name carries the stack's prefix (celeryconfig's CHECKGATE_QUEUE_PREFIX) and
results go to the test's own Redis db, so a run neither sees nor disturbs other users of the same
broker and Redis; `cleanup()` deletes what the run created.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import runpy
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FunctionType, ModuleType
from typing import TYPE_CHECKING, Any

from celery import Celery

from bench.stack import cleanup_deployment, free_port
from tasks.registry import load_checks

if TYPE_CHECKING:
    from tests.support.netns import Host

ROOT = Path(__file__).resolve().parents[2]
EXTRA_CHECKS = "tests.support.extra_checks"


def http_get(url: str, timeout: float = 30.0) -> tuple[int, Any, dict[str, str]]:
    """GET `url`: (status, parsed JSON body or text, headers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), dict(exc.headers)
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, raw.decode(errors="replace"), headers


def http_get_in_background(url: str, timeout: float = 60.0) -> Future[tuple[int, Any, dict[str, str]]]:
    """`http_get(url, timeout)` in a thread of its own: the future of its answer."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(http_get, url, timeout)
    pool.shutdown(wait=False)
    return future


def poll_result(
    gateway: str, task_id: str, within: float = 30.0, interval: float = 0.2, until: int | None = None
) -> tuple[int, Any]:
    """GET `gateway`/result/<id> every `interval` s until its status is `until` (by default: until it is no
    longer pending, 202) or `within` s have passed: (status, body) of the last answer."""
    give_up = time.monotonic() + within
    while True:
        status, body, _ = http_get(f"{gateway}/result/{task_id}")
        done = status == until if until is not None else status != 202
        if done or time.monotonic() > give_up:
            return status, body
        time.sleep(interval)


class Stack:
    """Workers and gateways of one isolated checkgate deployment."""

    def __init__(
        self, workdir: Path, prefix: str, broker_url: str, backend_url: str, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.broker_url = broker_url
        self.backend_url = backend_url
        # The deployment's gateway, Flower and Supervisor ports, known to its workers as under supervisord:
        # the target policy refuses them.
        self.gateway_port = free_port()
        self.env = {
            **os.environ,
            "CHECKGATE_PORT": str(self.gateway_port),
            "CHECKGATE_FLOWER_PORT": os.environ.get("CHECKGATE_FLOWER_PORT") or str(free_port()),
            "CHECKGATE_SUPERVISOR_PORT": os.environ.get("CHECKGATE_SUPERVISOR_PORT") or str(free_port()),
            "CHECKGATE_QUEUE_PREFIX": prefix,
            "CHECKGATE_BROKER_URL": broker_url,
            "CHECKGATE_RESULT_BACKEND": backend_url,
            "CHECKGATE_CHECK_MODULES": EXTRA_CHECKS,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        # Locations whose queues (`<queue>@<location>`) the run may have declared, for `cleanup`.
        self.locations: set[str] = set()

    def client_app(self, **env: str) -> Celery:
        """A Celery app configured exactly as this stack's workers (celeryconfig read under the stack's
        environment, plus `env`), for tests that publish or inspect with Celery's own client."""
        with _environ({**self.env, **env}):
            settings = runpy.run_path(str(ROOT / "celeryconfig.py"))
        app = Celery(f"{self.prefix}client", set_as_current=False)
        # Settings only: the module's imports (modules, classes, functions) are not.
        plain = (ModuleType, type, FunctionType)
        app.conf.update({k: v for k, v in settings.items() if k.islower() and k[0] != "_" and not isinstance(v, plain)})
        return app

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], nofile: int | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}.log"

        def limit_files() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with log.open("ab") as out:
            # stdin is a pipe held open, as supervisord leaves it: reading it would block for ever.
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=limit_files,
            )
        self.procs[name], self.logs[name] = proc, log
        return proc

    def start_worker(
        self,
        name: str,
        queues: list[str],
        pool: str = "threads",
        concurrency: int = 10,
        ready_timeout: float = 60,
        host: Host | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `celery -A tasks worker` on the prefixed `queues` and wait until it is ready; inside the
        network namespace `host` if given, with `env` added to the stack's environment."""
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker"]
        argv += ["-Q", ",".join(self.prefix + q for q in queues)]
        argv += ["-O", "fair", "-P", pool, "-c", str(concurrency), "-n", f"{self.prefix}{name}@%h"]
        argv += ["--without-gossip", "--without-mingle", "-l", "info"]
        if host is not None:
            argv = host.command(argv)
        proc = self._spawn(name, argv, self._noting_locations({**self.env, **(env or {})}))
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited: {self.logs[name].read_text()[-2000:]}")
            if " ready." in self.logs[name].read_text(errors="replace"):
                return proc
            time.sleep(0.1)
        raise TimeoutError(f"worker {name} not ready: {self.logs[name].read_text()[-2000:]}")

    def start_gateway(
        self,
        name: str = "gateway",
        wait_up: bool = True,
        port: int | None = None,
        nofile: int | None = None,
        host: Host | None = None,
        **env: str,
    ) -> str:
        """Start the gateway process; return its base URL once it answers (and is connected if `wait_up`).

        `port`: where it listens (`gateway_port` for the deployment's own gateway); a free port by default.
        `nofile`: its RLIMIT_NOFILE (how many file descriptors it may hold). `host`: the network namespace
        it runs in (it then listens on the host's address).
        """
        port = port or free_port()
        gateway_env = {**self.env, "CHECKGATE_PORT": str(port), "CHECKGATE_ID_PREFIX": f"{self.prefix}{name}-", **env}
        argv = [sys.executable, "-m", "gateway"]
        address = "127.0.0.1"
        if host is not None:
            argv, address = host.command(argv), host.address
            gateway_env["CHECKGATE_BIND"] = address
        proc = self._spawn(name, argv, self._noting_locations(gateway_env), nofile)
        base = f"http://{address}:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway {name} exited: {self.logs[name].read_text()[-2000:]}")
            try:
                _, body, _ = http_get(base + "/health", timeout=5)
            except OSError:
                time.sleep(0.1)
                continue
            if not wait_up or (body["broker"]["ok"] and body["backend"]["ok"]):
                return base
            time.sleep(0.1)
        raise TimeoutError(f"gateway {name} not up: {self.logs[name].read_text()[-2000:]}")

    def _noting_locations(self, env: dict[str, str]) -> dict[str, str]:
        """`env`, after noting the locations (CHECKGATE_LOCATIONS, CHECKGATE_LOCATION) it declares queues for."""
        named = f"{env.get('CHECKGATE_LOCATIONS', '')},{env.get('CHECKGATE_LOCATION', '')}"
        self.locations.update(n.strip() for n in named.split(",") if n.strip())
        return env

    def wait_for_log(self, name: str, needle: str, count: int = 1, timeout: float = 20) -> None:
        """Wait until process `name`'s log holds `needle` at least `count` times (AssertionError after
        `timeout` s)."""
        deadline = time.monotonic() + timeout
        while self.logs[name].read_text(errors="replace").count(needle) < count:
            assert time.monotonic() < deadline, f"{needle!r} ×{count} not in {name}'s log"
            time.sleep(0.05)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to a process of the stack and reap it."""
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        if proc.stdin is not None:
            proc.stdin.close()

    def stop(self) -> None:
        """Stop every process (TERM, then KILL after a grace period)."""
        stop_processes(self.procs.values())
        self.procs.clear()

    def cleanup(self) -> None:
        """Delete the run's queues, exchanges and Redis keys from the shared broker and Redis."""
        queues = {c.queue for c in load_checks().values()}
        queues |= {f"{queue}@{where}" for queue in queues for where in self.locations}
        cleanup_deployment(self.prefix, self.broker_url, self.backend_url, queues)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        """Leaving the block, even by an exception: stop every process, then delete the run's names."""
        self.stop()
        self.cleanup()


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """`os.environ` replaced by `env` for the block."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], grace: float = 15) -> None:
    """TERM every process still running, then KILL those not gone after `grace` seconds."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
