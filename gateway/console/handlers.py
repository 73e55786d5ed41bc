"""The console's pages and endpoints: login, the board, actions, the audit log, and the URL table."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import tornado.web

from gateway.console.actions import ACTIONS, DESTRUCTIVE, Busy
from gateway.console.auth import DEVICE_COOKIE, DEVICE_DAYS, SESSION_COOKIE, check_login
from gateway.console.poller import NodeState
from gateway.console.service import Console
from gateway.console.streams import StateStreamHandler, TailStreamHandler
from gateway.console.views import SCOPES, ScopeError, groups, resolve
from gateway.console.web import STATIC, ConsoleHandler, refuse_unless_local
from gateway.supervisor_rpc import LOG_STREAMS


class RootHandler(ConsoleHandler):
    """GET /console: to the page."""

    def get(self) -> None:
        self.redirect(f"{self.base}/")


class LoginHandler(ConsoleHandler):
    """GET shows the form; POST checks the password and sets the session cookie."""

    def get(self) -> None:
        self.render("login.html", error="", next=self._next(), name="")

    async def post(self) -> None:
        console = self.console
        name = self.get_body_argument("name", "")[:64]
        password = self.get_body_argument("password", "")[:1024]
        # Reserved before the hash and in the same step as the check (no await between): concurrent
        # wrong passwords cannot get more checks than the limit while earlier ones are being hashed.
        device = console.sessions.device_for(self.get_cookie(DEVICE_COOKIE), name)
        wait = console.throttle.reserve(self.client, name, device)
        if wait:
            self.set_status(429)
            self.set_header("Retry-After", str(wait))
            error = f"Too many failed logins for this name or address: try again in {wait} s."
            self.render("login.html", error=error, next=self._next(), name=name)
            return
        # scrypt costs ~50 ms of CPU by design: off the loop, in the default executor. hashlib.scrypt and
        # pbkdf2_hmac release the GIL, so this really runs beside the loop; the semaphore keeps a flood of
        # logins from occupying every executor thread.
        async with console.hash_slots:
            loop = asyncio.get_running_loop()
            user = await loop.run_in_executor(None, check_login, console.settings.users, name, password)
        if user is None:
            console.audit.record(name or "?", "", self.client, "login", "", "failed", "wrong user name or password")
            self.set_status(403)
            self.render("login.html", error="Wrong user name or password.", next=self._next(), name=name)
            return
        console.throttle.succeeded(self.client, name, device)
        self.set_cookie(
            DEVICE_COOKIE,
            console.sessions.new_device(user.name, device).decode(),
            path=f"{self.base}/login",
            httponly=True,
            secure=console.settings.cookie_secure,
            samesite="Strict",
            expires_days=DEVICE_DAYS,
        )
        console.audit.record(user.name, user.role, self.client, "login", "", "ok")
        self.set_cookie(
            SESSION_COOKIE,
            console.sessions.encode(user.name).decode(),
            path=self.base,
            httponly=True,
            secure=console.settings.cookie_secure,
            samesite="Strict",
            expires_days=console.sessions.max_age_days,
        )
        self.redirect(self._next())

    def _next(self) -> str:
        # Only paths inside the console: an open redirect would make the login page a phishing aid.
        target = self.get_argument("next", "")
        ok = target.startswith(self.base + "/") and not target.startswith("//") and "\\" not in target
        return target if ok else f"{self.base}/"


class LogoutHandler(ConsoleHandler):
    """POST: end this user's sessions."""

    def post(self) -> None:
        user = self.current_user
        if user is not None:
            self.console.sessions.logout(user.name)
            self.console.audit.record(user.name, user.role, self.client, "logout", "", "ok")
        self.clear_cookie(SESSION_COOKIE, path=self.base)
        self.redirect(f"{self.base}/login")


def board_context(console: Console, view: str) -> dict[str, Any]:
    """What the board template shows, from the poller's last snapshot."""
    assert console.poller is not None
    nodes = console.poller.nodes
    return {
        "view": view if view in ("machine", "group") else "machine",
        "nodes": list(nodes.values()),
        "groups": groups(console.settings, nodes),
        "version": console.poller.version,
        "status_of": {name: state.status for name, state in nodes.items()},
        "tags_of": {name: state.config.tags for name, state in nodes.items()},
        "loop_window": console.settings.loop_window,
    }


class IndexHandler(ConsoleHandler):
    """GET /console/?view=machine|group: the overview and the process tables."""

    def get(self) -> None:
        self.require("viewer")
        self.render("index.html", **board_context(self.console, self.get_argument("view", "machine")))


class BoardHandler(ConsoleHandler):
    """GET /console/board?view=…: the process tables alone, for the page to refresh itself."""

    def get(self) -> None:
        self.require("viewer")
        self.render("_board.html", **board_context(self.console, self.get_argument("view", "machine")))


def node_json(state: NodeState) -> dict[str, Any]:
    """A node for the JSON API: status, processes, health; no URL credentials, no password."""
    health = state.health
    return {
        "name": state.name,
        "address": state.config.address,
        "tags": list(state.config.tags),
        "status": state.status,
        "error": state.error,
        "version": state.version,
        "latency_ms": state.latency_ms,
        "last_ok": state.last_ok,
        "health": None
        if health is None
        else {
            "ok": health.ok,
            "status": health.status,
            "error": health.error,
            "queues": health.queues,
            "workers": health.workers,
        },
        "processes": [
            {
                "name": p.namespec,
                "group": p.group,
                "state": p.state,
                "pid": p.pid,
                "uptime": p.uptime,
                "exitstatus": p.exitstatus,
                "description": p.description,
                "recent_starts": p.recent_starts,
                "restart_loop": p.looping,
            }
            for p in state.processes
        ],
    }


