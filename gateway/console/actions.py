"""Start, stop and restart processes on many nodes: in parallel, or as a rolling restart.

Every call asks supervisord to wait (`wait=True`): it answers once the process is RUNNING (after its
`startsecs`) or stopped, or with a fault (SPAWN_ERROR, ABNORMAL_TERMINATION, …). supervisord does that
wait without blocking itself, and we do it without blocking the loop, so one call per process is both
the action and its confirmation. Supervisor has no restart call: restart is stop, then start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from supervisor.xmlrpc import Faults

from gateway.console.config import ConsoleSettings
from gateway.console.health import HealthProbe
from gateway.console.poller import Poller
from gateway.nodes import NodeConfig
from gateway.supervisor_rpc import RpcClient, RpcError, RpcFault

ACTIONS = ("start", "stop", "restart", "rolling")
# Actions that take something down: the UI asks first, and the server wants `confirm=yes`.
DESTRUCTIVE = frozenset({"stop", "restart", "rolling"})
# Calls in flight to one node at once: enough for a big group, polite to a small supervisord.
PER_NODE_CONCURRENCY = 8
HEALTH_RETRY_S = 0.5


class Busy(Exception):
    """Another action is still working on some of these processes."""


@dataclass
class ProcessResult:
    """What became of one process."""

    process: str
    ok: bool
    message: str


@dataclass
class NodeResult:
    """What became of one node's share of an action."""

    node: str
    processes: list[ProcessResult] = field(default_factory=list)
    error: str = ""
    skipped: bool = False
    health: str = ""
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and not self.skipped and all(p.ok for p in self.processes)


@dataclass
class Outcome:
    """The whole action: per-node results and a one-word summary."""

    action: str
    nodes: list[NodeResult]
    duration_ms: float = 0.0

    @property
    def result(self) -> str:
        """ok (everything worked), failed (nothing did) or partial."""
        oks = [n.ok for n in self.nodes]
        return "ok" if all(oks) else "failed" if not any(oks) else "partial"

    def as_dict(self) -> dict[str, Any]:
        nodes = [{**asdict(n), "ok": n.ok} for n in self.nodes]
        return {"action": self.action, "result": self.result, "duration_ms": self.duration_ms, "nodes": nodes}


class ActionRunner:
    """Runs actions against the nodes of a Poller, reporting per node and per process."""

    def __init__(self, settings: ConsoleSettings, rpc: RpcClient, probe: HealthProbe, poller: Poller) -> None:
        self.settings = settings
        self.rpc = rpc
        self.probe = probe
        self.poller = poller
        self._limits = {n.name: asyncio.Semaphore(PER_NODE_CONCURRENCY) for n in settings.nodes}
        # node/namespec of every process an action is working on: a second action on the same process
        # (a double click, two operators) is refused instead of interleaving stops and starts.
        self.busy: set[str] = set()

    async def run(self, action: str, targets: Iterable[tuple[str, str]]) -> Outcome:
        """`action` on every (node, namespec) target; rolling goes node by node, the rest in parallel.

        :arg action: one of ACTIONS (`start`, `stop`, `restart`, `rolling`).
        :arg targets: (node name, namespec) pairs, e.g. from `views.resolve`.
        :returns: the Outcome, per node and per process (a failed process is a result, not an error).
        :raises ValueError: an unknown action. :raises Busy: another action is working on one of them.

        Each start/stop waits up to `action_timeout` seconds; a rolling restart also waits up to
        `health_timeout` seconds per node for its `health_url`.
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        by_node: dict[str, list[str]] = {}
        for node, spec in targets:
            by_node.setdefault(node, []).append(spec)
        keys = {f"{node}/{spec}" for node, specs in by_node.items() for spec in specs}
        if keys & self.busy:
            raise Busy(f"another action is still running on {', '.join(sorted(keys & self.busy)[:5])}")
        self.busy |= keys
        started = time.monotonic()
        try:
            if action == "rolling":
                results = await self._rolling(by_node)
            else:
                jobs = [self._on_node(node, action, specs) for node, specs in by_node.items()]
                results = list(await asyncio.gather(*jobs))
        finally:
            self.busy -= keys
            self.poller.refresh(list(by_node))
        return Outcome(action, results, round((time.monotonic() - started) * 1000, 1))

    async def _rolling(self, by_node: dict[str, list[str]]) -> list[NodeResult]:
        """Restart one node's share at a time; the next node waits for RUNNING and a healthy app."""
        results: list[NodeResult] = []
        failed = ""
        for node, specs in by_node.items():
            if failed:
                results.append(NodeResult(node, skipped=True, error=f"not restarted: stopped after {failed} failed"))
                continue
            result = await self._on_node(node, "restart", specs)
            self.poller.refresh([node])  # browsers see the rolling restart advance node by node
            config = self.settings.node(node)
            if result.ok and config is not None and config.health_url:
                healthy, result.health = await self._wait_healthy(config)
                if not healthy:
                    result.error = f"application not healthy: {result.health}"
            results.append(result)
            if not result.ok:
                failed = node
        return results

    async def _wait_healthy(self, node: NodeConfig) -> tuple[bool, str]:
        """Poll the node's health_url until it answers 200 or `health_timeout` passes."""
        started = time.monotonic()
        deadline = started + self.settings.health_timeout
        while True:
            health = await self.probe.fetch(node.health_url, self.settings.rpc_timeout)
            if health.ok:
                return True, f"HTTP 200 ({health.status}) after {time.monotonic() - started:.1f} s"
            if time.monotonic() >= deadline:
                return False, health.error or f"HTTP {health.http_status}"
            await asyncio.sleep(HEALTH_RETRY_S)

    async def _on_node(self, node: str, action: str, specs: list[str]) -> NodeResult:
        started = time.monotonic()
        config = self.settings.node(node)
        if config is None:
            return NodeResult(node, error="unknown node")
        results = await asyncio.gather(*(self._one(config, action, spec) for spec in specs))
        return NodeResult(node, list(results), duration_ms=round((time.monotonic() - started) * 1000, 1))

    async def _one(self, node: NodeConfig, action: str, spec: str) -> ProcessResult:
        async with self._limits[node.name]:
            try:
                if action in ("stop", "restart"):
                    stopped = await self._call(node, "supervisor.stopProcess", spec, Faults.NOT_RUNNING)
                    if action == "stop":
                        return ProcessResult(spec, True, "STOPPED" if stopped else "was not running")
                started = await self._call(node, "supervisor.startProcess", spec, Faults.ALREADY_STARTED)
            except RpcError as exc:
                return ProcessResult(spec, False, str(exc))
        # An operator's start is not a crash: it must not count toward a restart loop.
        self.poller.tracker.forgive(f"{node.name}/{spec}")
        if action == "restart":
            return ProcessResult(spec, True, "restarted, RUNNING")
        return ProcessResult(spec, True, "RUNNING" if started else "was already running")

    async def _call(self, node: NodeConfig, method: str, spec: str, harmless: int) -> bool:
        """Call a start/stop method; False when it was a no-op (`harmless` fault), True when done."""
        try:
            await self.rpc.call(node, method, spec, True, timeout=self.settings.action_timeout)
        except RpcFault as fault:
            if fault.code == harmless:
                return False
            raise
        return True
