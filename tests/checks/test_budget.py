"""The worker's body budget (tasks/checks/_budget.py, issue #11 F10): what http checks may hold at once."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from tasks.checks import _budget
from tasks.checks._budget import FLOOR, REASON, ByteBudget
from tasks.checks._common import Deadline, ProbeFailure
from tasks.checks.http import TEXT_BYTES_PER_BODY_BYTE, http_check, read_reservation

MIB = 1024 * 1024


def _deadline(seconds: float) -> Deadline:
    return Deadline(time.time() + seconds)


# --- the budget itself ----------------------------------------------------------------------------


def test_reservations_share_the_budget_and_wait_for_each_other() -> None:
    budget = ByteBudget(10 * MIB, floor=MIB)
    order: list[str] = []
    with budget.reserve(7 * MIB, _deadline(5), "first"):
        assert budget.held == 6 * MIB  # the floor is free
        with budget.reserve(MIB // 2, _deadline(5), "small"):  # within the floor: never waits
            assert budget.held == 6 * MIB

        def second() -> None:
            with budget.reserve(7 * MIB, _deadline(5), "second"):
                order.append("second")

        waiting = threading.Thread(target=second)
        waiting.start()
        time.sleep(0.2)
        order.append("first ends")
    waiting.join(5)
    assert order == ["first ends", "second"] and budget.held == 0


def test_a_reservation_that_does_not_fit_by_the_deadline_is_refused() -> None:
    budget = ByteBudget(10 * MIB, floor=0)
    with budget.reserve(8 * MIB, _deadline(5), "first"):
        began = time.monotonic()
        with pytest.raises(ProbeFailure) as refused, budget.reserve(4 * MIB, _deadline(0.5), "max_body_bytes=4"):
            pass
        assert 0.3 < time.monotonic() - began < 1.0
    assert refused.value.reason == REASON and "max_body_bytes=4 needs" in refused.value.detail
    assert budget.held == 0


def test_a_reservation_larger_than_the_whole_budget_is_refused_at_once() -> None:
    budget = ByteBudget(10 * MIB, floor=0)
    began = time.monotonic()
    with (
        pytest.raises(ProbeFailure, match="more than this worker's body budget"),
        budget.reserve(11 * MIB, _deadline(5), "max_body_bytes=11"),
    ):
        pass
    assert time.monotonic() - began < 0.1


def test_the_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_budget.BUDGET_ENV, str(8 * MIB))
    assert _budget.process_budget().total == 8 * MIB
    monkeypatch.delenv(_budget.BUDGET_ENV)
    assert _budget.process_budget().total == _budget.DEFAULT_BUDGET


# --- what an http check holds is what it reserves --------------------------------------------------

BODY = 1 * MIB
BODIES = {
    "ascii": (b"a" * BODY, "text/plain"),
    "utf-8 beyond U+FFFF": (b"a" * (BODY - 4) + "\U0001f600".encode(), "text/plain; charset=utf-8"),
    "windows-1252": (b"\x80" * BODY, "text/plain; charset=windows-1252"),
    "invalid utf-8 beyond U+FFFF": (b"a" * (BODY - 5) + b"\xff" + "\U0001f600".encode(), "text/plain"),
}


@pytest.fixture(scope="module")
def body_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, content_type = BODIES[self.path.strip("/").replace("_", " ")]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", BODIES)
def test_a_check_holds_no_more_than_it_reserves(body_server: str, kind: str) -> None:
    """tracemalloc's peak over one check stays within what it reserved: the body while reading, and its
    text when it must be decoded for body_match (the calibration of `TEXT_BYTES_PER_BODY_BYTE`)."""
    url = f"{body_server}/{kind.replace(' ', '_')}"
    http_check(url, max_body_bytes=BODY, body_match="z{3}", deadline=time.time() + 10)  # imports, caches
    tracemalloc.start()
    try:
        result = http_check(url, max_body_bytes=BODY, body_match="z{3}", deadline=time.time() + 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result["ok"], result["reason"], result["body_bytes"]) == (False, "body_match", BODY), result
    reserved = read_reservation(BODY) + TEXT_BYTES_PER_BODY_BYTE * BODY
    assert peak <= reserved, f"{peak / BODY:.2f}x the body"


# --- many at once, in a worker-like process --------------------------------------------------------

_MANY = textwrap.dedent(
    """
    import http.server, json, socketserver, sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    import psutil
    from tasks.checks.http import http_check

    CHECKS, SIZE = int(sys.argv[1]), int(sys.argv[2])
    BODY = b"\\x80" * SIZE  # windows-1252, every byte beyond ASCII: decoded for body_match, 6x its size

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(SIZE))
            self.send_header("Content-Type", "text/plain; charset=windows-1252")
            self.end_headers()
            self.wfile.write(BODY)
        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    http_check(url, max_body_bytes=64 * 1024, body_match="z", deadline=time.time() + 10)  # warm
    before = psutil.Process().memory_info().rss

    def one(_):
        began = time.monotonic()
        result = http_check(url, max_body_bytes=SIZE, body_match="z", deadline=time.time() + 8)
        return result.get("reason"), time.monotonic() - began

    with ThreadPoolExecutor(CHECKS) as pool:
        outcomes = list(pool.map(one, range(CHECKS)))
    # VmHWM: the peak RSS of this program (ru_maxrss would carry the forking parent's over the exec)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"before": before, "peak": peak, "outcomes": outcomes}))
    """
)


def run_many(checks: int, size: int, budget: int) -> dict:
    """`checks` http checks of `size`-byte bodies at once in a fresh process with this body budget: its RSS
    before them, its peak RSS, and each check's reason and seconds."""
    env = {**os.environ, _budget.BUDGET_ENV: str(budget)}
    out = subprocess.run(
        [sys.executable, "-c", _MANY, str(checks), str(size)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_many_big_bodies_at_once_stay_within_the_budget() -> None:
    """8 checks at once of 4 MiB bodies decoded for body_match (each holds ~6x its body, and reserves 37 MiB):
    without a budget the process grew by 85-152 MiB (2-core VM; the GIL decides how many overlap); with a
    40 MiB one by 27 MiB, one check at a time, and every check ended by its deadline: judged, refused for the
    budget, or out of time to match once it got its share."""
    size, budget = 4 * MIB, 40 * MIB
    seen = run_many(8, size, budget)
    grew = seen["peak"] - seen["before"]
    assert grew < budget + 16 * MIB, f"grew by {grew / MIB:.0f} MiB: {seen}"
    ended = ("body_match", REASON, "timeout")
    assert all(reason in ended and took < 8.5 for reason, took in seen["outcomes"]), seen
    assert any(reason == "body_match" for reason, _ in seen["outcomes"]), seen


def test_the_floor_is_the_default_check() -> None:
    """What a check of default sizes reserves is within the floor: ordinary checks never wait for others."""
    from tasks.checks.http import MAX_BODY_BYTES

    assert read_reservation(MAX_BODY_BYTES) <= FLOOR
    assert TEXT_BYTES_PER_BODY_BYTE * MAX_BODY_BYTES <= FLOOR


def test_a_check_the_budget_cannot_hold_answers_body_budget(body_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_budget.BUDGET_ENV, str(4 * MIB))
    url = f"{body_server}/ascii"
    result = http_check(url, max_body_bytes=BODY, body_match="z", deadline=time.time() + 5)
    assert (result["ok"], result["reason"]) == (False, REASON), result
    assert "max_body_bytes=1048576 with a body pattern needs" in result["detail"]
    # Without a pattern the same body fits, and an ASCII body keeps only ~1.1x its size when judged.
    assert http_check(url, max_body_bytes=BODY, deadline=time.time() + 5)["ok"] is True
