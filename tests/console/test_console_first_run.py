"""The console `checkgate run` makes on a first run (issue #16): generated once, private, reused, overridable,
taken over by a config file, and answering this machine only.

The browser test (test_console_browser.py) logs in to it on a whole node started the way `checkgate run`
starts it; here are the generation's branches and the loopback rule, in process.
"""

from __future__ import annotations

import secrets
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.console.auth import hash_password, verify_password
from gateway.console.config import load_settings, parse_settings
from gateway.console.web import loopback_peer
from gateway.credentials import SetupError, console_config, console_env
from tests.console.cluster import ConsoleServer

PORT = "18888"


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_first_start_makes_a_private_admin_password_and_the_next_reuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = console_env(tmp_path, {"CHECKGATE_PORT": PORT, "CHECKGATE_NODE": "web-1"})
    credentials, config = tmp_path / "var" / "console-credentials", tmp_path / "var" / "console.toml"
    assert private(credentials) and private(config)
    user, _, password = credentials.read_text().strip().partition(":")
    assert user == "admin" and len(password) >= 20
    printed = capsys.readouterr().out
    assert f"console: http://127.0.0.1:{PORT}/console/ (user:password in {credentials}" in printed
    # The gateway gets the config file, which holds only the password's hash; no process gets the password.
    assert env["CHECKGATE_CONSOLE_CONFIG"] == str(config)
    assert "CHECKGATE_CONSOLE_PASSWORD" not in env
    assert password not in config.read_text()
    settings = load_settings(config, env)
    (node,) = settings.nodes
    assert (node.name, node.url) == ("web-1", f"unix://{tmp_path}/var/supervisor.sock")
    assert (node.username, node.password) == ("", "")  # an owner-only socket: no password to keep
    assert node.health_url == f"http://127.0.0.1:{PORT}/health"
    assert list(settings.users) == ["admin"] and settings.users["admin"].role == "admin"
    assert verify_password(password, settings.users["admin"].password_hash)
    assert settings.loopback_only and settings.audit_db == str(tmp_path / "var" / "console-audit.sqlite3")

    again = console_env(tmp_path, {"CHECKGATE_PORT": PORT, "CHECKGATE_NODE": "web-1"})
    assert credentials.read_text().strip() == f"admin:{password}"
    assert verify_password(password, load_settings(config, again).users["admin"].password_hash)


def test_the_environment_overrides_user_password_secret_and_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = secrets.token_urlsafe(32)
    given = {
        "CHECKGATE_CONSOLE_USER": "ops",
        "CHECKGATE_CONSOLE_PASSWORD": "given-password-1",
        "CHECKGATE_CONSOLE_SECRET": secret,
        "CHECKGATE_NODE": "edge-7",
    }
    env = console_env(tmp_path, given)
    assert not (tmp_path / "var" / "console-credentials").exists()
    assert "CHECKGATE_CONSOLE_PASSWORD" not in env
    assert "user and password from CHECKGATE_CONSOLE_USER/_PASSWORD" in capsys.readouterr().out
    settings = load_settings(env["CHECKGATE_CONSOLE_CONFIG"], env)
    assert verify_password("given-password-1", settings.users["ops"].password_hash)
    assert settings.secret == secret and settings.nodes[0].name == "edge-7"
    assert settings.nodes[0].health_url == "http://127.0.0.1:8888/health"  # CHECKGATE_PORT's default

    # A user named in the environment wins over the generated file's, which follows it (same password).
    console_env(tmp_path, {})
    password = (tmp_path / "var" / "console-credentials").read_text().strip().partition(":")[2]
    env = console_env(tmp_path, {"CHECKGATE_CONSOLE_USER": "root-ops"})
    assert (tmp_path / "var" / "console-credentials").read_text().strip() == f"root-ops:{password}"
    user = load_settings(env["CHECKGATE_CONSOLE_CONFIG"], env).users["root-ops"]
    assert verify_password(password, user.password_hash)

    for bad in ("a b", "-dash", "x" * 65, "a:b"):
        with pytest.raises(ValueError, match="CHECKGATE_CONSOLE_USER"):
            console_env(tmp_path, {"CHECKGATE_CONSOLE_USER": bad})
    # A node name the console could not take (a long host name, say) becomes "local".
    env = console_env(tmp_path, {"CHECKGATE_NODE": "n" * 70})
    assert load_settings(env["CHECKGATE_CONSOLE_CONFIG"], env).nodes[0].name == "local"
    with pytest.raises(SetupError, match="at least 32"):
        console_env(tmp_path, {"CHECKGATE_CONSOLE_SECRET": "short"})


