"""Polling the nodes: one `supervisor.getAllProcessInfo` per node per tick, every node on its own.

Each node has its own polling task, so a node that times out delays nobody but itself; pages render
from the last snapshot and never wait for a node. A node in error is retried with a doubling delay
(capped by `retry_max`) and comes back by itself when it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from supervisor.options import make_namespec
from supervisor.states import RUNNING_STATES, getProcessStateDescription

from gateway.console.config import ConsoleSettings
from gateway.console.health import Health, HealthProbe
from gateway.nodes import NodeConfig
from gateway.supervisor_rpc import RpcClient, RpcError

log = logging.getLogger("checkgate.console")

# The state names supervisor counts as running (RUNNING, BACKOFF, STARTING).
RUNNING_STATENAMES = frozenset(getProcessStateDescription(code) for code in RUNNING_STATES)


@dataclass
class ProcessInfo:
    """One process of one node as last polled, plus what the console derived from its history."""

    node: str
    group: str
    name: str
    state: str
    pid: int = 0
    start: int = 0
    stop: int = 0
    now: int = 0
    exitstatus: int = 0
    spawnerr: str = ""
    description: str = ""
    # Starts seen within the restart-loop window, and whether that many means a restart loop.
    recent_starts: int = 0
    looping: bool = False

    @property
    def namespec(self) -> str:
        """Supervisor's name for the process: `name` alone when its group is its own, else `group:name`."""
        return make_namespec(self.group, self.name)

    @property
    def key(self) -> str:
        """node/namespec: how a process is named in forms and URLs."""
        return f"{self.node}/{self.namespec}"

    @property
    def uptime(self) -> int:
        """Seconds since the process started, by the node's clock (0 unless it is up)."""
        return max(0, self.now - self.start) if self.state == "RUNNING" and self.start else 0

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATENAMES

    @classmethod
    def from_rpc(cls, node: str, raw: dict[str, Any]) -> ProcessInfo:
        return cls(
            node=node,
            group=str(raw.get("group", "")),
            name=str(raw.get("name", "")),
            state=str(raw.get("statename", "UNKNOWN")),
            pid=int(raw.get("pid") or 0),
            start=int(raw.get("start") or 0),
            stop=int(raw.get("stop") or 0),
            now=int(raw.get("now") or 0),
            exitstatus=int(raw.get("exitstatus") or 0),
            spawnerr=str(raw.get("spawnerr") or ""),
            description=str(raw.get("description") or ""),
        )


class RestartTracker:
    """Flags processes that keep (re)starting: `limit` spawns within `window` seconds is a restart loop.

    Supervisor stamps `start` on every spawn attempt, crashed or not, so a changed `start` between two
    polls is one more start; the node's own clock (`now`) measures the window, so clock skew between
    console and node does not matter. Starts the console itself asked for are forgiven.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._last_start: dict[str, int] = {}
        self._starts: dict[str, deque[int]] = {}

    def observe(self, proc: ProcessInfo) -> None:
        """Record `proc`'s latest poll and set its `recent_starts` and `looping`."""
        key = proc.key
        starts = self._starts.setdefault(key, deque(maxlen=max(self.limit * 4, 16)))
        previous = self._last_start.get(key)
        if previous is not None and proc.start and proc.start != previous:
            starts.append(proc.start)
        self._last_start[key] = proc.start
        while starts and starts[0] < proc.now - self.window:
            starts.popleft()
        proc.recent_starts = len(starts)
        proc.looping = len(starts) >= self.limit and proc.state not in ("STOPPED", "FATAL")

    def forgive(self, key: str) -> None:
        """Forget the history of `key` (an operator's restart is not a crash)."""
        self._starts.pop(key, None)
        self._last_start.pop(key, None)


@dataclass
class NodeState:
    """What the console knows about one node right now."""

    config: NodeConfig
    status: str = "connecting"  # connecting | ok | error
    error: str = ""
    processes: list[ProcessInfo] = field(default_factory=list)
    last_ok: float = 0.0
    latency_ms: float = 0.0
    failures: int = 0
    version: str = ""
    health: Health | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def process(self, spec: str) -> ProcessInfo | None:
        """The process named `spec` (namespec) on this node, if the last poll saw it."""
        return next((p for p in self.processes if p.namespec == spec), None)

    def digest(self) -> tuple[Any, ...]:
        """What a browser shows of this node, to tell whether anything changed since the last tick."""
        procs = tuple((p.key, p.state, p.pid, p.start, p.exitstatus, p.looping) for p in self.processes)
        h = self.health
        health = h and (h.ok, h.status, h.error, repr(h.queues), repr(h.workers))
        return (self.status, self.error, self.version, procs, health)


