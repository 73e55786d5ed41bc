"""Supervisor event listener that reports dying processes (`python -m gateway.alerts`).

It speaks supervisord's eventlistener protocol on stdin/stdout and reacts to PROCESS_STATE_FATAL (a
program gave up restarting) and to PROCESS_STATE_EXITED with expected=0 (a program that was running
died): one line on stderr, and when `CHECKGATE_ALERT_WEBHOOK` is set, a JSON POST carrying the tail of
the process's log. Every event is answered `RESULT 2\\nOK`, whatever happened while handling it, so
supervisord never stalls or resends.

The log tail comes from supervisord's XML-RPC API (`tailProcessStderrLog`, falling back to stdout for
programs with `redirect_stderr`) at `SUPERVISOR_SERVER_URL`, which supervisord gives every child and
which is its owner-only unix socket when there is one: no password, no config parsing, and it reads the
file supervisord is writing now (AUTO names and rotation included).

Environment: `CHECKGATE_ALERT_WEBHOOK` (http/https URL), `CHECKGATE_ALERT_TIMEOUT` (seconds, default 3),
`CHECKGATE_ALERT_TAIL_BYTES` (default 4000), `CHECKGATE_NODE` (default: the host name).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import traceback
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from gateway.status import node_name, rpc_proxy

READY = b"READY\n"
OK = b"RESULT 2\nOK"
EVENTS = ("PROCESS_STATE_FATAL", "PROCESS_STATE_EXITED")


def log(message: str) -> None:
    """One line on stderr: supervisord writes it to the listener's stderr log."""
    print(message, file=sys.stderr, flush=True)


def parse_tokens(text: str) -> dict[str, str]:
    """`key:value key:value` (supervisord's header and PROCESS_STATE payload format)."""
    tokens = {}
    for token in text.split():
        key, sep, value = token.partition(":")
        if sep:
            tokens[key] = value
    return tokens


def should_alert(event: str, payload: Mapping[str, str]) -> bool:
    """FATAL always; EXITED only when the exit was not expected (a crash, a kill, a bad exit code)."""
    return event == "PROCESS_STATE_FATAL" or (event == "PROCESS_STATE_EXITED" and payload.get("expected") == "0")


class Alerter:
    """Turns one supervisord event into a log line and, when configured, a webhook POST."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.webhook = environ.get("CHECKGATE_ALERT_WEBHOOK") or None
        self.timeout = float(environ.get("CHECKGATE_ALERT_TIMEOUT", "3"))
        self.tail_bytes = int(environ.get("CHECKGATE_ALERT_TAIL_BYTES", "4000"))
        self.node = environ.get("CHECKGATE_NODE") or node_name()
        self.server_url = environ.get("SUPERVISOR_SERVER_URL")
        # Only needed when supervisord has no unix socket and gave an http:// URL.
        self.username = environ.get("SUPERVISOR_USERNAME") or environ.get("CHECKGATE_SUPERVISOR_USER")
        self.password = environ.get("SUPERVISOR_PASSWORD") or environ.get("CHECKGATE_SUPERVISOR_PASSWORD")
        if self.webhook and urllib.parse.urlsplit(self.webhook).scheme not in ("http", "https"):
            log(f"checkgate-alerts: CHECKGATE_ALERT_WEBHOOK must be an http(s) URL, ignoring {self.webhook!r}")
            self.webhook = None

    def handle(self, header: Mapping[str, str], payload: bytes) -> None:
        """React to one event (the caller answers OK whatever happens here)."""
        event = header.get("eventname", "")
        if event not in EVENTS:
            return
        # The payload of a PROCESS_STATE event is one line of tokens (no process data follows).
        info = parse_tokens(payload.decode("utf-8", "replace").split("\n", 1)[0])
        if not should_alert(event, info):
            return
        alert = self.build(event, info)
        log(
            f"checkgate-alert node={alert['node']} event={event} process={alert['process']} "
            f"group={alert['group']} from_state={alert['from_state']} pid={alert['pid']}"
        )
        if self.webhook:
            alert["log_stream"], alert["log_tail"] = self.log_tail(alert["process"])
            self.post(alert)

    def build(self, event: str, info: Mapping[str, str]) -> dict[str, Any]:
        """The alert as JSON: who died where, from which state, and a one-line `text` for chat hooks."""
        name, group = info.get("processname", "?"), info.get("groupname", "?")
        process = name if name == group else f"{group}:{name}"
        pid = int(info["pid"]) if info.get("pid", "").isdigit() else None
        if event == "PROCESS_STATE_FATAL":
            what = f"is FATAL (gave up restarting after {info.get('from_state', '?')})"
        else:
            what = f"exited unexpectedly (pid {pid}, was {info.get('from_state', '?')})"
        return {
            "event": event,
            "node": self.node,
            "process": process,
            "group": group,
            "name": name,
            "from_state": info.get("from_state"),
            "pid": pid,
            "expected": info.get("expected") == "1" if "expected" in info else None,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "text": f"checkgate on {self.node}: {process} {what}",
        }

    def log_tail(self, process: str) -> tuple[str | None, str]:
        """(`stderr` or `stdout`, the last bytes of that log); (None, reason) when it cannot be read."""
        if not self.server_url:
            return None, "no SUPERVISOR_SERVER_URL: not run by supervisord"
        namespec = process if ":" in process else f"{process}:{process}"
        try:
            rpc = rpc_proxy(self.server_url, self.username, self.password, timeout=self.timeout)
            # stderr first: that is where tracebacks go. With redirect_stderr it has no file (a fault)
            # or nothing in it, and the same lines are in stdout.
            try:
                text = rpc.tailProcessStderrLog(namespec, 0, self.tail_bytes)[0]
            except Exception:
                text = ""
            if text:
                return "stderr", text
            return "stdout", rpc.tailProcessStdoutLog(namespec, 0, self.tail_bytes)[0]
        except Exception as exc:
            return None, f"log not readable: {type(exc).__name__}: {exc}"

    def post(self, alert: dict[str, Any]) -> None:
        """POST the alert; a slow, failing or refusing webhook is logged, never raised."""
        assert self.webhook is not None
        body = json.dumps(alert).encode()
        request = urllib.request.Request(self.webhook, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header("User-Agent", "checkgate-alerts")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(1024)
        except Exception as exc:
            log(f"checkgate-alerts: webhook failed for {alert['process']}: {type(exc).__name__}: {exc}")


def serve(stdin: BinaryIO, stdout: BinaryIO, handle: Callable[[Mapping[str, str], bytes], None]) -> None:
    """The eventlistener loop: READY, read one header line and `len` bytes, handle, RESULT OK; until EOF."""
    while True:
        stdout.write(READY)
        stdout.flush()
        line = stdin.readline()
        if not line:
            return  # supervisord closed our stdin: it is stopping us
        header = parse_tokens(line.decode("utf-8", "replace"))
        try:
            length = int(header.get("len", "0"))
        except ValueError:
            length = 0
        payload = stdin.read(length) if length > 0 else b""
        try:
            handle(header, payload)
        except Exception:
            log("checkgate-alerts: error while handling an event:\n" + traceback.format_exc().rstrip())
        stdout.write(OK)
        stdout.flush()


def main() -> int:
    """Run as supervisord's `[eventlistener:alerts]`."""
    # supervisord stops us with TERM: exit 0 rather than show "terminated by SIGTERM" in its log.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    alerter = Alerter(os.environ)
    log(f"checkgate-alerts: listening on node {alerter.node}; webhook {'set' if alerter.webhook else 'not set'}")
    serve(sys.stdin.buffer, sys.stdout.buffer, alerter.handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
