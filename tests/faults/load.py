"""A steady closed-loop load for the fault tests, what they measure of it (latency, the gateway's
memory), and the report row each fault test adds."""

from __future__ import annotations

import json
import re
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


def latency_ms(outcomes: list[Outcome], quantile: float) -> float:
    """The `quantile` (0.5: median, 0.99: p99) of the outcomes' latencies, in ms (nearest rank)."""
    latencies = sorted(o.ended - o.started for o in outcomes)
    return latencies[round(quantile * (len(latencies) - 1))] * 1000 if latencies else float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` now (VmRSS), in MB."""
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1)) / 1024


class RssPeak:
    """Samples a process's resident memory every `interval` s while the `with` block runs: `before`,
    `peak` and `after`, in MB."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.before = self.peak = self.after = rss_mb(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> RssPeak:
        self.before = self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.after = rss_mb(self.pid)
        self.peak = max(self.peak, self.after)


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
