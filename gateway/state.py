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
from tasks.presence import presence_key, read_entries
from tasks.registry import CheckType
from tasks.schedule import latest_key

log = logging.getLogger("checkgate.gateway")

# How long /health's list of workers is reused before Redis is read again (seconds).
WORKERS_TTL = 5.0


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
    # The workers that announced themselves (tasks/presence.py) and their AMQP clients, refreshed by
    # `workers_seen` at most every WORKERS_TTL s; monotonic time of that read.
    workers: dict[str, dict[str, str]] = field(default_factory=dict)
    workers_asked: float = float("-inf")
    _workers_refresh: asyncio.Task[None] | None = None

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
        """The workers as last read (`workers`: node → {"transport", "client"}), starting a new read in the
        background when that is older than WORKERS_TTL: the workers announce themselves in the result
        backend's Redis (tasks/presence.py), read here with the asyncio client, so /health never waits for
        it; the first /health after start-up shows none yet. Celery's `inspect().stats()` would tell the
        same by a blocking broadcast, which the loop may not run (nor hand to a thread pool)."""
        results = getattr(self.client, "results", None)
        stale = time.monotonic() - self.workers_asked >= WORKERS_TTL
        if results is not None and stale and (self._workers_refresh is None or self._workers_refresh.done()):
            self.workers_asked = time.monotonic()
            self._workers_refresh = asyncio.get_running_loop().create_task(self._read_workers(results))
        return self.workers

    async def _read_workers(self, results: Any) -> None:
        try:
            raw = await results.read_hash(presence_key(self.queue_prefix))
        except Exception as exc:  # backend away: /health's backend field says it
            log.debug("worker presence not read: %s", exc)
            return
        self.workers = read_entries(raw, time.time())

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
