"""Locations: the sites workers run checks from, and the queues that route a check to one of them.

A deployment names its locations once (`CHECKGATE_LOCATIONS=eu-west,us-east`, for the gateway and
celeryconfig alike). Every check queue then has one location queue per location beside it,
`<queue>@<location>` (`http@eu-west`), declared like the plain one (same exchange, same arguments) by
the gateway's publisher and by the workers that consume it. A worker declares where it runs with
`CHECKGATE_LOCATION=eu-west`: besides the plain queues it was given (`-Q http,tcp`), it consumes their
`@eu-west` queues; with `CHECKGATE_LOCATION_ONLY=1` only those, so the site runs nothing but the checks
asked of it. A worker never consumes another location's queue, even when `-Q` or the default
selection (no `-Q`: every declared queue) names it: a check asked to run in us-east must run there.

Routing stays Celery's: the queues are on the direct exchange, so a task for `http@eu-west` goes to
the default exchange with that routing key, as Celery's own `send_task(..., queue="http@eu-west")`
sends it. The gateway learns which locations are live from the consumers of their queues
(gateway/locations.py).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("checkgate.locations")

# A location's name: what a queue name, a query value (comma-separated) and a Prometheus label value
# all carry without escaping. "all" is the gateway's word for every live location.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
ALL = "all"
SEPARATOR = "@"
EX_CONFIG = 78  # sysexits.h: a configuration error


def check_name(name: str, source: str) -> str:
    """`name` if it is a valid location name, else ValueError naming `source` (a variable or parameter)."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"{source}: location {name[:70]!r} must be 1 to 63 of A-Z a-z 0-9 . _ - (starting alphanumeric)"
        )
    if name == ALL:
        raise ValueError(f"{source}: {ALL!r} is reserved (it means every live location)")
    return name


def parse_names(raw: str, source: str) -> tuple[str, ...]:
    """Comma-separated location names (blanks around commas ignored), each valid and given once."""
    names = [n.strip() for n in raw.split(",") if n.strip()]
    for name in names:
        check_name(name, source)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{source}: location {duplicated[0]!r} given more than once")
    return tuple(names)


def configured() -> tuple[str, ...]:
    """The deployment's locations, from `CHECKGATE_LOCATIONS` (none when unset)."""
    return parse_names(os.environ.get("CHECKGATE_LOCATIONS", ""), "CHECKGATE_LOCATIONS")


def worker_location() -> str:
    """This worker's location, from `CHECKGATE_LOCATION` ("" when unset: the worker has none)."""
    raw = os.environ.get("CHECKGATE_LOCATION", "").strip()
    return check_name(raw, "CHECKGATE_LOCATION") if raw else ""


def worker_location_only() -> bool:
    """`CHECKGATE_LOCATION_ONLY`: whether the worker consumes its location's queues only."""
    raw = os.environ.get("CHECKGATE_LOCATION_ONLY", "").strip().lower()
    if raw not in ("", "0", "1", "true", "false", "yes", "no"):
        raise ValueError("CHECKGATE_LOCATION_ONLY: 1/true/yes or 0/false/no")
    return raw in ("1", "true", "yes")


def location_queue(queue: str, location: str) -> str:
    """The name of `queue`'s queue in `location`: `<queue>@<location>`."""
    return f"{queue}{SEPARATOR}{location}"


def location_of(queue: str | None) -> str | None:
    """The location a queue name routes to (None for a plain queue, or no queue at all)."""
    if not queue or SEPARATOR not in queue:
        return None
    return queue.rpartition(SEPARATOR)[2] or None


def worker_selection(consumed: Iterable[str], declared: Iterable[str], location: str, only: bool) -> list[str]:
    """The queues a worker consumes, given those its `-Q` (or the default, every declared queue) selected.

    Location queues of other locations are dropped; with a `location`, each selected plain queue that has
    a declared `@location` queue gains it, and with `only` the plain queues are dropped.
    """
    declared = set(declared)
    selected: list[str] = []
    for name in consumed:
        where = location_of(name)
        if where is None:
            if not (location and only):
                selected.append(name)
            if location and (mine := location_queue(name, location)) in declared:
                selected.append(mine)
        elif where == location:
            selected.append(name)
    return list(dict.fromkeys(selected))


def consume_location_queues(sender: str | None = None, instance: Any = None, conf: Any = None, **_: Any) -> None:
    """Celery's `celeryd_after_setup` handler (connected by tasks/celery.py): after `-Q` was applied,
    make the worker consume what `worker_selection` says, from celeryconfig's `WORKER_LOCATION` and
    `WORKER_LOCATION_ONLY`.

    Celery logs and ignores an exception a signal handler raises, which would leave the worker on its
    unfiltered selection (without `-Q`: every location's queues). So any failure here, a selection left
    empty included, stops the worker instead (SystemExit, EX_CONFIG)."""
    try:
        queues = instance.app.amqp.queues
        location = getattr(conf, "WORKER_LOCATION", "") or ""
        only = bool(getattr(conf, "WORKER_LOCATION_ONLY", False))
        before = list(queues.consume_from)
        after = worker_selection(before, queues.keys(), location, only)
        if not after:
            raise ValueError(f"no queue to consume in location {location or '(none)'!r} among {', '.join(before)}")
        if after != before:
            queues.select(after)
            log.info("location %r: consuming %s", location or "(none)", ", ".join(after))
    except Exception as exc:
        log.critical("cannot select the queues of this worker's location: %s", exc)
        raise SystemExit(EX_CONFIG) from exc
