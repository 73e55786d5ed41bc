"""The gateway's Prometheus texts, read back with prometheus_client's parser: `format=prometheus` answers
(gateway/prometheus.py) and /metrics (gateway/metrics.py) — unit, in process (the real application with
tests/support/stub_client.py) and end to end through a real gateway — and the bench's reading of the
own-time histogram (bench/contenders.py, bench/harness.py)."""

from __future__ import annotations

import logging
import math
import re
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import tornado.web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from tornado.testing import AsyncHTTPTestCase

from bench.contenders import overhead_buckets
from bench.harness import bucket_quantile, self_time_quantiles
from gateway.aiocelery import BackendUnavailable
from gateway.config import Settings
from gateway.http_api import make_app
from gateway.metrics import CONTENT_TYPE, OVERHEAD_BUCKETS, GatewayMetrics, ScheduledRun
from gateway.prometheus import render_check
from gateway.state import Gateway
from tasks.registry import load_checks
from tests.support.extra_checks import COLLIDING_PHASES, colliding
from tests.support.stack import http_get
from tests.support.stub_client import StubClient

ESCAPED = 'a "quoted" \\ value\nline two'  # needs every escape of the text format


def families(text: str) -> dict[str, Any]:
    """Family name → family, failing when the text declares a family twice (Prometheus rejects that)."""
    declared = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(declared) == len(set(declared)), f"a family written twice: {sorted(declared)}"
    out = {family.name: family for family in text_string_to_metric_families(text)}
    assert len(out) == len(declared)
    return out


def samples(family: Any) -> dict[tuple[tuple[str, str], ...], float]:
    """A family's samples: sorted labels → value."""
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def value(found: dict[str, Any], name: str, **labels: str) -> float:
    return samples(found[name])[tuple(sorted(labels.items()))]


# --- format=prometheus: gateway/prometheus.py ------------------------------------------------------------


def test_colliding_fields_never_write_a_family_twice(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="checkgate.prometheus")
    found = families(render_check("colliding", "SUCCESS", colliding(ESCAPED), None))
    # The fixed series keep their meaning; the fields named like them are left out.
    assert value(found, "checkgate_check_success", type="colliding") == 1
    assert value(found, "checkgate_check_ran", type="colliding") == 1
    assert value(found, "checkgate_check_duration_seconds", type="colliding") == 0.0025
    # `a-b` sorts before `a.b`: it keeps checkgate_check_a_b.
    assert value(found, "checkgate_check_a_b", type="colliding") == 1
    assert value(found, "checkgate_check_status_code", type="colliding") == 204
    assert value(found, "probe_http_status_code") == 204
    assert "checkgate_check_text" not in found
    left_out = "\n".join(r.getMessage() for r in caplog.records)
    for field in ("success", "ran", "duration_seconds", "a.b"):
        assert f"The check's {field} field." in left_out
    assert "probe_http_duration_seconds{phase='resolve'} already written" in left_out


def test_help_text_and_label_values_are_escaped_and_read_back() -> None:
    text = render_check("colliding", "SUCCESS", colliding(ESCAPED), None)
    assert "\nline two" not in text  # every newline in a value is escaped
    found = families(text)
    assert found["checkgate_check_multi_line___name"].documentation == "The check's multi\nline \\ name field."
    (leaf,) = found["probe_ssl_last_chain_info"].samples
    assert leaf.labels == {
        "fingerprint_sha256": "ab" * 32,
        "subject": ESCAPED,
        "issuer": 'CN=issuer "x"',
        "subjectalternative": 'we"ird\\.example',
        "serialnumber": "c0ffee",
    }
    # `dns` is blackbox's `resolve`: the result's own `resolve` phase comes second and is left out.
    odd = 'odd "phase" \\ \n name'
    assert samples(found["probe_http_duration_seconds"]) == {
        (("phase", "resolve"),): COLLIDING_PHASES["dns"] / 1000,
        (("phase", odd),): COLLIDING_PHASES[odd] / 1000,
    }
    assert samples(found["probe_tls_version_info"]) == {(("version", "TLS 1.3"),): 1}


@pytest.mark.parametrize(
    "field, raw",
    [("huge", 10**400), ("nan", math.nan), ("inf", -math.inf), ("text", "12"), ("none", None), ("list", [1])],
)
def test_values_no_sample_can_hold_are_left_out(field: str, raw: Any) -> None:
    found = families(render_check("p", "SUCCESS", {"ok": True, field: raw, "duration_ms": raw, "days_left": raw}, 4.0))
    assert f"checkgate_check_{field}" not in found and "probe_ssl_days_left" not in found
    assert value(found, "probe_duration_seconds") == 0.004  # the gateway's own figure stands in


def test_a_check_that_did_not_run_is_a_failed_probe() -> None:
    found = families(render_check("boom", "FAILURE", None, 12.0))
    assert value(found, "probe_success") == 0
    assert value(found, "checkgate_check_ran", type="boom") == 0
    assert value(found, "checkgate_check_duration_seconds", type="boom") == 0.012
    assert set(found) == {
        "probe_success",
        "probe_duration_seconds",
        "checkgate_check_success",
        "checkgate_check_ran",
        "checkgate_check_duration_seconds",
    }


