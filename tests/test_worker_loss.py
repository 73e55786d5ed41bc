"""A worker that dies mid-task does not lose the request: the broker redelivers it and the caller is answered."""

import os
import signal
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor

from tests.support.stack import Stack, http_get


def wait_for_log(stack: Stack, name: str, needle: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while needle not in stack.logs[name].read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{needle!r} not in {name}'s log"
        time.sleep(0.05)


def request_in_background(url: str) -> Future:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(http_get, url, 90)
    pool.shutdown(wait=False)
    return future


def test_sigkilled_worker_process_task_is_redelivered_to_another(new_stack: Stack) -> None:
    gateway = new_stack.start_gateway("gw")
    new_stack.start_worker("doomed", ["sleep"], pool="threads", concurrency=2)
    answer = request_in_background(gateway + "/check/sleep?ms=3000&timeout=60")
    wait_for_log(new_stack, "doomed", "Task checkgate.sleep[")
    new_stack.kill("doomed", signal.SIGKILL)
    assert not answer.done()
    new_stack.start_worker("heir", ["sleep"], pool="threads", concurrency=2)
    status, body, _ = answer.result(timeout=60)
    assert status == 200, body
    assert body["result"] == {"ok": True, "slept_ms": 3000}
    assert body["worker"].startswith(f"{new_stack.prefix}heir@")


def test_sigkilled_prefork_child_task_is_requeued(new_stack: Stack) -> None:
    gateway = new_stack.start_gateway("gw")
    parent = new_stack.start_worker("prefork", ["sleep"], pool="prefork", concurrency=1)
    answer = request_in_background(gateway + "/check/sleep?ms=3000&timeout=60")
    wait_for_log(new_stack, "prefork", "Task checkgate.sleep[")
    time.sleep(0.5)  # let the child pick it up
    children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
    assert children, "prefork worker has no child process"
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    status, body, _ = answer.result(timeout=60)
    assert status == 200, body
    assert body["result"] == {"ok": True, "slept_ms": 3000}
    log = new_stack.logs["prefork"].read_text(errors="replace")
    assert "WorkerLostError" in log or "exited with" in log
