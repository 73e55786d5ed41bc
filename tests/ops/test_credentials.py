"""Credentials of the stack's own services (issue #11): its Redis asks a password, its RabbitMQ account is
its own; generated once, private, reused, and overridden by the operator's URLs.

The RabbitMQ tests make RANDOM vhosts and users on the shared broker and delete them even when they fail;
nothing else of that broker (guest, other vhosts) is touched.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import amqp
import pytest
import redis

from gateway.credentials import SetupError, ensure_broker_account, rabbitmq_env, redis_env
from tests.ops.conftest import Deployment
from tests.ops.helpers import (
    BrokerAccounts,
    Procs,
    Supervisord,
    conf_sections,
    usable_rabbitmqctl,
    wait_for,
)
from tests.ops.probes import BEAT_KEY
from tests.support.infra import require
from tests.support.stack import free_port


def raw_redis(port: int, command: bytes) -> bytes:
    """Send one inline command to 127.0.0.1:`port` without logging in; the first reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command + b"\r\n")
        return sock.makefile("rb").readline()


def own_redis_env() -> dict[str, str]:
    """This process's environment without the tests' result backend (which would replace the stack's Redis)."""
    return {k: v for k, v in os.environ.items() if k != "CHECKGATE_RESULT_BACKEND"}


def amqp_login(user: str, password: str, vhost: str) -> None:
    """Log in to the shared broker and close; raises what py-amqp raises."""
    connection = amqp.Connection(
        host="127.0.0.1:5672", userid=user, password=password, virtual_host=vhost, connect_timeout=5
    )
    try:
        connection.connect()
    finally:
        connection.collect()


# --- Redis -------------------------------------------------------------------------------------------


