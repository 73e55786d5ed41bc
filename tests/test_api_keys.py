"""Optional API keys: stored hashed, per-key allowed check types and rate limits, checked on every call."""

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from gateway.auth import ApiKey, KeyRing, digest, new_key
from tests.support.stack import Stack, http_get

RUN_ID_THAT_NEVER_WAS = "gw-0000000000-never"


def get(url: str, key: str | None = None, header: str = "Authorization") -> tuple[int, dict, Message]:
    """GET with an API key: (status, JSON body, headers looked up case-insensitively)."""
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header(header, f"Bearer {key}" if header == "Authorization" else key)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def test_api_keys_end_to_end(new_stack: Stack, tmp_path: Path) -> None:
    ops_key, ops_digest = new_key()
    slow_key, slow_digest = new_key()
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(
        f'[[keys]]\nname = "ops"\nsha256 = "{ops_digest}"\nchecks = ["add"]\n\n'
        f'[[keys]]\nname = "slow"\nsha256 = "{slow_digest}"\nrate = 1\nburst = 2\n'
    )
    assert ops_key not in keys_file.read_text()
    new_stack.start_worker("w", ["add", "sleep"], concurrency=4)
    gateway = new_stack.start_gateway("gw", CHECKGATE_API_KEYS_FILE=str(keys_file))

    status, body, headers = get(f"{gateway}/check/add?x=1&y=2")
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="checkgate"')
    assert "API key is required" in body["error"]
    assert get(f"{gateway}/check/add?x=1&y=2", "not-a-key")[0] == 401
    status, body, _ = get(f"{gateway}/check/add?x=1&y=2", ops_key)
    assert (status, body["result"]) == (200, 3)
    assert get(f"{gateway}/add?x=1&y=2", ops_key, header="X-API-Key")[0] == 200
    status, body, _ = get(f"{gateway}/check/sleep?ms=1", ops_key)
    assert status == 403 and "'sleep'" in body["error"]
    assert get(f"{gateway}/result/{body.get('id', 'x')}")[0] == 401

    codes = [get(f"{gateway}/check/sleep?ms=1", slow_key) for _ in range(3)]
    assert [c[0] for c in codes] == [200, 200, 429]
    assert int(codes[2][2]["Retry-After"]) >= 1

    # /result applies the check's own authorization: the ops key may read add results, not sleep ones,
    # and a sleep id looks to it exactly like an id that does not exist.
    time.sleep(2.1)  # two tokens back for the slow key (rate 1, burst 2)
    sleep_id = codes[0][1]["id"]
    add_id = get(f"{gateway}/check/add?x=2&y=2", ops_key)[1]["id"]
    assert get(f"{gateway}/result/{add_id}", ops_key)[:2] == (200, get(f"{gateway}/result/{add_id}", slow_key)[1])
    status, hidden, _ = get(f"{gateway}/result/{sleep_id}", ops_key)
    status_unknown, unknown, _ = get(f"{gateway}/result/{RUN_ID_THAT_NEVER_WAS}", ops_key)
    assert (status, status_unknown) == (404, 404)
    assert hidden == {**unknown, "id": sleep_id}
    assert get(f"{gateway}/result/{sleep_id}", slow_key)[0] == 200
    # Health and the API description stay public (load balancers and Prometheus probe them).
    assert http_get(f"{gateway}/health")[0] == 200
    assert http_get(f"{gateway}/openapi.json")[0] == 200


SHA = "00" * 32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[keys]]\nname = "billing"\nsha256 = "not-hex"\n', "billing: sha256"),
        ('[[keys]]\nname = "billing"\nsha256 = 7\n', "billing: sha256"),
        ('[[keys]]\nname = "billing"\nsha256 = "00"\n', "billing: sha256 must be 64 hex digits"),
        (f'[[keys]]\nname = "b"\nsha256 = "{SHA}"\nrate = -1\n', "b: rate must be a positive number"),
        (f'[[keys]]\nname = "b"\nsha256 = "{SHA}"\nrate = "fast"\n', "b: rate must be a positive number"),
        (f'[[keys]]\nname = "b"\nsha256 = "{SHA}"\nrate = 1\nburst = "x"\n', "b: burst must be a positive"),
        (f'[[keys]]\nname = "b"\nsha256 = "{SHA}"\nrate = 1\nburst = 0.5\n', "b: burst needs a rate and must be"),
        (f'[[keys]]\nname = "b"\nsha256 = "{SHA}"\nburst = 5\n', "b: burst needs a rate"),
        (f'[[keys]]\nname = "b"\nsha256 = "{SHA}"\nchecks = "http"\n', "b: checks must be a list"),
        (f'[[keys]]\nsha256 = "{SHA}"\nchecks = [1]\n', "key #1: checks must be a list"),
        ('keys = ["abc"]\n', "key #1: must be a table"),
        ("keys = 3\n", "no [[keys]] entries"),
        ("", "no [[keys]] entries"),
        ("[[keys]\n", "not a TOML file"),
    ],
)
def test_keys_file_errors_name_the_file_the_entry_and_the_option(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "keys.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        KeyRing.from_file(bad)
    assert str(info.value).startswith(f"{bad}: ")


def test_a_missing_keys_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        KeyRing.from_file(tmp_path / "nowhere.toml")


def test_a_slow_rate_still_admits_one_request() -> None:
    """rate 0.1/s with the default burst (2 x rate = 0.2) used to leave a key that could never be used."""
    key = ApiKey("slow", digest("k"), rate=0.1)
    assert (key.burst, key.take()) == (1.0, 0.0)
    assert 9 < key.take() <= 10


def test_new_key_command_prints_a_usable_entry(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(Path(sys.executable).with_name("checkgate")), "new-key", "billing"], capture_output=True, text=True
    ).stdout
    key = out.split("shown once): ")[1].split()[0]
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(out.split("\n", 1)[1])
    assert KeyRing.from_file(keys_file).authorize(key, "http").name == "billing"
