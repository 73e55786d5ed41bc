"""`checkgate status`: every process of every node, like `supervisorctl status` with the node in front.

Nodes come from the console's config file (`--console-config` or `CHECKGATE_CONSOLE_CONFIG`: its
`[[nodes]]`, read by gateway/nodes.py under the console's rules); without one, the local supervisord
is asked over its unix socket (`var/supervisor.sock` in the node's home, gateway/home.py). The nodes are asked at
once, on an asyncio loop of this command's own, through the console's non-blocking client
(gateway/supervisor_rpc.py): one dead node costs one timeout, not one per node.

Exit status: 0 when every process is RUNNING, 3 when one is not (as `supervisorctl status` does), 4
when a node could not be asked, 2 for a bad command line or config file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.options import make_namespec

from gateway.nodes import ConfigError, NodeConfig, load_nodes, node_name
from gateway.supervisor_rpc import RpcClient, RpcError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_UNREACHABLE = 4
# The fields of a getAllProcessInfo entry this table shows.
SHOWN = ("name", "group", "statename", "description")


@dataclass
class NodeStatus:
    """What one node answered: its processes (getAllProcessInfo entries), or why it could not be asked."""

    node: NodeConfig
    processes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def local_node(home: Path) -> NodeConfig:
    """The supervisord of the node whose home is `home`, over its unix socket (owner-only, so no password)."""
    return NodeConfig(node_name(), f"unix://{home / 'var' / 'supervisor.sock'}")


def namespec(info: dict[str, Any]) -> str:
    """`group:name`, or `name` alone for a program outside a group (as supervisorctl prints it)."""
    return make_namespec(info["group"], info["name"])


async def fetch(rpc: RpcClient, node: NodeConfig, timeout: float) -> NodeStatus:
    """Ask one node for `getAllProcessInfo` (at most `timeout` seconds); never raises."""
    try:
        processes = await rpc.call(node, "supervisor.getAllProcessInfo", timeout=timeout)
    except RpcError as exc:  # an unreachable node is a line of output, not a crash
        return NodeStatus(node, error=str(exc))
    if not isinstance(processes, list) or not all(
        isinstance(p, dict) and all(isinstance(p.get(key), str) for key in SHOWN) for p in processes
    ):
        return NodeStatus(node, error="not a supervisord answer (getAllProcessInfo)")
    return NodeStatus(node, processes=sorted(processes, key=namespec))


async def fetch_all(nodes: Sequence[NodeConfig], timeout: float) -> list[NodeStatus]:
    """Ask every node at once; the answers in the order of `nodes`."""
    rpc = RpcClient(max_clients=max(1, len(nodes)))
    try:
        return list(await asyncio.gather(*(fetch(rpc, node, timeout) for node in nodes)))
    finally:
        rpc.close()


def render(statuses: Sequence[NodeStatus]) -> list[str]:
    """One line per process (node, namespec, state, description); one line per unreachable node."""
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


def select_nodes(args: argparse.Namespace, home: Path) -> list[NodeConfig]:
    """The nodes the command line asks for: `--socket`, else the config file's, else the local node.

    Raises ConfigError for an unreadable config file or a bad `[[nodes]]` entry.
    """
    config = args.console_config or os.environ.get("CHECKGATE_CONSOLE_CONFIG")
    if args.socket:
        nodes = [NodeConfig(node_name(), f"unix://{Path(args.socket).resolve()}")]
    elif config:
        nodes = list(load_nodes(config))
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
    """Print the table for the nodes `args` selects; `home` is the node's home, whose socket is the default.

    :returns: the exit status (EXIT_OK, EXIT_NOT_RUNNING, EXIT_UNREACHABLE, or EXIT_USAGE with the
        reason on stderr). Must be called outside a running event loop (it runs its own).
    """
    try:
        nodes = select_nodes(args, home)
    except ConfigError as exc:
        print(f"checkgate status: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not nodes:
        print("checkgate status: no node matches", file=sys.stderr)
        return EXIT_USAGE
    if not args.timeout > 0:
        print("checkgate status: --timeout must be a positive number of seconds", file=sys.stderr)
        return EXIT_USAGE
    statuses = asyncio.run(fetch_all(nodes, args.timeout))
    for line in render(statuses):
        print(line)
    return exit_code(statuses)
