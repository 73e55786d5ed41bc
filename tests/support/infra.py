"""What a test needs from the machine (binaries, root, network namespaces): skip without it locally,
fail without it under CI (`CI` set), where scripts/bootstrap.sh must have provided it."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.services import RABBITMQ_SERVER


def require(missing: str | None) -> None:
    """Skip the calling test (fail it under CI) when `missing` names something absent."""
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"missing infrastructure under CI: {missing}")
    pytest.skip(missing)


def missing_rabbitmq() -> str | None:
    """Why a private RabbitMQ node cannot start here (None when it can)."""
    if not os.path.exists(RABBITMQ_SERVER) or shutil.which("epmd") is None:
        return "rabbitmq-server is not installed: run scripts/bootstrap.sh"
    return None


def missing_redis() -> str | None:
    """Why private redis-servers (and sentinels, which are redis-server in sentinel mode) cannot start here."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed: run scripts/bootstrap.sh"
    return None


def missing_programs(*names: str) -> str | None:
    """Why a test needing the programs `names` (on PATH) cannot run here (None when all are there)."""
    absent = [name for name in names if shutil.which(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed: run scripts/bootstrap.sh (as root)"
    return None


def missing_librabbitmq() -> str | None:
    """Why workers cannot consume over librabbitmq here (None when they can): the [librabbitmq] extra,
    which scripts/bootstrap.sh installs where its wheel exists (CPython on glibc Linux x86_64)."""
    from tasks.transport import librabbitmq_available

    if librabbitmq_available():
        return None
    return "librabbitmq is not importable: the [librabbitmq] extra (scripts/bootstrap.sh installs it on Linux x86_64)"
