"""Fault tests: real processes killed and restarted under load. `CHECKGATE_FAULTS=full` for the long run.

The default (smoke) scale runs inside `make test`; `make faults` runs the full scale and prints the
reliability table (also written to var/faults/report.json).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.faults.load import REPORT, write_report
from tests.support.services import PrivateRabbit
from tests.support.stack import ROOT

FULL = os.environ.get("CHECKGATE_FAULTS", "smoke") == "full"


def scale(smoke: float, full: float) -> float:
    """The smoke or the full figure of a knob."""
    return full if FULL else smoke


@pytest.fixture(scope="session")
def private_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbit]:
    if not os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server") or shutil.which("epmd") is None:
        pytest.skip("rabbitmq-server is not installed here")
    rabbit = PrivateRabbit(tmp_path_factory.mktemp("rabbit"))
    rabbit.start()
    yield rabbit
    rabbit.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        table = write_report(ROOT / "var" / "faults" / "report.json")
        terminalreporter.write_sep("=", "reliability report" + (" (full)" if FULL else " (smoke)"))
        terminalreporter.write_line(table)
