"""The gateway's own metrics, served at `GET /metrics`: every metric object of a process, in one registry.

Rendered by prometheus_client (text format 0.0.4), which escapes label values and HELP text:

    checkgate_http_responses_total{code,handler}     counter: answers by handler (or check type) and status
                                                     code; handler "edge" counts gateway/edge.py's refusals
    checkgate_inflight_requests                      gauge: /check requests admitted and not yet answered
    checkgate_waiting_results                        gauge: task results this process awaits from Redis
    checkgate_broker_up, checkgate_backend_up        gauge: 1 while the AMQP connection / the result
                                                     subscription is up, else 0
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

Multiprocess (several gateway processes behind one port, issue #15): prometheus_client's multiprocess mode
needs PROMETHEUS_MULTIPROC_DIR set (and emptied) before any process imports prometheus_client, and
`exposition` to build a fresh `CollectorRegistry` with a `MultiProcessCollector` per scrape instead of
`self.registry` (the metric objects then write to per-process files). The gauges already declare how
processes combine (`multiprocess_mode`), and `sample_metrics` already runs in every process each second,
so the other processes' gauges are at most a second old. A process that exits must be marked dead
(`prometheus_client.multiprocess.mark_process_dead(pid)`) so its live gauges drop out. The scheduled
checks' series come from Redis and are the same in every process: they stay a per-scrape collector.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
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

disable_created_metrics()


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

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
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
        """The text for one scrape: the process's metrics, then the scheduled checks' series."""
        return generate_latest(self.registry) + generate_latest(ScheduledChecks(scheduled))


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
