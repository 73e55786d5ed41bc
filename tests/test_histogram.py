"""Unit tests of the gateway's histogram: buckets, quantiles and Prometheus text that parses."""

import math

from prometheus_client.parser import text_string_to_metric_families

from gateway.histogram import Histogram, bucket_quantile


def test_counts_sum_and_cumulative_buckets() -> None:
    histogram = Histogram((0.001, 0.01, 0.1))
    for value in (0.0005, 0.001, 0.005, 0.05, 3.0, -1.0):
        histogram.observe(value)
    # A sample equal to a bound belongs to it (le); a negative one (clock step) counts as 0.
    assert histogram.cumulative() == [(0.001, 3), (0.01, 4), (0.1, 5), (math.inf, 6)]
    assert (histogram.count, round(histogram.sum, 4)) == (6, 3.0565)


def test_quantile_is_the_upper_bound_of_its_bucket() -> None:
    histogram = Histogram((0.001, 0.01, 0.1))
    assert histogram.quantile(0.5) is None
    for _ in range(98):
        histogram.observe(0.0002)
    histogram.observe(0.02)
    histogram.observe(5.0)
    assert histogram.quantile(0.5) == 0.001
    assert histogram.quantile(0.99) == 0.1
    assert histogram.quantile(1.0) is None  # beyond the last bound


def test_bucket_quantile_of_the_difference_of_two_readings() -> None:
    before = [(0.001, 10), (0.01, 10), (math.inf, 10)]
    after = [(0.001, 11), (0.01, 109), (math.inf, 110)]
    delta = [(le, n - dict(before)[le]) for le, n in after]
    assert [bucket_quantile(delta, q) for q in (0.5, 0.99, 1.0)] == [0.01, 0.01, None]
    assert bucket_quantile([(0.001, 0), (math.inf, 0)], 0.5) is None


def test_renders_text_prometheus_parses() -> None:
    histogram = Histogram((0.001, 0.01))
    histogram.observe(0.002)
    text = "# TYPE t_seconds histogram\n" + "\n".join(histogram.render("t_seconds", 'type="add"')) + "\n"
    (family,) = text_string_to_metric_families(text)
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples == {
        ("t_seconds_bucket", "0.001"): 0,
        ("t_seconds_bucket", "0.01"): 1,
        ("t_seconds_bucket", "+Inf"): 1,
        ("t_seconds_sum", None): 0.002,
        ("t_seconds_count", None): 1,
    }