# --- /metrics: gateway/metrics.py ---------------------------------------------------------------------


def test_gateway_metrics_render_every_family() -> None:
    metrics = GatewayMetrics()
    metrics.count_response("add", 200)
    metrics.count_response("add", 200)
    metrics.count_response("edge", 431)
    for seconds in (0.0001, 0.001, 0.004, 3.0, -1.0):
        metrics.observe_overhead("add", seconds)
    runs = [ScheduledRun(ESCAPED, "http", False, 1_800_000_000.25), ScheduledRun("nightly", "add", True, None)]
    found = families(metrics.exposition(runs).decode())
    assert samples(found["checkgate_http_responses"]) == {
        (("code", "200"), ("handler", "add")): 2,
        (("code", "431"), ("handler", "edge")): 1,
    }
    assert found["checkgate_http_responses"].type == "counter"
    for gauge in ("checkgate_inflight_requests", "checkgate_waiting_results", "checkgate_broker_up"):
        assert found[gauge].type == "gauge"
    histogram = found["checkgate_gateway_overhead_seconds"]
    assert histogram.type == "histogram"
    buckets = {float(s.labels["le"]): s.value for s in histogram.samples if s.name.endswith("_bucket")}
    assert list(buckets) == [*OVERHEAD_BUCKETS, math.inf]  # the bench reads these bounds
    # A sample on a bound counts in it (le); a negative one (a clock step) as 0.
    assert (buckets[0.00025], buckets[0.001], buckets[0.004], buckets[2.5], buckets[math.inf]) == (2, 3, 4, 4, 5)
    totals = {s.name: s.value for s in histogram.samples if not s.name.endswith("_bucket")}
    assert totals == pytest.approx(
        {"checkgate_gateway_overhead_seconds_count": 5, "checkgate_gateway_overhead_seconds_sum": 3.0051}
    )
    assert samples(found["checkgate_scheduled_check_success"]) == {
        (("name", ESCAPED), ("type", "http")): 0,
        (("name", "nightly"), ("type", "add")): 1,
    }
    assert samples(found["checkgate_scheduled_check_last_run_timestamp_seconds"]) == {
        (("name", ESCAPED), ("type", "http")): 1_800_000_000.25
    }
    assert not [name for name in found if name.endswith("_created")]


def test_no_scheduled_family_without_runs() -> None:
    found = families(GatewayMetrics().exposition().decode())
    assert not [name for name in found if "scheduled" in name]
    assert samples(found["checkgate_http_responses"]) == {}


