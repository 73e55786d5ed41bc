"""`python -m bench --smoke` end to end: real workers, gateway, wrk and floor, in well under a minute.

It proves the harness works (every key of the results, checkgate answering without errors, the
run's queues deleted afterwards), not how fast anything is.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kombu import Connection

from tests.support.env import BROKER_URL
from tests.support.infra import missing_programs, require

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"rps", "p50_ms", "p99_ms", "errors", "vs_flower", "vs_blocking", "efficiency", "of_limit", "streams"}
ROW_KEYS |= {"p99_added_ms"}


@pytest.fixture(scope="module", autouse=True)
def wrk() -> None:
    """The bench's load generator (scripts/bootstrap.sh installs it): skipped without it, failed under CI."""
    require(missing_programs("wrk"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "latest-smoke.md").read_text().startswith("# checkgate bench")
    assert not (out / "latest.json").exists(), "a smoke run must not replace the latest real results"
    return json.loads((out / "latest-smoke.json").read_text())


def test_results_have_every_key(smoke: dict) -> None:
    assert {"machine", "command", "options", "workers", "noop_capacity_rps", "scenarios"} <= smoke.keys()
    assert smoke["machine"]["cores"] >= 1
    assert "--smoke" in smoke["command"]
    assert set(smoke["scenarios"]) == {"noop", "noop-unique", "sleep@8"}
    for name, scenario in smoke["scenarios"].items():
        # Identical no-op requests are coalesced: no rate of tasks bounds them.
        assert scenario["limit_rps"] is None if name == "noop" else scenario["limit_rps"] > 0
        assert set(scenario["contenders"]) == {"checkgate", "floor"}
        for row in scenario["contenders"].values():
            assert row.keys() >= ROW_KEYS
            assert row["rounds"] == 1 and not row["failed"]


def test_checkgate_answers_every_request(smoke: dict) -> None:
    for scenario in smoke["scenarios"].values():
        checkgate, floor = scenario["contenders"]["checkgate"], scenario["contenders"]["floor"]
        assert checkgate["rps"] > 0 and checkgate["errors"] == 0
        assert checkgate["p50_ms"] > 0 and checkgate["p99_ms"] >= checkgate["p50_ms"]
        assert floor["rps"] > 0
        assert checkgate["efficiency"] == pytest.approx(checkgate["rps"] / floor["rps"], rel=0.01)
    # checkgate's own time per answer, read from its /metrics around each cell.
    own = smoke["scenarios"]["sleep@8"]["contenders"]["checkgate"]["self_time"]["sleep"]
    assert 0 < own["p50_ms"] <= own["p99_ms"]
    # N comes from the run where every request is a task of its own (identical ones are coalesced).
    assert smoke["noop_capacity_from"] == "noop-unique"
    assert smoke["noop_capacity_rps"] == smoke["scenarios"]["noop-unique"]["contenders"]["checkgate"]["rps"]


def test_run_deleted_its_queues(smoke: dict) -> None:
    with Connection(BROKER_URL.replace("amqp://", "pyamqp://", 1)) as conn:
        for queue in ("add", "sleep"):
            channel = conn.channel()
            with pytest.raises(Exception, match="NOT_FOUND"):
                channel.queue_declare(smoke["queue_prefix"] + queue, passive=True)
