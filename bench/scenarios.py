"""What is measured: scenarios made of load streams, and the bounds on each.

A stream is one closed loop: `clients` callers, each sending the next request as soon as the last
one is answered. They start spread evenly over a ramp of one task time, as JMeter's ramp-up spreads
its threads: started all at once, a closed loop runs in waves for many round trips, and the tail of
its latency would be those waves rather than the steady state. Times are seconds after the start of
a cell (one scenario × one contender); the measurement window opens at the first whole second after
`window_at`, so that concurrent streams (the mixed scenario) share one window and the ramp-up of a
closed loop stays out of the rate.

A scenario's **bound** is the lowest of the rates that no front end can beat, each from something no
contender controls (`Scenario.bounds`):

- `clients`: C / T — C clients, each with one request in flight, each taking at least the task time T;
- `slots`: S / T — S worker slots consuming the stream's queue, each busy T per task;
- `drain`: what the same workers drain of the same task from a queue filled in advance, with no front
  end at all (bench.drain, measured in the same run). It includes every cost of the workers (CPU,
  prefork's pipes, storing results), and has the machine to itself.

The one that binds is the lowest. A contender's rate over it is its `of bound`: below 100 % by
construction, up to noise (the drain runs with no front end on the machine; everyone else shares it).
`noop` has no bound: identical requests may share one task (checkgate coalesces them), so its answers
are not tasks.
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
# Scenarios whose primary task the workers' drain is measured for (bench.drain). Not `noop` (no bound:
# coalesced) nor `mixed` (its flood's bound is clients and slots; its point is the add probe's latency).
DRAINED_KINDS = ("unique", "sleep")


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
    # The AMQP client the workers consume with in this scenario (the harness sets it; "" = not said).
    transport: str = ""

    def stream(self, name: str) -> Stream:
        return next(s for s in self.streams if s.name == name)

    @property
    def max_task_s(self) -> float:
        return max(s.task_s for s in self.streams)

    @property
    def end(self) -> float:
        """Latest end of a window, in seconds after the cell starts (an upper bound)."""
        return max(math.ceil(s.window_at) + 1 + self.window for s in self.streams)

    @property
    def drained(self) -> bool:
        """Whether the workers' drain of the primary stream's task is measured for this scenario (its bound)."""
        return self.kind in DRAINED_KINDS

    def bounds(self, slots: dict[str, int], drain_rps: float | None) -> dict[str, float]:
        """The bounds on the primary stream's rate, req/s, by name (see the module docstring): `clients`
        and `slots` when the task takes time, `drain` when measured; empty for `noop` (unbounded).
        `slots` maps a check to the worker slots of its queue."""
        if self.kind == "noop":
            return {}
        stream = self.stream(self.primary)
        out: dict[str, float] = {}
        if stream.task_s > 0:
            out["clients"] = stream.clients / stream.task_s
            if slots.get(stream.check):
                out["slots"] = slots[stream.check] / stream.task_s
        if drain_rps:
            out["drain"] = drain_rps
        return out

    def bound_formulas(self, slots: dict[str, int]) -> dict[str, str]:
        """How each bound is made, for the report: `{"clients": "60 / 0.3 s", …}`."""
        stream = self.stream(self.primary)
        task = f"{stream.task_s:g} s"
        return {
            "clients": f"{stream.clients} clients / {task}",
            "slots": f"{slots.get(stream.check, 0)} slots / {task}",
            "drain": "the workers alone, queue filled in advance",
        }


def binding(bounds: dict[str, float]) -> tuple[str, float] | tuple[None, None]:
    """The bound that binds — the lowest — as (name, req/s); (None, None) when there is none."""
    if not bounds:
        return None, None
    name = min(bounds, key=lambda k: bounds[k])
    return name, bounds[name]


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
