"""Fixtures that run the real stack; see tests/support/env.py for how a run is isolated."""

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.registry import load_checks
from tests.support.env import BACKEND_URL, BROKER_URL, RUN_PREFIX
from tests.support.infra import missing_librabbitmq, require
from tests.support.stack import Stack

# Every declared check (built-ins, the test plugins of CHECKGATE_CHECK_MODULES), as workers and gateway
# see them: tests that read tasks.registry.REGISTRY directly find them whatever runs first.
load_checks()


@pytest.fixture(scope="session")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory CA bundles may be read from (CHECKGATE_CA_DIRS) by the session's workers and gateway."""
    return tmp_path_factory.mktemp("trusted-ca")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, ca_dir: Path) -> Iterator[Stack]:
    """Workers for every queue (threads, enough slots for the concurrency tests) and no gateway yet."""
    workdir: Path = tmp_path_factory.mktemp("stack")
    with Stack(workdir, RUN_PREFIX, BROKER_URL, BACKEND_URL) as stack:
        stack.env["CHECKGATE_CA_DIRS"] = str(ca_dir)
        stack.start_worker("add", ["add"], pool="prefork", concurrency=2)
        stack.start_worker("sleep", ["sleep"], pool="threads", concurrency=220)
        stack.start_worker("misc", ["http", "tcp", "dns", "tls", "boom", "count"], pool="threads", concurrency=20)
        yield stack


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> str:
    """Base URL of a gateway connected to the session's stack."""
    return stack.start_gateway("gw", port=stack.gateway_port)


@pytest.fixture
def new_stack(tmp_path: Path) -> Iterator[Stack]:
    """A second, empty stack with its own prefix, for tests that kill or starve its processes."""
    with Stack(tmp_path, f"cgt{secrets.token_hex(3)}_", BROKER_URL, BACKEND_URL) as stack:
        yield stack


@pytest.fixture(scope="module")
def librabbitmq_stack(tmp_path_factory: pytest.TempPathFactory, ca_dir: Path) -> Iterator[Stack]:
    """An empty stack of its own whose workers consume over librabbitmq (tasks/transport.py); skipped
    (failed under CI) where librabbitmq does not import."""
    require(missing_librabbitmq())
    env = {"CHECKGATE_BROKER_TRANSPORT": "librabbitmq", "CHECKGATE_CA_DIRS": str(ca_dir)}
    workdir = tmp_path_factory.mktemp("librabbitmq")
    with Stack(workdir, f"cgt{secrets.token_hex(3)}_", BROKER_URL, BACKEND_URL, env=env) as stack:
        yield stack
