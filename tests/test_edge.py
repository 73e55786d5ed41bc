"""The HTTP edge of a real gateway process, over raw sockets: every malformed, oversized, slow or
bodied request gets a JSON answer with the right status (never a bare status line, never a dropped
connection), bodies are refused before they are read, and running out of file descriptors does not
make the gateway spin. In-process twins of most cases are in test_contract.py."""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.raw_http import address, answer, exchange, is_json_refusal, trickle
from tests.support.stack import Stack, http_get

HEAD_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def edge_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("edge"), f"cgt{secrets.token_hex(3)}_", BROKER_URL, BACKEND_URL) as stack:
        yield stack


@pytest.fixture(scope="module")
def edge(edge_stack: Stack) -> str:
    """A gateway with 1 s head and body timeouts (no workers: nothing here reaches one)."""
    return edge_stack.start_gateway("gw", CHECKGATE_HEAD_TIMEOUT=str(HEAD_TIMEOUT), CHECKGATE_BODY_TIMEOUT="1")


def assert_json_refusal(raw: bytes, status: int, field: str | None = None) -> dict[str, Any]:
    assert is_json_refusal(raw, status, field), raw[:300]
    return answer(raw)[2]


@pytest.mark.parametrize(
    "head",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /check/add?x=1&y=2 HTTP/1.1 trailing\r\nHost: x\r\n\r\n",
        b"GET /check/add?x=1&y=2 HTTP/7.0\r\nHost: x\r\n\r\n",
        b"GET  /health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n continued\r\n\r\n",
        b"GET /health HTTP/1.1\r\nNo Colon Here\r\n\r\n",
        b"GET /health HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ],
)
def test_malformed_requests_get_a_json_400(edge: str, head: bytes) -> None:
    assert_json_refusal(exchange(edge, head), 400)


def test_more_than_1000_query_parameters_is_a_json_400(edge: str) -> None:
    query = "&".join(f"p{i}=1" for i in range(1001)).encode()
    body = assert_json_refusal(
        exchange(edge, b"GET /check/add?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n"), 400, "query"
    )
    assert "1000" in body["error"]


def test_a_300_kb_uri_is_a_json_414(edge: str) -> None:
    raw = exchange(edge, b"GET /check/add?x=1&y=1&pad=" + b"a" * 300_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_json_refusal(raw, 414, "uri")


def test_a_300_kb_header_is_a_json_431(edge: str) -> None:
    raw = exchange(edge, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 300_000 + b"\r\n\r\n")
    assert_json_refusal(raw, 431, "headers")


def test_a_1_mb_head_is_a_json_431_before_the_close(edge: str) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 0123456789abcdef\r\n" * 40_000 + b"\r\n"
    assert len(head) > 1_000_000
    assert_json_refusal(exchange(edge, head), 431, "headers")


def test_a_body_that_never_comes_is_refused_from_the_head_at_once(edge: str) -> None:
    started = time.monotonic()
    post = b"POST /check/add?x=1&y=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab"
    body = assert_json_refusal(exchange(edge, post), 405, "method")
    assert "GET and HEAD" in body["error"]
    get = b"GET /check/add?x=1&y=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab"
    assert_json_refusal(exchange(edge, get), 413, "body")
    # Answered from the head: well before any body timeout (the old gateway waited for ever).
    assert time.monotonic() - started < 5


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(rf"{field}:\s+(\d+)", status.read()).group(1))


def test_ten_95_mb_posts_are_refused_before_their_bodies_are_read(edge: str, edge_stack: Stack) -> None:
    pid = edge_stack.procs["gw"].pid
    peak_before = status_kib(pid, "VmHWM")
    for _ in range(10):
        head = b"POST /check/add?x=1&y=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 95000000\r\n\r\n"
        raw = exchange(edge, head, timeout=20, body_after=95_000_000)
        assert_json_refusal(raw, 405, "method")
    # The gateway's peak resident memory stayed where it was (a buffered body would add 95 MB).
    assert status_kib(pid, "VmHWM") - peak_before < 20 * 1024
    assert http_get(edge + "/health")[0] == 200


def test_a_head_that_trickles_in_is_timed_out_with_a_408(edge: str) -> None:
    started = time.monotonic()
    received = trickle(edge, b"GET /health HTTP/1.1\r\nHost: x\r\n", timeout=HEAD_TIMEOUT + 5)
    assert_json_refusal(received, 408)
    assert time.monotonic() - started < HEAD_TIMEOUT + 5


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def test_out_of_file_descriptors_the_gateway_pauses_accepting_and_recovers(edge_stack: Stack) -> None:
    """With RLIMIT_NOFILE a little above what the gateway holds, open connections until accept() fails
    with EMFILE: the gateway must neither spin nor log a line per failure, and must serve again once
    descriptors are free."""
    limit = 64
    gateway = edge_stack.start_gateway("gw-fds", nofile=limit)
    pid = edge_stack.procs["gw-fds"].pid
    assert open_fds(pid) < limit - 10, "the gateway needs more descriptors than this test allows it"
    log = edge_stack.logs["gw-fds"]
    held: list[socket.socket] = []
    try:
        for _ in range(limit + 20):
            held.append(socket.create_connection(address(gateway), timeout=5))
        time.sleep(1)  # the gateway accepts what it can, then accept() fails with EMFILE
        lines_before = log.read_text().count("\n")
        cpu_before = cpu_seconds(pid)
        time.sleep(3)
        cpu = cpu_seconds(pid) - cpu_before
        new_lines = log.read_text().splitlines()[lines_before:]
        assert "Too many open files" in log.read_text()
        # A spinning accept loop burns a whole core (3 s here) and logs thousands of tracebacks.
        assert cpu < 0.5, f"{cpu:.2f} s of CPU in 3 s while out of file descriptors"
        assert len(new_lines) <= 3, new_lines[:5]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 20
    while True:
        try:
            status = http_get(gateway + "/health", timeout=5)[0]
        except OSError:
            status = 0
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200
