"""What is measured: scenarios made of load streams, and the physical limit of each.

A stream is one closed loop: `clients` callers, each sending the next request as soon as the last
one is answered. They start spread evenly over a ramp of one task time, as JMeter's ramp-up spreads
its threads: started all at once, a closed loop runs in waves for many round trips, and the tail of
its latency would be those waves rather than the steady state. Times are seconds after the start of
a cell (one scenario × one contender); the measurement window opens at the first whole second after
`window_at`, so that concurrent streams (the mixed scenario) share one window and the ramp-up of a
closed loop stays out of the rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

NOOP_CLIENTS = 60
# A parameter value every request replaces with a number of its own, so no two requests are
# identical: checkgate coalesces identical `add` requests in flight, which `noop-unique` rules out.
UNIQUE = "__N__"
SLEEP_MS = 300
SLEEP_CLIENTS = (60, 1000)
FLOOD_MS = 2000
FLOOD_CLIENTS = 1000
# Clients of the `add` probe of the mixed scenario: few, so it measures latency, not capacity.
PROBE_CLIENTS = 10
KINDS = ("noop", "unique", "sleep", "mixed")


@dataclass(frozen=True)
class Stream:
    """One closed-loop load: `clients` callers of one check with fixed parameters."""

    name: str
    check: str
    params: dict[str, Any]
    clients: int
    start: float
    window_at: float
    task_s: float = 0.0
    # Seconds over which the clients' first requests are spread.
    ramp_s: float = 0.0

    @property
    def unique(self) -> bool:
        """Whether every request of the stream carries a number of its own."""
        return UNIQUE in self.params.values()

    def concrete(self, n: int) -> Stream:
        """The stream with `n` in place of the UNIQUE placeholder (itself when it has none)."""
        if not self.unique:
            return self
        return replace(self, params={k: n if v == UNIQUE else v for k, v in self.params.items()})

    def expected(self) -> Any:
        """The task's result, to tell a right answer from a wrong one at warm-up (of a concrete stream)."""
        if self.check == "add":
            return self.params["x"] + self.params["y"]
        return {"ok": True, "slept_ms": self.params["ms"]}


@dataclass(frozen=True)
class Scenario:
    """A named set of streams measured together over `window` seconds."""

    name: str
    kind: str
    description: str
    streams: tuple[Stream, ...]
    window: int
    # The stream whose rate the ratios and the physical limit are about, and the one whose
    # latency is the headline (they differ in the mixed scenario: flood rate, probe latency).
    primary: str = "main"
    headline_latency: str = "main"
    extra: dict[str, Any] = field(default_factory=dict)

    def stream(self, name: str) -> Stream:
        return next(s for s in self.streams if s.name == name)

    @property
    def max_task_s(self) -> float:
        return max(s.task_s for s in self.streams)

    @property
    def end(self) -> float:
        """Latest end of a window, in seconds after the cell starts (an upper bound)."""
        return max(math.ceil(s.window_at) + 1 + self.window for s in self.streams)

    def limit(self, sleep_slots: int, noop_rps: float | None) -> float | None:
        """Physical limit of the primary stream: min(C/T, S/T, N); None when nothing bounds it."""
        stream = self.stream(self.primary)
        bounds = [noop_rps] if noop_rps else []
        if stream.task_s > 0:
            bounds.append(stream.clients / stream.task_s)
            if stream.check == "sleep":
                bounds.append(sleep_slots / stream.task_s)
        return min(bounds) if bounds else None


def lead_in(task_s: float) -> float:
    """Seconds of load before the window: the ramp (one task time), then every client through at least
    two round trips."""
    return max(1.0, 3 * task_s)


def simple(
    name: str, kind: str, check: str, params: dict[str, Any], clients: int, task_s: float, window: int
) -> Scenario:
    """One stream, measured after its lead-in."""
    stream = Stream("main", check, params, clients, 0.0, lead_in(task_s), task_s, ramp_s=task_s)
    what = f"{check} {params} × {clients} clients"
    return Scenario(name, kind, what, (stream,), window)


def mixed(window: int, flood_clients: int, flood_ms: int, probe_clients: int) -> Scenario:
    """`add` alone, then `add` again while `sleep` is flooded: queue isolation.

    Timeline: add_alone [0 … its window]; then the flood starts, and once it has run two task times
    the probe add_flood starts; both are measured over the same window.
    """
    flood_s = flood_ms / 1000
    add = {"x": 1, "y": 2}
    alone = Stream("add_alone", "add", add, probe_clients, start=0.0, window_at=1.0)
    flood_start = math.ceil(alone.window_at) + 1 + window + 0.5
    flood_window = flood_start + lead_in(flood_s)
    flood = Stream("flood", "sleep", {"ms": flood_ms}, flood_clients, flood_start, flood_window, flood_s, flood_s)
    probe = Stream("add_flood", "add", add, probe_clients, start=flood_window - 1.0, window_at=flood_window)
    what = f"add × {probe_clients} alone, then with sleep {flood_ms} ms × {flood_clients} clients flooding"
    return Scenario(
        "mixed", "mixed", what, (alone, flood, probe), window, primary="flood", headline_latency="add_flood"
    )


def build(
    kinds: list[str],
    window: int,
    sleep_clients: list[int],
    noop_clients: int = NOOP_CLIENTS,
    sleep_ms: int = SLEEP_MS,
    flood_clients: int = FLOOD_CLIENTS,
    flood_ms: int = FLOOD_MS,
    probe_clients: int = PROBE_CLIENTS,
) -> list[Scenario]:
    """The scenarios of a run, in the order they are run within a round."""
    out: list[Scenario] = []
    for kind in kinds:
        if kind == "noop":
            out.append(simple("noop", "noop", "add", {"x": 1, "y": 2}, noop_clients, 0.0, window))
        elif kind == "unique":
            out.append(simple("noop-unique", "unique", "add", {"x": UNIQUE, "y": 2}, noop_clients, 0.0, window))
        elif kind == "sleep":
            for clients in sleep_clients:
                params = {"ms": sleep_ms}
                out.append(simple(f"sleep@{clients}", "sleep", "sleep", params, clients, sleep_ms / 1000, window))
        elif kind == "mixed":
            out.append(mixed(window, flood_clients, flood_ms, probe_clients))
        else:
            raise ValueError(f"unknown scenario kind {kind!r}; known: {', '.join(KINDS)}")
    return out


def sleep_slots_needed(scenarios: list[Scenario]) -> int:
    """Worker threads for `sleep` so that no scenario waits for a slot: the most sleep clients at once."""
    return max((sum(s.clients for s in sc.streams if s.check == "sleep") for sc in scenarios), default=0)
