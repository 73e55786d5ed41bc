"""The alerts event listener under a real supervisord, and its protocol against a stalling webhook."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.ops.conftest import Deployment
from tests.ops.helpers import Supervisord, Webhook, conf_sections, wait_for
from tests.support.stack import ROOT, free_port

TEST_PROGRAMS = """
; Runs a moment (so it reaches RUNNING), writes to both streams, then dies with an unexpected code.
[program:crasher]
command=/bin/sh -c 'sleep 1.5; echo "crasher-stdout-marker"; echo "crasher-stderr-marker: Traceback" >&2; exit 3'
autostart=true
autorestart=false
startsecs=1
stdout_logfile=%(here)s/var/log/crasher.out
stderr_logfile=%(here)s/var/log/crasher.err

; Never starts: BACKOFF, then FATAL. Its stderr goes to its stdout log (redirect_stderr).
[program:fatal]
command=/bin/sh -c 'echo "fatal-marker: cannot start" >&2; exit 1'
autostart=true
startsecs=1
startretries=1
redirect_stderr=true
stdout_logfile=%(here)s/var/log/fatal.out
"""


@pytest.fixture
def node(deployment: Deployment) -> Iterator[tuple[Supervisord, Webhook]]:
    """supervisord with the alerts listener, the shipped prefork worker-add, a crasher and a FATAL program."""
    webhook = Webhook()
    env = {**deployment.env, "CHECKGATE_ALERT_WEBHOOK": webhook.url, "CHECKGATE_NODE": "node-a"}
    # The shipped worker section, with a shorter startsecs to keep the test short.
    worker = conf_sections("program:worker-add", overrides={"program:worker-add": {"startsecs": "2"}})
    sup = Supervisord(conf_sections("eventlistener:alerts") + "\n" + worker + TEST_PROGRAMS, env).start()
    try:
        yield sup, webhook
    finally:
        sup.shutdown()
        webhook.close()


def children_of(pid: int) -> set[int]:
    """Live processes whose parent is `pid`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def test_alerts_on_crash_fatal_and_a_killed_worker_which_comes_back(node: tuple[Supervisord, Webhook]) -> None:
    sup, webhook = node
    sup.wait_state("alerts", "RUNNING")

    crash = webhook.wait_for(lambda b: b["process"] == "crasher")
    assert crash["event"] == "PROCESS_STATE_EXITED"
    assert (crash["node"], crash["group"], crash["from_state"]) == ("node-a", "crasher", "RUNNING")
    assert crash["expected"] is False
    assert isinstance(crash["pid"], int)
    assert crash["log_stream"] == "stderr" and "crasher-stderr-marker: Traceback" in crash["log_tail"]
    assert "crasher exited unexpectedly" in crash["text"]

    fatal = webhook.wait_for(lambda b: b["process"] == "fatal")
    assert (fatal["event"], fatal["from_state"]) == ("PROCESS_STATE_FATAL", "BACKOFF")
    assert fatal["log_stream"] == "stdout" and "fatal-marker: cannot start" in fatal["log_tail"]

    # A prefork worker SIGKILLed: an alert, then supervisord starts it again.
    before = sup.wait_state("worker-add", "RUNNING")
    pool = wait_for(lambda: children_of(before["pid"]), 20, "prefork children")
    os.kill(before["pid"], signal.SIGKILL)
    killed = webhook.wait_for(lambda b: b["process"] == "worker-add")
    assert (killed["event"], killed["pid"], killed["from_state"]) == ("PROCESS_STATE_EXITED", before["pid"], "RUNNING")
    assert killed["log_stream"] == "stdout"  # redirect_stderr: the banner and warnings are there
    after = sup.wait_state("worker-add", "RUNNING", timeout=30)
    assert after["pid"] != before["pid"]
    # The old pool's children notice their parent is gone and exit: nothing orphaned keeps running.
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pool), 20, f"orphans {pool} to exit")

    # Expected exits (a stop) are not alerts; the listener is still alive after everything.
    sup.rpc.stopProcess("worker-add", False)
    sup.wait_state("worker-add", "STOPPED")
    time.sleep(1)
    assert [b["process"] for b in webhook.bodies].count("worker-add") == 1
    assert sup.info("alerts")["statename"] == "RUNNING"
    lines = sup.log("alerts.log")
    assert "checkgate-alert node=node-a event=PROCESS_STATE_EXITED process=crasher group=crasher" in lines
    assert "event=PROCESS_STATE_FATAL process=fatal group=fatal from_state=BACKOFF" in lines


def frame(event: str, payload: str) -> bytes:
    """One supervisord event as it arrives on a listener's stdin."""
    body = payload.encode()
    header = f"ver:3.0 server:supervisor serial:1 pool:alerts poolserial:1 eventname:{event} len:{len(body)}\n"
    return header.encode() + body


