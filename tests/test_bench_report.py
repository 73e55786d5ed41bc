"""The bench's arithmetic, in process: bounds and which binds, CPU per answer, the drain's rate, skipped
cells, and the run plan across worker transports. No services; the real run is tests/test_bench_smoke.py."""

import dataclasses

import pytest

from bench import report, scenarios
from bench.drain import rate
from bench.harness import answers_in_window, for_transport

SLOTS = {"add": 2, "sleep": 1000}
MACHINE = {
    "cores": 2,
    "cpu_model": "test",
    "python": "3.11",
    "services": {"rabbitmq": "x", "redis": "y"},
    "wrk": "wrk",
    "loadavg_start": [1.0],
    "git": "abc",
}


def cell(scenario: str, contender: str, rps: float, window: int = 10, **extra: object) -> dict:
    """One measured cell as the harness records it: `rps` on every stream, CPU seconds by group."""
    requests = int(rps * window)
    stream = {"rps": rps, "requests": requests, "window_s": window, "p50_ms": 10.0, "p90_ms": 20.0}
    stream |= {"p99_ms": 30.0, "max_ms": 40.0, "errors": 0}
    cpu_s = {"contender": 2.0, "workers_add": 4.0, "workers_sleep": 3.0, "loadgen": 0.5}
    out = {
        "round": 1,
        "scenario": scenario,
        "contender": contender,
        "ok": True,
        "streams": {"main": dict(stream)},
        "cpu_s": cpu_s,
        "cpu_cores": {k: v / window for k, v in cpu_s.items()},
        "answers": {"primary": requests, "all": requests},
    }
    return out | extra


def summarize(scen: list[scenarios.Scenario], cells: list[dict], contenders: list[str]) -> dict:
    meta = {
        "machine": MACHINE,
        "options": {"rounds": 1, "duration": 10, "contenders": contenders},
        "started_utc": "now",
        "worker_transports": {"pyamqp": {"workers": {}, "slots": SLOTS}},
        "labels": {},
    }
    return report.summarize(cells, scen, contenders, meta)


def built(kinds: list[str], clients: list[int]) -> list[scenarios.Scenario]:
    return [dataclasses.replace(s, transport="pyamqp") for s in scenarios.build(kinds, 10, clients)]


def test_noop_has_no_bound_and_the_rest_are_bounded_by_what_checkgate_does_not_control() -> None:
    noop, unique, sleep = built(["noop", "unique", "sleep"], [60])
    assert noop.bounds(SLOTS, drain_rps=500.0) == {}
    assert unique.bounds(SLOTS, drain_rps=None) == {}  # no task time: only a measured drain bounds it
    assert unique.bounds(SLOTS, drain_rps=287.0) == {"drain": 287.0}
    assert sleep.bounds(SLOTS, drain_rps=812.0) == pytest.approx(
        {"clients": 200.0, "slots": 3333.3, "drain": 812.0}, rel=1e-3
    )
    assert scenarios.binding(sleep.bounds(SLOTS, 812.0)) == ("clients", pytest.approx(200.0))
    assert scenarios.binding(sleep.bounds(SLOTS, 150.0)) == ("drain", 150.0)
    assert scenarios.binding({}) == (None, None)


def test_the_bound_is_never_checkgates_own_rate() -> None:
    # Before: noop-unique's limit was checkgate's own rate (always 100 %), and sleep@1000's was too
    # (169 % of it). Now both come from the drain measured in the same run.
    scen = built(["unique", "sleep"], [1000])
    cells = [
        cell("noop-unique", "checkgate", 100.0),
        cell("noop-unique", "drain", 150.0),
        cell("sleep@1000", "checkgate", 510.0),
        cell("sleep@1000", "drain", 700.0),
    ]
    result = summarize(scen, cells, ["checkgate", "drain"])
    unique, sleep = result["scenarios"]["noop-unique"], result["scenarios"]["sleep@1000"]
    assert (unique["binds"], unique["bound_rps"]) == ("drain", 150.0)
    assert unique["contenders"]["checkgate"]["of_bound"] == pytest.approx(100 / 150, abs=1e-3)
    assert (sleep["binds"], sleep["bound_rps"]) == ("drain", 700.0)
    assert sleep["bounds"]["clients"] == pytest.approx(3333.3) and sleep["bounds"]["slots"] == pytest.approx(3333.3)
    assert sleep["contenders"]["checkgate"]["of_bound"] == pytest.approx(510 / 700, abs=1e-3)
    assert sleep["contenders"]["drain"]["of_bound"] is None
    text = report.markdown(result)
    assert "**drain** binds at 700 req/s" in text and "checkgate 510.0 req/s = 73%" in text


