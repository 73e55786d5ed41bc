"""What the numbers were measured on: machine, versions, services, checkout."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import redis
from kombu import Connection

from bench.load import wrk_version
from bench.stack import ROOT

PACKAGES = ("celery", "kombu", "tornado", "pamqp", "redis", "msgpack", "flask", "gunicorn", "flower", "matplotlib")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def services(broker_url: str, backend_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"rabbitmq": None, "redis": None}
    with contextlib.suppress(Exception), Connection(broker_url.replace("amqp://", "pyamqp://", 1)) as conn:
        conn.connect()
        version = conn.connection.server_properties.get("version")
        out["rabbitmq"] = version.decode() if isinstance(version, bytes) else version
    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(backend_url, socket_timeout=5)
        out["redis"] = client.info("server").get("redis_version")
        client.close()
    return out


def machine_info(broker_url: str, backend_url: str) -> dict[str, Any]:
    """Cores, CPU model, memory, Python, package and service versions, load average at the start."""
    mem_kb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
        "wrk": wrk_version(),
        "services": services(broker_url, backend_url),
        "git": git_revision(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
