"""Every check stops at its request's deadline (tasks/deadline.py): the module in-process, then real workers.

The end-to-end tests use workers with two slots: a check that outlived its deadline would hold a slot,
so the checks sent next could not answer within their own timeout. Each is a test that fails on the
code before the deadline module (the sleep went on for 60 s, the plugins for as long as they liked).
"""

from __future__ import annotations

import random
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.mocks import TaskMessage

from gateway.http_api import task_answer
from tasks import deadline
from tasks.celery import app
from tasks.checks.http import http_check
from tasks.deadline import GRACE, HARD_GRACE, DeadlineExceeded, DeadlineRequest, call_within, task_deadline
from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.extra_checks import RUNS_KEY
from tests.support.raw_http import raw_server
from tests.support.stack import Stack, http_get, poll_result

# --- the module -----------------------------------------------------------------------------------


def in_thread(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run `fn` in a new (pool-like) thread: {"value": …} or {"error": exception}."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # the test looks at whatever came out
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the check was never ended"
    return box


def one_sleep(seconds: float) -> None:
    time.sleep(seconds)


def in_main_thread(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"value": fn()}
    except BaseException as exc:
        return {"error": exc}


def busy(seconds: float) -> str:
    end = time.monotonic() + seconds
    while True:
        try:
            if time.monotonic() >= end:
                break
        except Exception:  # swallowing every error does not swallow the end
            continue
    return "finished"


def naps(seconds: float) -> str:
    for _ in range(int(seconds / 0.05)):
        time.sleep(0.05)
    return "finished"


RUNNERS = {"pool thread": in_thread, "main thread": in_main_thread}


def test_outside_a_check_there_is_no_deadline() -> None:
    assert (deadline.current(), deadline.remaining()) == (None, None)


@pytest.mark.parametrize("where", RUNNERS)
def test_a_check_sees_its_deadline_and_its_value_comes_back(where: str) -> None:
    at = time.time() + 5
    box = RUNNERS[where](lambda: call_within(at, lambda x: (x, deadline.current(), deadline.remaining()), {"x": 1}))
    value, seen, left = box["value"]
    assert (value, seen) == (1, at)
    assert 0 < left <= 5
    assert deadline.current() is None


@pytest.mark.parametrize("where", RUNNERS)
@pytest.mark.parametrize("work", [busy, naps], ids=["busy loop", "time.sleep loop"])
def test_a_check_that_ignores_its_deadline_is_ended(where: str, work: Callable[[float], str]) -> None:
    began = time.monotonic()
    box = RUNNERS[where](lambda: call_within(time.time() + 0.2, work, {"seconds": 30}))
    assert isinstance(box.get("error"), DeadlineExceeded), box
    assert "did not stop by itself" in str(box["error"])
    assert time.monotonic() - began < 15  # ended, not run to its end (30 s)


def test_in_the_main_thread_even_one_blocking_sleep_is_ended() -> None:
    """A signal breaks the system call; in a pool thread the same sleep would run to its end (the documented
    limit of an asynchronous exception)."""
    began = time.monotonic()
    box = in_main_thread(lambda: call_within(time.time() + 0.2, one_sleep, {"seconds": 30}))
    assert isinstance(box.get("error"), DeadlineExceeded), box
    assert time.monotonic() - began < 15


def test_in_a_pool_thread_one_blocking_call_is_ended_when_it_returns() -> None:
    box = in_thread(lambda: call_within(time.time() + 0.1, one_sleep, {"seconds": 1.5}))
    assert isinstance(box.get("error"), DeadlineExceeded), box


def test_a_check_that_raises_keeps_its_exception() -> None:
    def fail() -> None:
        raise ValueError("target said no")

    for runner in RUNNERS.values():
        assert isinstance(runner(lambda: call_within(time.time() + 5, fail, {})).get("error"), ValueError)


@pytest.mark.parametrize("where", RUNNERS)
def test_the_interrupt_never_outlives_its_check(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks that end right around their kill time: each either returns or raises DeadlineExceeded, and no
    interrupt ever lands in the code that runs after it (Celery's own, in a worker)."""
    monkeypatch.setattr(deadline, "TICK", 0.0005)  # the watchdog looks often, so kills fall near returns
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # and the threads take turns between almost every bytecode
    outcomes = {"finished": 0, "ended": 0, "leaked": 0}

    def many() -> None:
        for i in range(1500):
            try:
                try:
                    call_within(time.time() - GRACE + 0.0005 * (i % 6), busy, {"seconds": 0.0015})
                    outcomes["finished"] += 1
                except DeadlineExceeded:
                    outcomes["ended"] += 1
                for _ in range(200):  # what runs after the task
                    pass
            except BaseException:
                outcomes["leaked"] += 1

    try:
        box = RUNNERS[where](many)
    finally:
        sys.setswitchinterval(switch)
    assert "error" not in box, box
    assert outcomes["leaked"] == 0, outcomes
    assert outcomes["ended"] > 0 and outcomes["finished"] > 0, outcomes


def test_sleep_stops_at_the_deadline() -> None:
    assert call_within(time.time() + 5, deadline.sleep, {"seconds": 0.01}) is None
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="stopped at its deadline"):
        call_within(time.time() + 0.2, deadline.sleep, {"seconds": 30})
    assert time.monotonic() - began < 15


def test_a_task_without_expires_gets_its_types_max_timeout() -> None:
    assert abs(task_deadline(None, 60) - (time.time() + 60)) < 5
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert task_deadline(at.isoformat(), 60) == at.timestamp()


def test_prefork_hard_limit_follows_the_deadline() -> None:
    task = app.tasks["checkgate.sleep"]
    expires = (datetime.now(UTC) + timedelta(seconds=10)).isoformat()
    hard, soft = DeadlineRequest(TaskMessage(task.name, expires=expires), app=app, task=task).time_limits
    assert 10 + GRACE + HARD_GRACE - 2 < hard <= 10 + GRACE + HARD_GRACE and soft is None
    sent = DeadlineRequest(TaskMessage(task.name, expires=expires, timelimit=(5, 3)), app=app, task=task)
    assert sent.time_limits == (5, 3)  # a sender's shorter limits still apply
    hard, _ = DeadlineRequest(TaskMessage(task.name), app=app, task=task).time_limits
    assert hard == 300 + GRACE + HARD_GRACE  # sleep's max_timeout


@pytest.mark.parametrize(
    ("module", "name", "status"),
    [
        ("tasks.deadline", "DeadlineExceeded", 504),
        ("billiard.exceptions", "TimeLimitExceeded", 504),
        ("billiard.exceptions", "SoftTimeLimitExceeded", 504),
        ("builtins", "ValueError", 502),
        ("somewhere.else", "DeadlineExceeded", 502),
    ],
)
def test_the_gateway_answers_a_check_ended_at_its_deadline_504(module: str, name: str, status: int) -> None:
    meta = {"status": "FAILURE", "result": {"exc_type": name, "exc_module": module, "exc_message": ["late"]}}
    code, body = task_answer(meta, "sleep", "gw-1", debug=False)
    assert (code, body["error"]) == (status, {"type": name, "message": "late"})
    assert body.get("result_url") == ("/result/gw-1" if status == 504 else None)


def test_every_check_type_runs_under_its_deadline() -> None:
    for task in (t for name, t in app.tasks.items() if name.startswith("checkgate.")):
        assert task.Request == "tasks.deadline:DeadlineRequest", task.name
        assert DeadlineExceeded in task.throws, task.name


def test_a_pattern_re2_cannot_run_as_a_dfa_stops_at_the_deadline() -> None:
    """Found by the hostile-caller fault row's probing: `body_match=(?s).*a.{999}c` over random a/b text
    outgrows RE2's DFA budget, so RE2 matches with its NFA, in time linear in the text but times the
    pattern's size — 1.5 to 2 s per 64 KiB on the development VM, minutes over the 10 MiB a caller may ask for with
    `max_body_bytes` — in one C call that no deadline ends. The check now weighs that worst case against the
    time left first (tasks/checks/_pattern.py) and answers `timeout` in time instead."""
    rng = random.Random(11)
    body = bytes(rng.choice(b"ab") for _ in range(256 * 1024))
    with raw_server() as raw:
        url = raw.answer("/ab", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        end = time.time() + 0.5
        result = http_check(url, body_match="(?s).*a.{999}c", max_body_bytes=len(body), deadline=end)
        assert time.time() < end + GRACE, f"{time.time() - end:.1f} s past the deadline: {result}"
        assert (result["ok"], result["reason"]) == (False, "timeout"), result
        assert "body_match" in result["detail"]
        # The same body with an ordinary pattern and the same deadline is judged, not refused.
        result = http_check(url, body_match="b{3}a", max_body_bytes=len(body), deadline=time.time() + 0.5)
        assert result["ok"] is True, result


# --- real workers ---------------------------------------------------------------------------------


def concurrently(gateway: str, paths: list[str]) -> list[tuple[int, dict]]:
    """GET every path at the same time; the answers in order."""
    with ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(lambda p: http_get(gateway + p, timeout=120), paths))
    return [(status, body) for status, body, _ in answers]


def runs(tag: str) -> int:
    client = redis.Redis.from_url(BACKEND_URL)
    try:
        return int(client.get(RUNS_KEY + tag) or 0)
    finally:
        client.close()


def tags(n: int) -> list[str]:
    return [f"dl-{secrets.token_hex(4)}" for _ in range(n)]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway over workers with two slots each: `sleep`, and the plugins of `stubborn` (threads)."""
    with Stack(tmp_path_factory.mktemp("deadline"), f"cgd{secrets.token_hex(3)}_", BROKER_URL, BACKEND_URL) as stack:
        stack.start_worker("sleep", ["sleep"], concurrency=2)
        stack.start_worker("stubborn", ["stubborn"], concurrency=2)
        yield stack.start_gateway("gw")


def test_sleep_past_its_deadline_answers_504_and_frees_its_slot(small: str) -> None:
    late = concurrently(small, ["/check/sleep?ms=60000&timeout=1"] * 2)
    assert [status for status, _ in late] == [504, 504], late
    # Both slots are free again: short sleeps answer within their own timeout.
    assert [status for status, _ in concurrently(small, ["/check/sleep?ms=200&timeout=10"] * 2)] == [200, 200]
    for _, body in late:
        status, result = poll_result(small, body["id"])
        assert (status, result["state"], result["error"]["type"]) == (504, "FAILURE", "DeadlineExceeded"), result
        assert "stopped at its deadline" in result["error"]["message"]


@pytest.mark.parametrize("kind", ["spin", "nap", "spin_once"])
def test_a_plugin_that_ignores_its_deadline_is_ended_and_frees_its_slot(small: str, kind: str) -> None:
    first = tags(2)
    late = concurrently(small, [f"/check/{kind}?tag={tag}&ms=60000&timeout=1" for tag in first])
    assert [status for status, _ in late] == [504, 504], late
    again = concurrently(small, [f"/check/{kind}?tag={tag}&ms=100&timeout=10" for tag in tags(2)])
    assert [(status, body["result"]["ok"]) for status, body in again] == [(200, True)] * 2, again
    for _, body in late:
        status, result = poll_result(small, body["id"])
        assert (status, result["state"], result["error"]["type"]) == (504, "FAILURE", "DeadlineExceeded"), result
        assert "did not stop by itself" in result["error"]["message"]
    time.sleep(2)  # time for a redelivery, had there been one
    assert [runs(tag) for tag in first] == [1, 1]  # ended is not lost: no second run, idempotent or not


def test_prefork_ends_a_plugin_at_its_deadline_and_kills_one_stuck_in_c(tmp_path: Path) -> None:
    with Stack(tmp_path, f"cgd{secrets.token_hex(3)}_", BROKER_URL, BACKEND_URL) as stack:
        stack.start_worker("stubborn", ["stubborn"], pool="prefork", concurrency=1)
        gateway = stack.start_gateway("gw")
        # A Python busy loop: the child's SIGALRM ends it at the deadline + grace.
        status, late, _ = http_get(f"{gateway}/check/spin?tag={tags(1)[0]}&ms=60000&timeout=1")
        assert status == 504, late
        status, body, _ = http_get(f"{gateway}/check/spin?tag={tags(1)[0]}&ms=100&timeout=10")
        assert (status, body["result"]["ok"]) == (200, True), body
        status, result = poll_result(gateway, late["id"])
        assert (status, result["error"]["type"]) == (504, "DeadlineExceeded"), result
        # One C call that no signal handler interrupts: Celery's hard limit kills the child.
        status, stuck, _ = http_get(f"{gateway}/check/hog?tag={tags(1)[0]}&timeout=1")
        assert status == 504, stuck
        status, result = poll_result(gateway, stuck["id"])
        assert (status, result["state"], result["error"]["type"]) == (504, "FAILURE", "TimeLimitExceeded"), result
        status, body, _ = http_get(f"{gateway}/check/spin?tag={tags(1)[0]}&ms=100&timeout=20")
        assert (status, body["result"]["ok"]) == (200, True), body  # a new child took the slot
