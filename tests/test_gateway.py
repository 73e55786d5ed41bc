"""End to end through a real gateway, real Celery workers, RabbitMQ and Redis: what crosses a process
boundary (a worker's answer, the broker's expiry, a connection that fails or is slow, the results
from Redis, the Prometheus text as scraped). Every branch of the HTTP contract, each status code on
each path, is reached in process, in milliseconds, by test_contract.py."""

import http.server
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.aiocelery.results import EXPIRY_GRACE_S
from tests.support.delay_proxy import DelayProxy
from tests.support.env import BACKEND_URL, BROKER_URL, RUN_PREFIX
from tests.support.stack import Stack, free_port, http_get, poll_result


@pytest.fixture
def target() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records the paths it was asked for."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            code = int(self.path.strip("/").split("/")[0] or 200) if self.path.strip("/")[:3].isdigit() else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/check/add?x=1&y=2", "/add?x=1&y=2"])
def test_add_answers_the_sum(gateway: str, path: str) -> None:
    status, body, headers = http_get(gateway + path)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert body["result"] == 3
    assert body["state"] == "SUCCESS"
    assert body["type"] == "add"
    assert body["id"].startswith(f"{RUN_PREFIX}gw-")
    assert body["worker"].startswith(f"{RUN_PREFIX}add@")
    assert body["duration_ms"] > 0


def test_results_are_per_request(gateway: str) -> None:
    paths = [f"/check/add?x={i}&y={i * 1000}" for i in range(50)]
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda p: http_get(gateway + p), paths))
    assert [body["result"] for _, body, _ in answers] == [i + i * 1000 for i in range(50)]
    assert len({body["id"] for _, body, _ in answers}) == 50


def test_async_mode_answers_at_once_then_result_is_pollable(gateway: str) -> None:
    status, body, headers = http_get(gateway + "/check/sleep?ms=1000&mode=async")
    assert status == 202
    assert body["state"] == "PENDING"
    assert headers["Location"] == body["result_url"] == f"/result/{body['id']}"
    status, pending, _ = http_get(gateway + body["result_url"])
    assert (status, pending["state"], pending["type"]) == (202, "PENDING", "sleep")
    status, done = poll_result(gateway, body["id"], 15, 0.1, until=200)
    assert status == 200, done
    assert done["result"] == {"ok": True, "slept_ms": 1000}
    assert done["worker"].startswith(f"{RUN_PREFIX}sleep@")


def test_fire_mode_runs_the_check_and_stores_nothing(gateway: str, target: tuple[str, list[str]]) -> None:
    base, seen = target
    url = urllib.parse.quote(f"{base}/fired", safe="")
    status, body, _ = http_get(f"{gateway}/check/http?url={url}&mode=fire")
    assert status == 202
    assert body["state"] == "SENT"
    deadline = time.monotonic() + 10
    while "/fired" not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "/fired" in seen
    time.sleep(0.5)
    status, _, _ = http_get(f"{gateway}/result/{body['id']}")
    assert status == 404


def test_http_check_reports_target_state(gateway: str, target: tuple[str, list[str]]) -> None:
    base, _ = target
    status, body, _ = http_get(f"{gateway}/check/http?url={urllib.parse.quote(base + '/200', safe='')}")
    assert status == 200, body
    assert body["result"]["ok"] is True
    assert body["result"]["status_code"] == 200
    # A target that answers 503 is a successful check that says "not ok".
    status, body, _ = http_get(f"{gateway}/check/http?url={urllib.parse.quote(base + '/503', safe='')}")
    assert status == 200, body
    assert body["result"]["ok"] is False
    assert body["result"]["status_code"] == 503
    closed = f"http://127.0.0.1:{free_port()}/"
    status, body, _ = http_get(f"{gateway}/check/http?url={urllib.parse.quote(closed, safe='')}")
    assert status == 200, body
    assert (body["result"]["ok"], body["result"]["reason"]) == (False, "connection_refused")


def test_task_that_raises_is_502_without_traceback(gateway: str) -> None:
    status, body, _ = http_get(gateway + "/check/boom?code=7")
    assert status == 502
    assert body["state"] == "FAILURE"
    assert body["error"] == {"type": "ValueError", "message": "boom 7"}
    assert "traceback" not in body["error"]
    # The same answer later from /result.
    status, again = poll_result(gateway, body["id"], 15, 0.1, until=502)
    assert (status, again["error"]) == (502, body["error"])