class StateApiHandler(ConsoleHandler):
    """GET /console/api/state: every node and process as JSON."""

    def get(self) -> None:
        self.require("viewer")
        poller = self.console.poller
        assert poller is not None
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"version": poller.version, "nodes": [node_json(s) for s in poller.nodes.values()]}))


class TailPageHandler(ConsoleHandler):
    """GET /console/tail?node=&process=&stream=: the live log page."""

    def get(self) -> None:
        self.require("viewer")
        node, process = self.get_argument("node"), self.get_argument("process")
        stream = self.get_argument("stream", "stdout")
        if self.console.settings.node(node) is None or stream not in LOG_STREAMS:
            raise tornado.web.HTTPError(404, "no such node or stream")
        self.render("tail.html", node=node, process=process, stream=stream)


def describe(scope: str, targets: list[tuple[str, str]], group: str) -> str:
    """A one-line human description of what an action applies to, for the audit log."""
    nodes = list(dict.fromkeys(node for node, _ in targets))
    where = f"{len(targets)} process{'es' if len(targets) != 1 else ''} on {', '.join(nodes)}"
    if scope == "process":
        return f"{targets[0][0]}/{targets[0][1]}"
    if scope == "group":
        return f"group {group}: {where}"
    if scope == "node":
        return f"node {nodes[0]}: all {where}"
    return f"{scope}: {where}"


class ActionHandler(ConsoleHandler):
    """POST /console/action: start/stop/restart/rolling on a process, group, node, selection or all."""

    async def post(self) -> None:
        console = self.console
        action = self.get_body_argument("action", "")[:20]
        scope = self.get_body_argument("scope", "")
        asked = {k: self.get_body_argument(k, "")[:200] for k in ("scope", "node", "process", "group")}
        attempted = " ".join(f"{k}={v}" for k, v in asked.items() if v)
        user = self.require("admin" if scope == "all" else "operator", what=action or "action", target=attempted)
        if action not in ACTIONS or scope not in SCOPES:
            raise tornado.web.HTTPError(400, f"action must be one of {ACTIONS}, scope one of {SCOPES}")
        if action in DESTRUCTIVE and self.get_body_argument("confirm", "") != "yes":
            raise tornado.web.HTTPError(400, f"{action} needs confirm=yes")
        group = self.get_body_argument("group", "")
        assert console.poller is not None and console.runner is not None
        try:
            targets = resolve(
                console.settings,
                console.poller.nodes,
                scope,
                node=self.get_body_argument("node", ""),
                process=self.get_body_argument("process", ""),
                group=group,
                selection=self.get_body_arguments("target"),
            )
        except ScopeError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        target = describe(scope, targets, group)
        keys = [f"{n}/{s}" for n, s in targets]
        entry = console.audit.record(user.name, user.role, self.client, action, target, "running", {"targets": keys})
        try:
            outcome = await console.runner.run(action, targets)
        except Busy as exc:
            console.audit.finish(entry, "refused", str(exc))
            raise tornado.web.HTTPError(409, str(exc)) from None
        except BaseException:
            console.audit.finish(entry, "error", "the console failed while running this action")
            raise
        body = {"id": entry, "target": target, **outcome.as_dict()}
        console.audit.finish(entry, outcome.result, body)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body))


class AuditHandler(ConsoleHandler):
    """GET /console/audit?q=&user=&action=&result=[&format=json]: search the audit log."""

    def get(self) -> None:
        self.require("operator")
        filters = {k: self.get_argument(k, "")[:200] for k in ("q", "user", "action", "result")}
        entries = self.console.audit.search(filters["q"], filters["user"], filters["action"], filters["result"])
        if self.get_argument("format", "") == "json":
            self.set_header("Content-Type", "application/json; charset=utf-8")
            rows = [{**e.__dict__, "when": e.when} for e in entries]
            self.finish(json.dumps({"entries": rows}))
            return
        self.render("audit.html", entries=entries, filters=filters)


class StaticHandler(tornado.web.StaticFileHandler):
    """The console's CSS and JS."""

    def initialize(self, path: str, default_filename: str | None = None, *, console: Console) -> None:
        super().initialize(path, default_filename)
        self.console = console

    def prepare(self) -> None:
        refuse_unless_local(self, self.console)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")


def routes(console: Console) -> list[tornado.web.URLSpec]:
    """The console's URL specs, under its base path."""
    base, args = console.settings.base_path, {"console": console}
    return [
        tornado.web.url(base, RootHandler, args),
        tornado.web.url(f"{base}/", IndexHandler, args, name="console"),
        tornado.web.url(f"{base}/board", BoardHandler, args),
        tornado.web.url(f"{base}/api/state", StateApiHandler, args),
        tornado.web.url(f"{base}/events", StateStreamHandler, args),
        tornado.web.url(f"{base}/login", LoginHandler, args),
        tornado.web.url(f"{base}/logout", LogoutHandler, args),
        tornado.web.url(f"{base}/action", ActionHandler, args),
        tornado.web.url(f"{base}/tail", TailPageHandler, args),
        tornado.web.url(f"{base}/tail/stream", TailStreamHandler, args),
        tornado.web.url(f"{base}/audit", AuditHandler, args),
        tornado.web.url(f"{base}/static/(.*)", StaticHandler, {"path": str(STATIC), "console": console}),
    ]
