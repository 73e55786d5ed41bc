"""The one `[[nodes]]` parser (gateway/nodes.py), as the console and `checkgate status` both read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.console.auth import hash_password
from gateway.console.config import load_settings
from gateway.nodes import ConfigError, NodeConfig, load_nodes, parse_nodes

BASE = Path("/etc/checkgate")


def parse(*entries: dict, env: dict[str, str] | None = None) -> tuple[NodeConfig, ...]:
    return parse_nodes({"nodes": list(entries)}, BASE, env or {})


def test_unix_sockets_absolute_and_relative_to_the_config_file() -> None:
    absolute, relative = parse(
        {"name": "local", "url": "unix:///srv/checkgate/var/supervisor.sock"},
        {"name": "beside", "url": "unix://var/supervisor.sock", "username": "u", "password": "p"},
    )
    assert absolute.url == "unix:///srv/checkgate/var/supervisor.sock"
    assert absolute.socket_path == absolute.address == "/srv/checkgate/var/supervisor.sock"
    assert relative.url == "unix:///etc/checkgate/var/supervisor.sock"
    assert (relative.username, relative.password) == ("u", "p")


def test_http_credentials_come_out_of_the_url() -> None:
    (node,) = parse({"name": "web-1", "url": "http://checkgate:s3cret@10.0.0.5:9001"})
    assert (node.url, node.username, node.password) == ("http://10.0.0.5:9001/RPC2", "checkgate", "s3cret")
    assert node.address == "10.0.0.5:9001" and node.socket_path is None
    # Explicit keys win over the URL's; https keeps its own path.
    (node,) = parse({"name": "w", "url": "https://a:b@h.example:443/x/RPC2", "username": "c", "password": "d"})
    assert (node.url, node.username, node.password) == ("https://h.example:443/x/RPC2", "c", "d")


def test_password_env_and_tags() -> None:
    entry = {"name": "n1", "url": "http://127.0.0.1:9001", "username": "u", "password_env": "NODE_PW", "tags": "web"}
    (node,) = parse(entry, env={"NODE_PW": "from-env"})
    assert (node.password, node.tags) == ("from-env", ("web",))


@pytest.mark.parametrize(
    ("entry", "env", "message"),
    [
        ({"name": "a", "url": "http://h:1", "password_env": "UNSET"}, {}, "nodes[0] (a): environment variable UNSET"),
        ({"name": "a", "url": "http://h:1", "password_env": "EMPTY"}, {"EMPTY": ""}, "nodes[0] (a): environment"),
        ({"name": "a"}, {}, "nodes[0] (a): 'url' must be a non-empty string"),
        ({"url": "http://h:1"}, {}, "nodes[0]: 'name' must be a non-empty string"),
        ({"name": "../x", "url": "http://h:1"}, {}, "nodes[0]: name '../x'"),
        (
            {"name": "a", "url": "file:///etc/passwd"},
            {},
            "nodes[0] (a): url must be http(s)://host:port/RPC2 or unix://",
        ),
        ({"name": "a", "url": "http:///RPC2"}, {}, "nodes[0] (a): url must be"),
        ({"name": "a", "url": "unix://"}, {}, "nodes[0] (a): url 'unix://' names no socket file"),
        ({"name": "a", "url": "http://h:99999"}, {}, "nodes[0] (a): url 'h:99999' has a bad port"),
        ({"name": "a", "url": "http://h:1", "tags": [1]}, {}, "nodes[0] (a): 'tags' must be a list of strings"),
        ({"name": "a", "url": "http://h:1", "password": 5}, {}, "nodes[0] (a): 'password' must be a non-empty"),
        ({"name": "a", "url": "http://h:1", "health_url": "ftp://h/"}, {}, "nodes[0] (a): health_url"),
    ],
)
def test_a_bad_entry_is_named(entry: dict, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(entry, env=env)
    assert message in str(caught.value)


def test_a_bad_url_is_not_echoed_with_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"name": "a", "url": "http://u:hunter2@h:99999"})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "lists no [[nodes]]"),
        ({"nodes": "web-1"}, "'nodes' must be an array of tables"),
        ({"nodes": [{"name": "a", "url": "http://h:1"}, {"name": "a", "url": "http://h:2"}]}, "nodes[1] (a): another"),
    ],
)
def test_the_list_itself(document: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_nodes(document, BASE, {})


def test_load_nodes_names_the_file_and_reads_json(tmp_path: Path) -> None:
    path = tmp_path / "console.json"
    path.write_text(json.dumps({"nodes": [{"name": "s", "url": "unix://sock"}], "users": "ignored here"}))
    (node,) = load_nodes(path, {})
    assert node.url == f"unix://{tmp_path}/sock"
    path.write_text("{")
    with pytest.raises(ConfigError, match="cannot read"):
        load_nodes(path, {})
    bad = tmp_path / "bad.toml"
    bad.write_text('[[nodes]]\nname = "a"\n')
    with pytest.raises(ConfigError) as caught:
        load_nodes(bad, {})
    assert str(caught.value) == f"{bad}: nodes[0] (a): 'url' must be a non-empty string"


def test_the_console_reads_the_same_rules(tmp_path: Path) -> None:
    """One parser: a unix:// node the console refused before is a node of the console now, and a
    console error names the file and the entry."""
    path = tmp_path / "console.toml"
    user = f'[[users]]\nname = "alice"\npassword_hash = "{hash_password("pw", "pbkdf2_sha256", 1000)}"\n'
    path.write_text(f'[[nodes]]\nname = "local"\nurl = "unix://var/supervisor.sock"\n{user}')
    settings = load_settings(path, {"CHECKGATE_CONSOLE_SECRET": "x" * 40})
    assert settings.nodes == (NodeConfig("local", f"unix://{tmp_path}/var/supervisor.sock"),)
    path.write_text(f'[[nodes]]\nname = "local"\nurl = "unix://s"\npassword_env = "NOPE"\n{user}')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {"CHECKGATE_CONSOLE_SECRET": "x" * 40})
    assert str(caught.value).startswith(f"{path}: nodes[0] (local): environment variable NOPE")
