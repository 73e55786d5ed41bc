"""`checkgate status`: every process of every node, like `supervisorctl status` with the node in front.

Nodes come from the console's config file (`CHECKGATE_CONSOLE_CONFIG`, TOML, `[[nodes]]` with `name`,
`url`, `username`, `password`, `tags`); without it, the local supervisord is asked over its unix socket
(`var/supervisor.sock` beside supervisord.conf). Exit status: 0 when every process is RUNNING, 3 when
one is not (as `supervisorctl status` does), 4 when a node could not be asked.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import socket
import ssl
import sys
import tomllib
import urllib.parse
import xmlrpc.client
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_NOT_RUNNING = 3
EXIT_UNREACHABLE = 4


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (supervisord's `[unix_http_server]`), with a timeout."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class RPCTransport(xmlrpc.client.Transport):
    """XML-RPC transport to supervisord over `unix://`, `http://` or `https://`, Basic auth, bounded waits.

    supervisor's own `SupervisorTransport` has no timeout and no https; a dead node must not hang a
    CLI or a listener.
    """

    def __init__(self, url: str, username: str | None = None, password: str | None = None, timeout: float = 5.0):
        super().__init__()
        self.url = url
        self.timeout = timeout
        self.auth = []
        if username is not None and password is not None:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            self.auth = [("Authorization", f"Basic {token}")]
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("unix", "http", "https"):
            raise ValueError(f"unsupported supervisor URL {url!r}: use unix://, http:// or https://")
        self.parsed = parsed

    def make_connection(self, host: Any) -> http.client.HTTPConnection:  # the stdlib's hook
        if self._connection[1] is not None:
            return self._connection[1]
        self._extra_headers = list(self.auth)
        parsed = self.parsed
        conn: http.client.HTTPConnection
        if parsed.scheme == "unix":
            conn = _UnixHTTPConnection(parsed.netloc + parsed.path, self.timeout)
        elif parsed.scheme == "https":
            context = ssl.create_default_context()
            conn = http.client.HTTPSConnection(
                parsed.hostname or "", parsed.port, timeout=self.timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=self.timeout)
        self._connection = (host, conn)
        return conn


def rpc_proxy(url: str, username: str | None = None, password: str | None = None, timeout: float = 5.0) -> Any:
    """The `supervisor` namespace of a supervisord's XML-RPC API (`proxy.getAllProcessInfo()`)."""
    transport = RPCTransport(url, username, password, timeout)
    # The host part is ignored (the transport knows where to connect); /RPC2 is supervisord's endpoint.
    return xmlrpc.client.ServerProxy("http://supervisord/RPC2", transport=transport).supervisor


@dataclass(frozen=True)
class Node:
    """A supervisord to ask: where it listens and how to log in."""

    name: str
    url: str
    username: str | None = None
    password: str | None = None
    tags: tuple[str, ...] = ()


@dataclass
class NodeStatus:
    """What one node answered: its processes, or why it could not be asked."""

    node: Node
    processes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def node_name() -> str:
    """This machine's name in alerts and status lines: `CHECKGATE_NODE`, else the host name."""
    return os.environ.get("CHECKGATE_NODE") or socket.gethostname()


def load_nodes(path: Path, environ: Mapping[str, str] = os.environ) -> list[Node]:
    """The `[[nodes]]` of a console config file; raise ValueError naming the entry at fault.

    As the console reads them: `password`, or `password_env` naming a variable, or `user:password@` in
    the URL. Other keys (health_url, …) are the console's and ignored here.
    """
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    nodes = []
    for index, entry in enumerate(data.get("nodes", [])):
        where = f"{path}: nodes[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ValueError(f"{where}: needs a name")
        where = f"{where} ({entry['name']})"
        if not isinstance(entry.get("url"), str) or not entry["url"]:
            raise ValueError(f"{where}: needs a url")
        tags = entry.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"{where}: tags must be a list of strings")
        parts = urllib.parse.urlsplit(entry["url"])
        url, username, password = entry["url"], entry.get("username"), entry.get("password")
        if parts.scheme in ("http", "https") and "@" in parts.netloc:
            username, password = username or parts.username, password or parts.password
            url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        if entry.get("password_env"):
            password = environ.get(entry["password_env"])
            if not password:
                raise ValueError(f"{where}: environment variable {entry['password_env']} is empty")
        nodes.append(Node(entry["name"], url, username, password, tuple(tags)))
    if not nodes:
        raise ValueError(f"{path}: no [[nodes]]")
    return nodes


