"""How the snapshot is shown and addressed: by machine, by group, and which processes a scope means.

Groups are of two kinds: the logical groups of the config (namespec patterns, optionally limited to
nodes with given tags) and the supervisor groups, which span every node that defines one of that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from gateway.console.config import ConsoleSettings, GroupConfig
from gateway.console.poller import NodeState, ProcessInfo

SCOPES = ("process", "group", "node", "selection", "all")


class ScopeError(ValueError):
    """The scope of an action names nothing, or something unknown."""


@dataclass
class GroupView:
    """One group as shown: its members across nodes."""

    id: str  # "cfg:<name>" for a logical group, "sup:<name>" for a supervisor group
    title: str
    logical: bool
    description: str = ""
    members: list[ProcessInfo] = field(default_factory=list)

    @property
    def nodes(self) -> list[str]:
        return list(dict.fromkeys(p.node for p in self.members))

    @property
    def looping(self) -> int:
        return sum(p.looping for p in self.members)

    @property
    def counts(self) -> dict[str, int]:
        """Members per state, for the group's summary line."""
        counts: dict[str, int] = {}
        for p in self.members:
            counts[p.state] = counts.get(p.state, 0) + 1
        return dict(sorted(counts.items()))


def matches(group: GroupConfig, state: NodeState, proc: ProcessInfo) -> bool:
    """Is `proc` on `state`'s node a member of the logical `group`?"""
    if group.tags and not set(group.tags) & set(state.config.tags):
        return False
    names = (proc.namespec, f"{proc.group}:{proc.name}")
    return any(fnmatchcase(name, pattern) for pattern in group.patterns for name in names)


def logical_group(settings: ConsoleSettings, nodes: Mapping[str, NodeState], group: GroupConfig) -> GroupView:
    """The members of a configured group, node by node in config order."""
    view = GroupView(f"cfg:{group.name}", group.name, True, group.description)
    for state in nodes.values():
        view.members += [p for p in state.processes if matches(group, state, p)]
    return view


def groups(settings: ConsoleSettings, nodes: Mapping[str, NodeState]) -> list[GroupView]:
    """Every group: the configured ones first, then supervisor groups across nodes."""
    views = [logical_group(settings, nodes, g) for g in settings.groups]
    by_name: dict[str, GroupView] = {}
    for state in nodes.values():
        for proc in state.processes:
            view = by_name.setdefault(proc.group, GroupView(f"sup:{proc.group}", proc.group, False))
            view.members.append(proc)
    return views + [by_name[name] for name in sorted(by_name)]


def find_group(settings: ConsoleSettings, nodes: Mapping[str, NodeState], group_id: str) -> GroupView:
    """The group with this id; ScopeError when there is none."""
    kind, _, name = group_id.partition(":")
    if kind == "cfg":
        config = next((g for g in settings.groups if g.name == name), None)
        if config is not None:
            return logical_group(settings, nodes, config)
    elif kind == "sup":
        members = [p for state in nodes.values() for p in state.processes if p.group == name]
        if members:
            return GroupView(group_id, name, False, members=members)
    raise ScopeError(f"no group {group_id!r}")


def resolve(
    settings: ConsoleSettings,
    nodes: Mapping[str, NodeState],
    scope: str,
    *,
    node: str = "",
    process: str = "",
    group: str = "",
    selection: list[str] | None = None,
) -> list[tuple[str, str]]:
    """The (node, namespec) pairs an action with this scope applies to, node by node in config order."""
    if scope == "process":
        pairs = [(node, process)]
    elif scope == "selection":
        pairs = []
        for key in selection or []:
            name, sep, spec = key.partition("/")
            if not sep:
                raise ScopeError(f"selection entry {key[:80]!r} is not node/process")
            pairs.append((name, spec))
    elif scope == "group":
        pairs = [(p.node, p.namespec) for p in find_group(settings, nodes, group).members]
    elif scope == "node":
        if node not in nodes:
            raise ScopeError(f"no node {node!r}")
        pairs = [(node, p.namespec) for p in nodes[node].processes]
    elif scope == "all":
        pairs = [(p.node, p.namespec) for state in nodes.values() for p in state.processes]
    else:
        raise ScopeError(f"scope must be one of {', '.join(SCOPES)}")
    for name, spec in pairs:
        if name not in nodes:
            raise ScopeError(f"no node {name!r}")
        if not spec or len(spec) > 200 or any(c in spec for c in "\r\n\t\0"):
            raise ScopeError(f"invalid process name {spec[:80]!r}")
    if not pairs:
        raise ScopeError("this scope holds no process")
    order = list(nodes)
    return sorted(dict.fromkeys(pairs), key=lambda pair: order.index(pair[0]))
