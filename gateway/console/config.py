"""The console's configuration: nodes, logical groups, users and knobs, from one TOML or JSON file.

The `[[nodes]]` entries are read by gateway/nodes.py (their rules are shared with `checkgate status`,
which reads this same file); groups, users, the secret and the knobs are the console's own. The file is
named by `CHECKGATE_CONSOLE_CONFIG`; the cookie secret comes from `CHECKGATE_CONSOLE_SECRET` or the
file's `secret`. There is no default secret: without one the console refuses to start, so a
forgotten setting can never leave sessions signed with a guessable key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.nodes import (
    ConfigError,
    NodeConfig,
    entries,
    parse_nodes,
    read_document,
    require_name,
    require_strings,
    require_text,
)

ROLES = ("viewer", "operator", "admin")
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
    "loopback_only",
    "max_tails",
)
# Knobs that are true or false.
FLAGS = ("cookie_secure", "loopback_only")


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
    # Answer only connections from a loopback address (403 for others): the console `checkgate run`
    # generates, served over plain HTTP, never has its password or cookie cross a network.
    loopback_only: bool = False
    audit_db: str = "var/console-audit.sqlite3"
    # Live tails open at once (each polls its node twice a second).
    max_tails: int = 32

    def node(self, name: str) -> NodeConfig | None:
        """The node called `name`, or None."""
        return next((n for n in self.nodes if n.name == name), None)


def _group(raw: Mapping[str, Any], index: int) -> GroupConfig:
    where = f"groups[{index}]"
    name = require_name(raw, where)
    where = f"{where} ({name})"
    patterns = require_strings(raw, "programs", where)
    if not patterns:
        raise ConfigError(f"{where}: 'programs' needs at least one namespec pattern")
    description = require_text(raw, "description", where, "")
    return GroupConfig(name, patterns, require_strings(raw, "tags", where), description)


def _user(raw: Mapping[str, Any], index: int) -> UserConfig:
    where = f"users[{index}]"
    name = require_name(raw, where)
    where = f"{where} ({name})"
    role = raw.get("role", "viewer")
    if role not in ROLES:
        raise ConfigError(f"{where}: role must be one of {', '.join(ROLES)}")
    hashed = require_text(raw, "password_hash", where)
    if not hashed.startswith(("scrypt$", "pbkdf2_sha256$")):
        raise ConfigError(f"{where}: password_hash must come from `python -m gateway.console hash-password`")
    return UserConfig(name, hashed, role)


def parse_settings(raw: Mapping[str, Any], base_dir: Path, env: Mapping[str, str]) -> ConsoleSettings:
    """Validate a decoded config document.

    :arg raw: the decoded TOML or JSON document.
    :arg base_dir: where relative paths (`audit_db`, `unix://` sockets) are taken from.
    :arg env: the environment (`CHECKGATE_CONSOLE_SECRET`, the nodes' `password_env`).
    :raises ConfigError: naming the entry and key at fault, or the missing secret.
    """
    secret = env.get("CHECKGATE_CONSOLE_SECRET") or raw.get("secret") or ""
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"the console needs a cookie secret of at least {MIN_SECRET_CHARS} characters in "
            "CHECKGATE_CONSOLE_SECRET (or `secret` in the config file); it has no default"
        )
    nodes = parse_nodes(raw, base_dir, env)
    users = [_user(u, i) for i, u in enumerate(entries(raw, "users"))]
    if not users:
        raise ConfigError("the console config lists no [[users]]")
    if len({u.name for u in users}) != len(users):
        raise ConfigError("two users share a name")
    groups = tuple(_group(g, i) for i, g in enumerate(entries(raw, "groups")))
    base_path = "/" + str(raw.get("base_path", "/console")).strip("/")
    knobs = {k: v for k, v in raw.items() if k in KNOBS}
    audit_db = Path(str(raw.get("audit_db", ConsoleSettings.audit_db)))
    for knob, value in knobs.items():
        if knob in FLAGS:
            if not isinstance(value, bool):
                raise ConfigError(f"{knob} must be true or false")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{knob} must be a positive number")
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
    """Read and validate the TOML (or, for a `.json` name, JSON) file at `path`.

    `env` defaults to os.environ. Raises ConfigError, prefixed with the path.
    """
    path = Path(path)
    raw = read_document(path)
    try:
        return parse_settings(raw, path.resolve().parent, os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def settings_from_env(env: Mapping[str, str] | None = None) -> ConsoleSettings | None:
    """The settings named by CHECKGATE_CONSOLE_CONFIG, or None when the console is not configured.

    Raises ConfigError for a file that is unreadable or wrong.
    """
    env = os.environ if env is None else env
    path = env.get("CHECKGATE_CONSOLE_CONFIG", "")
    return load_settings(path, env) if path else None
