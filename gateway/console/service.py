"""The console's moving parts wired together: poller, action runner, audit log, sessions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from gateway.console.actions import ActionRunner
from gateway.console.audit import AuditLog
from gateway.console.auth import LoginThrottle, Sessions
from gateway.console.config import ConsoleSettings, settings_from_env
from gateway.console.health import HealthProbe
from gateway.console.poller import Poller
from gateway.supervisor_rpc import RpcClient

log = logging.getLogger("checkgate.console")


class Console:
    """One console: build it (cheap, no I/O but opening the audit file), `start()` it on the loop."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.sessions = Sessions(settings.secret, settings.session_hours)
        self.throttle = LoginThrottle()
        self.audit = AuditLog(settings.audit_db)
        self.rpc: RpcClient | None = None
        self.poller: Poller | None = None
        self.runner: ActionRunner | None = None
        self.probe: HealthProbe | None = None
        self.tails = 0
        # Password hashes verified at once; further logins wait their turn (see LoginHandler.post).
        self.hash_slots = asyncio.Semaphore(2)
        self.stopping = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Console | None:
        """The console configured by CHECKGATE_CONSOLE_CONFIG, or None when that is unset.

        Raises gateway.nodes.ConfigError for a bad file or a missing secret: a console asked for but unsafe
        must stop the process, not be skipped silently.
        """
        settings = settings_from_env(env)
        return cls(settings) if settings is not None else None

    async def start(self) -> None:
        """Create the HTTP clients on the running loop and start polling every node."""
        self.rpc = RpcClient()
        self.probe = HealthProbe()
        self.poller = Poller(self.settings, self.rpc, self.probe)
        self.runner = ActionRunner(self.settings, self.rpc, self.probe, self.poller)
        self.poller.start()
        names = ", ".join(n.name for n in self.settings.nodes)
        log.info("console at %s/ polling %s", self.settings.base_path, names)

    async def stop(self) -> None:
        """Stop polling, end the event streams, close clients and the audit file."""
        self.stopping = True
        if self.poller is not None:
            await self.poller.stop()
            self.poller.wake_all()
        for client in (self.rpc, self.probe):
            if client is not None:
                client.close()
        self.audit.close()
