"""The gateway process: connect to broker and backend, serve HTTP, shut down gracefully."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys

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
from gateway.state import Gateway
from tasks.registry import load_checks

log = logging.getLogger("checkgate.gateway")

# Seconds to wait for the first broker/backend connection before serving (503s until they come).
STARTUP_WAIT = 5.0


def celery_client_app() -> Celery:
    """A Celery app configured as the workers' (celeryconfig), for its routing, message and result code.

    Not the workers' app (tasks.celery): the gateway registers no task and needs none of the checks'
    code, only what `send_task` would know.
    """
    celery_app = Celery("checkgate-gateway", set_as_current=False)
    celery_app.config_from_object("celeryconfig")
    return celery_app


async def serve(settings: Settings, stop: asyncio.Event, keys: KeyRing | None = None) -> None:
    """Run the gateway until `stop` is set, then drain requests in flight and close.

    `keys`: the API keys to ask for (None: the gateway is open)."""
    checks = load_checks()
    celery_app = celery_client_app()
    client = CeleryClient(celery_app, publish_timeout=settings.publish_timeout, id_prefix=settings.id_prefix or None)
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
        server.listen(settings.port, settings.bind, backlog=4096)
    except OSError as exc:  # in use, not an address of this host, a privileged port: the operator's to fix
        watcher.cancel()
        await client.close()
        raise listen_error(settings, exc) from None
    log.info(
        "checkgate gateway on http://%s:%d (broker %s, backend %s, id prefix %s)",
        settings.bind,
        settings.port,
        "up" if client.broker.available else "DOWN",
        "up" if client.results.available else "DOWN",
        client.id_prefix,
    )
    await stop.wait()
    log.info("stopping: no new connections, draining %d requests in flight", gateway.inflight)
    server.stop()
    if console is not None:
        await console.stop()  # ends polling and the live streams before connections are closed
    drain_deadline = asyncio.get_running_loop().time() + max(c.max_timeout for c in checks.values())
    while gateway.inflight and asyncio.get_running_loop().time() < drain_deadline:
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
    except ConfigError as exc:
        print(f"checkgate gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop, keys)

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