def read_exactly(stream: BinaryIO, data: bytes, timeout: float) -> None:
    """Read `data` from the listener's stdout, failing (not hanging) when it is not all there within `timeout`.

    Reads the pipe's descriptor directly, so every read of `stream` must go through here.
    """
    deadline = time.monotonic() + timeout
    got = b""
    while len(got) < len(data):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([stream.fileno()], [], [], max(0.0, remaining))
        if not ready:
            raise AssertionError(f"waited {timeout} s for {data!r}, got {got!r}")
        chunk = os.read(stream.fileno(), len(data) - len(got))
        if not chunk:
            raise AssertionError(f"the listener closed its stdout; wanted {data!r}, got {got!r}")
        got += chunk
    assert got == data


@pytest.mark.parametrize("hook", ["stall", "refused", "error", "not-http"])
def test_listener_answers_ok_to_every_event_whatever_the_webhook_does(hook: str) -> None:
    receiver = Webhook(status=500, delay=10 if hook == "stall" else 0)
    url = {
        "stall": receiver.url,
        "error": receiver.url,
        "refused": f"http://127.0.0.1:{free_port()}/hook",
        "not-http": "file:///etc/passwd",
    }[hook]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHECKGATE_ALERT_WEBHOOK": url, "CHECKGATE_ALERT_TIMEOUT": "0.5"}
    env.pop("SUPERVISOR_SERVER_URL", None)
    argv = [sys.executable, "-m", "gateway.alerts"]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        read_exactly(proc.stdout, b"READY\n", 10)
        events = [
            frame("PROCESS_STATE_EXITED", "processname:w groupname:workers from_state:RUNNING expected:0 pid:42"),
            frame("PROCESS_STATE_RUNNING", "processname:w groupname:workers from_state:STARTING pid:43"),
            frame("PROCESS_STATE_EXITED", "processname:w groupname:workers from_state:RUNNING expected:1 pid:43"),
            frame("PROCESS_STATE_FATAL", "processname:x groupname:x from_state:BACKOFF"),
            b"garbage header without a length\n",
            frame("TICK_5", "when:1700000000"),
        ]
        for event in events:
            proc.stdin.write(event)
            proc.stdin.flush()
            # A stalling webhook costs at most the alert timeout (0.5 s), never a stuck supervisord.
            read_exactly(proc.stdout, b"RESULT 2\nOK", 5)
            read_exactly(proc.stdout, b"READY\n", 5)
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        receiver.close()
    assert err.count("checkgate-alert node=") == 2  # the unexpected exit and the FATAL, nothing else
    assert "process=workers:w group=workers from_state=RUNNING pid=42" in err
    assert "not an event header, skipped: 'garbage header without a length" in err
    if hook == "not-http":
        assert "must be an http(s) URL" in err
    else:
        assert err.count("webhook failed") == 2
    if hook == "error":
        assert [b["pid"] for b in receiver.bodies] == [42, None]
        assert receiver.bodies[0]["log_tail"].startswith("no SUPERVISOR_SERVER_URL")


def test_event_lengths_count_bytes_so_a_non_ascii_name_keeps_the_stream_in_step() -> None:
    """`len` is in bytes; a listener reading it as characters would swallow the next event's header."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SUPERVISOR_SERVER_URL", None)
    env.pop("CHECKGATE_ALERT_WEBHOOK", None)
    argv = [sys.executable, "-m", "gateway.alerts"]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        read_exactly(proc.stdout, b"READY\n", 10)
        for name, pid in (("wörker-ü", 7), ("plain", 8)):
            payload = f"processname:{name} groupname:{name} from_state:RUNNING expected:0 pid:{pid}"
            proc.stdin.write(frame("PROCESS_STATE_EXITED", payload))
            proc.stdin.flush()
            read_exactly(proc.stdout, b"RESULT 2\nOK", 5)
            read_exactly(proc.stdout, b"READY\n", 5)
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "process=wörker-ü group=wörker-ü from_state=RUNNING pid=7" in err
    assert "process=plain group=plain from_state=RUNNING pid=8" in err


WIDE_CRASHER = """
; Writes 6001 bytes of two-byte characters to stderr, then dies: the last 4000 bytes of its log begin
; inside a character, which supervisord's tailProcessStderrLog cannot decode by itself (HTTP 500).
[program:wide]
command=/bin/sh -c 'sleep 1.5; printf "%%s\\n" "$WIDE" >&2; exit 3'
environment=WIDE="{wide}"
autorestart=false
startsecs=1
stderr_logfile=%(here)s/var/log/wide.err
"""


def test_the_log_tail_of_an_alert_survives_multibyte_output() -> None:
    webhook = Webhook()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHECKGATE_ALERT_WEBHOOK": webhook.url, "CHECKGATE_NODE": "node-w"}
    sections = conf_sections("eventlistener:alerts") + WIDE_CRASHER.format(wide="é" * 3000)
    sup = Supervisord(sections, env).start()
    try:
        alert = webhook.wait_for(lambda b: b["process"] == "wide")
    finally:
        sup.shutdown()
        webhook.close()
    assert alert["log_stream"] == "stderr"
    assert alert["log_tail"] == "é" * 1999 + "\n"
