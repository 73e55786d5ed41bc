"""Console configuration and password hashing: safe by default, refusing what is unsafe."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
import tornado.httputil
import tornado.web

from gateway.console import Console, console_routes
from gateway.console.audit import AuditLog
from gateway.console.auth import check_login, hash_password, verify_password
from gateway.console.config import load_settings
from gateway.nodes import ConfigError

SECRET = "x" * 40
TOML = """
poll_interval = 1.5
[[nodes]]
name = "web-1"
url = "http://checkgate:{password}@10.0.0.5:9001/RPC2"
tags = ["web"]
health_url = "http://10.0.0.5:8888/health"

[[groups]]
name = "workers"
programs = ["workers:*"]

[[users]]
name = "alice"
password_hash = "{hash}"
role = "admin"
"""


def write(tmp_path: Path, text: str, name: str = "console.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_toml_config_loads_and_keeps_credentials_out_of_the_url(tmp_path: Path) -> None:
    path = write(tmp_path, TOML.format(password="s3cret", hash=hash_password("pw")))
    settings = load_settings(path, {"CHECKGATE_CONSOLE_SECRET": SECRET})
    node = settings.nodes[0]
    assert (node.url, node.username, node.password) == ("http://10.0.0.5:9001/RPC2", "checkgate", "s3cret")
    assert node.address == "10.0.0.5:9001" and node.tags == ("web",)
    assert settings.poll_interval == 1.5 and settings.groups[0].patterns == ("workers:*",)
    assert settings.audit_db == str(tmp_path / "var" / "console-audit.sqlite3")


def test_the_shipped_example_config_loads(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "gateway" / "console" / "console.example.toml"
    text = example.read_text().replace("scrypt$16384$8$1$…", hash_password("pw"))
    env = {
        "CHECKGATE_CONSOLE_SECRET": SECRET,
        "CHECKGATE_NODE_WEB1_PASSWORD": "a",
        "CHECKGATE_NODE_WORKER1_PASSWORD": "b",
    }
    settings = load_settings(write(tmp_path, text), env)
    assert [n.name for n in settings.nodes] == ["web-1", "worker-1"] and settings.nodes[1].password == "b"
    assert [g.name for g in settings.groups] == ["celery-http", "gateways"] and settings.users["alice"].role == "admin"


def test_json_config_and_password_from_the_environment(tmp_path: Path) -> None:
    doc = {
        "secret": SECRET,
        "nodes": [{"name": "n1", "url": "http://127.0.0.1:9001/RPC2", "username": "u", "password_env": "NODE_PW"}],
        "users": [{"name": "bob", "password_hash": hash_password("pw", "pbkdf2_sha256", 1000), "role": "viewer"}],
    }
    settings = load_settings(write(tmp_path, json.dumps(doc), "console.json"), {"NODE_PW": "from-env"})
    assert settings.nodes[0].password == "from-env"


@pytest.mark.parametrize(
    ("env", "problem"),
    [({}, "secret"), ({"CHECKGATE_CONSOLE_SECRET": "short"}, "secret")],
)
def test_the_console_refuses_to_start_without_a_secret(tmp_path: Path, env: dict, problem: str) -> None:
    path = write(tmp_path, TOML.format(password="p", hash=hash_password("pw")))
    with pytest.raises(ConfigError, match=problem):
        Console.from_env({"CHECKGATE_CONSOLE_CONFIG": str(path), **env})


def test_no_config_means_no_console() -> None:
    assert Console.from_env({}) is None


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: t.replace('role = "admin"', 'role = "root"'), "role"),
        (lambda t: t.replace('name = "web-1"', 'name = "../x"'), "name"),
        (lambda t: t.replace("http://checkgate", "file://checkgate"), "url"),
        (lambda t: t.replace("poll_interval = 1.5", "poll_interval = -1"), "poll_interval"),
        (lambda t: t.replace('password_hash = "', 'password_hash = "plain'), "password_hash"),
    ],
)
def test_bad_configs_are_refused(tmp_path: Path, edit, problem: str) -> None:
    path = write(tmp_path, edit(TOML.format(password="p", hash=hash_password("pw"))))
    with pytest.raises(ConfigError, match=problem):
        load_settings(path, {"CHECKGATE_CONSOLE_SECRET": SECRET})


def test_password_hashes_are_salted_and_checked() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and first.startswith("scrypt$")
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct horse!", first)
    assert not verify_password("x", "scrypt$broken") and not verify_password("x", "md5$abc")
    pbkdf2 = hash_password("pw", "pbkdf2_sha256", iterations=1000)  # the default (600,000) costs ~1 s here
    assert verify_password("pw", pbkdf2) and not verify_password("pw2", pbkdf2)


def test_an_unknown_user_costs_as_much_as_a_wrong_password(tmp_path: Path) -> None:
    from gateway.console.config import UserConfig

    users = {"alice": UserConfig("alice", hash_password("pw"), "admin")}
    timings = {}
    for name in ("alice", "nobody"):
        started = time.perf_counter()
        assert check_login(users, name, "wrong") is None
        timings[name] = time.perf_counter() - started
    assert timings["nobody"] > timings["alice"] / 3


def test_console_mounts_on_the_gateway_app(tmp_path: Path) -> None:
    """The wiring server.py uses: the gateway's own Application plus `add_handlers`."""
    from gateway.aiocelery import CeleryClient
    from gateway.config import Settings
    from gateway.http_api import make_app
    from gateway.server import celery_client_app
    from gateway.state import Gateway

    celery_app = celery_client_app()

    path = write(tmp_path, TOML.format(password="p", hash=hash_password("pw")))
    console = Console.from_env({"CHECKGATE_CONSOLE_CONFIG": str(path), "CHECKGATE_CONSOLE_SECRET": SECRET})
    assert console is not None
    app = make_app(Gateway(client=CeleryClient(celery_app), settings=Settings(), checks={}, queues={}))
    app.add_handlers(r".*", console_routes(console))
    for path, handler in (("/console/login", "LoginHandler"), ("/health", "HealthHandler")):
        start_line = tornado.httputil.RequestStartLine("GET", path, "HTTP/1.1")
        headers = tornado.httputil.HTTPHeaders({"Host": "127.0.0.1"})
        request = tornado.httputil.HTTPServerRequest(start_line=start_line, headers=headers)
        assert app.find_handler(request).handler_class.__name__ == handler
    assert isinstance(console_routes(console)[0], tornado.web.URLSpec)
    console.audit.close()


def test_the_audit_log_and_its_wal_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "console-audit.sqlite3"
    audit = AuditLog(path)
    audit.record("op", "operator", "127.0.0.1", "restart", "node-a/app", "ok")
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), [oct(f.stat().st_mode) for f in files]
    # A node's older, world-readable log is narrowed at the next start.
    older = tmp_path / "older.sqlite3"
    older.touch(mode=0o644)
    older.chmod(0o644)
    AuditLog(older)
    assert stat.S_IMODE(older.stat().st_mode) == 0o600