def test_cpu_per_answer_divides_the_windows_cpu_by_its_answers() -> None:
    (unique,) = built(["unique"], [60])
    one = cell("noop-unique", "checkgate", 25.0)  # 250 answers in 10 s; 2 s of gateway CPU, 4 s of add workers
    assert report.cpu_per_answer(one, unique) == {"front_end": 8.0, "workers": 16.0}
    assert report.cpu_per_answer({**one, "answers": {"primary": 0, "all": 0}}, unique) == {
        "front_end": None,
        "workers": None,
    }
    (mixed,) = built(["mixed"], [60])
    # The mixed scenario's CPU window is the flood's; its probe is answered in the same window.
    stats = {"add_alone": {"requests": 50}, "flood": {"requests": 300}, "add_flood": {"requests": 20}}
    assert answers_in_window(mixed, stats) == {"primary": 300, "all": 320}


def test_skipped_contenders_show_why_and_peers_ratios_use_fastapi() -> None:
    scen = built(["unique"], [60])
    skipped = {"round": 1, "scenario": "noop-unique", "contender": "checkgate-multi", "ok": False}
    cells = [
        cell("noop-unique", "checkgate", 300.0),
        cell("noop-unique", "fastapi", 100.0),
        cell("noop-unique", "drain", 320.0),
        skipped | {"skipped": "the gateway serves one process per port here"},
    ]
    result = summarize(scen, cells, ["checkgate", "checkgate-multi", "fastapi", "drain"])
    rows = result["scenarios"]["noop-unique"]["contenders"]
    assert rows["checkgate"]["vs_fastapi"] == 3.0
    assert rows["checkgate-multi"]["skipped"] and not rows["checkgate-multi"]["failed"]
    text = report.markdown(result)
    assert "Skipped: checkgate ×N: the gateway serves one process per port here." in text
    assert "Gateway processes 1 → N" in text


@pytest.mark.parametrize(
    ("times", "published", "expected"),
    [
        # Steady: 100 tasks/s over the whole window [10, 20), the queue still full at the end.
        ([10 + i / 100 for i in range(1000)] + [20.5] * 50, 2000, {"rps": 100.0, "requests": 1000, "starved": False}),
        # Ran dry at 15 s: the rate is over the 5 s the queue lasted.
        ([8 + i / 100 for i in range(701)], 701, {"rps": 100.2, "requests": 501, "starved": True}),
        # Ran dry before the window: the drain's last 90 %.
        ([5 + i / 100 for i in range(500)], 500, {"rps": 100.0, "requests": 0, "starved": True}),
    ],
)
def test_drain_rate(times: list[float], published: int, expected: dict) -> None:
    measured = rate(sorted(times), published, 10.0, 20.0)
    assert {k: measured[k] for k in expected} == pytest.approx(expected, rel=1e-2)


def test_other_worker_transports_run_the_issue_17_subset_under_their_own_names() -> None:
    scen = built(["noop", "unique", "sleep", "mixed"], [60, 1000])
    first = for_transport(scen, "pyamqp", first=True)
    assert [s.name for s in first] == ["noop", "noop-unique", "sleep@60", "sleep@1000", "mixed"]
    assert {s.transport for s in first} == {"pyamqp"}
    other = for_transport(scen, "librabbitmq", first=False)
    assert [s.name for s in other] == ["noop-unique [librabbitmq]", "sleep@1000 [librabbitmq]"]
