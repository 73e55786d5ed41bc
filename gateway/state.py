"""What the gateway's handlers share: the client, the settings, the check types, counters and backpressure.

One `Gateway` per process, built by gateway/server.py and handed to every handler (gateway/http_api.py).
It decides when a new request must be shed to keep the backlog bounded (`refusal`), keeps the queues'
depth fresh for that (`watch_queues`), and holds the metric objects /metrics reports (gateway/metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.aiocelery import BrokerUnavailable, CeleryClient
from gateway.auth import KeyRing
from gateway.config import Settings
from gateway.locations import Locations
from gateway.metrics import GatewayMetrics
from gateway.sharing import SharedResults
from tasks.registry import CheckType
from tasks.schedule import latest_key

log = logging.getLogger("checkgate.gateway")

# How long /health's list of workers is reused before Celery is asked again (seconds), and how long the
# workers have to answer (`celery inspect stats`'s own default is 1 s).
WORKERS_TTL = 5.0
WORKERS_REPLY_TIMEOUT = 1.0
# kombu's transport names (`broker.transport` of a worker's stats) → the AMQP client a person knows.
_CLIENTS = {"amqp": "py-amqp", "pyamqp": "py-amqp", "amqps": "py-amqp", "librabbitmq": "librabbitmq"}
_CLIENTS["librabbitmq-celery"] = "librabbitmq"  # tasks/transport.py's scheme


def worker_transports(stats: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """Celery node → {"transport": kombu's name, "client": "py-amqp" | "librabbitmq" | that name}, from the
    replies of `app.control.inspect().stats()` (each worker's `broker.transport`; None when none answered)."""
    out = {}
    for node, reply in (stats or {}).items():
        transport = str(((reply or {}).get("broker") or {}).get("transport") or "")
        out[str(node)] = {"transport": transport, "client": _CLIENTS.get(transport, transport or "unknown")}
    return out


@dataclass
class Gateway:
    """What the handlers share: the client, the settings, the check types and the counters."""

    client: CeleryClient
    settings: Settings
    checks: Mapping[str, CheckType]
    queues: Mapping[str, str]
    inflight: int = 0
    # Set once the process stops listening (SIGTERM): answers then close their connections.
    draining: bool = False
    inflight_by_type: Counter[str] = field(default_factory=Counter)
    # Ready messages and consumers per queue, refreshed by `watch_queues`.
    queue_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    shared: SharedResults = field(default_factory=SharedResults)
    keys: KeyRing | None = None
    # CHECKGATE_QUEUE_PREFIX: scheduled-check pointers carry it, like queue names.
    queue_prefix: str = ""
    # Answers by handler and code, the gateway's own time per answered check, the state gauges.
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    # The deployment's locations (CHECKGATE_LOCATIONS) and their queues; none by default.
    locations: Locations = field(default_factory=lambda: Locations((), {}))
    # The workers that answered the latest `inspect stats` and their AMQP clients (`worker_transports`),
    # refreshed by `workers_seen` at most every WORKERS_TTL s; monotonic time of that question.
    workers: dict[str, dict[str, str]] = field(default_factory=dict)
    workers_asked: float = float("-inf")
    _workers_refresh: asyncio.Future[Any] | None = None

    def count_refusal(self, status: int) -> None:
        """Count a request the HTTP edge refused before any handler (gateway/edge.py)."""
        self.metrics.count_response("edge", status)

    def refusal(self, check: CheckType, queue: str | None = None) -> str | None:
        """Why a new `check` request must be refused now to keep the backlog bounded, or None; `queue`:
        the one its task takes when not the type's own (a location's)."""
        settings = self.settings
        if self.inflight >= settings.max_inflight:
            return "too many requests in flight"
        if self.inflight_by_type[check.name] >= settings.max_inflight_per_type:
            return f"too many {check.name!r} checks in flight"
        queue = queue or self.queues[check.name]
        depth = self.queue_stats.get(queue, {}).get("messages", 0)
        if depth >= settings.max_queue_depth:
            return f"queue {queue!r} holds {depth} waiting tasks"
        return None

    async def scheduled_runs(self) -> dict[str, dict[str, Any]]:
        """Name → meta of the latest finished run of each scheduled check (raises BackendUnavailable)."""
        return await self.client.results.latest_runs(latest_key("", self.queue_prefix))

    def sample_metrics(self) -> None:
        """Set the state gauges of /metrics from this process's state (at each scrape and each second)."""
        metrics = self.metrics
        metrics.inflight.set(self.inflight)
        metrics.waiting_results.set(self.client.results.pending)
        metrics.broker_up.set(int(self.client.broker.available))
        metrics.backend_up.set(int(self.client.results.available))

    def workers_seen(self) -> dict[str, dict[str, str]]:
        """The workers as last asked (`workers`), starting a new question in the background when that is
        older than WORKERS_TTL: Celery's own broadcast (`inspect().stats()`, its reply queue and timeout)
        runs in a thread of the default executor, so /health never waits for it and the loop never blocks;
        the first /health after start-up shows none yet."""
        app = getattr(self.client, "app", None)  # a stand-in client without a Celery app (tests): no workers
        stale = time.monotonic() - self.workers_asked >= WORKERS_TTL
        if app is not None and stale and (self._workers_refresh is None or self._workers_refresh.done()):
            self.workers_asked = time.monotonic()
            future = asyncio.get_running_loop().run_in_executor(
                None, lambda: app.control.inspect(timeout=WORKERS_REPLY_TIMEOUT).stats()
            )
            future.add_done_callback(self._workers_answered)
            self._workers_refresh = future
        return self.workers

    def _workers_answered(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:  # broker away: the queues' consumers in /health say it too
            log.debug("inspect stats failed: %s", exc)
            self.workers = {}
            return
        self.workers = worker_transports(future.result())

    async def watch_queues(self, interval: float = 1.0) -> None:
        """Keep `queue_stats` fresh so deep queues shed load, and the state gauges of /metrics (in
        multiprocess mode a scrape reads every process's from their last sample); runs until cancelled."""
        while True:
            try:
                self.queue_stats = await self.client.broker.queue_stats()
            except BrokerUnavailable:
                self.queue_stats = {}
            self.sample_metrics()
            await asyncio.sleep(interval)
