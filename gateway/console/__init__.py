"""The multi-node operations console, served by the gateway under /console.

Enabled by `CHECKGATE_CONSOLE_CONFIG` (a TOML or JSON file; see console.example.toml beside this file)
and `CHECKGATE_CONSOLE_SECRET`. Modules: config (the file; its `[[nodes]]` are read by gateway/nodes.py),
poller (polling the nodes, restart-loop detection), health (the app's /health), views (by machine, by
group, scopes), actions (batch and rolling), tail (log offsets), auth (passwords, roles, sessions), audit
(SQLite), web (handler base: sessions, roles, XSRF, headers), handlers (pages, actions, login,
audit, URL table), streams (SSE), service (wiring). Calls to supervisord go through
gateway/supervisor_rpc.py, the non-blocking XML-RPC client shared with `checkgate status` and alerts.
Wire it into the gateway process (see gateway/server.py):

    console = Console.from_env()            # None unless CHECKGATE_CONSOLE_CONFIG is set
    app.add_handlers(r".*", console_routes(console))
    await start_console(console)            # ... and `await console.stop()` at shutdown
"""

from __future__ import annotations

import tornado.web

from gateway.console.config import ConsoleSettings, load_settings
from gateway.console.handlers import routes
from gateway.console.service import Console
from gateway.nodes import ConfigError

__all__ = ["ConfigError", "Console", "ConsoleSettings", "console_routes", "load_settings", "start_console"]


def console_routes(console: Console) -> list[tornado.web.URLSpec]:
    """The Tornado URL specs of the console (pages, actions, event streams, static files)."""
    return routes(console)


async def start_console(console: Console) -> None:
    """Start polling the nodes; call once the loop runs, before serving."""
    await console.start()
