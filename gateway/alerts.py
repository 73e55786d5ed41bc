"""Supervisor event listener that reports dying processes (`python -m gateway.alerts`).

It reacts to PROCESS_STATE_FATAL (a program gave up restarting) and to PROCESS_STATE_EXITED with
expected=0 (a program that was running died): one line on stderr, and when `CHECKGATE_ALERT_WEBHOOK`
is set, a JSON POST carrying the tail of the process's log. Every event is answered `RESULT 2\\nOK`,
whatever happened while handling it, so supervisord never stalls or resends.

The eventlistener protocol is supervisor's own `childutils`: `listener.ready` and `listener.ok` write
the tokens, `get_headers` and `eventdata` parse the header line and the payload. `listener.wait` is
not used, because at the end of input (supervisord closed our stdin) it raises `KeyError('len')` just
as for a malformed header: a loop around it cannot tell "stop" from "skip this one", so it either dies
on one bad header or spins on a closed stdin (tests/ops/test_alerts.py closes stdin, expects exit 0). `serve` is
`wait` with that case told apart. `len` counts bytes while childutils reads a text stream by
characters, so stdin is decoded as latin-1 (one character per byte) and the payload re-decoded as
UTF-8: a process name like `wörker` does not desynchronise the stream.

The log tail comes from supervisord's XML-RPC API (`tailProcessStderrLog`, falling back to stdout for
programs with `redirect_stderr`) at `SUPERVISOR_SERVER_URL`, which supervisord gives every child and
which is its owner-only unix socket when there is one: no password, no config parsing, and it reads the
file supervisord is writing now (AUTO names and rotation included). It is asked through checkgate's one
XML-RPC client (gateway/supervisor_rpc.py, one `asyncio.run` per alert) rather than
`childutils.getRPCInterface`, whose transport has no timeout: a wedged supervisord would hang the
listener, and every event queued behind it. Measured (2-core dev VM, supervisor 4.3.0, a unix socket
that accepts and never answers): `getRPCInterface(env).supervisor.getState()` was still waiting when
the measurement gave up after 30 s; `RpcClient.call(..., timeout=3)` raised RpcError after 3.0 s.

Environment: `CHECKGATE_ALERT_WEBHOOK` (http/https URL), `CHECKGATE_ALERT_TIMEOUT` (seconds, default 3),
`CHECKGATE_ALERT_TAIL_BYTES` (default 4000), `CHECKGATE_NODE` (default: the host name);
`SUPERVISOR_USERNAME` / `SUPERVISOR_PASSWORD` (or `CHECKGATE_SUPERVISOR_USER` / `_PASSWORD`) only when
supervisord has no unix socket and gave an http:// URL.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import os
import signal
import sys
import traceback
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from supervisor import childutils
from supervisor.options import make_namespec

from gateway.config import env_number
from gateway.nodes import ConfigError, NodeConfig, node_name, parse_node
from gateway.supervisor_rpc import RpcClient, RpcError

EVENTS = ("PROCESS_STATE_FATAL", "PROCESS_STATE_EXITED")


def log(message: str) -> None:
    """One line on stderr: supervisord writes it to the listener's stderr log."""
    print(message, file=sys.stderr, flush=True)


def should_alert(event: str, payload: Mapping[str, str]) -> bool:
    """FATAL always; EXITED only when the exit was not expected (a crash, a kill, a bad exit code)."""
    return event == "PROCESS_STATE_FATAL" or (event == "PROCESS_STATE_EXITED" and payload.get("expected") == "0")


