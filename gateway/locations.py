"""Checks from several locations, at the gateway: where a request runs, which locations are live, and the
one answer a fan-out gives.

`location=eu-west` runs a check on the workers of that location (its `<queue>@eu-west` queue, see
tasks/locations.py) and answers as usual, with `location` in the body. `location=eu-west,us-east` runs it
in each named location, `location=all` in every configured location with a live consumer for the type;
both answer one body with each location's usual answer and an overall verdict, `require=all` (default),
`any` or `<n>` locations passing. A location passes when its check ran and its target is ok (200 and not
`ok: false`); it fails when the check ran and the target is not ok, the address policy refused it (403)
or the task raised (502); it is undecided when it gave no answer by the deadline (504) or its task could
not be published (503). The verdict is decided once enough locations passed, or too few can still pass.

Liveness comes from the passive declares the gateway makes every second (gateway/state.py
`watch_queues`): a location whose queue for the type has no consumer is refused at once (503 naming it),
before anything is published, instead of leaving its task to expire at the deadline. A worker host
that vanishes keeps its consumer at the broker until its missed heartbeats close the connection
(≤ 3 × CHECKGATE_BROKER_HEARTBEAT, 15 s by default): until then its location's tasks are published and
its callers get a per-location 504 at their deadline.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import states

from tasks.locations import ALL, location_queue
from tasks.registry import ParamError

REQUIRE = ("all", "any")
MAX_REQUIRE = 999


@dataclass(frozen=True)
class Asked:
    """What a request asked with `location` and `require`: named locations or every live one (`every`)."""

    names: tuple[str, ...]
    every: bool
    require: str | None

    @property
    def fanout(self) -> bool:
        """Whether the answer is one per location (a list or `all`), rather than one location's answer."""
        return self.every or len(self.names) > 1


@dataclass(frozen=True)
class Placement:
    """Where a request's tasks go: its locations, and for a fan-out the verdict's rule.

    `needed`: how many locations must pass (None for a single location); `skipped`: configured locations
    `location=all` left out because no consumer of the type is live there."""

    locations: tuple[str, ...]
    fanout: bool
    require: str | None = None
    needed: int | None = None
    skipped: tuple[str, ...] = ()


class NoConsumer(Exception):
    """A location the request needs has no live consumer for its type: 503 naming `locations`."""

    def __init__(self, message: str, locations: tuple[str, ...]) -> None:
        super().__init__(message)
        self.locations = locations


class Locations:
    """The deployment's locations (celeryconfig's `LOCATIONS`) and the queue of each type in each one.

    `queues` maps a check type to its plain queue (prefixed), as gateway/state.py `Gateway.queues`.
    """

    def __init__(self, names: tuple[str, ...], queues: Mapping[str, str]) -> None:
        self.names = tuple(names)
        self._queues = queues

    def queue(self, check_name: str, location: str) -> str:
        """The queue a check of type `check_name` takes to run in `location`."""
        return location_queue(self._queues[check_name], location)

    def all_queues(self) -> set[str]:
        """Every location queue of every type."""
        return {self.queue(name, where) for name in self._queues for where in self.names}

    def parse(self, given: dict[str, str], mode: str) -> Asked | None:
        """Pop `location` and `require` from the query values: what they ask, or None when no location
        was asked. Raises `ParamError` naming the parameter (unknown or repeated location, a `require`
        without a fan-out, outside 1..the number of named locations, or with a mode other than sync)."""
        raw = given.pop("location", None)
        require = given.pop("require", None)
        if raw is None:
            if require is not None:
                raise ParamError("require", "needs location=all or a comma-separated list of locations")
            return None
        if not self.names:
            raise ParamError("location", "no locations are configured (CHECKGATE_LOCATIONS)")
        names = tuple(n.strip() for n in raw.split(","))
        if names == (ALL,):
            asked = Asked((), True, None)
        else:
            for name in names:
                if name == ALL:
                    raise ParamError("location", f"{ALL!r} stands alone: it means every live location")
                if name not in self.names:
                    shown = f"location {name[:70]!r}" if name else "an empty location name"
                    allowed = ", ".join((ALL, *self.names))
                    raise ParamError("location", f"unknown {shown}; allowed: {allowed}")
            if len(set(names)) != len(names):
                raise ParamError("location", "a location is named more than once")
            asked = Asked(names, False, None)
        if require is None:
            return Asked(asked.names, asked.every, "all" if asked.fanout else None)
        if not asked.fanout:
            raise ParamError("require", "needs location=all or a comma-separated list of locations")
        if mode != "sync":
            raise ParamError("require", "a verdict needs mode=sync")
        if require not in REQUIRE:
            if not (require.isascii() and require.isdigit() and 1 <= int(require) <= MAX_REQUIRE):
                raise ParamError("require", f"must be all, any or a number of locations (1 to {MAX_REQUIRE})")
            require = str(int(require))
            if not asked.every and int(require) > len(asked.names):
                raise ParamError("require", f"asks {require} locations of the {len(asked.names)} named")
        return Asked(asked.names, asked.every, require)

    def consumers(self, check_name: str, stats: Mapping[str, Mapping[str, int]]) -> dict[str, int | None]:
        """Live consumers of the type's queue in each location (None: not known yet, or the broker is away)."""
        out: dict[str, int | None] = {}
        for where in self.names:
            queue_stats = stats.get(self.queue(check_name, where))
            out[where] = None if queue_stats is None else queue_stats.get("consumers", 0)
        return out

    def place(self, check_name: str, asked: Asked, stats: Mapping[str, Mapping[str, int]]) -> Placement:
        """Where the request's tasks go, judged on the latest `stats` (queue → messages, consumers).

        A location counts as live unless the stats say its queue has no consumer (unknown stats leave the
        publish to answer). Raises `NoConsumer` when a named location is not live, when `location=all`
        finds none live, or when fewer are live than `require` asks."""
        consumers = self.consumers(check_name, stats)
        dark = tuple(where for where, count in consumers.items() if count == 0)
        if not asked.every:
            missing = tuple(where for where in asked.names if where in dark)
            if missing:
                listed = ", ".join(missing)
                raise NoConsumer(f"no live consumer for check {check_name!r} in location {listed}", missing)
            if not asked.fanout:
                return Placement(asked.names, False)
            return Placement(asked.names, True, asked.require, _needed(asked.require, len(asked.names)))
        live = tuple(where for where in self.names if where not in dark)
        if not live:
            raise NoConsumer(f"no live consumer for check {check_name!r} in any location", dark)
        needed = _needed(asked.require, len(live))
        if needed > len(live):
            raise NoConsumer(
                f"require={asked.require} but only {len(live)} location(s) have a live consumer for check "
                f"{check_name!r}; none in {', '.join(dark)}",
                dark,
            )
        return Placement(live, True, asked.require, needed, dark)

    def describe(self, check_name: str, stats: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, Any]]:
        """For /checks: each location's queue for the type and its live consumers (None: not known yet)."""
        consumers = self.consumers(check_name, stats)
        return {where: {"queue": self.queue(check_name, where), "consumers": consumers[where]} for where in self.names}

    def health(self, stats: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, Any]]:
        """For /health: per location, whether any consumer is live there and, per type, its queue's ready
        messages and consumers (from `stats`, a fresh `queue_stats`)."""
        out: dict[str, dict[str, Any]] = {}
        for where in self.names:
            types = {}
            for name in sorted(self._queues):
                queue = self.queue(name, where)
                if queue in stats:
                    types[name] = {"queue": queue, **stats[queue]}
            total = sum(t["consumers"] for t in {t["queue"]: t for t in types.values()}.values())
            out[where] = {"live": total > 0, "consumers": total, "types": types}
        return out


