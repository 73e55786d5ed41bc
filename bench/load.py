"""The load generator of every HTTP contender: wrk, closed loop, one process per stream.

wrk runs bench/wrk_report.lua, which counts the responses completed inside the measurement window
(whole epoch seconds, the same for concurrent streams) and prints the totals and wrk's latency
percentiles as one JSON line.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.scenarios import UNIQUE

SCRIPT = Path(__file__).with_name("wrk_report.lua")
MARKER = "BENCH_JSON "


@dataclass(frozen=True)
class Target:
    """How a contender is asked for one stream's check."""

    url: str
    method: str = "GET"
    body: str = ""


@dataclass
class Stats:
    """What one stream measured in one cell."""

    rps: float
    requests: int
    window_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: int
    # Socket errors, timeouts and non-2xx answers, apart.
    error_detail: dict[str, int] = field(default_factory=dict)
    total_requests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("bench: wrk is not installed (apt-get install wrk)")
    return path


def wrk_version() -> str:
    out = subprocess.run([wrk_path(), "--version"], capture_output=True, text=True, timeout=10)
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer": keep what precedes the copyright.
    first = (out.stdout or out.stderr or "?").splitlines()[0]
    return first.split(" Copyright")[0].strip()


@dataclass
class WrkRun:
    """One wrk process measuring one stream."""

    name: str
    popen: subprocess.Popen[str]
    window_s: int

    @property
    def pgid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.communicate()

    def result(self, timeout: float) -> Stats:
        try:
            out, err = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.communicate()
            raise RuntimeError(f"wrk for {self.name} did not finish within {timeout:.0f} s") from None
        line = next((ln for ln in out.splitlines() if ln.startswith(MARKER)), None)
        if self.popen.returncode != 0 or line is None:
            raise RuntimeError(f"wrk for {self.name} failed ({self.popen.returncode}): {err.strip() or out[-500:]}")
        return parse(json.loads(line[len(MARKER) :]), self.window_s)


def start_wrk(
    name: str,
    target: Target,
    clients: int,
    window_start: int,
    window_s: int,
    timeout_s: int,
    threads: int = 2,
    ramp_s: float = 0.0,
) -> WrkRun:
    """Launch wrk now; it runs until the window [window_start, window_start + window_s) has closed. Its
    clients start spread over `ramp_s` seconds."""
    duration = max(1, math.ceil(window_start + window_s + 0.3 - time.time()))
    threads = min(threads, clients)
    argv = [wrk_path(), "-t", str(threads), "-c", str(clients), "-d", f"{duration}s"]
    argv += ["--timeout", f"{timeout_s}s", "-s", str(SCRIPT), target.url, "--"]
    unique = UNIQUE in target.url or UNIQUE in target.body
    argv += [str(window_start), str(window_start + window_s), target.method, target.body, "unique" if unique else ""]
    argv += [str(round(ramp_s * 1000)), str(clients), str(threads)]
    # Its own process group, so its CPU can be accounted like a contender's.
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return WrkRun(name, popen, window_s)


def parse(raw: dict[str, Any], window_s: float) -> Stats:
    """wrk's JSON line → Stats (latency percentiles are None when nothing completed)."""
    errors = dict(raw["errors"])
    # wrk's own "status" counts codes > 399 only; the script counts every non-2xx.
    errors.pop("status", None)
    errors["non_2xx"] = raw["non_2xx"]
    completed = raw["requests"] > 0
    lat = raw["latency_us"]

    def ms(key: str) -> float | None:
        return round(lat[key] / 1000, 2) if completed else None

    good = raw["in_window"] - raw["bad_in_window"]
    return Stats(
        rps=round(good / window_s, 2),
        requests=good,
        window_s=window_s,
        p50_ms=ms("p50"),
        p90_ms=ms("p90"),
        p99_ms=ms("p99"),
        max_ms=ms("max"),
        errors=sum(errors.values()),
        error_detail=errors,
        total_requests=raw["requests"],
    )