class Alerter:
    """Turns one supervisord event into a log line and, when configured, a webhook POST."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.webhook = environ.get("CHECKGATE_ALERT_WEBHOOK") or None
        self.timeout = env_number("CHECKGATE_ALERT_TIMEOUT", 3.0, above=0, unit="seconds", environ=environ)
        self.tail_bytes = env_number("CHECKGATE_ALERT_TAIL_BYTES", 4000, minimum=0, environ=environ)
        self.node = environ.get("CHECKGATE_NODE") or node_name()
        self.server_url = environ.get("SUPERVISOR_SERVER_URL")
        # Only needed when supervisord has no unix socket and gave an http:// URL.
        self.username = environ.get("SUPERVISOR_USERNAME") or environ.get("CHECKGATE_SUPERVISOR_USER")
        self.password = environ.get("SUPERVISOR_PASSWORD") or environ.get("CHECKGATE_SUPERVISOR_PASSWORD")
        if self.webhook and urllib.parse.urlsplit(self.webhook).scheme not in ("http", "https"):
            log(f"checkgate-alerts: CHECKGATE_ALERT_WEBHOOK must be an http(s) URL, ignoring {self.webhook!r}")
            self.webhook = None

    def handle(self, header: Mapping[str, str], payload: str) -> None:
        """React to one event: `header` is the event's header line parsed, `payload` its body.

        Raises whatever a malformed payload causes; the caller answers OK whatever happens here.
        """
        event = header.get("eventname", "")
        if event not in EVENTS:
            return
        # A PROCESS_STATE payload is one line of tokens and no data (superlance's crashmail reads it so).
        info, _ = childutils.eventdata(payload + "\n")
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
        """The alert as JSON: who died where, from which state, and a one-line `text` for chat hooks.

        `info` is the event's payload tokens (`processname`, `groupname`, `from_state`, `pid`,
        `expected`). Keys: event, node, process (namespec), group, name, from_state, pid (int or None),
        expected (bool, or None for FATAL), time (ISO 8601, UTC, seconds), text.
        """
        name, group = info.get("processname", "?"), info.get("groupname", "?")
        process = make_namespec(group, name)
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
        """(`stderr` or `stdout`, the last `tail_bytes` of that log of `process` (a namespec)).

        (None, the reason) when it cannot be read; never raises. Each XML-RPC call waits at most
        `timeout` seconds.
        """
        if not self.server_url:
            return None, "no SUPERVISOR_SERVER_URL: not run by supervisord"
        raw = {"name": "self", "url": self.server_url, "username": self.username, "password": self.password}
        try:
            node = parse_node({k: v for k, v in raw.items() if v}, "SUPERVISOR_SERVER_URL", Path.cwd(), {})
        except ConfigError as exc:
            return None, f"log not readable: {exc}"
        return asyncio.run(self._tail(node, process))

    async def _tail(self, node: NodeConfig, process: str) -> tuple[str | None, str]:
        rpc = RpcClient(max_clients=1)
        try:
            # stderr first: that is where tracebacks go. With redirect_stderr it has no file, so nothing
            # comes back, and the same lines are in stdout.
            try:
                text, _ = await rpc.tail(node, process, "stderr", 0, self.tail_bytes, timeout=self.timeout)
            except RpcError:
                text = ""
            if text:
                return "stderr", text
            text, _ = await rpc.tail(node, process, "stdout", 0, self.tail_bytes, timeout=self.timeout)
            return "stdout", text
        except RpcError as exc:
            return None, f"log not readable: {exc}"
        finally:
            rpc.close()

    def post(self, alert: dict[str, Any]) -> None:
        """POST the alert as JSON to the webhook, waiting at most `timeout` seconds; a slow, failing or
        refusing webhook is logged, never raised."""
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


def serve(stdin: TextIO, stdout: TextIO, handle: Callable[[Mapping[str, str], str], None]) -> None:
    """The eventlistener loop until supervisord closes `stdin`: READY, one event, handle it, RESULT OK.

    `stdin` must count characters as bytes (latin-1; see the module's docstring); `handle` gets the
    parsed header and the payload decoded as UTF-8. A malformed header, or an error in `handle`, is
    logged and answered OK like any event.
    """
    while True:
        childutils.listener.ready(stdout)
        line = stdin.readline()
        if not line:
            return  # supervisord closed our stdin: it is stopping us
        try:
            header = childutils.get_headers(line)
            payload = stdin.read(int(header["len"]))
        except (KeyError, ValueError):
            log(f"checkgate-alerts: not an event header, skipped: {line[:200]!r}")
        else:
            try:
                handle(header, payload.encode("latin-1").decode("utf-8", "replace"))
            except Exception:
                log("checkgate-alerts: error while handling an event:\n" + traceback.format_exc().rstrip())
        childutils.listener.ok(stdout)


def main() -> int:
    """Run as supervisord's `[eventlistener:alerts]`."""
    # supervisord stops us with TERM: exit 0 rather than show "terminated by SIGTERM" in its log.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    alerter = Alerter(os.environ)
    log(f"checkgate-alerts: listening on node {alerter.node}; webhook {'set' if alerter.webhook else 'not set'}")
    # newline="\n": no translation, so `len` characters are exactly `len` bytes.
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="latin-1", newline="\n")
    serve(stdin, sys.stdout, alerter.handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
