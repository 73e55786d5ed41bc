"""The base of every console handler: session user, roles, XSRF on POST, security headers, templates.

Rules every handler follows: GET never changes anything; every POST carries the XSRF token (checked in
`prepare`, whatever the application's own settings) and, when the browser sends one, a same-host
Origin; node credentials never leave the server (templates and JSON only see names and host:port);
pages render from the poller's last snapshot, so no request waits for a node.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import tornado.web

from gateway.console.auth import SESSION_COOKIE, allowed
from gateway.console.config import UserConfig
from gateway.console.service import Console

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def fmt_duration(seconds: float) -> str:
    """3d 04h, 2h 05m, 5m 03s, 12s."""
    s = int(seconds)
    days, hours, minutes = s // 86400, s // 3600 % 24, s // 60 % 60
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {s % 60:02d}s" if minutes else f"{s}s"


def fmt_ago(ts: float) -> str:
    return "never" if not ts else f"{fmt_duration(time.time() - ts)} ago"


def loopback_peer(remote_ip: str | None) -> bool:
    """Is `remote_ip` (the TCP peer's address, as Tornado gives it) a loopback address? IPv4-mapped IPv6
    (`::ffff:127.0.0.1`, from a dual-stack socket) counts as its IPv4 address; anything else, a unix
    socket's peer included (Tornado says 0.0.0.0), does not."""
    try:
        address = ipaddress.ip_address(remote_ip or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def refuse_unless_local(handler: tornado.web.RequestHandler, console: Console) -> None:
    """403 when the console is `loopback_only` and the request comes from elsewhere. The peer is the TCP
    connection's: the gateway's server takes no X-Forwarded-For / X-Real-IP (no `xheaders`)."""
    if console.settings.loopback_only and not loopback_peer(handler.request.remote_ip):
        raise tornado.web.HTTPError(
            403, "this console answers connections from its own machine only (loopback_only; e.g. ssh -L)"
        )


def pretty(detail: str) -> str:
    """An audit detail for reading: indented when it is JSON."""
    try:
        return json.dumps(json.loads(detail), indent=1, ensure_ascii=False)
    except ValueError:
        return detail


class ConsoleHandler(tornado.web.RequestHandler):
    """Base: session user, role checks, XSRF on POST, security headers, console templates."""

    console: Console

    def initialize(self, console: Console) -> None:
        self.console = console

    @property
    def base(self) -> str:
        return self.console.settings.base_path

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")

    def get_template_path(self) -> str:
        return str(TEMPLATES)

    def get_current_user(self) -> UserConfig | None:
        name = self.console.sessions.decode(self.get_cookie(SESSION_COOKIE))
        return self.console.settings.users.get(name) if name else None

    def prepare(self) -> None:
        refuse_unless_local(self, self.console)
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            # Tornado checks this only when the application sets xsrf_cookies; the gateway's does not
            # need to, so the console checks every POST itself.
            self.check_xsrf_cookie()
            # Browsers send Origin with every POST (Referer too: Referrer-Policy same-origin); a POST that
            # names no page of this console as its source is refused, not only one from a foreign page.
            source = self.request.headers.get("Origin") or self.request.headers.get("Referer")
            if not source or urlsplit(source).netloc != self.request.host:
                raise tornado.web.HTTPError(403, "cross-origin request refused: no Origin or Referer of this console")

    @property
    def client(self) -> str:
        return self.request.remote_ip or "?"

    def user(self) -> UserConfig:
        """The logged-in user; 401 when there is none."""
        user = self.current_user
        if user is None:
            raise tornado.web.HTTPError(401, "log in first")
        return user

    def require(self, role: str, what: str = "", target: str = "") -> UserConfig:
        """The logged-in user if their role includes `role`; 403 (audited when `what`) otherwise."""
        user = self.user()
        if not allowed(user.role, role):
            if what:
                self.console.audit.record(user.name, user.role, self.client, what, target, "denied", f"needs {role}")
            raise tornado.web.HTTPError(403, f"your role ({user.role}) may not do this; it needs {role}")
        return user

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        user = self.current_user
        namespace.update(
            base=self.base,
            static=self.static,
            xsrf_token=self.xsrf_token.decode(),
            me=user,
            can_act=bool(user and allowed(user.role, "operator")),
            is_admin=bool(user and allowed(user.role, "admin")),
            fmt_duration=fmt_duration,
            fmt_ago=fmt_ago,
            pretty=pretty,
            quote=quote,
        )
        return namespace

    def static(self, path: str) -> str:
        """URL of a static file with its content hash, so browsers may cache it for good."""
        version = tornado.web.StaticFileHandler.get_version({"static_path": str(STATIC)}, path)
        return f"{self.base}/static/{path}?v={version}"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message else self._reason
        if isinstance(exc, tornado.web.HTTPError) and status_code == 401 and self.wants_html():
            self.redirect(f"{self.base}/login?next={quote(self.request.uri or self.base)}")
            return
        if self.wants_html():
            self.render("error.html", status=status_code, message=message)
        else:
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(json.dumps({"error": message, "status": status_code}))

    def wants_html(self) -> bool:
        return self.request.method == "GET" and "text/html" in self.request.headers.get("Accept", "")
