"""A gateway process: connect to broker and backend, serve HTTP, shut down gracefully.

Several processes per node (CHECKGATE_PROCESSES > 1, issue #15): supervisord starts them, not this module
(supervisord.conf's `[program:gateway]` with ``numprocs``), so operators see each one in `supervisorctl
status` / `checkgate status`, supervisord restarts one that dies, and stopping the group sends each its
SIGTERM, on which it drains. Chosen over a process that forks its own workers (tornado.process
.fork_processes): that would hide them behind one supervisord entry, restart them by code of our own, and
leave a stop to forward signals. Each process binds the port itself with `SO_REUSEPORT` (the kernel spreads
new connections over them) and, being its own process from the start, opens its own broker connection and
result subscription under an id prefix of its own (`Settings.own_id_prefix`); nothing crosses a fork.
Metrics: gateway/metrics.py (multiprocess mode). A rolling restart: `checkgate restart-gateway`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from celery import Celery

from gateway.aiocelery import CeleryClient
from gateway.auth import KEYS_FILE_FORM, KeyRing
from gateway.config import ConfigError, Settings, check_read_later
from gateway.console import Console, console_routes, start_console
from gateway.edge import EdgeLimits, EdgeServer
from gateway.flower_api import MAX_BODY_BYTES as FLOWER_MAX_BODY_BYTES
from gateway.flower_api import PATH_PREFIX as FLOWER_PATH_PREFIX
from gateway.flower_api import TaskApiSettings, task_api_routes
from gateway.http_api import make_app
from gateway.locations import Locations
from gateway.metrics import GatewayMetrics, mark_dead, use_multiprocess
from gateway.state import Gateway
from tasks.registry import load_checks

log = logging.getLogger("checkgate.gateway")

# Seconds to wait for the first broker/backend connection before serving (503s until they come).
STARTUP_WAIT = 5.0
# Seconds a stopping process leaves open keep-alive connections for their clients' next request.
KEEPALIVE_GRACE_S = 1.0


def celery_client_app() -> Celery:
    """A Celery app configured as the workers' (celeryconfig), for its routing, message and result code.

    Not the workers' app (tasks.celery): the gateway registers no task and needs none of the checks'
    code, only what `send_task` would know.
    """
    celery_app = Celery("checkgate-gateway", set_as_current=False)
    celery_app.config_from_object("celeryconfig")
    return celery_app


# Where Linux says whether connections queued on a closing SO_REUSEPORT listener go to its siblings.
MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def warn_unless_migrating(settings: Settings) -> None:
    """Say once, at start, that a stopping process may reset a connection it had queued, when several
    processes share the port and the kernel does not hand queued connections over (gateway/edge.py)."""
    if settings.processes < 2:
        return
    try:
        migrating = MIGRATE_REQ.read_text().strip() != "0"
    except OSError:
        migrating = False  # before Linux 5.14, or not Linux
    if not migrating:
        log.warning(
            "%d processes share the port but net.ipv4.tcp_migrate_req is not 1: a process that stops resets "
            "connections the kernel queued for it after its last accept (a window of microseconds)",
            settings.processes,
        )


async def serve(
    settings: Settings, stop: asyncio.Event, keys: KeyRing | None = None, multiprocess_dir: Path | None = None
) -> None:
    """Run the gateway until `stop` is set, then drain requests in flight and close.

    `keys`: the API keys to ask for (None: the gateway is open); `multiprocess_dir`: where every gateway
    process of the node writes its metrics (`gateway.metrics.use_multiprocess`; None: this process's own)."""
    checks = load_checks()
    celery_app = celery_client_app()
    client = CeleryClient(celery_app, publish_timeout=settings.publish_timeout, id_prefix=settings.own_id_prefix())
    await client.start(wait=STARTUP_WAIT)
    conf = celery_app.conf
    queues = {c.name: conf.task_routes[c.task_name]["queue"] for c in checks.values()}
    gateway = Gateway(
        client=client,
        settings=settings,
        checks=checks,
        queues=queues,
        keys=keys,
        queue_prefix=conf.QUEUE_PREFIX,
        locations=Locations(conf.LOCATIONS, queues),
        metrics=GatewayMetrics(multiprocess_dir),
    )
    watcher = asyncio.create_task(gateway.watch_queues(), name="checkgate-queue-watch")
    web_app = make_app(gateway)
    task_api = TaskApiSettings.from_env()  # None unless CHECKGATE_TASK_API lists tasks (Flower's task API)
    if task_api is not None:
        web_app.add_handlers(r".*", task_api_routes(gateway, task_api))
        if keys is None:
            log.warning("task API on without API keys: whoever reaches the gateway runs %s", task_api.patterns)
    console = Console.from_env()  # None unless CHECKGATE_CONSOLE_CONFIG is set; a bad file stops the start
    if console is not None:
        web_app.add_handlers(r".*", console_routes(console))
        await start_console(console)
    limits = EdgeLimits(
        idle_timeout=settings.idle_timeout, head_timeout=settings.head_timeout, body_timeout=settings.body_timeout
    )
    # Only the console's forms and Flower's task API carry request bodies (the latter small ones); the
    # rest of the API refuses any body from the request head.
    body_paths = {console.settings.base_path.rstrip("/") + "/": limits.max_body_bytes} if console is not None else {}
    if task_api is not None:
        body_paths[FLOWER_PATH_PREFIX] = FLOWER_MAX_BODY_BYTES
    server = EdgeServer(web_app, limits=limits, body_paths=body_paths, on_refusal=gateway.count_refusal)
    try:
        server.listen(settings.port, settings.bind, backlog=4096, reuse_port=settings.processes > 1)
    except OSError as exc:  # in use, not an address of this host, a privileged port: the operator's to fix
        watcher.cancel()
        await client.close()
        raise listen_error(settings, exc) from None
    log.info(
        "checkgate gateway on http://%s:%d (process %s of %d, broker %s, backend %s, id prefix %s)",
        settings.bind,
        settings.port,
        settings.process_num or "alone",
        settings.processes,
        "up" if client.broker.available else "DOWN",
        "up" if client.results.available else "DOWN",
        client.id_prefix,
    )
    await stop.wait()
    log.info("stopping: no new connections, draining %d requests in flight", gateway.inflight)
    gateway.draining = True  # answers say `Connection: close`: keep-alive clients go to the other processes
    server.stop()
    if console is not None:
        await console.stop()  # ends polling and the live streams before connections are closed
    drain_deadline = asyncio.get_running_loop().time() + max(c.max_timeout for c in checks.values())
    # Done when no check is in flight and no connection is partway through a request (one just accepted
    # from the queue may not have sent it yet): closing the idle rest then cuts nothing. Keep-alive clients
    # get KEEPALIVE_GRACE_S to send another request, answered with `Connection: close`, and leave by
    # themselves; only a connection idle all that time is closed under its client.
    loop = asyncio.get_running_loop()
    grace_end = loop.time() + KEEPALIVE_GRACE_S
    while loop.time() < drain_deadline:
        if not gateway.inflight and server.idle() and (not server.open_connections() or loop.time() >= grace_end):
            break
        await asyncio.sleep(0.05)
    await server.close_all_connections()
    watcher.cancel()
    await client.close()


def listen_error(settings: Settings, exc: OSError) -> ConfigError:
    """The one line for a socket the gateway cannot listen on, naming CHECKGATE_BIND when the address is at
    fault (not one of this host's, unresolvable) and CHECKGATE_PORT otherwise (in use, privileged)."""
    at_bind = isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL
    name, value = ("CHECKGATE_BIND", settings.bind) if at_bind else ("CHECKGATE_PORT", settings.port)
    reason = exc.strerror or str(exc)
    return ConfigError.stated(name, f"{name}={value}: cannot listen on {settings.bind}:{settings.port}: {reason}")


def configured() -> tuple[Settings, KeyRing | None]:
    """The settings and API keys from the environment; `ConfigError` naming the variable at fault."""
    settings = Settings.from_env()
    check_read_later()  # the settings read at first use, so that a bad one stops the start too
    if not settings.api_keys_file:
        return settings, None
    try:
        return settings, KeyRing.from_file(settings.api_keys_file)
    except ValueError as exc:  # unreadable, not TOML, or a bad entry (named in the message)
        detail = str(exc).removeprefix(f"{settings.api_keys_file}: ")
        raise ConfigError("CHECKGATE_API_KEYS_FILE", settings.api_keys_file, KEYS_FILE_FORM, detail) from None


def main() -> None:
    """Entry point: settings from the environment, SIGTERM/SIGINT stop gracefully.

    A setting that cannot be used stops the start with one line naming its variable and the form
    expected, and exit status 2 (no traceback)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings, keys = configured()
        identity = settings.process_num or str(os.getpid())
        multiprocess_dir = use_multiprocess(identity)
    except ConfigError as exc:
        print(f"checkgate gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        print(f"checkgate gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if multiprocess_dir is None and settings.processes > 1 and settings.process_num:
        log.warning("PROMETHEUS_MULTIPROC_DIR is unset: /metrics describes this process only")
    warn_unless_migrating(settings)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve(settings, stop, keys, multiprocess_dir)
        finally:
            mark_dead(identity)  # the gateway's live gauges no longer count this process

    try:
        try:
            import uvloop  # libuv's loop: cheaper syscalls and scheduling than asyncio's default
        except ImportError:
            asyncio.run(run())
        else:
            log.info("event loop: uvloop %s", uvloop.__version__)
            uvloop.run(run())
    except ConfigError as exc:  # found once running: the address to listen on
        print(f"checkgate gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
