"""The gateway's settings from the environment: every variable typed and bounded, every error naming it."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, Settings, check_read_later, env_number, variable
from tests.support.stack import ROOT

VARIABLES = {variable(spec): spec for spec in dataclasses.fields(Settings)}


def refused(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ)
    return info.value


def test_every_setting_has_a_variable_a_default_and_a_line_of_doc() -> None:
    assert set(VARIABLES) >= {
        "CHECKGATE_PORT",
        "CHECKGATE_BIND",
        "CHECKGATE_PUBLISH_TIMEOUT",
        "CHECKGATE_MAX_INFLIGHT",
        "CHECKGATE_MAX_INFLIGHT_PER_TYPE",
        "CHECKGATE_MAX_QUEUE_DEPTH",
        "CHECKGATE_RETRY_AFTER",
        "CHECKGATE_ID_PREFIX",
        "CHECKGATE_API_KEYS_FILE",
        "CHECKGATE_IDLE_TIMEOUT",
        "CHECKGATE_HEAD_TIMEOUT",
        "CHECKGATE_BODY_TIMEOUT",
        "CHECKGATE_DEBUG",
    }
    for name, default, what in Settings.documented():
        assert name in VARIABLES and default and what and "\n" not in what
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"CHECKGATE_PORT": "9000"}, {"port": 9000}),
        ({"CHECKGATE_PORT": " 9000 "}, {"port": 9000}),
        ({"CHECKGATE_PORT": ""}, {"port": 8888}),  # empty: the default, as unset
        ({"CHECKGATE_BIND": "::"}, {"bind": "::"}),
        ({"CHECKGATE_PUBLISH_TIMEOUT": "2.5"}, {"publish_timeout": 2.5}),
        ({"CHECKGATE_HEAD_TIMEOUT": "1"}, {"head_timeout": 1.0}),
        ({"CHECKGATE_RETRY_AFTER": "30"}, {"retry_after": 30}),
        ({"CHECKGATE_ID_PREFIX": "gw1-"}, {"id_prefix": "gw1-"}),
        ({"CHECKGATE_DEBUG": "YES"}, {"debug": True}),
        ({"CHECKGATE_DEBUG": "off"}, {"debug": False}),
    ],
)
def test_values_are_converted_to_the_fields_types(environ: dict[str, str], expected: dict[str, object]) -> None:
    settings = Settings.from_env(environ)
    assert {name: getattr(settings, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("name", "raw", "form"),
    [
        ("CHECKGATE_PORT", "abc", "an integer from 1 to 65535"),
        ("CHECKGATE_PORT", "0", "an integer from 1 to 65535"),
        ("CHECKGATE_PORT", "65536", "an integer from 1 to 65535"),
        ("CHECKGATE_PORT", "80.0", "an integer"),
        ("CHECKGATE_PORT", "1e3", "an integer"),
        ("CHECKGATE_BIND", "a b", "an IP address or host name"),
        ("CHECKGATE_PUBLISH_TIMEOUT", "soon", "a number of seconds > 0"),
        ("CHECKGATE_PUBLISH_TIMEOUT", "0", "a number of seconds > 0"),
        ("CHECKGATE_MAX_INFLIGHT", "-5", "an integer >= 1"),
        ("CHECKGATE_MAX_INFLIGHT", "1.5", "an integer >= 1"),
        ("CHECKGATE_MAX_INFLIGHT_PER_TYPE", "0", "an integer >= 1"),
        ("CHECKGATE_MAX_QUEUE_DEPTH", "many", "an integer >= 1"),
        ("CHECKGATE_RETRY_AFTER", "0", "an integer from 1 to 3600"),
        ("CHECKGATE_ID_PREFIX", "has space", "1 to 40 of A-Z a-z 0-9 . _ : -"),
        ("CHECKGATE_ID_PREFIX", "x" * 41, "1 to 40"),
        ("CHECKGATE_ID_PREFIX", "gw*", "1 to 40"),  # a glob character would widen the PSUBSCRIBE
        ("CHECKGATE_IDLE_TIMEOUT", "-1", "a number of seconds > 0"),
        ("CHECKGATE_HEAD_TIMEOUT", "nan", "a number of seconds > 0"),
        ("CHECKGATE_BODY_TIMEOUT", "inf", "a number of seconds > 0"),
        ("CHECKGATE_DEBUG", "maybe", "one of 1, true, yes, on, 0, false, no, off"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_the_value_and_the_form(name: str, raw: str, form: str) -> None:
    error = refused({name: raw})
    assert error.variable == name
    assert str(error).startswith(f"{name}={raw!r}: expected ")
    assert form in str(error)
    assert "invalid literal" not in str(error)


def test_settings_built_in_code_are_held_to_the_same_bounds() -> None:
    with pytest.raises(ConfigError, match="CHECKGATE_HEAD_TIMEOUT"):
        Settings(head_timeout=0)
    with pytest.raises(ConfigError, match="CHECKGATE_PORT='8888'"):
        Settings(port="8888")  # type: ignore[arg-type]
    assert Settings(idle_timeout=1).idle_timeout == 1  # an int where seconds are a float is fine


def test_env_number_reads_other_processes_settings_the_same_way() -> None:
    assert env_number("CHECKGATE_DELIVERY_LIMIT", 5, minimum=1, environ={}) == 5
    assert env_number("CHECKGATE_ALERT_TIMEOUT", 3.0, above=0, environ={"CHECKGATE_ALERT_TIMEOUT": "0.5"}) == 0.5
    with pytest.raises(ConfigError, match=r"CHECKGATE_DELIVERY_LIMIT='five': expected an integer >= 1"):
        env_number("CHECKGATE_DELIVERY_LIMIT", 5, minimum=1, environ={"CHECKGATE_DELIVERY_LIMIT": "five"})


def start_gateway(tmp_path: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    """Run the gateway's entry point with `environ`; it must stop before connecting to anything."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **environ}
    return subprocess.run(
        [sys.executable, "-c", "from gateway.server import main; main()"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CHECKGATE_PORT": "abc"}, "CHECKGATE_PORT='abc': expected an integer from 1 to 65535"),
        ({"CHECKGATE_API_KEYS_FILE": "/nonexistent/keys.toml"}, "CHECKGATE_API_KEYS_FILE='/nonexistent/keys.toml'"),
        # Read at first use (the target policy at each request's validation, celeryconfig when the client
        # starts, …): checked at start all the same (the rest of them in-process, below).
        ({"CHECKGATE_ALLOW_NETWORKS": "garbage"}, "CHECKGATE_ALLOW_NETWORKS: 'garbage' does not appear"),
        ({"CHECKGATE_CA_DIRS": "certs"}, "CHECKGATE_CA_DIRS='certs': entry 1 ('certs') is not an absolute"),
        ({"CHECKGATE_QUEUE_TYPE": "x"}, "CHECKGATE_QUEUE_TYPE must be classic or quorum"),
        ({"CHECKGATE_DELIVERY_LIMIT": "x"}, "CHECKGATE_DELIVERY_LIMIT='x': expected an integer >= 1"),
        ({"CHECKGATE_LOCATIONS": "a b"}, "CHECKGATE_LOCATIONS: location 'a b' must be"),
        ({"CHECKGATE_CHECK_MODULES": "nope.mod"}, "CHECKGATE_CHECK_MODULES='nope.mod': No module named 'nope'"),
        ({"CHECKGATE_CONSOLE_CONFIG": "/nonexistent.toml"}, "CHECKGATE_CONSOLE_CONFIG: cannot read"),
    ],
)
def test_the_gateway_stops_at_start_with_one_line_and_status_2(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    done = start_gateway(tmp_path, **environ)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("checkgate gateway: "), done.stderr
    assert message in lines[0]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CHECKGATE_ALLOW_NETWORKS": "garbage"}, "CHECKGATE_ALLOW_NETWORKS: 'garbage' does not appear"),
        ({"CHECKGATE_DENY_NETWORKS": "10.0.0.0/33"}, "CHECKGATE_DENY_NETWORKS: "),
        ({"CHECKGATE_PROTECTED_ENDPOINTS": "garbage"}, "CHECKGATE_PROTECTED_ENDPOINTS: item 1 is not host:port"),
        ({"CHECKGATE_OPEN_DEPLOYMENT_HOSTS": "a b"}, "CHECKGATE_OPEN_DEPLOYMENT_HOSTS: item 1 is not a network"),
        ({"CHECKGATE_FLOWER_PORT": "x"}, "CHECKGATE_FLOWER_PORT: not a port"),
        ({"CHECKGATE_SUPERVISOR_PORT": "0"}, "CHECKGATE_SUPERVISOR_PORT: not a port"),
        ({"CHECKGATE_CA_DIRS": "/etc/ssl,/proc/self"}, "CHECKGATE_CA_DIRS='/etc/ssl,/proc/self': entry 2"),
        ({"CHECKGATE_TASK_API": "x.*", "CHECKGATE_TASK_API_MAX_TIMEOUT": "x"}, "CHECKGATE_TASK_API_MAX_TIMEOUT: "),
    ],
)
def test_settings_read_at_first_use_are_checked_at_start(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_read_later(environ)
    assert info.value.variable in environ and message in str(info.value)
    check_read_later({})  # the defaults pass


def test_a_bad_keys_file_is_named_with_its_entry(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[[keys]]\nname = "billing"\nsha256 = "' + "00" * 32 + '"\nchecks = "http"\n')
    done = start_gateway(tmp_path, CHECKGATE_API_KEYS_FILE=str(keys))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "CHECKGATE_API_KEYS_FILE=" in done.stderr
    assert "billing: checks must be a list of check type names" in done.stderr


def test_a_port_in_use_stops_the_start_with_one_line_naming_checkgate_port(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CHECKGATE_PORT": str(port),
        # Nothing listens there: the start does not wait for them (STARTUP_WAIT 0) and connects to nothing.
        "CHECKGATE_BROKER_URL": "amqp://u:p@127.0.0.1:1//",
        "CHECKGATE_RESULT_BACKEND": "redis://127.0.0.1:1/0",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import gateway.server as s; s.STARTUP_WAIT = 0; s.main()"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    expected = f"CHECKGATE_PORT={port}: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert last == f"checkgate gateway: {expected}"


@pytest.mark.parametrize(
    ("name", "value"),
    [("CHECKGATE_ALLOW_NETWORKS", "garbage"), ("CHECKGATE_PROTECTED_ENDPOINTS", "x"), ("CHECKGATE_CA_DIRS", "certs")],
)
def test_a_worker_stops_before_consuming_on_a_setting_its_checks_cannot_use(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str, value: str
) -> None:
    from tasks.celery import check_settings

    check_settings()  # the test deployment's own settings pass
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        check_settings()
    assert stopped.value.code == 78  # EX_CONFIG, as a worker left without a queue to consume
    assert [r.levelname for r in caplog.records] == ["CRITICAL"] and name in caplog.records[0].getMessage()