def _needed(require: str | None, count: int) -> int:
    """How many of `count` locations must pass under `require`."""
    if require in (None, "all"):
        return count
    if require == "any":
        return 1
    return int(require)


def passed(status: int, body: Mapping[str, Any]) -> bool | None:
    """One location's part in the verdict: True passed, False failed, None undecided (see module doc)."""
    if status == 200:
        result = body.get("result")
        return not isinstance(result, dict) or result.get("ok", True) is True
    if status in (403, 502):
        return False
    return None


def verdict_answer(
    check_name: str,
    placement: Placement,
    answers: Mapping[str, tuple[int, dict[str, Any]]],
    timeout: float,
    started: float,
) -> tuple[int, dict[str, Any]]:
    """Status and body of a sync fan-out: each location's answer (with its `status`) and the verdict.

    200 when the verdict is decided (`ok` true or false), 504 when too few locations answered by the
    deadline to decide (`ok` null; poll each location's `result_url`)."""
    needed = placement.needed or len(placement.locations)
    parts = {where: passed(*answers[where]) for where in placement.locations}
    passes = sum(1 for p in parts.values() if p is True)
    fails = sum(1 for p in parts.values() if p is False)
    undecided = len(parts) - passes - fails
    ok: bool | None
    if passes >= needed:
        ok = True
    elif passes + undecided < needed:
        ok = False
    else:
        ok = None
    body: dict[str, Any] = {
        "type": check_name,
        "state": states.SUCCESS if ok is not None else states.PENDING,
        "ok": ok,
        "require": placement.require or "all",
        "needed": needed,
        "passed": passes,
        "failed": fails,
        "undecided": undecided,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    if ok is None:
        body["error"] = (
            f"deadline of {timeout:g}s passed before a verdict: {passes} of the {needed} location(s) needed passed, "
            f"{undecided} gave no answer"
        )
    body["locations"] = {where: {"status": status, **part} for where, (status, part) in answers.items()}
    if placement.skipped:
        body["skipped"] = list(placement.skipped)
    return (200 if ok is not None else 504), body


def accepted_answer(
    check_name: str, state: str, placement: Placement, answers: Mapping[str, tuple[int, dict[str, Any]]]
) -> tuple[int, dict[str, Any]]:
    """Status and body of an async (`state` PENDING) or fire (SENT) fan-out: 202 and each location's
    answer (its id and `result_url` to poll, or its own 503/504 when its task could not be published)."""
    body: dict[str, Any] = {
        "type": check_name,
        "state": state,
        "locations": {where: {"status": status, **part} for where, (status, part) in answers.items()},
    }
    if placement.skipped:
        body["skipped"] = list(placement.skipped)
    return 202, body