def test_redis_credentials_are_generated_once_private_and_only_hashed_in_its_config(tmp_path: Path) -> None:
    port = str(free_port())
    env = redis_env(tmp_path, {"CHECKGATE_REDIS_PORT": port})
    var = tmp_path / "var"
    user, password = env["CHECKGATE_REDIS_USER"], env["CHECKGATE_REDIS_PASSWORD"]
    assert (user, len(password) >= 20) == ("checkgate", True)
    assert env["CHECKGATE_RESULT_BACKEND"] == f"redis://checkgate:{password}@127.0.0.1:{port}/0"
    assert env["CHECKGATE_REDIS_NUMPROCS"] == "1"
    for private in (var / "redis-credentials", var / "redis.conf"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert stat.S_IMODE((var / "redis").stat().st_mode) == 0o700
    conf = (var / "redis.conf").read_text()
    assert password not in conf
    assert f"user checkgate on #{hashlib.sha256(password.encode()).hexdigest()} " in conf
    assert "user default off" in conf and 'save ""' in conf and f"port {port}\n" in conf

    again = redis_env(tmp_path, {"CHECKGATE_REDIS_PORT": port})
    assert again["CHECKGATE_RESULT_BACKEND"] == env["CHECKGATE_RESULT_BACKEND"]
    assert (var / "redis.conf").read_text() == conf
    # A user named later wins over the file's and the file follows it, password kept.
    renamed = redis_env(tmp_path, {"CHECKGATE_REDIS_PORT": port, "CHECKGATE_REDIS_USER": "ops"})
    assert renamed["CHECKGATE_RESULT_BACKEND"] == f"redis://ops:{password}@127.0.0.1:{port}/0"
    assert (var / "redis-credentials").read_text() == f"ops:{password}\n"
    assert stat.S_IMODE((var / "redis-credentials").stat().st_mode) == 0o600
    assert "user ops on #" in (var / "redis.conf").read_text()


def test_the_operators_redis_is_used_as_given_and_nothing_is_generated(tmp_path: Path) -> None:
    given = {"CHECKGATE_RESULT_BACKEND": "redis://:theirs@10.0.0.5:6379/2"}
    env = redis_env(tmp_path, given)
    assert env["CHECKGATE_RESULT_BACKEND"] == given["CHECKGATE_RESULT_BACKEND"]
    assert env["CHECKGATE_REDIS_NUMPROCS"] == "0"  # no [program:redis] process at all
    assert not (tmp_path / "var").exists()
    # A password given for the stack's own Redis is used, not written anywhere.
    port = str(free_port())
    env = redis_env(tmp_path, {"CHECKGATE_REDIS_PORT": port, "CHECKGATE_REDIS_PASSWORD": "given pw/1"})
    assert env["CHECKGATE_RESULT_BACKEND"] == f"redis://checkgate:given%20pw%2F1@127.0.0.1:{port}/0"
    assert not (tmp_path / "var" / "redis-credentials").exists()
    assert redis.Redis.from_url(env["CHECKGATE_RESULT_BACKEND"]).connection_pool.connection_kwargs["password"] == (
        "given pw/1"
    )


def test_redis_env_refuses_a_port_in_use_and_bad_values(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SetupError, match="CHECKGATE_REDIS_PORT"):
            redis_env(tmp_path, {"CHECKGATE_REDIS_PORT": str(taken.getsockname()[1])})
    with pytest.raises(ValueError, match="CHECKGATE_REDIS_USER"):
        redis_env(tmp_path, {"CHECKGATE_REDIS_USER": "a b", "CHECKGATE_REDIS_PORT": str(free_port())})
    for port in ("0", "65536", "6388x", ""):
        with pytest.raises(ValueError, match="CHECKGATE_REDIS_PORT"):
            redis_env(tmp_path, {"CHECKGATE_REDIS_PORT": port})
    with pytest.raises(ValueError, match="CHECKGATE_REDIS_MAXMEMORY"):
        redis_env(tmp_path, {"CHECKGATE_REDIS_MAXMEMORY": "1gb\nuser x on", "CHECKGATE_REDIS_PORT": "1"})


def test_the_redis_program_asks_every_client_for_its_password(tmp_path: Path) -> None:
    """The shipped [program:redis] under a real supervisord: NOAUTH without the password, settings of a
    result store with it, and no password on its command line."""
    sup = Supervisord(conf_sections("program:redis"), {})
    port = free_port()
    try:
        sup.env = redis_env(sup.home, {**own_redis_env(), "CHECKGATE_REDIS_PORT": str(port)})
        password = sup.env["CHECKGATE_REDIS_PASSWORD"]
        sup.start()
        info = sup.wait_state("redis", "RUNNING")
        wait_for(lambda: raw_redis(port, b"PING").startswith(b"-"), 10, "redis to answer")
        assert raw_redis(port, b"PING").startswith(b"-NOAUTH")
        assert raw_redis(port, b"SET celery-task-meta-forged x").startswith(b"-NOAUTH")
        assert raw_redis(port, b"AUTH guessed").startswith(b"-WRONGPASS")
        client = redis.Redis.from_url(sup.env["CHECKGATE_RESULT_BACKEND"], decode_responses=True)
        assert client.ping()
        settings = {key: client.config_get(key)[key] for key in ("save", "appendonly", "maxmemory-policy", "bind")}
        assert settings == {"save": "", "appendonly": "no", "maxmemory-policy": "volatile-lru", "bind": "127.0.0.1"}
        assert client.config_get("dir")["dir"] == str(sup.home / "var" / "redis")
        client.close()
        cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes()
        assert cmdline.startswith(b"redis-server") and password.encode() not in cmdline
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert password not in ps
    finally:
        sup.shutdown()


def test_without_its_own_redis_the_program_does_not_exist(tmp_path: Path) -> None:
    sup = Supervisord(conf_sections("program:redis"), {})
    try:
        sup.env = redis_env(sup.home, {**own_redis_env(), "CHECKGATE_RESULT_BACKEND": "redis://127.0.0.1:1/0"})
        sup.start()
        assert sup.rpc.getAllProcessInfo() == []
    finally:
        sup.shutdown()


# --- RabbitMQ ----------------------------------------------------------------------------------------


@pytest.fixture
def accounts() -> Iterator[BrokerAccounts]:
    ctl = usable_rabbitmqctl()
    if ctl is None:
        require("rabbitmqctl cannot reach the local RabbitMQ node (run as root)")
    made = BrokerAccounts(ctl)
    try:
        yield made
    finally:
        made.delete()


def test_the_broker_account_is_made_once_for_its_vhost_only(tmp_path: Path, accounts: BrokerAccounts) -> None:
    vhost, user = accounts.new("acct")
    # A rabbitmqctl that records its command lines, so we see what `ps` could have seen.
    argv_log = tmp_path / "argv.log"
    recorder = tmp_path / "rabbitmqctl"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec {accounts.ctl} "$@"\n')
    recorder.chmod(0o700)
    given = {"CHECKGATE_RABBITMQ_VHOST": vhost, "CHECKGATE_RABBITMQ_USER": user}

    env = rabbitmq_env(tmp_path, given, rabbitmqctl=str(recorder))
    secret = tmp_path / "var" / "rabbitmq-credentials"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    password = env["CHECKGATE_RABBITMQ_PASSWORD"]
    assert secret.read_text().strip() == f"{user}:{password}" and len(password) >= 20
    assert env["CHECKGATE_BROKER_URL"] == f"amqp://{user}:{password}@127.0.0.1:5672/{vhost}"
    amqp_login(user, password, vhost)
    # Permissions on its vhost only; guest (untouched) cannot use that vhost.
    with pytest.raises((amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed)):
        amqp_login(user, password, "/")
    with pytest.raises((amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed)):
        amqp_login("guest", "guest", vhost)
    granted = accounts.run("list_user_permissions", user).stdout.splitlines()[1:]  # below the header
    assert granted == [f"{vhost}\t.*\t.*\t.*"]
    assert "add_vhost" in argv_log.read_text() and password not in argv_log.read_text()

    # A second start reuses the file and the account (and still passes the password on stdin only).
    assert (
        rabbitmq_env(tmp_path, given, rabbitmqctl=str(recorder))["CHECKGATE_BROKER_URL"] == env["CHECKGATE_BROKER_URL"]
    )
    assert "authenticate_user" in argv_log.read_text() and password not in argv_log.read_text()
    # Without a usable rabbitmqctl, an account that exists passes by logging in.
    ensure_broker_account(user, password, vhost, rabbitmqctl=str(tmp_path / "no-rabbitmqctl"))

    # A user of that name with another password is another deployment's: refused, and left as it is.
    with pytest.raises(SetupError, match="already exists with another password"):
        ensure_broker_account(user, "not-the-password", vhost, rabbitmqctl=accounts.ctl)
    amqp_login(user, password, vhost)


def test_the_operators_broker_url_is_used_as_given(tmp_path: Path) -> None:
    given = {"CHECKGATE_BROKER_URL": "amqp://theirs:pw@10.0.0.5:5672/prod"}
    assert (
        rabbitmq_env(tmp_path, given, rabbitmqctl=str(tmp_path / "never-called"))["CHECKGATE_BROKER_URL"]
        == (given["CHECKGATE_BROKER_URL"])
    )
    assert not (tmp_path / "var").exists()


def test_an_account_that_cannot_be_made_is_a_loud_error_naming_the_override(tmp_path: Path) -> None:
    """No rabbitmqctl (not root, say) and no such account: `checkgate run` refuses with what to do."""
    ctl = str(tmp_path / "no-rabbitmqctl")
    with pytest.raises(SetupError) as refused:
        ensure_broker_account("cgtest-none", "pw-never-shown", "cgtest-none", rabbitmqctl=ctl)
    message = str(refused.value)
    assert "rabbitmqctl" in message and "CHECKGATE_BROKER_URL=amqp://" in message
    assert "rabbitmqctl add_user cgtest-none" in message and "pw-never-shown" not in message


def test_after_the_stacks_redis_restarts_empty_beat_sets_its_schedule_up_again(deployment: Deployment) -> None:
    """The stack's Redis keeps nothing on disk (`save ""`): a restart loses beat's schedule and lock, and
    beat must come back by itself and fire again."""
    tag = f"{deployment.prefix}restart"
    schedule = deployment.workdir / "schedule.toml"
    schedule.write_text(f'[checks.probe]\ntype = "beat_probe"\nevery = "1s"\nparams = {{ tag = "{tag}" }}\n')
    sections = conf_sections("program:redis", "program:beat", overrides={"program:beat": {"startsecs": "1"}})
    sup = Supervisord(sections.replace("celery -A tasks beat", "celery -A tests.ops.beatapp beat"), {})
    env = {k: v for k, v in deployment.env.items() if k != "CHECKGATE_RESULT_BACKEND"}
    env.update(CHECKGATE_SCHEDULE=str(schedule), CHECKGATE_REDIS_PORT=str(free_port()))
    procs = Procs(deployment.workdir)
    client: redis.Redis | None = None
    try:
        sup.env = redis_env(sup.home, env)
        sup.start()
        sup.wait_state("redis", "RUNNING")
        worker = [sys.executable, "-m", "celery", "-A", "tests.ops.beatapp", "worker", "-P", "threads", "-c", "4"]
        worker += ["-Q", f"{deployment.prefix}beatprobe", "--without-gossip", "--without-mingle", "-l", "info"]
        procs.spawn("worker", worker, sup.env)
        client = redis.Redis.from_url(sup.env["CHECKGATE_RESULT_BACKEND"])
        runs = BEAT_KEY + tag
        wait_for(lambda: client.llen(runs) >= 1, 60, lambda: "a first run: " + sup.log("beat.log")[-1500:])

        beat_pid = sup.info("beat")["pid"]
        sup.rpc.stopProcess("redis")
        sup.rpc.startProcess("redis")
        assert client.dbsize() == 0  # nothing came back from disk
        wait_for(lambda: client.llen(runs) >= 1, 60, lambda: "a run after the restart: " + sup.log("beat.log")[-2500:])
        assert client.exists(f"checkgate:{deployment.prefix}beat::lock")
        # How: beat found its lock gone (LockNotOwnedError), exited, and supervisord started it again.
        assert sup.info("beat")["pid"] != beat_pid
        assert "LockNotOwnedError" in sup.log("beat.log")
    finally:
        procs.stop()
        if client is not None:
            client.close()
        sup.shutdown()


def test_checkgate_urls_prints_the_urls_the_node_runs_with(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main as cli_main

    env = {"CHECKGATE_HOME": str(tmp_path)}
    with pytest.MonkeyPatch.context() as patch:
        for name in ("CHECKGATE_BROKER_URL", "CHECKGATE_RESULT_BACKEND", "CHECKGATE_REDIS_PORT"):
            patch.delenv(name, raising=False)
        patch.setenv("CHECKGATE_HOME", str(tmp_path))
        # Before the node ever started here: nothing to print, nothing made.
        assert cli_main(["urls"]) == 2
        assert "start the node once" in capsys.readouterr().err and not (tmp_path / "var").exists()
        port = str(free_port())
        redis_url = redis_env(tmp_path, {**env, "CHECKGATE_REDIS_PORT": port})["CHECKGATE_RESULT_BACKEND"]
        (tmp_path / "var" / "rabbitmq-credentials").write_text("checkgate:s3cret\n")
        capsys.readouterr()  # redis_env's own line
        patch.setenv("CHECKGATE_REDIS_PORT", port)
        assert cli_main(["urls"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "CHECKGATE_BROKER_URL=amqp://checkgate:s3cret@127.0.0.1:5672/checkgate",
            f"CHECKGATE_RESULT_BACKEND={redis_url}",
        ]
        patch.setenv("CHECKGATE_BROKER_URL", "amqp://u:p w@mq:5672/v")
        assert cli_main(["urls", "--export"]) == 0
        assert capsys.readouterr().out.splitlines()[0] == "export CHECKGATE_BROKER_URL='amqp://u:p w@mq:5672/v'"