def test_deadline_is_504_with_the_id_and_the_check_ends_there(gateway: str) -> None:
    status, body, _ = http_get(gateway + "/check/sleep?ms=2000&timeout=0.5")
    assert status == 504
    assert body["state"] == "PENDING"
    assert body["result_url"] == f"/result/{body['id']}"
    # The worker stopped it at its deadline too (tasks/deadline.py): /result says so, with the same 504.
    status, late = poll_result(gateway, body["id"], 15, 0.1, until=504)
    assert (status, late["state"], late["error"]["type"]) == (504, "FAILURE", "DeadlineExceeded"), late


def test_a_task_that_expires_in_the_queue_is_never_run(new_stack: Stack) -> None:
    gateway = new_stack.start_gateway("gw")
    status, body, _ = http_get(gateway + "/check/add?x=1&y=1&timeout=0.5")
    assert status == 504
    time.sleep(1)
    new_stack.start_worker("late", ["add"], concurrency=1)
    status, later = poll_result(gateway, body["id"], EXPIRY_GRACE_S + 15, 0.1, until=410)
    assert (status, later["state"]) == (410, "EXPIRED")  # not run late, and not PENDING for ever
    status, fresh, _ = http_get(gateway + "/check/add?x=2&y=2")
    assert (status, fresh["result"]) == (200, 4)


def test_a_stored_result_the_gateway_cannot_decode_is_a_502_saying_so(gateway: str) -> None:
    """Not a 500: the gateway works, the result is unreadable to it (a worker with another serializer)."""
    import redis

    task_id = f"{RUN_PREFIX}gw-undecodable"
    client = redis.Redis.from_url(BACKEND_URL)
    client.set(f"celery-task-meta-{task_id}", b"\xc1 not msgpack", ex=60)
    client.close()
    status, body, _ = http_get(f"{gateway}/result/{task_id}")
    assert (status, body["state"], body["error"]["type"]) == (502, "FAILURE", "UndecodableResult")


def test_a_publish_cut_short_by_its_own_deadline_is_504_not_503(new_stack: Stack) -> None:
    """RabbitMQ up but slow to confirm (its answers held back 2 s by a proxy): a 0.5 s request's
    deadline passes while it waits for the confirm. That is the request's 504, with the id."""
    host, port = BROKER_URL.split("@", 1)[1].split("/", 1)[0].split(":")
    with DelayProxy((host, int(port))) as proxy:
        slow_broker = BROKER_URL.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
        gateway = new_stack.start_gateway("gw", CHECKGATE_BROKER_URL=slow_broker)
        proxy.delay = 2.0
        for mode in ("sync", "async"):
            status, body, headers = http_get(f"{gateway}/check/sleep?ms=1&timeout=0.5&mode={mode}")
            assert status == 504, body
            assert "Retry-After" not in headers
            assert body["result_url"] == f"/result/{body['id']}"
            assert "deadline of 0.5s passed" in body["error"]
        proxy.delay = 0.0


def test_broker_down_is_fast_503_with_retry_after(new_stack: Stack) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    gateway = new_stack.start_gateway("gw", wait_up=False, CHECKGATE_BROKER_URL=dead)
    started = time.monotonic()
    status, body, headers = http_get(gateway + "/check/add?x=1&y=2")
    assert time.monotonic() - started < 5
    assert status == 503
    assert body["error"] == "broker unavailable"
    assert int(headers["Retry-After"]) >= 1
    status, health, _ = http_get(gateway + "/health")
    assert status == 503
    assert (health["status"], health["broker"]["ok"], health["backend"]["ok"]) == ("down", False, True)


def test_backend_down_refuses_waiting_modes_but_fire_still_works(new_stack: Stack) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    gateway = new_stack.start_gateway("gw", wait_up=False, CHECKGATE_RESULT_BACKEND=dead)
    for mode in ("sync", "async"):
        status, body, headers = http_get(f"{gateway}/check/add?x=1&y=2&mode={mode}")
        assert (status, body["error"]) == (503, "result backend unavailable")
        assert "Retry-After" in headers
    status, body, _ = http_get(gateway + "/check/add?x=1&y=2&mode=fire")
    assert (status, body["state"]) == (202, "SENT")


def test_checks_lists_every_type_with_its_queue_and_params(gateway: str) -> None:
    status, body, _ = http_get(gateway + "/checks")
    assert status == 200
    checks = {c["name"]: c for c in body["checks"]}
    assert {"add", "sleep", "http", "boom"} <= set(checks)
    assert checks["sleep"]["queue"] == RUN_PREFIX + "sleep"
    ms = checks["sleep"]["params"][0]
    assert (ms["name"], ms["type"], ms["min"], ms["max"], ms["required"]) == ("ms", "int", 0, 60000, True)