class MetricsContract(AsyncHTTPTestCase):
    """The real application on a socket with the stub client (as tests/test_contract.py)."""

    def get_app(self) -> tornado.web.Application:
        checks = load_checks()
        self.client = StubClient()
        self.client.answer = self._run_the_plugin
        self.gateway = Gateway(
            client=self.client,  # type: ignore[arg-type]
            settings=Settings(),
            checks=checks,
            queues={name: name for name in checks},
        )
        return make_app(self.gateway)

    @staticmethod
    def _run_the_plugin(check: Any, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
        return {"status": "SUCCESS", "result": check.fn(**kwargs), "name": check.task_name}

    def scrape(self) -> dict[str, Any]:
        response = self.fetch("/metrics")
        assert (response.code, response.headers["Content-Type"]) == (200, CONTENT_TYPE)
        return families(response.body.decode())


class TestFormatPrometheusInProcess(MetricsContract):
    def test_a_plugin_whose_fields_collide(self) -> None:
        response = self.fetch("/check/colliding?" + urlencode({"subject": ESCAPED, "format": "prometheus"}))
        assert (response.code, response.headers["Content-Type"]) == (200, CONTENT_TYPE)
        found = families(response.body.decode())
        assert value(found, "checkgate_check_success", type="colliding") == 1
        assert value(found, "checkgate_check_a_b", type="colliding") == 1
        assert found["probe_ssl_last_chain_info"].samples[0].labels["subject"] == ESCAPED

    def test_a_task_that_raised_is_a_scrape_with_probe_success_0(self) -> None:
        self.client.answer = lambda check, kwargs, timeout: {
            "status": "FAILURE",
            "result": {"exc_type": "ValueError", "exc_message": ["boom"]},
            "name": check.task_name,
        }
        response = self.fetch("/check/boom?format=prometheus")
        assert response.code == 200
        found = families(response.body.decode())
        assert (value(found, "probe_success"), value(found, "checkgate_check_ran", type="boom")) == (0, 0)


class TestMetricsInProcess(MetricsContract):
    def test_every_family_after_some_answers(self) -> None:
        assert self.fetch("/check/add?x=1&y=2").code == 200
        assert self.fetch("/check/add?x=a&y=2", raise_error=False).code == 400
        assert self.fetch("/check/colliding").code == 200
        self.client.results.runs = {
            "nightly": {
                "status": "SUCCESS",
                "result": 42,
                "name": "checkgate.add",
                "date_done": "2026-12-01T10:00:00+00:00",
            },
            ESCAPED: {"status": "SUCCESS", "result": {"ok": False}, "name": "checkgate.http"},  # no date_done
        }
        found = self.scrape()
        assert samples(found["checkgate_http_responses"]) == {
            (("code", "200"), ("handler", "add")): 1,
            (("code", "400"), ("handler", "add")): 1,
            (("code", "200"), ("handler", "colliding")): 1,
        }
        for gauge, expected in [
            ("checkgate_inflight_requests", 0),
            ("checkgate_waiting_results", 0),
            ("checkgate_broker_up", 1),
            ("checkgate_backend_up", 1),
        ]:
            assert value(found, gauge) == expected, gauge
        counts = {
            s.labels["type"]: s.value
            for s in found["checkgate_gateway_overhead_seconds"].samples
            if s.name.endswith("_count")
        }
        assert counts == {"add": 1, "colliding": 1}
        assert samples(found["checkgate_scheduled_check_success"]) == {
            (("name", "nightly"), ("type", "add")): 1,
            (("name", ESCAPED), ("type", "http")): 0,
        }
        assert samples(found["checkgate_scheduled_check_last_run_timestamp_seconds"]) == {
            (("name", "nightly"), ("type", "add")): 1_796_119_200
        }
        # The scrape itself is counted once it is answered.
        assert value(self.scrape(), "checkgate_http_responses", code="200", handler="metrics") == 1

    def test_state_gauges_follow_the_connections(self) -> None:
        self.client.broker.available = False
        self.client.results.available = False
        self.client.results.fail = BackendUnavailable("stub backend down")
        found = self.scrape()
        assert (value(found, "checkgate_broker_up"), value(found, "checkgate_backend_up")) == (0, 0)
        assert not [name for name in found if "scheduled" in name]  # Redis away: no scheduled series, no 500

    def test_head_answers_like_get(self) -> None:
        response = self.fetch("/metrics", method="HEAD")
        assert (response.code, response.body) == (200, b"")


# --- the bench reads the own-time histogram back: bench/contenders.py, bench/harness.py -------------------


def test_bench_reads_the_histogram_from_the_exposition() -> None:
    metrics = GatewayMetrics()
    for _ in range(98):
        metrics.observe_overhead("sleep", 0.0002)
    metrics.observe_overhead("sleep", 0.02)
    metrics.observe_overhead("sleep", 5.0)
    metrics.observe_overhead("add", 0.003)
    before = overhead_buckets(metrics.exposition().decode())
    assert before["sleep"][0] == (0.00025, 98) and before["sleep"][-1] == (math.inf, 100)
    assert [le for le, _ in before["add"]] == [*OVERHEAD_BUCKETS, math.inf]
    for _ in range(10):
        metrics.observe_overhead("sleep", 0.0015)
    after = overhead_buckets(metrics.exposition().decode())
    # Only the ten answers between the two readings: all in the 2 ms bucket.
    assert self_time_quantiles(before, after) == {"sleep": {"count": 10, "p50_ms": 2.0, "p99_ms": 2.0}}


def test_bucket_quantile_is_the_upper_bound_of_its_bucket() -> None:
    cumulative = [(0.001, 98), (0.01, 98), (0.1, 99), (math.inf, 100)]
    assert [bucket_quantile(cumulative, q) for q in (0.5, 0.99, 1.0)] == [0.001, 0.1, None]
    assert bucket_quantile([(0.001, 0), (math.inf, 0)], 0.5) is None
    assert bucket_quantile([], 0.5) is None


# --- end to end: a real gateway, workers, RabbitMQ and Redis (tests/conftest.py) --------------------------


def test_colliding_plugin_end_to_end(gateway: str) -> None:
    status, text, headers = http_get(f"{gateway}/check/colliding?format=prometheus&subject={quote(ESCAPED)}")
    assert (status, headers["Content-Type"]) == (200, CONTENT_TYPE)
    found = families(text)
    assert value(found, "probe_success") == 1
    assert value(found, "checkgate_check_success", type="colliding") == 1
    assert value(found, "checkgate_check_a_b", type="colliding") == 1
    assert found["checkgate_check_multi_line___name"].documentation == "The check's multi\nline \\ name field."
    assert found["probe_ssl_last_chain_info"].samples[0].labels["subject"] == ESCAPED


def test_metrics_end_to_end_parse(gateway: str) -> None:
    http_get(f"{gateway}/check/colliding")
    status, text, headers = http_get(gateway + "/metrics")
    assert (status, headers["Content-Type"]) == (200, CONTENT_TYPE)
    found = families(text)
    assert value(found, "checkgate_broker_up") == value(found, "checkgate_backend_up") == 1
    assert value(found, "checkgate_http_responses", code="200", handler="colliding") >= 1
    overhead: list[Sample] = found["checkgate_gateway_overhead_seconds"].samples
    assert any(s.labels.get("type") == "colliding" and s.name.endswith("_count") and s.value >= 1 for s in overhead)