def test_a_given_config_file_takes_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    own = tmp_path / "etc" / "console.toml"
    own.parent.mkdir()
    health = "http://10.0.0.1:8888/health"
    own.write_text(console_config(tmp_path / "elsewhere", "far-1", "alice", hash_password("pw"), health, "s" * 32))
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    env = console_env(home, {"CHECKGATE_CONSOLE_CONFIG": "etc/console.toml", "CHECKGATE_CONSOLE_PASSWORD": "unused"})
    # Made absolute: the gateway reads it from the home, not from the directory `checkgate run` ran in.
    assert env["CHECKGATE_CONSOLE_CONFIG"] == str(own)
    assert "CHECKGATE_CONSOLE_PASSWORD" not in env
    assert not (home / "var").exists()  # nothing generated
    assert f"from {own}" in capsys.readouterr().out
    # Its own file is checked before supervisord starts, with the console's message.
    own.write_text(own.read_text().replace('role = "admin"', 'role = "root"'))
    with pytest.raises(SetupError, match=r"CHECKGATE_CONSOLE_CONFIG: .*console.toml: users\[0\] \(alice\): role"):
        console_env(home, {"CHECKGATE_CONSOLE_CONFIG": str(own)})
    with pytest.raises(SetupError, match="cannot read"):
        console_env(home, {"CHECKGATE_CONSOLE_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("bind", "health"),
    [
        ("127.0.0.1", f"http://127.0.0.1:{PORT}/health"),
        ("127.0.0.2", f"http://127.0.0.2:{PORT}/health"),
        ("0.0.0.0", f"http://127.0.0.1:{PORT}/health"),
        ("::", f"http://[::1]:{PORT}/health"),
        ("::1", f"http://[::1]:{PORT}/health"),
        ("localhost", f"http://127.0.0.1:{PORT}/health"),
        ("10.1.2.3", None),
        ("2001:db8::5", None),
        ("gateway.internal", None),
    ],
)
def test_the_generated_console_exists_only_where_the_gateway_listens_on_loopback(
    tmp_path: Path, bind: str, health: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    env = console_env(tmp_path, {"CHECKGATE_BIND": bind, "CHECKGATE_PORT": PORT, "CHECKGATE_CONSOLE_PASSWORD": "p"})
    assert "CHECKGATE_CONSOLE_PASSWORD" not in env
    if health is None:
        assert "CHECKGATE_CONSOLE_CONFIG" not in env and not (tmp_path / "var").exists()
        assert f"console: off (the gateway listens on {bind}" in capsys.readouterr().out
    else:
        settings = load_settings(env["CHECKGATE_CONSOLE_CONFIG"], env)
        assert settings.nodes[0].health_url == health and settings.loopback_only


def test_the_generated_file_holds_any_path_exactly(tmp_path: Path) -> None:
    home = tmp_path / 'q"uote\\back\x7fdel\ttab é'
    text = console_config(home, "n", "u", "scrypt$x", "http://127.0.0.1:1/health", "s" * 32)
    raw = tomllib.loads(text)
    assert raw["nodes"][0]["url"] == f"unix://{home}/var/supervisor.sock"
    assert raw["audit_db"] == f"{home}/var/console-audit.sqlite3"


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.7", False),
        ("192.168.1.2", False),
        ("::ffff:10.0.0.7", False),
        ("2001:db8::1", False),
        ("0.0.0.0", False),  # what Tornado says for a unix socket's peer
        ("", False),
        (None, False),
        ("localhost", False),
    ],
)
def test_loopback_peer(address: str | None, local: bool) -> None:
    assert loopback_peer(address) is local


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, str]]:
    """Two consoles of one node: loopback_only and not; X-Real-IP names the peer (see ConsoleServer)."""
    tmp = tmp_path_factory.mktemp("loopback")
    started = {}
    try:
        for only in (True, False):
            raw = {
                "secret": secrets.token_urlsafe(32),
                "loopback_only": only,
                "audit_db": str(tmp / f"audit-{only}.sqlite3"),
                "nodes": [{"name": "local", "url": f"unix://{tmp}/absent.sock"}],
                "users": [{"name": "op", "password_hash": hash_password("op-pw", "pbkdf2_sha256", 1000)}],
            }
            started[only] = ConsoleServer(parse_settings(raw, tmp, {}), xheaders=True).start()
        yield {only: server.base for only, server in started.items()}
    finally:
        for server in started.values():
            server.stop()


def test_a_loopback_only_console_answers_nothing_to_another_machine(servers: dict[bool, str]) -> None:
    far, mapped = {"X-Real-IP": "10.0.0.7"}, {"X-Real-IP": "::ffff:127.0.0.1"}
    base = servers[True]
    for path in ("", "/", "/login", "/api/state", "/static/console.css", "/audit", "/events"):
        refused = requests.get(base + path, headers=far, timeout=10, allow_redirects=False)
        assert refused.status_code == 403, (path, refused.status_code)
        assert "answers connections from its own machine only" in refused.text or path == "/static/console.css"
    login = requests.post(base + "/login", headers=far, data={"name": "op", "password": "op-pw"}, timeout=10)
    assert login.status_code == 403 and "checkgate_console" not in login.cookies
    for headers in ({}, mapped):
        assert requests.get(base + "/login", headers=headers, timeout=10).status_code == 200
        assert requests.get(base + "/static/console.css", headers=headers, timeout=10).status_code == 200
    # A console without the flag (an operator's own config) is unchanged: its peers are its proxy's business.
    assert requests.get(servers[False] + "/login", headers=far, timeout=10).status_code == 200
