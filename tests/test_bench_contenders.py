"""Contenders that need no workers: checkgate as N gateway processes against a stand-in gateway, and
the bare Tornado handler (no services).

The multi-process gateway (issue #15 part 1) is started N times on one port, as supervisord starts it
(CHECKGATE_PROCESSES=N, CHECKGATE_PROCESS_NUM=n); the bench skips the cells — saying why — when a second
process cannot bind. A stand-in speaking just enough of the gateway (its /health and its start-up log
line) plays both.
"""

import sys
from pathlib import Path

import pytest

from bench import scenarios
from bench.contenders import Bare, CheckgateMulti, Skip
from bench.stack import BenchStack, group_size

# mode "reuse": binds with SO_REUSEPORT when CHECKGATE_PROCESSES > 1, as gateway/server.py does; "single":
# never (a second process cannot bind).
STAND_IN = r"""
import http.server, json, os, socket, sys
mode = os.environ["STAND_IN_MODE"]
port = int(os.environ["CHECKGATE_PORT"])
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Tornado's bind_sockets
if mode == "reuse" and int(os.environ["CHECKGATE_PROCESSES"]) > 1:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind(("127.0.0.1", port))  # "single": the second one fails with "Address already in use"
sock.listen(64)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"broker": {"ok": True}, "backend": {"ok": True}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", port), Health, bind_and_activate=False)
server.socket = sock
print(f"checkgate gateway on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
server.serve_forever()
"""


def stand_in(mode: str) -> type[CheckgateMulti]:
    class StandIn(CheckgateMulti):
        processes = 2
        mode = None

        def argv(self, port: int) -> list[str]:
            return [sys.executable, "-c", STAND_IN]

        def env(self, port: int, cell: int) -> dict[str, str]:
            return {**super().env(port, cell), "STAND_IN_MODE": mode}

    StandIn.mode = None
    return StandIn


@pytest.fixture
def stack(tmp_path: Path):
    stack = BenchStack(tmp_path)
    yield stack
    stack.stop_all(grace=2.0)


def test_n_gateway_processes_serve_one_port(stack: BenchStack) -> None:
    contender = stand_in("reuse")(stack)
    contender.start(1)
    try:
        assert type(contender).mode is None
        pgids = contender.pgids()
        assert len(pgids) == 2
        assert sum(group_size(g) for g in pgids) == 2
    finally:
        contender.stop()
    assert not any(group_size(g) for g in pgids)
    again = type(contender)(stack)
    again.start(2)
    again.stop()


def test_a_gateway_of_one_process_per_port_is_skipped_saying_why(stack: BenchStack) -> None:
    kind = stand_in("single")
    with pytest.raises(Skip, match="CHECKGATE_PROCESSES is not supported"):
        kind(stack).start(1)
    assert not stack.procs, "every process it started is stopped"
    # Later cells are skipped without starting anything.
    with pytest.raises(Skip):
        kind(stack).start(2)
    assert not stack.procs


def test_the_bare_handler_answers_like_checkgate_with_no_work_behind(stack: BenchStack) -> None:
    bare = Bare(stack)
    bare.start(1)
    try:
        # warm() checks every answer against the task's own result, as for every HTTP contender.
        (unique,) = scenarios.build(["unique"], 1, [])
        (sleep,) = scenarios.build(["sleep"], 1, [4], sleep_ms=50)
        bare.warm(unique.streams + sleep.streams)
        assert bare.target(unique.stream("main").concrete(3)).url.endswith("/check/add?x=3&y=2")
        (pgid,) = bare.pgids()
        assert group_size(pgid) == 1
    finally:
        bare.stop()
    assert not group_size(pgid)
