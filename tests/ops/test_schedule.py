"""The schedule file: what it turns into for beat, and every kind of bad entry refused with its name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from celery.schedules import crontab, schedule

from tasks.registry import load_checks
from tasks.schedule import HEADER, ScheduleError, latest_key, load_schedule, parse_duration, schedule_path
from tests.ops.conftest import Deployment
from tests.ops.helpers import wait_for
from tests.support.stack import ROOT

GOOD = '[checks.good]\ntype = "sleep"\nevery = "1s"\nparams = { ms = 1 }\n'
RUN = {"capture_output": True, "text": True, "cwd": ROOT, "timeout": 60}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedule.toml"
    path.write_text(text)
    return path


def test_the_example_schedule_loads_into_beat_entries() -> None:
    entries = load_schedule(ROOT / "schedule.example.toml")
    assert set(entries) == {"app-health", "db-port", "cache-ping"}
    health = entries["app-health"].beat_entry()
    assert health["task"] == "checkgate.http"
    assert health["schedule"] == schedule(30)
    assert health["kwargs"]["url"] == "http://app.internal.example:8080/health"
    assert health["kwargs"]["follow_redirects"] is True
    # Runs not started within min(interval, timeout) are dropped; each run names its entry.
    assert health["options"] == {"expires": 10.0, "headers": {HEADER: "app-health"}}
    ping = entries["cache-ping"]
    assert isinstance(ping.run_every, crontab) and ping.run_every.minute == set(range(0, 60, 5))
    assert ping.expires == min(60.0, load_checks()["tcp"].default_timeout)
    assert (ping.kwargs["port"], ping.kwargs["expect"]) == (6379, "PONG")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('type = "nope"\nevery = "1m"', "type 'nope' is not a check type"),
        ('type = "add"\nevery = "1m"\nparams = { x = 1 }', "params.y: is required"),
        ('type = "add"\nevery = "1m"\nparams = { x = 1, y = "two" }', "params.y: must be an integer"),
        ('type = "add"\nevery = "1m"\nparams = { x = 1, y = 2, z = 3 }', "params.z: unknown parameter"),
        ('type = "add"\nevery = "1m"\nparams = { x = [1], y = 2 }', "params.x: must be a string, number or boolean"),
        ('type = "http"\nevery = "1m"\nparams = { url = "file:///etc/passwd" }', "params.url:"),
        ('type = "sleep"\nparams = { ms = 1 }', "needs exactly one of every or cron"),
        ('type = "sleep"\nevery = "1m"\ncron = "* * * * *"\nparams = { ms = 1 }', "needs exactly one of every or cron"),
        ('type = "sleep"\nevery = "soon"\nparams = { ms = 1 }', "not a duration: 'soon'"),
        ('type = "sleep"\nevery = "500ms"\nparams = { ms = 1 }', "every must be at least 1s"),
        ('type = "sleep"\ncron = "*/5 * * *"\nparams = { ms = 1 }', "cron needs 5 fields"),
        ('type = "sleep"\ncron = "61 * * * *"\nparams = { ms = 1 }', "bad cron '61 * * * *'"),
        ('type = "sleep"\nevery = "1m"\ntimeout = "1h"\nparams = { ms = 1 }', "above the max_timeout of sleep"),
        ('type = "sleep"\nevery = "1m"\nevry = "1m"\nparams = { ms = 1 }', "unknown keys ['evry']"),
    ],
)
def test_a_bad_entry_fails_naming_it(tmp_path: Path, entry: str, message: str) -> None:
    path = write(tmp_path, f"{GOOD}\n[checks.broken]\n{entry}\n")
    with pytest.raises(ScheduleError) as caught:
        load_schedule(path)
    assert f"schedule {path}: entry 'broken': " in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[checks.good\n", "schedule"),  # not TOML
        ('[every]\ntype = "sleep"\n', "unknown top-level keys ['every']"),
        ('[checks."bad name"]\ntype = "sleep"\nevery = "1m"\n', "entry 'bad name': name must be"),
        ("[checks]\nx = 1\n", "entry 'x': must be a table"),
    ],
)
def test_a_bad_file_fails_loudly(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match="schedule ") as caught:
        load_schedule(write(tmp_path, text))
    assert message in str(caught.value)


def test_durations_and_paths(tmp_path: Path) -> None:
    assert [parse_duration(v) for v in (30, 1.5, "30s", "500ms", "5m", "2h", "1d", "90")] == [
        30.0,
        1.5,
        30.0,
        0.5,
        300.0,
        7200.0,
        86400.0,
        90.0,
    ]
    for bad in (0, -1, True, "", "5 minutes", "1m30s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ScheduleError, match="no such file"):
        schedule_path({"CHECKGATE_SCHEDULE": str(tmp_path / "missing.toml")})
    assert schedule_path({"CHECKGATE_SCHEDULE": str(write(tmp_path, ""))}) == tmp_path / "schedule.toml"
    assert latest_key("homepage", "p_") == "checkgate:schedule:p_homepage"


def test_the_command_line_validator(tmp_path: Path) -> None:
    good = subprocess.run([sys.executable, "-m", "tasks.schedule", str(ROOT / "schedule.example.toml")], **RUN)
    assert good.returncode == 0 and "app-health: checkgate.http" in good.stdout
    bad = write(tmp_path, '[checks.oops]\ntype = "sleep"\nevery = "1m"\n')
    result = subprocess.run([sys.executable, "-m", "tasks.schedule", str(bad)], **RUN)
    assert result.returncode == 1 and "entry 'oops': params.ms: is required" in result.stderr


def test_beat_refuses_to_start_on_a_bad_schedule(tmp_path: Path, deployment: Deployment) -> None:
    bad = write(tmp_path, '[checks.typo-entry]\ntype = "htttp"\nevery = "1m"\n')
    env = {**deployment.env, "CHECKGATE_SCHEDULE": str(bad)}
    log = tmp_path / "beat.log"
    with log.open("wb") as out:
        argv = [sys.executable, "-m", "celery", "-A", "tests.ops.beatapp", "beat", "-l", "info"]
        beat = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: beat.poll() is not None, 30, lambda: f"beat to exit; log: {log.read_text()[-2000:]}")
    finally:
        if beat.poll() is None:
            beat.kill()
            beat.wait()
    assert beat.returncode != 0
    assert "entry 'typo-entry': type 'htttp' is not a check type" in log.read_text()
