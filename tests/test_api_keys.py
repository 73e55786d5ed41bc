"""Optional API keys: the keys file (stored hashed; every error names the entry) and a gateway process that
reads it. The contract's refusals (401, 403, 429, hidden ids) are tested in process: test_contract.TestAuth."""

import json
import re
import subprocess
import sys
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


def test_a_gateway_started_with_a_keys_file_asks_for_the_keys_in_it(new_stack: Stack, tmp_path: Path) -> None:
    """What crosses the process boundary: the file named by CHECKGATE_API_KEYS_FILE, read by the gateway
    process. Every refusal of the contract (401, 403, 429, hidden ids) is in test_contract.TestAuth.
    No worker: each answer here is given before anything is published (or by Redis)."""
    ops_key, ops_digest = new_key()
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(f'[[keys]]\nname = "ops"\nsha256 = "{ops_digest}"\nchecks = ["add"]\nrate = 0.01\nburst = 1\n')
    assert ops_key not in keys_file.read_text()
    gateway = new_stack.start_gateway("gw", CHECKGATE_API_KEYS_FILE=str(keys_file))

    status, body, headers = get(f"{gateway}/result/{RUN_ID_THAT_NEVER_WAS}")
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="checkgate"')
    assert get(f"{gateway}/result/{RUN_ID_THAT_NEVER_WAS}", "not-a-key")[0] == 401
    assert get(f"{gateway}/result/{RUN_ID_THAT_NEVER_WAS}", ops_key)[0] == 404  # the key is known
    status, body, _ = get(f"{gateway}/check/sleep?ms=1", ops_key, header="X-API-Key")
    assert status == 403 and "'sleep'" in body["error"]
    status, _, headers = get(f"{gateway}/result/{RUN_ID_THAT_NEVER_WAS}", ops_key)  # its one token is spent
    assert status == 429 and 90 <= int(headers["Retry-After"]) <= 100  # rate 0.01/s: a token in ~100 s
    # Health and the API description stay public (load balancers and Prometheus probe them).
    assert http_get(f"{gateway}/health")[0] in (200, 503)  # no worker: 'degraded' or down, but answered
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