class Poller:
    """Keeps a NodeState per configured node fresh; wakes waiters when anything they show changed."""

    def __init__(self, settings: ConsoleSettings, rpc: RpcClient, probe: HealthProbe) -> None:
        self.settings = settings
        self.rpc = rpc
        self.probe = probe
        self.nodes = {n.name: NodeState(n) for n in settings.nodes}
        self.tracker = RestartTracker(settings.loop_starts, settings.loop_window)
        self.version = 0
        self._changed = asyncio.Event()
        self._wake = {name: asyncio.Event() for name in self.nodes}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        """Start one polling task per node."""
        self._tasks = [
            asyncio.create_task(self._run(state), name=f"console-poll-{state.name}") for state in self.nodes.values()
        ]

    async def stop(self) -> None:
        """Let each polling task finish its request in flight (at most rpc_timeout), then end them.

        Cancelling a fetch mid-connect leaves Tornado to log the connection's late failure as an error;
        waiting out the current poll is quiet and costs at most one timeout at shutdown.
        """
        self._stopping = True
        for wake in self._wake.values():
            wake.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.rpc_timeout + 1)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def refresh(self, names: list[str] | None = None) -> None:
        """Poll these nodes (all when None) now instead of at their next tick."""
        for name in names if names is not None else list(self._wake):
            if name in self._wake:
                self._wake[name].set()

    async def wait_change(self, seen: int, timeout: float) -> int:
        """Wait until the version moves past `seen`, or `timeout` seconds; returns the current version."""
        if self.version == seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        return self.version

    async def _run(self, state: NodeState) -> None:
        wake = self._wake[state.name]
        interval = self.settings.poll_interval
        while not self._stopping:
            before = state.digest()
            try:
                await self.poll(state)
            except Exception:  # a bug must not end the node's polling for good
                log.exception("console: polling %s failed", state.name)
            if state.digest() != before:
                self._notify()
            # Doubling per failure, capped (min() before the power: a node dead for days must not overflow it).
            backoff = interval * 2 ** min(state.failures, 16)
            delay = interval if state.status == "ok" else min(self.settings.retry_max, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
            if not self._stopping:
                wake.clear()

    async def poll(self, state: NodeState) -> None:
        """One tick for one node: its processes and, when configured, its application health.

        Updates `state` in place (status `ok` or `error` with the reason); each request waits at most
        `rpc_timeout` seconds. Raises only on a bug (anything but RpcError from the client).
        """
        node, timeout = state.config, self.settings.rpc_timeout
        started = time.monotonic()
        health_url = node.health_url
        results = await asyncio.gather(
            self.rpc.call(node, "supervisor.getAllProcessInfo", timeout=timeout),
            self.probe.fetch(health_url, timeout) if health_url else _none(),
            return_exceptions=True,
        )
        infos, health = results
        if isinstance(health, Health):
            state.health = health
        if isinstance(infos, BaseException):
            if not isinstance(infos, RpcError):
                raise infos
            if state.status != "error" or state.error != str(infos):
                log.warning("console: node %s: %s", node.name, infos)
            state.status, state.error = "error", str(infos)
            state.failures += 1
            state.version = ""
            return
        processes = [ProcessInfo.from_rpc(node.name, raw) for raw in infos]
        for proc in processes:
            self.tracker.observe(proc)
        state.latency_ms = round((time.monotonic() - started) * 1000, 1)
        if state.status != "ok":
            log.info("console: node %s is up (%d processes)", node.name, len(processes))
            with contextlib.suppress(RpcError):
                state.version = await self.rpc.call(node, "supervisor.getSupervisorVersion", timeout=timeout)
        state.status, state.error, state.failures = "ok", "", 0
        state.processes = processes
        state.last_ok = time.time()

    def wake_all(self) -> None:
        """Wake every `wait_change` waiter (at shutdown, so event streams notice and end)."""
        self._notify()

    def _notify(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


async def _none() -> None:
    return None
