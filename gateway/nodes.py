"""The supervisord nodes checkgate talks to: the `[[nodes]]` entries of the console's config file.

One parser for the console (gateway/console/config.py) and `checkgate status` (gateway/status.py), and
the one set of rules for an entry:

- `name`: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting alphanumeric, unique in the file;
- `url`: `http://host:port[/RPC2]`, `https://…` (supervisord's `[inet_http_server]`, usually behind a
  TLS proxy for https) or `unix:///path/to/supervisor.sock` (its `[unix_http_server]`; a relative path
  is taken from the config file's directory);
- credentials from `username` and `password`, or `password_env` naming an environment variable, or
  `user:password@` in an http(s) URL (taken out of the URL, which is shown in pages and errors);
- `tags` (a string or a list of strings) and `health_url` (the application's `/health` on that node,
  http(s)), read by the console and ignored by `checkgate status`.

Errors are `ConfigError`s whose message names the entry (`nodes[2] (web-1): …`) and the key.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Names of nodes (and of the console's groups and users): safe in URLs, forms and log lines.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
UNIX_SCHEME = "unix://"


class ConfigError(ValueError):
    """The console's config file (which `checkgate status` reads too) is unreadable or has a bad entry.

    The message names the entry and the key at fault, e.g. `nodes[1] (web-2): 'url' must be …`.
    """


@dataclass(frozen=True)
class NodeConfig:
    """One supervisord: where its XML-RPC endpoint is and how to log in (never shown to browsers).

    `url` is `http(s)://host:port/path` without credentials, or `unix:///absolute/path.sock`.
    """

    name: str
    url: str
    username: str = ""
    password: str = ""
    tags: tuple[str, ...] = ()
    # The application's health endpoint on this node (e.g. the gateway's /health): shown beside the
    # processes, and a rolling restart waits for it to answer 200 before moving to the next node.
    health_url: str = ""

    @property
    def socket_path(self) -> str | None:
        """The unix socket's path for a `unix://` node, else None."""
        return self.url[len(UNIX_SCHEME) :] if self.url.startswith(UNIX_SCHEME) else None

    @property
    def address(self) -> str:
        """Where the endpoint is, safe to display: `host:port`, or the socket's path."""
        return self.socket_path or urlsplit(self.url).netloc.rpartition("@")[2]


def node_name() -> str:
    """This machine's name in alerts and status lines: `CHECKGATE_NODE`, else the host name."""
    return os.environ.get("CHECKGATE_NODE") or socket.gethostname()


def require_text(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    """`raw[key]` as a string; without a `default` it must be there and non-empty. Raises ConfigError."""
    value = raw.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise ConfigError(f"{where}: {key!r} must be a non-empty string")
    return value


def require_strings(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """`raw[key]` as a tuple of non-empty strings (one string is a list of one; absent is empty)."""
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key!r} must be a list of strings")
    return tuple(value)


def require_name(raw: Mapping[str, Any], where: str) -> str:
    """`raw["name"]`, checked against NAME_RE. Raises ConfigError."""
    name = require_text(raw, "name", where)
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{where}: name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ - (starting alphanumeric)")
    return name


def entries(raw: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """The array of tables `[[key]]` of a decoded config document (empty when absent)."""
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise ConfigError(f"{key!r} must be an array of tables ([[{key}]])")
    return value


def parse_node(raw: Mapping[str, Any], where: str, base_dir: Path, env: Mapping[str, str]) -> NodeConfig:
    """One `[[nodes]]` entry (see the module's docstring for the rules).

    `where` names the entry in errors (`nodes[0]`); relative socket paths are taken from `base_dir`;
    `password_env` is looked up in `env`. Raises ConfigError.
    """
    name = require_name(raw, where)
    where = f"{where} ({name})"
    url = require_text(raw, "url", where)
    username = require_text(raw, "username", where, "")
    password = require_text(raw, "password", where, "")
    if url.startswith(UNIX_SCHEME):
        path = url[len(UNIX_SCHEME) :]
        if not path:
            raise ConfigError(f"{where}: url {url!r} names no socket file")
        url = UNIX_SCHEME + str(base_dir / path)  # an absolute path stays as it is
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: url must be http(s)://host:port/RPC2 or unix:///path/to/supervisor.sock")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        except ValueError:
            raise ConfigError(f"{where}: url {parts.netloc.rpartition('@')[2]!r} has a bad port") from None
        # Credentials in the URL would end up in pages, logs and error messages: take them out of it.
        username = username or parts.username or ""
        password = password or parts.password or ""
        netloc = parts.netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, netloc, parts.path or "/RPC2", parts.query, ""))
    if raw.get("password_env"):
        variable = require_text(raw, "password_env", where)
        password = env.get(variable, "")
        if not password:
            raise ConfigError(f"{where}: environment variable {variable} (password_env) is empty or unset")
    health_url = require_text(raw, "health_url", where, "")
    if health_url and urlsplit(health_url).scheme not in ("http", "https"):
        raise ConfigError(f"{where}: health_url must be an http(s) URL")
    return NodeConfig(name, url, username, password, require_strings(raw, "tags", where), health_url)


def parse_nodes(raw: Mapping[str, Any], base_dir: Path, env: Mapping[str, str]) -> tuple[NodeConfig, ...]:
    """Every `[[nodes]]` entry of a decoded config document, in file order.

    Raises ConfigError naming the entry at fault, when two entries share a name, or when there is none.
    """
    nodes: list[NodeConfig] = []
    for index, entry in enumerate(entries(raw, "nodes")):
        node = parse_node(entry, f"nodes[{index}]", base_dir, env)
        if any(n.name == node.name for n in nodes):
            raise ConfigError(f"nodes[{index}] ({node.name}): another node has this name")
        nodes.append(node)
    if not nodes:
        raise ConfigError("the config lists no [[nodes]]")
    return tuple(nodes)


def read_document(path: Path) -> dict[str, Any]:
    """The decoded config file: TOML, or JSON when its name ends in `.json`. Raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError and json's errors are ValueErrors
        raise ConfigError(f"cannot read {str(path)!r}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{str(path)!r}: the document must be a table (a JSON object)")
    return raw


def load_nodes(path: str | Path, env: Mapping[str, str] | None = None) -> Sequence[NodeConfig]:
    """The `[[nodes]]` of the config file at `path` (other keys are the console's and not checked here).

    `env` (default: os.environ) resolves `password_env`. Raises ConfigError, prefixed with the path.
    """
    path = Path(path)
    raw = read_document(path)
    try:
        return parse_nodes(raw, path.resolve().parent, os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