def local_node(home: Path) -> Node:
    """The supervisord of this checkout, over its unix socket (owner-only, so no password)."""
    return Node(node_name(), f"unix://{home / 'var' / 'supervisor.sock'}")


def describe_error(exc: BaseException) -> str:
    """A short reason a node could not be asked."""
    if isinstance(exc, xmlrpc.client.ProtocolError):
        return f"HTTP {exc.errcode} {exc.errmsg}".strip()
    if isinstance(exc, xmlrpc.client.Fault):
        return f"fault {exc.faultCode}: {exc.faultString}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def fetch(node: Node, timeout: float) -> NodeStatus:
    """Ask one node for `getAllProcessInfo`; never raises."""
    try:
        processes = rpc_proxy(node.url, node.username, node.password, timeout).getAllProcessInfo()
    except Exception as exc:  # an unreachable node is a line of output, not a crash
        return NodeStatus(node, error=describe_error(exc))
    return NodeStatus(node, processes=sorted(processes, key=namespec))


def namespec(info: dict[str, Any]) -> str:
    """`group:name`, or `name` alone for a program outside a group (as supervisorctl prints it)."""
    return info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"


def render(statuses: Sequence[NodeStatus]) -> list[str]:
    """One line per process (node, name, state, description); one line per unreachable node."""
    rows = []
    for status in statuses:
        if status.error is not None:
            rows.append((status.node.name, "-", "UNREACHABLE", f"{status.node.url}: {status.error}"))
        for info in status.processes:
            rows.append((status.node.name, namespec(info), info["statename"], info["description"]))
    if not rows:
        return []
    node_w = max(len(r[0]) for r in rows)
    name_w = max(max(len(r[1]) for r in rows), 32)
    state_w = max(max(len(r[2]) for r in rows), 10)
    return [f"{n:<{node_w}}  {p:<{name_w}} {s:<{state_w}} {d}".rstrip() for n, p, s, d in rows]


def exit_code(statuses: Sequence[NodeStatus]) -> int:
    """4 if a node could not be asked, else 3 if a process is not RUNNING, else 0."""
    if any(s.error is not None for s in statuses):
        return EXIT_UNREACHABLE
    if any(p["statename"] != "RUNNING" for s in statuses for p in s.processes):
        return EXIT_NOT_RUNNING
    return EXIT_OK


def select_nodes(args: argparse.Namespace, home: Path) -> list[Node]:
    """The nodes the command line asks for: from the console config when there is one, else local."""
    config = args.console_config or os.environ.get("CHECKGATE_CONSOLE_CONFIG")
    if args.socket:
        nodes = [Node(node_name(), f"unix://{Path(args.socket).resolve()}")]
    elif config:
        nodes = load_nodes(Path(config))
    else:
        nodes = [local_node(home)]
    if args.node:
        nodes = [n for n in nodes if n.name in args.node]
    if args.tag:
        nodes = [n for n in nodes if set(args.tag) & set(n.tags)]
    return nodes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `checkgate status` options."""
    parser.add_argument("--console-config", help="console TOML with [[nodes]] (default: $CHECKGATE_CONSOLE_CONFIG)")
    parser.add_argument("--socket", help="ask only this supervisord unix socket")
    parser.add_argument("--node", action="append", help="only this node (repeatable)")
    parser.add_argument("--tag", action="append", help="only nodes with this tag (repeatable)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each node (default 5)")


def run(args: argparse.Namespace, home: Path) -> int:
    """Ask the nodes in parallel (one dead node costs one timeout, not one per node) and print the table."""
    try:
        nodes = select_nodes(args, home)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"checkgate status: {exc}", file=sys.stderr)
        return 2
    if not nodes:
        print("checkgate status: no node matches", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        statuses = list(pool.map(lambda n: fetch(n, args.timeout), nodes))
    for line in render(statuses):
        print(line)
    return exit_code(statuses)


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.status` (the same as `checkgate status`)."""
    from gateway.cli import project_home

    parser = argparse.ArgumentParser(prog="checkgate status", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv), project_home())


if __name__ == "__main__":
    sys.exit(main())
