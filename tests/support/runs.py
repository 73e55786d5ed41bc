"""One test topology's run id, and the sweep of what crashed runs left behind.

Everything a topology starts carries its run id: processes get `CHECKGATE_TEST_RUN=<id>` in their
environment, network namespaces and links are named `cgt<id>…`. A run writes its owner's pid to
`/tmp/checkgate-runs/<id>` while it lives; `sweep()` finds the runs whose owner is gone (a test
process killed with SIGKILL, a Ctrl-C that did not reach the finalizers) and removes their processes,
namespaces and links. A run whose owner still lives (another test session on the same machine) is
never touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

RUN_ENV = "CHECKGATE_TEST_RUN"
REGISTRY = Path("/tmp/checkgate-runs")
# Interface and namespace names start with this, then the run id (6 hex digits): 9 of Linux's 15.
NAME_PREFIX = "cgt"


class TestRun:
    """The id, environment marker and registry entry of one topology (a context manager)."""

    __test__ = False  # not a pytest test class

    def __init__(self, run_id: str | None = None) -> None:
        self.id = run_id or secrets.token_hex(3)
        self.env = {RUN_ENV: self.id}

    @property
    def name_prefix(self) -> str:
        """The prefix of every namespace and link of this run (`cgt<id>`)."""
        return NAME_PREFIX + self.id

    def __enter__(self) -> TestRun:
        sweep()
        REGISTRY.mkdir(parents=True, exist_ok=True)
        (REGISTRY / self.id).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        kill_marked({self.id})
        (REGISTRY / self.id).unlink(missing_ok=True)


def _start_time(pid: int) -> str:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat), so a reused pid is not taken
    for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(record: Path) -> bool:
    try:
        pid_text, _, started = record.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    return _start_time(pid) == started != ""


def marked_pids(run_ids: set[str]) -> list[int]:
    """Pids of live processes whose environment carries one of `run_ids`."""
    wanted = {f"{RUN_ENV}={run_id}".encode() for run_id in run_ids}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted.intersection(environ):
            found.append(int(entry.name))
    return found


def kill_marked(run_ids: set[str]) -> None:
    """SIGKILL every process marked with one of `run_ids` (children of a dead test, typically)."""
    for pid in marked_pids(run_ids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def sweep() -> list[str]:
    """Remove the processes, network namespaces and links of runs whose owner is dead; return their ids."""
    if not REGISTRY.is_dir():
        return []
    dead = {record.name for record in REGISTRY.iterdir() if not _owner_alive(record)}
    if not dead:
        return []
    kill_marked(dead)
    prefixes = tuple(NAME_PREFIX + run_id for run_id in dead)
    with contextlib.suppress(FileNotFoundError):
        for ns in _ip("netns", "list").stdout.split():
            if ns.startswith(prefixes):
                for pid in _ip("netns", "pids", ns).stdout.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                _ip("netns", "del", ns)
        for line in _ip("-o", "link", "show").stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(prefixes):
                _ip("link", "del", name)
    time.sleep(0.2)  # let the killed nodes' ports and epmd names go
    for run_id in dead:
        (REGISTRY / run_id).unlink(missing_ok=True)
    return sorted(dead)
