"""`checkgate restart-gateway`: restart the node's gateway processes one at a time, serving throughout.

`supervisorctl restart gateway:*` stops every process before starting any: the port refuses connections
meanwhile. Here each process in turn is stopped (SIGTERM: it stops listening and drains its requests in
flight while its siblings keep the port), started again, and waited for until it answers on the port
itself — `/health` names the process that answered (`process.pid`), and new connections are spread over
the listening processes by the kernel, so a few requests reach it — before the next one is stopped. With a
single gateway process there is no sibling to serve meanwhile: that restart is not without refusals.

Talks to the node's supervisord over its unix socket (gateway/status.py's `local_node`) with the console's
non-blocking client (gateway/supervisor_rpc.py); each stop and start waits for supervisord's own
confirmation (`wait=True`), as the console's actions do.

Exit status: 0 every process restarted and answering, 1 one did not (the later ones are left as they
were), 4 the node could not be asked.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from supervisor.options import make_namespec

from gateway.status import EXIT_OK, EXIT_UNREACHABLE, local_node
from gateway.supervisor_rpc import RpcClient, RpcError

GROUP = "gateway"
EXIT_FAILED = 1
# Seconds a stop may take: the gateway's stopwaitsecs (310, the longest check) and a margin.
STOP_TIMEOUT = 330.0
POLL_S = 0.05


def gateway_url(environ: dict[str, str] | None = None) -> str:
    """Where the node's gateway listens, from CHECKGATE_BIND and CHECKGATE_PORT (a wildcard bind: 127.0.0.1)."""
    environ = dict(os.environ if environ is None else environ)
    bind = environ.get("CHECKGATE_BIND") or "127.0.0.1"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{environ.get('CHECKGATE_PORT') or '8888'}"


def answering_pid(url: str) -> int | None:
    """The pid of the gateway process that answered one GET /health on a new connection, or None."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:  # 503 while the broker is away still names the process
        raw = exc.read()
    except OSError:
        return None
    try:
        pid = json.loads(raw)["process"]["pid"]
    except (ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) else None


async def wait_answering(url: str, pid: int, timeout: float) -> bool:
    """Whether the process `pid` answers on the port within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(answering_pid, url) == pid:
            return True
        await asyncio.sleep(POLL_S)
    return False


async def restart_all(home: Path, url: str, ready_timeout: float, say: Any = print) -> int:
    """Restart every process of the node's `gateway` group in turn (see the module doc); the exit status."""
    node = local_node(home)
    rpc = RpcClient()
    try:
        infos = await rpc.call(node, "supervisor.getAllProcessInfo", timeout=10)
        names = sorted(make_namespec(i["group"], i["name"]) for i in infos if i["group"] == GROUP)
        if not names:
            say(f"checkgate restart-gateway: no {GROUP} process on {node.address}")
            return EXIT_FAILED
        for name in names:
            started = time.monotonic()
            info = await rpc.call(node, "supervisor.getProcessInfo", name, timeout=10)
            if info["statename"] in ("RUNNING", "STARTING", "BACKOFF"):
                await rpc.call(node, "supervisor.stopProcess", name, True, timeout=STOP_TIMEOUT)
            await rpc.call(node, "supervisor.startProcess", name, True, timeout=STOP_TIMEOUT)
            pid = (await rpc.call(node, "supervisor.getProcessInfo", name, timeout=10))["pid"]
            if not await wait_answering(url, pid, ready_timeout):
                say(f"{name}: restarted (pid {pid}), not answering on {url} after {ready_timeout:g} s: stopped here")
                return EXIT_FAILED
            say(f"{name}: restarted, pid {pid}, answering ({time.monotonic() - started:.1f} s)")
    except RpcError as exc:
        say(f"checkgate restart-gateway: {node.address}: {exc}")
        return EXIT_UNREACHABLE
    finally:
        rpc.close()
    return EXIT_OK


def run(home: Path, ready_timeout: float) -> int:
    """`checkgate restart-gateway` (must be called outside a running event loop)."""
    return asyncio.run(restart_all(home, gateway_url(), ready_timeout))
