"""`python -m bench --smoke` end to end: real workers, gateway, wrk and the drain, briefly.

It proves the harness works (every key of the results, checkgate answering without errors, the
bounds named, CPU per answer measured, the run's queues deleted afterwards), not how fast anything is.
The report's arithmetic is tested apart, in process (tests/test_bench_report.py), and the contenders
that need no workers in tests/test_bench_contenders.py.
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
ROW_KEYS = {"rps", "p50_ms", "p99_ms", "errors", "vs_flower", "vs_blocking", "vs_fastapi", "efficiency", "streams"}
ROW_KEYS |= {"p99_added_ms", "of_bound", "cpu_ms_per_answer", "workers_cpu_ms_per_answer", "cpu_cores"}


@pytest.fixture(scope="module", autouse=True)
def wrk() -> None:
    """The bench's load generator (scripts/bootstrap.sh installs it): skipped without it, failed under CI."""
    require(missing_programs("wrk"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--no-plots"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "latest-smoke.md").read_text().startswith("# checkgate bench")
    assert not (out / "latest.json").exists(), "a smoke run must not replace the latest real results"
    return json.loads((out / "latest-smoke.json").read_text())


def test_results_have_every_key(smoke: dict) -> None:
    assert {"machine", "command", "options", "worker_transports", "labels", "scenarios"} <= smoke.keys()
    assert smoke["machine"]["cores"] >= 1
    assert "--smoke" in smoke["command"]
    assert set(smoke["worker_transports"]) == {"pyamqp"}
    assert smoke["worker_transports"]["pyamqp"]["slots"] == {"add": 2, "sleep": 200}
    assert set(smoke["scenarios"]) == {"noop-unique", "sleep@8"}
    for scenario in smoke["scenarios"].values():
        assert set(scenario["contenders"]) == {"checkgate", "checkgate-flower-api", "drain"}
        for row in scenario["contenders"].values():
            assert row.keys() >= ROW_KEYS
            assert row["rounds"] == 1 and not row["failed"] and not row["skipped"]


def test_bounds_come_from_clients_slots_and_the_drain(smoke: dict) -> None:
    unique, sleep = smoke["scenarios"]["noop-unique"], smoke["scenarios"]["sleep@8"]
    # A no-op task has no time: only the workers' own drain bounds it, never checkgate's rate.
    assert unique["binds"] == "drain"
    assert unique["bound_rps"] == pytest.approx(unique["contenders"]["drain"]["rps"], abs=0.1)
    # 8 clients / 0.1 s = 80 req/s; 200 slots / 0.1 s = 2000; the drain is measured.
    assert sleep["bounds"]["clients"] == 80.0 and sleep["bounds"]["slots"] == 2000.0
    assert sleep["bounds"]["drain"] > 0
    assert sleep["binds"] == min(sleep["bounds"], key=sleep["bounds"].get)
    for scenario in (unique, sleep):
        checkgate = scenario["contenders"]["checkgate"]
        assert checkgate["of_bound"] == pytest.approx(checkgate["rps"] / scenario["bound_rps"], rel=0.01)
        # The drain is the bound: it is not measured against itself.
        assert scenario["contenders"]["drain"]["of_bound"] is None


def test_checkgate_answers_every_request_and_cpu_per_answer_is_measured(smoke: dict) -> None:
    for scenario in smoke["scenarios"].values():
        checkgate, drain = (scenario["contenders"][c] for c in ("checkgate", "drain"))
        assert checkgate["rps"] > 0 and checkgate["errors"] == 0
        assert checkgate["p50_ms"] > 0 and checkgate["p99_ms"] >= checkgate["p50_ms"]
        assert checkgate["cpu_ms_per_answer"] > 0 and checkgate["workers_cpu_ms_per_answer"] > 0
        assert drain["rps"] > 0 and drain["errors"] == 0
        # The drain has no front end; its workers' CPU is per task.
        assert drain["cpu_ms_per_answer"] is None and drain["workers_cpu_ms_per_answer"] > 0
    # checkgate's own time per answer, read from its /metrics around each cell.
    own = smoke["scenarios"]["sleep@8"]["contenders"]["checkgate"]["self_time"]["sleep"]
    assert 0 < own["p50_ms"] <= own["p99_ms"]


def test_run_deleted_its_queues(smoke: dict) -> None:
    with Connection(BROKER_URL.replace("amqp://", "pyamqp://", 1)) as conn:
        for queue in ("add", "sleep"):
            channel = conn.channel()
            with pytest.raises(Exception, match="NOT_FOUND"):
                channel.queue_declare(smoke["queue_prefix"] + queue, passive=True)
