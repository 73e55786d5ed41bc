"""The console's configuration: nodes, logical groups, users and knobs, from one TOML or JSON file.

The file is named by `CHECKGATE_CONSOLE_CONFIG`; the cookie secret comes from `CHECKGATE_CONSOLE_SECRET`
or the file's `secret`. There is no default secret: without one the console refuses to start, so a
forgotten setting can never leave sessions signed with a guessable key.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROLES = ("viewer", "operator", "admin")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_SECRET_CHARS = 32
# Top-level settings taken from the file as they are (types checked by use).
KNOBS = (
    "poll_interval",
    "rpc_timeout",
    "retry_max",
    "action_timeout",
    "health_timeout",
    "loop_starts",
    "loop_window",
    "session_hours",
    "cookie_secure",
    "max_tails",
)


class ConsoleConfigError(ValueError):
    """The console configuration is missing, unreadable or unsafe."""


@dataclass(frozen=True)
class NodeConfig:
    """One supervisord: where its XML-RPC endpoint is and how to log in (never shown to browsers)."""

    name: str
    url: str
    username: str = ""
    password: str = ""
    tags: tuple[str, ...] = ()
    # The application's health endpoint on this node (e.g. the gateway's /health): shown beside the
    # processes, and a rolling restart waits for it to answer 200 before moving to the next node.
    health_url: str = ""

    @property
    def address(self) -> str:
        """host:port of the endpoint, safe to display."""
        return urlsplit(self.url).netloc.rpartition("@")[2]


@dataclass(frozen=True)
class GroupConfig:
    """A logical group spanning nodes: processes whose namespec matches a pattern (fnmatch)."""

    name: str
    patterns: tuple[str, ...]
    # Only nodes carrying one of these tags (all nodes when empty).
    tags: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class UserConfig:
    """A console user: a password hash (see auth.py) and a role."""

    name: str
    password_hash: str
    role: str


@dataclass(frozen=True)
class ConsoleSettings:
    """Everything the console needs; built by `load_settings`."""

    secret: str
    nodes: tuple[NodeConfig, ...]
    users: Mapping[str, UserConfig]
    groups: tuple[GroupConfig, ...] = ()
    base_path: str = "/console"
    # Seconds between two polls of a node (one getAllProcessInfo each).
    poll_interval: float = 2.0
    # Seconds one XML-RPC poll or health request may take before the node is marked in error.
    rpc_timeout: float = 3.0
    # Longest wait between two attempts on a node in error (doubling from poll_interval).
    retry_max: float = 15.0
    # Seconds one start/stop may take (supervisord answers once RUNNING after startsecs, or stopped).
    action_timeout: float = 120.0
    # Seconds a rolling restart waits for a node's health_url to answer 200.
    health_timeout: float = 60.0
    # Restart-loop detection: this many starts within this many seconds flags a process.
    loop_starts: int = 3
    loop_window: float = 120.0
    session_hours: float = 12.0
    # Mark the session cookie Secure (set when the console is served over TLS, e.g. behind a proxy).
    cookie_secure: bool = False
    audit_db: str = "var/console-audit.sqlite3"
    # Live tails open at once (each polls its node twice a second).
    max_tails: int = 32

    def node(self, name: str) -> NodeConfig | None:
        """The node called `name`, or None."""
        return next((n for n in self.nodes if n.name == name), None)


def _text(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise ConsoleConfigError(f"{where}: {key!r} must be a non-empty string")
    return value


def _strings(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConsoleConfigError(f"{where}: {key!r} must be a list of strings")
    return tuple(value)


def _name(raw: Mapping[str, Any], where: str) -> str:
    name = _text(raw, "name", where)
    if not NAME_RE.fullmatch(name):
        raise ConsoleConfigError(f"{where}: name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ - (starting alphanumeric)")
    return name


def _node(raw: Mapping[str, Any], index: int, env: Mapping[str, str]) -> NodeConfig:
    where = f"nodes[{index}]"
    name = _name(raw, where)
    parts = urlsplit(_text(raw, "url", where))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConsoleConfigError(f"{where}: url must be http(s)://host:port/RPC2")
    # Credentials in the URL would end up in logs and error messages: take them out of it.
    username = raw.get("username") or parts.username or ""
    password = raw.get("password") or parts.password or ""
    if raw.get("password_env"):
        password = env.get(raw["password_env"], "")
        if not password:
            raise ConsoleConfigError(f"{where}: environment variable {raw['password_env']} is empty")
    netloc = parts.netloc.rpartition("@")[2]
    url = urlunsplit((parts.scheme, netloc, parts.path or "/RPC2", parts.query, ""))
    health = raw.get("health_url", "")
    if health and urlsplit(health).scheme not in ("http", "https"):
        raise ConsoleConfigError(f"{where}: health_url must be an http(s) URL")
    tags = _strings(raw, "tags", where)
    return NodeConfig(name, url, str(username), str(password), tags, health)


def _group(raw: Mapping[str, Any], index: int) -> GroupConfig:
    where = f"groups[{index}]"
    patterns = _strings(raw, "programs", where)
    if not patterns:
        raise ConsoleConfigError(f"{where}: 'programs' needs at least one namespec pattern")
    return GroupConfig(_name(raw, where), patterns, _strings(raw, "tags", where), str(raw.get("description", "")))


def _user(raw: Mapping[str, Any], index: int) -> UserConfig:
    where = f"users[{index}]"
    role = raw.get("role", "viewer")
    if role not in ROLES:
        raise ConsoleConfigError(f"{where}: role must be one of {', '.join(ROLES)}")
    hashed = _text(raw, "password_hash", where)
    if not hashed.startswith(("scrypt$", "pbkdf2_sha256$")):
        raise ConsoleConfigError(f"{where}: password_hash must come from `python -m gateway.console hash-password`")
    return UserConfig(_name(raw, where), hashed, role)


def parse_settings(raw: Mapping[str, Any], base_dir: Path, env: Mapping[str, str]) -> ConsoleSettings:
    """Validate a decoded config document; relative paths are taken from `base_dir`."""
    secret = env.get("CHECKGATE_CONSOLE_SECRET") or raw.get("secret") or ""
    if len(secret) < MIN_SECRET_CHARS:
        raise ConsoleConfigError(
            f"the console needs a cookie secret of at least {MIN_SECRET_CHARS} characters in "
            "CHECKGATE_CONSOLE_SECRET (or `secret` in the config file); it has no default"
        )
    nodes = tuple(_node(n, i, env) for i, n in enumerate(raw.get("nodes", [])))
    if not nodes:
        raise ConsoleConfigError("the console config lists no [[nodes]]")
    users = [_user(u, i) for i, u in enumerate(raw.get("users", []))]
    if not users:
        raise ConsoleConfigError("the console config lists no [[users]]")
    for kind, names in (("node", [n.name for n in nodes]), ("user", [u.name for u in users])):
        if len(set(names)) != len(names):
            raise ConsoleConfigError(f"two {kind}s share a name")
    groups = tuple(_group(g, i) for i, g in enumerate(raw.get("groups", [])))
    base_path = "/" + str(raw.get("base_path", "/console")).strip("/")
    knobs = {k: v for k, v in raw.items() if k in KNOBS}
    audit_db = Path(str(raw.get("audit_db", ConsoleSettings.audit_db)))
    for knob, value in knobs.items():
        if knob == "cookie_secure":
            if not isinstance(value, bool):
                raise ConsoleConfigError(f"{knob} must be true or false")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConsoleConfigError(f"{knob} must be a positive number")
    return ConsoleSettings(
        secret=secret,
        nodes=nodes,
        users={u.name: u for u in users},
        groups=groups,
        base_path=base_path,
        audit_db=str(audit_db if audit_db.is_absolute() else base_dir / audit_db),
        **knobs,
    )


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> ConsoleSettings:
    """Read the TOML (or, by extension, JSON) file at `path`."""
    env = os.environ if env is None else env
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise ConsoleConfigError(f"cannot read console config {str(path)!r}: {exc}") from None
    return parse_settings(raw, path.resolve().parent, env)


def settings_from_env(env: Mapping[str, str] | None = None) -> ConsoleSettings | None:
    """The settings named by CHECKGATE_CONSOLE_CONFIG, or None when the console is not configured."""
    env = os.environ if env is None else env
    path = env.get("CHECKGATE_CONSOLE_CONFIG", "")
    return load_settings(path, env) if path else None
