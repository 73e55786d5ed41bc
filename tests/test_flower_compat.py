"""Flower's task API, side by side: one client script against a real Flower (`celery -A tasks flower`, Basic
auth) and against a real gateway with CHECKGATE_TASK_API, both on the session's workers; the answers
must have the same shape (keys in order, value types) and, where the outcome is deterministic, the same
values. Also a smoke of bench/flower_api_load.py against both (that it works, not how fast).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from bench.contenders import http
from tests.support.stack import ROOT, Stack, free_port

USER, PASSWORD = "flower", "compat-pw"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
ALLOWED = "checkgate.add,checkgate.boom,checkgate.sleep"
LOAD_ARGS = ("--basic", f"{USER}:{PASSWORD}", "--unique-kwarg", "x", "--json")


def request(base: str, path: str, body: Any = None, method: str | None = None) -> tuple[int, Any]:
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return http(base + path, method or ("POST" if body is not None else "GET"), data, timeout=60, headers=AUTH)


def script(base: str) -> dict[str, tuple[int, Any]]:
    """The client: every endpoint, success, failure, timeout, options, errors. Label → (status, body)."""
    eta = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(time.time() + 1))
    out = {
        "apply": request(base, "/api/task/apply/checkgate.add", {"kwargs": {"x": 1, "y": 2}, "timeout": 30}),
        "apply-failure": request(base, "/api/task/apply/checkgate.boom", {"kwargs": {"code": 7}, "timeout": 30}),
        "apply-timeout": request(base, "/api/task/apply/checkgate.sleep", {"kwargs": {"ms": 3000}, "timeout": 0.3}),
        "apply-options": request(
            base,
            "/api/task/apply/checkgate.add",
            {"kwargs": {"x": 2, "y": 2}, "countdown": 0.5, "expires": 60, "timeout": 30},
        ),
        "apply-eta": request(base, "/api/task/apply/checkgate.add", {"kwargs": {"x": 3, "y": 3}, "eta": eta}),
        "async-apply": request(base, "/api/task/async-apply/checkgate.add", {"kwargs": {"x": 5, "y": 5}}),
        "send-task": request(base, "/api/task/send-task/checkgate.add", {"kwargs": {"x": 6, "y": 6}}),
        "unknown-task": request(base, "/api/task/apply/checkgate.nope", {}),
        "bad-args": request(base, "/api/task/apply/checkgate.add", {"args": {"x": 1}}),
        "unknown-id": request(base, "/api/task/result/no-such-task-id"),
    }
    sent_id = out["async-apply"][1]["task-id"]
    out["result-wait"] = request(base, f"/api/task/result/{sent_id}?timeout=30")
    out["result-failure"] = request(base, f"/api/task/result/{out['apply-failure'][1]['task-id']}")
    return out


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    return type(value).__name__


@pytest.fixture(scope="module")
def flower(stack: Stack) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "flower", "--address=127.0.0.1", f"--port={port}"]
    argv += [f"--basic-auth={USER}:{PASSWORD}", "--enable_events=False", "--logging=warning"]
    log = stack.workdir / "flower-compat.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=stack.env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthcheck", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"flower did not start: {log.read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def task_gateway(stack: Stack) -> str:
    return stack.start_gateway("gw-taskapi", CHECKGATE_TASK_API=ALLOWED)


@pytest.fixture(scope="module")
def both(flower: str, task_gateway: str) -> dict[str, dict[str, tuple[int, Any]]]:
    return {"flower": script(flower), "checkgate": script(task_gateway)}


def test_same_statuses_and_json_shapes(both: dict[str, dict[str, tuple[int, Any]]]) -> None:
    flower, ours = both["flower"], both["checkgate"]
    assert flower.keys() == ours.keys()
    for label in flower:
        (f_status, f_body), (o_status, o_body) = flower[label], ours[label]
        assert f_status == o_status, (label, flower[label], ours[label])
        if f_status == 200:
            # async-apply/send-task: Flower reads the state right after publishing (PENDING or, if the
            # task was that fast, SUCCESS); both are strings.
            assert shape(f_body) == shape(o_body), (label, f_body, o_body)


def test_same_values_where_the_outcome_is_fixed(both: dict[str, dict[str, tuple[int, Any]]]) -> None:
    flower, ours = both["flower"], both["checkgate"]
    for label, expected in (
        ("apply", {"result": 3, "state": "SUCCESS"}),
        ("apply-options", {"result": 4, "state": "SUCCESS"}),
        ("apply-eta", {"result": 6, "state": "SUCCESS"}),
        ("apply-failure", {"result": "ValueError('boom 7')", "state": "FAILURE"}),
        ("apply-timeout", {"state": "PENDING"}),
        ("result-wait", {"result": 10, "state": "SUCCESS"}),
        ("result-failure", {"result": "ValueError('boom 7')", "state": "FAILURE"}),
        ("unknown-id", {"task-id": "no-such-task-id", "state": "PENDING"}),
    ):
        for name, answers in (("flower", flower), ("checkgate", ours)):
            body = answers[label][1]
            assert {k: body[k] for k in expected} == expected, (name, label, body)
    # The traceback: Flower's whole, checkgate's last line (no worker paths without CHECKGATE_DEBUG).
    assert flower["apply-failure"][1]["traceback"].rstrip().endswith(ours["apply-failure"][1]["traceback"])
    assert ours["apply-failure"][1]["traceback"] == "ValueError: boom 7"
    assert ours["unknown-task"][1]["error"] == "Unknown task 'checkgate.nope'"


def test_the_bench_script_runs_against_both(flower: str, task_gateway: str) -> None:
    for base in (flower, task_gateway):
        proc = subprocess.run(
            [sys.executable, "-m", "bench.flower_api_load", base, "-c", "4", "-n", "40", "--warmup", "4", *LOAD_ARGS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
        assert (figures["requests"], figures["errors"]) == (40, 0), figures
        assert figures["rps"] > 0 and figures["p99_ms"] >= figures["p50_ms"]
