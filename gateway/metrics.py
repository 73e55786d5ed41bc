"""The gateway's own metrics, served at `GET /metrics`: every metric object of a process, in one registry.

Rendered by prometheus_client (text format 0.0.4), which escapes label values and HELP text:

    checkgate_http_responses_total{code,handler}     counter: answers by handler (or check type) and status
                                                     code; handler "edge" counts gateway/edge.py's refusals
    checkgate_inflight_requests                      gauge: /check requests admitted and not yet answered
    checkgate_waiting_results                        gauge: task results this process awaits from Redis
    checkgate_broker_up, checkgate_backend_up        gauge: 1 while the AMQP connection / the result
                                                     subscription is up, else 0
    checkgate_gateway_processes                      gauge: gateway processes serving the port (1 each)
    checkgate_gateway_overhead_seconds{type}         histogram: the gateway's own time per answered check
                                                     (OVERHEAD_BUCKETS; bench/ reads its quantiles)
    checkgate_scheduled_check_success{name,type}     gauge, from Redis at scrape time (`ScheduledRun`)
    checkgate_scheduled_check_last_run_timestamp_seconds{name,type}

The state gauges are set from the `Gateway` when a scrape is served and once a second by its queue watch
(`Gateway.sample_metrics`), never on the request path; counters and the histogram are updated per answer
(`python -m bench.metrics_cost`: 3.7–4.1 µs of CPU per answered check for both, as with the hand-written
counters before). No `_created` series: they would double the series count for nothing the dashboards use,
and multiprocess mode does not produce them anyway.

A scrape renders on the event loop: 2.5–3.9 ms of CPU with 16 check types answered and 20 scheduled checks
(0.3–0.5 ms before prometheus_client), 43–46 ms with 206 types and 500 scheduled checks (6–7 ms before) —
the library escapes and validates each of the histogram's 20 samples per type. Answers in flight wait that
long once per scrape interval.

Several gateway processes behind one port (CHECKGATE_PROCESSES > 1, issue #15) answer for the whole gateway
with prometheus_client's multiprocess mode: `checkgate run` sets PROMETHEUS_MULTIPROC_DIR (var/metrics/,
emptied at each start, before any gateway process exists), and `use_multiprocess` makes each process write
its values to files named by its process number there (supervisord's ``process_num``; the pid for a process
alone). Every scrape, on whichever process, merges all the files (`MultiProcessCollector`): counters and
the histogram are summed over every process that ever ran since the start, so they never go backwards
when one restarts (a restarted process reopens its number's files and counts on); `inflight` and
`waiting_results` are the sum over live processes, `broker_up`/`backend_up` their minimum, and
`checkgate_gateway_processes` counts the live ones. Each process samples its gauges once a second
(`Gateway.sample_metrics`), so the others' are at most a second old. A process that stops marks itself
dead (its live gauges go), and one that starts removes what a killed predecessor of its number left.
Numbers rather than pids name the files so that a process killed without a chance to mark itself dead
leaves nothing stale for longer than supervisord takes to restart it, and the directory does not grow
with restarts. Cost on the hot path (count_response + observe_overhead, best of 5 × 100,000 in a fresh
process, 2-core VM at load average 12): 3.7 µs per answer with the values in files, 2.8 µs in memory.
The scheduled checks' series come from Redis and are the same in every process: they stay
a per-scrape collector.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric

# The text format the gateway answers with (version 0.0.4, what generate_latest writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: the gateway's own share is sub-millisecond when idle and grows with queueing; fine steps
# around the design's 5 ms target. The benchmark reads quantiles as these bounds: keep them stable.
OVERHEAD_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

# prometheus_client's own variable: the directory every gateway process of one node writes its values to.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

disable_created_metrics()


def use_multiprocess(identity: str) -> Path | None:
    """Put this process's metric values in PROMETHEUS_MULTIPROC_DIR, in files named by `identity` (its
    process number, or its pid), and return the directory; None (values in memory, as for one process)
    when the variable is unset. Call once, before the first `GatewayMetrics`. Removes the live gauges a
    predecessor with the same `identity` left, so a process killed without `mark_dead` is not counted
    twice. Raises OSError when the directory cannot be read."""
    path = os.environ.get(MULTIPROC_ENV, "")
    if not path:
        return None
    directory = Path(path)
    if not directory.is_dir():
        raise OSError(f"{MULTIPROC_ENV}={path!r} is not a directory")
    multiprocess.mark_process_dead(identity, path)
    values.ValueClass = values.MultiProcessValue(lambda: identity)
    return directory


def mark_dead(identity: str) -> None:
    """Drop this process's live gauges from the gateway's (a process stopping); nothing without a directory."""
    path = os.environ.get(MULTIPROC_ENV, "")
    if path:
        multiprocess.mark_process_dead(identity, path)


class ScheduledRun(NamedTuple):
    """The latest finished run of one scheduled check, as /metrics reports it."""

    name: str  # the schedule.toml entry
    type: str  # its check type ("" when the stored meta does not say)
    ok: bool  # the task succeeded and its result is not `ok: false`
    finished_at: float | None  # epoch seconds (the meta's date_done), None when unreadable


class GatewayMetrics:
    """The metric objects of one gateway process and the registry that renders them.

    One per `Gateway` (gateway/state.py), hence one per process in production; the in-process tests build
    many, each starting from zero.
    """

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        # `use_multiprocess`'s directory: scrapes then merge every process's files there.
        self.multiprocess_dir = multiprocess_dir
        self.registry = registry = CollectorRegistry()
        self.processes = Gauge(
            "checkgate_gateway_processes",
            "Gateway processes serving the port (1 per live process, summed).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.processes.set(1)
        self.responses = Counter(
            "checkgate_http_responses",
            "HTTP responses by handler or check type and status code.",
            ("handler", "code"),
            registry=registry,
        )
        self.inflight = Gauge(
            "checkgate_inflight_requests",
            "Check requests admitted and not yet answered.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.waiting_results = Gauge(
            "checkgate_waiting_results",
            "Task results the gateway awaits from the result backend.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.broker_up = Gauge(
            "checkgate_broker_up",
            "1 while the gateway's broker connection is open (every process's, in multiprocess mode).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.backend_up = Gauge(
            "checkgate_backend_up",
            "1 while the gateway's result subscription is confirmed (every process's, in multiprocess mode).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.overhead = Histogram(
            "checkgate_gateway_overhead_seconds",
            "Time a check answered by a task of its own spent in the gateway itself: the request but the time "
            "its task was with broker, worker and Redis.",
            ("type",),
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )

    def count_response(self, handler: str, status: int) -> None:
        """Count one answer of `handler` (a handler's name, a check type or "edge") with HTTP `status`."""
        self.responses.labels(handler, str(status)).inc()

    def observe_overhead(self, type_name: str, seconds: float) -> None:
        """Count the gateway's own time for one answered check (negative values, from clock steps, as 0)."""
        self.overhead.labels(type_name).observe(max(0.0, seconds))

    def exposition(self, scheduled: Iterable[ScheduledRun] = ()) -> bytes:
        """The text for one scrape: the gateway's metrics (every process's, merged, in multiprocess mode),
        then the scheduled checks' series."""
        registry = self.registry
        if self.multiprocess_dir is not None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, str(self.multiprocess_dir))
        return generate_latest(registry) + generate_latest(ScheduledChecks(scheduled))

    def gateway_wide(self) -> dict[str, int]:
        """The live gauges summed over every process (`processes`, `inflight`, `waiting_results`; this
        process's own values without a multiprocess directory), as /health reports them."""
        names = {
            "checkgate_gateway_processes": "processes",
            "checkgate_inflight_requests": "inflight",
            "checkgate_waiting_results": "waiting_results",
        }
        if self.multiprocess_dir is None:
            return {key: int(self.registry.get_sample_value(name) or 0) for name, key in names.items()}
        files = glob.glob(str(self.multiprocess_dir / "gauge_livesum_*.db"))
        found = dict.fromkeys(names.values(), 0)
        for family in multiprocess.MultiProcessCollector.merge(files, accumulate=False):
            for sample in family.samples:
                if sample.name in names:
                    found[names[sample.name]] = int(sample.value)
        return found


class ScheduledChecks:
    """A collector of the scheduled checks' series from runs read before the scrape (Redis is asynchronous,
    `collect` is not); no family at all when there is no run, as before prometheus_client."""

    def __init__(self, runs: Iterable[ScheduledRun]) -> None:
        self.runs = sorted(runs, key=lambda run: run.name)

    def collect(self) -> Iterator[Metric]:
        if not self.runs:
            return
        labels = ("name", "type")
        success = GaugeMetricFamily(
            "checkgate_scheduled_check_success",
            "Whether the latest finished run of a scheduled check succeeded and its target is ok.",
            labels=labels,
        )
        finished = GaugeMetricFamily(
            "checkgate_scheduled_check_last_run_timestamp_seconds",
            "When the latest finished run of a scheduled check ended, in seconds since the epoch.",
            labels=labels,
        )
        for run in self.runs:
            success.add_metric((run.name, run.type), float(run.ok))
            if run.finished_at is not None:
                finished.add_metric((run.name, run.type), run.finished_at)
        yield success
        yield finished
