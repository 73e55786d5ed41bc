"""Fixtures for the operations tests: an isolated deployment (queue prefix, Redis db 13) per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.registry import load_checks
from tests.ops.helpers import cleanup_deployment, stack_env
from tests.support.env import BACKEND_URL, BROKER_URL

# Every queue a test deployment may have declared: the shipped types, the tests' and the probes'.
QUEUES = ("add", "sleep", "http", "tcp", "dns", "tls", "boom", "count", "count_once", "beatprobe", "hold")


@dataclass
class Deployment:
    """One test deployment: its prefix, the environment its processes get, a scratch directory."""

    prefix: str
    env: dict[str, str]
    workdir: Path


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    prefix = f"cgo{secrets.token_hex(3)}_"
    yield Deployment(prefix, stack_env(prefix, BACKEND_URL), tmp_path)
    queues = {c.queue for c in load_checks().values()} | set(QUEUES)
    cleanup_deployment(prefix, BROKER_URL, BACKEND_URL, queues)
