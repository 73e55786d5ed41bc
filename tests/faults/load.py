"""A steady closed-loop load for the fault tests, and the report row each fault test adds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.support.stack import http_get

REPORT: list[FaultRow] = []


@dataclass
class Outcome:
    """One request of the load: what was asked, what came back (status None: no answer), when."""

    path: str
    status: int | None
    body: Any
    headers: dict[str, str]
    started: float
    ended: float


@dataclass
class FaultRow:
    """One line of the reliability report."""

    scenario: str
    requests: int
    faults: int
    answered: int
    clean_errors: int
    lost: int
    duplicates: int
    note: str = ""
    # Seconds from the fault to full recovery (every request succeeded from then on), where measured.
    recovery_s: float | None = None


def run_load(
    base: str,
    path_for: Callable[[int, int], str],
    clients: int,
    duration: float,
    timeout: float = 60,
    until: threading.Event | None = None,
) -> list[Outcome]:
    """`clients` callers, each sending its next request as soon as the last is answered, for `duration` s
    (or until `until` is set, if sooner)."""
    stop = time.monotonic() + duration
    until = until or threading.Event()

    def caller(n: int) -> list[Outcome]:
        outcomes, i = [], 0
        while time.monotonic() < stop and not until.is_set():
            path = path_for(n, i)
            started = time.monotonic()
            try:
                status, body, headers = http_get(base + path, timeout=timeout)
            except OSError as exc:
                status, body, headers = None, repr(exc), {}
            outcomes.append(Outcome(path, status, body, headers, started, time.monotonic()))
            i += 1
        return outcomes

    with ThreadPoolExecutor(clients) as pool:
        return [o for outcomes in pool.map(caller, range(clients)) for o in outcomes]


def write_report(path: Path) -> str:
    """Write the rows as JSON and return them as a Markdown table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(r) for r in REPORT], indent=2))
    header = "| scenario | requests | faults | answered | clean errors | lost | duplicates | recovery s | note |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in REPORT:
        recovery = "–" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        lines.append(
            f"| {r.scenario} | {r.requests} | {r.faults} | {r.answered} | {r.clean_errors} | {r.lost} "
            f"| {r.duplicates} | {recovery} | {r.note} |"
        )
    return "\n".join(lines)
