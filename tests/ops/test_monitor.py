"""The proposed `[group:monitor]` (Flower, beat) and `[eventlistener:alerts]` sections under a real supervisord."""

from __future__ import annotations

import base64
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from gateway.credentials import flower_env
from tests.ops.conftest import Deployment
from tests.ops.helpers import Supervisord, conf_sections, wait_for
from tests.support.env import BACKEND_URL
from tests.support.stack import free_port


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_flower_and_beat_run_under_supervisord(deployment: Deployment) -> None:
    schedule = deployment.workdir / "schedule.toml"
    tag = f"{deployment.prefix}monitor"
    schedule.write_text(f'[checks.probe]\ntype = "beat_probe"\nevery = "1s"\nparams = {{ tag = "{tag}" }}\n')
    sections = conf_sections("eventlistener:alerts", "group:monitor", "program:flower", "program:beat")
    # The test app: the proposed celeryconfig lines with a 1 s loop (celery -A tasks once they are merged).
    sections = sections.replace("celery -A tasks beat", "celery -A tests.ops.beatapp beat")
    sup = Supervisord(sections, {})
    env = {**deployment.env, "CHECKGATE_SCHEDULE": str(schedule), "CHECKGATE_FLOWER_PORT": str(free_port())}
    env.pop("CHECKGATE_FLOWER_PASSWORD", None)
    sup.env = flower_env(sup.home, env)  # what `checkgate run` will do: a generated password in var/
    sup.start()
    client = redis.Redis.from_url(BACKEND_URL, decode_responses=True)
    try:
        for name in ("alerts", "monitor:flower", "monitor:beat"):
            sup.wait_state(name, "RUNNING", timeout=30)

        user, password = (sup.home / "var" / "flower-credentials").read_text().strip().split(":", 1)
        flower = f"http://127.0.0.1:{sup.env['CHECKGATE_FLOWER_PORT']}/"
        wait_for(lambda: http_status(flower) == 401, 20, "Flower to ask for a password")
        assert http_status(flower, (user, "wrong")) == 401
        assert http_status(flower, (user, password)) == 200
        cmdline = Path(f"/proc/{sup.info('monitor:flower')['pid']}/cmdline").read_bytes()
        assert b"--port" in cmdline and password.encode() not in cmdline  # not visible in ps

        lock = f"checkgate:{deployment.prefix}beat::lock"
        wait_for(lambda: "Sending due task probe" in sup.log("beat.log"), 20, lambda: sup.log("beat.log")[-2000:])
        assert "beat: 1 scheduled checks from" in sup.log("beat.log")
        assert client.exists(lock)
        # A supervisord stop (TERM) makes beat release its lock, so another node's beat takes over at once.
        sup.rpc.stopProcess("monitor:beat", False)
        sup.wait_state("monitor:beat", "STOPPED")
        assert "beat: Releasing lock" in sup.log("beat.log")
        assert not client.exists(lock)
    finally:
        sup.shutdown()
        client.close()


def test_flower_password_is_generated_once_private_and_validated(tmp_path: Path) -> None:
    env = flower_env(tmp_path, {})
    secret = tmp_path / "var" / "flower-credentials"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert (env["CHECKGATE_FLOWER_USER"], env["CHECKGATE_FLOWER_PORT"]) == ("checkgate", "5555")
    assert len(env["CHECKGATE_FLOWER_PASSWORD"]) >= 20
    assert flower_env(tmp_path, {})["CHECKGATE_FLOWER_PASSWORD"] == env["CHECKGATE_FLOWER_PASSWORD"]
    given = flower_env(tmp_path, {"CHECKGATE_FLOWER_USER": "ops", "CHECKGATE_FLOWER_PASSWORD": "pw"})
    assert (given["CHECKGATE_FLOWER_USER"], given["CHECKGATE_FLOWER_PASSWORD"]) == ("ops", "pw")
    with pytest.raises(ValueError, match="CHECKGATE_FLOWER_USER"):
        flower_env(tmp_path, {"CHECKGATE_FLOWER_USER": "ops", "CHECKGATE_FLOWER_PASSWORD": "a,b"})