def test_health_reports_workers_per_queue(gateway: str) -> None:
    status, body, _ = http_get(gateway + "/health")
    assert status == 200
    assert body["broker"]["ok"] and body["backend"]["ok"]
    for name in ("add", "sleep", "http", "boom"):
        assert body["queues"][RUN_PREFIX + name]["consumers"] >= 1


def test_metrics_count_answers(gateway: str) -> None:
    http_get(gateway + "/check/add?x=1&y=2")
    http_get(gateway + "/check/add?x=a&y=2")
    status, text, headers = http_get(gateway + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    found = {family.name: family for family in text_string_to_metric_families(text)}
    answers = {(s.labels["handler"], s.labels["code"]): s.value for s in found["checkgate_http_responses"].samples}
    assert answers[("add", "200")] >= 1 and answers[("add", "400")] >= 1
    assert [s.value for s in found["checkgate_broker_up"].samples] == [1]


def overhead_of(gateway: str, type_name: str) -> dict[str, float]:
    """The sample values of checkgate_gateway_overhead_seconds{type=type_name}, by sample name and le."""
    _, text, _ = http_get(gateway + "/metrics")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("checkgate_gateway_overhead_seconds") and sample.labels["type"] == type_name:
                out[sample.name.rsplit("_", 1)[-1] + sample.labels.get("le", "")] = sample.value
    return out


def test_metrics_histogram_of_the_gateways_own_time(gateway: str) -> None:
    before = overhead_of(gateway, "sleep")
    seen = 0.0
    for _ in range(5):
        started = time.monotonic()
        status, body, _ = http_get(gateway + "/check/sleep?ms=50")
        seen += time.monotonic() - started
        assert (status, body["result"]["slept_ms"]) == (200, 50)
    after = overhead_of(gateway, "sleep")
    assert after["count"] - before.get("count", 0) == 5
    assert after["bucket+Inf"] == after["count"]
    # The gateway's own share is part of what the caller waited, and excludes the 5 × 50 ms of work.
    assert 0 < after["sum"] - before.get("sum", 0) < seen - 0.25
    buckets = [v for k, v in after.items() if k.startswith("bucket")]
    assert buckets == sorted(buckets)


def test_200_concurrent_slow_checks_do_not_queue_behind_each_other(gateway: str) -> None:
    """The proof the gateway never blocks: 200 × 500 ms would take 100 s one at a time."""
    started = time.monotonic()
    with ThreadPoolExecutor(200) as pool:
        answers = list(pool.map(lambda _: http_get(gateway + "/check/sleep?ms=500", timeout=60), range(200)))
    elapsed = time.monotonic() - started
    assert [status for status, _, _ in answers] == [200] * 200
    assert all(body["result"]["slept_ms"] == 500 for _, body, _ in answers)
    assert elapsed < 5, f"200 concurrent 500 ms checks took {elapsed:.1f}s"


def test_prometheus_format_parses_with_blackbox_names(gateway: str, target: tuple[str, list[str]]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    base, _ = target
    for path, success in (("/200", 1.0), ("/503", 0.0)):
        url = urllib.parse.quote(base + path, safe="")
        status, text, headers = http_get(f"{gateway}/check/http?url={url}&format=prometheus")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        samples = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
        assert samples["probe_success"].value == success
        assert samples["checkgate_check_success"].value == success
        assert samples["checkgate_check_success"].labels == {"type": "http"}
        assert samples["probe_http_status_code"].value == int(path[1:])
        assert samples["probe_duration_seconds"].value > 0
    # A check that could not run is still a good scrape, with probe_success 0 (as blackbox_exporter does).
    status, text, _ = http_get(f"{gateway}/check/boom?format=prometheus")
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert (status, samples["probe_success"], samples["checkgate_check_ran"]) == (200, 0.0, 0.0)


def test_openapi_describes_every_check(gateway: str) -> None:
    status, doc, _ = http_get(gateway + "/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    for name in ("add", "sleep", "http", "boom"):
        assert f"/check/{name}" in doc["paths"]
    params = {p["name"]: p for p in doc["paths"]["/check/sleep"]["get"]["parameters"]}
    assert params["ms"]["required"] is True
    assert params["ms"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 60000}
    assert params["mode"]["schema"]["enum"] == ["sync", "async", "fire"]
    assert {"/add", "/result/{id}", "/checks", "/health", "/metrics"} <= set(doc["paths"])


def ten_identical_requests_share_one_task(path: str) -> str:
    """Send `path` 10 times at once; all must be answered by one task, run once. Returns its id."""
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: http_get(path), range(10)))
    assert [status for status, _, _ in answers] == [200] * 10
    assert len({body["id"] for _, body, _ in answers}) == 1
    assert {body["result"]["runs"] for _, body, _ in answers} == {1}
    assert sorted(body["shared"] for _, body, _ in answers) == [False] + [True] * 9
    return answers[0][1]["id"]


def test_identical_requests_in_flight_of_a_coalescing_check_share_one_task(gateway: str) -> None:
    path = f"{gateway}/check/coalesced_count?tag={RUN_PREFIX}coalesced&ms=700"
    task_id = ten_identical_requests_share_one_task(path)
    # No cache: once the shared task has ended, the next identical request runs a task of its own.
    status, again, _ = http_get(path)
    assert (status, again["shared"], again["result"]["runs"]) == (200, False, 2)
    assert again["id"] != task_id
    # A request with other arguments never joins it.
    status, other, _ = http_get(f"{gateway}/check/coalesced_count?tag={RUN_PREFIX}coalesced-other")
    assert (status, other["shared"], other["result"]["runs"]) == (200, False, 1)


@contextmanager
def declared_entry(app: Any, name: str, task: str) -> Iterator[None]:
    """A schedule entry as beat declares it (RedBeat's record in Redis, the stack's key prefix), removed after."""
    from celery.schedules import schedule
    from redbeat.schedulers import RedBeatSchedulerEntry

    entry = RedBeatSchedulerEntry(name, task, schedule(3600), app=app).save()
    try:
        yield
    finally:
        entry.delete()


def test_a_run_is_recorded_only_for_the_entry_beat_declared_for_its_task(gateway: str) -> None:
    """The `checkgate_schedule` header is a claim: a run of another task than the entry's, or naming no
    entry beat declared, is not recorded as that entry's latest run (no forged /schedule, no metric)."""
    from tasks.celery import app
    from tasks.schedule import HEADER

    declared = f"{RUN_PREFIX}billing-db"
    with declared_entry(app, declared, "checkgate.http"):
        for name in (declared, f"{RUN_PREFIX}invented"):
            app.send_task("checkgate.add", kwargs={"x": 1, "y": 1}, headers={HEADER: name}).get(timeout=30)
        time.sleep(0.5)  # task_postrun runs just after the result is stored
        for name in (declared, f"{RUN_PREFIX}invented"):
            assert http_get(f"{gateway}/schedule/{name}")[0] == 404, name
        _, text, _ = http_get(gateway + "/metrics")
    assert f'name="{declared}"' not in text and f'name="{RUN_PREFIX}invented"' not in text


def test_latest_scheduled_run_in_schedule_and_metrics(gateway: str) -> None:
    """A run sent the way beat sends it (with its schedule entry's header) is found by name."""
    from tasks.celery import app
    from tasks.schedule import HEADER

    name = f"{RUN_PREFIX}nightly"
    with declared_entry(app, name, "checkgate.add"):
        app.send_task("checkgate.add", kwargs={"x": 40, "y": 2}, headers={HEADER: name}).get(timeout=30)
        # The worker reads the entry and points it at the run in task_postrun, just after it stored the
        # result .get() returned: the entry must outlive that, and the pointer may land a moment later.
        give_up = time.monotonic() + 10
        while (answer := http_get(f"{gateway}/schedule/{name}"))[0] == 404 and time.monotonic() < give_up:
            time.sleep(0.05)
    status, body, _ = answer
    assert (status, body["type"], body["result"]) == (200, "add", 42), body
    status, listing, _ = http_get(f"{gateway}/schedule")
    assert listing["schedule"][name]["result"] == 42
    _, text, _ = http_get(gateway + "/metrics")
    found = {family.name: family for family in text_string_to_metric_families(text)}
    labels = {"name": name, "type": "add"}
    assert [s.value for s in found["checkgate_scheduled_check_success"].samples if s.labels == labels] == [1]
    (stamp,) = [s for s in found["checkgate_scheduled_check_last_run_timestamp_seconds"].samples if s.labels == labels]
    assert abs(stamp.value - time.time()) < 300
    assert http_get(f"{gateway}/schedule/{RUN_PREFIX}never")[0] == 404
