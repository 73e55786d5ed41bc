"""Trust anchors from callers (tasks/checks/_trust.py): `ca_bundle` confined to CHECKGATE_CA_DIRS, `ca_pem`.

Issue #11: `ca_bundle=/proc/self/fd/0` blocked a worker thread for ever (it read the stdin pipe supervisord
holds open), and the refusal told a caller whether any file existed. Every hostile path below is one
member of that kind; each must get the same refusal at once.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tasks.checks import _trust
from tasks.checks._common import ProbeFailure, _cached_context, tls_context
from tasks.checks.http import http_check
from tasks.checks.tcp import tcp_check
from tasks.checks.tls import tls_check
from tasks.registry import REGISTRY, ParamError
from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.hostile_paths import make_hostile
from tests.support.stack import Stack, http_get

REFUSAL = "not an allowed CA bundle"


@pytest.fixture
def cadir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "ca"
    d.mkdir()
    monkeypatch.setenv("CHECKGATE_CA_DIRS", str(d))
    return d


def without_blocking(fn: Callable[[], object]) -> object:
    """Call `fn` in a thread; fail (instead of hanging) if it does not come back."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "blocked"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


# --- the file rules -------------------------------------------------------------------------------


def test_every_hostile_path_gets_the_same_refusal_at_once(cadir: Path, certs) -> None:
    hostile = make_hostile(cadir, certs.ca)
    details = {}
    for kind, path in hostile.items():
        with pytest.raises(ProbeFailure) as refused:
            without_blocking(lambda path=path: tls_context(True, str(path)))
        assert refused.value.reason == "bad_ca_bundle", kind
        details[kind] = refused.value.detail
    assert set(details.values()) == {REFUSAL}, details


def test_paths_outside_the_directories_are_refused_by_the_gateway_and_the_worker(cadir: Path) -> None:
    for path in ("/proc/self/fd/0", "/dev/stdin", "/etc/shadow", "/root/.ssh/id_rsa", f"{cadir}x/a.pem"):
        with pytest.raises(ParamError) as error:
            REGISTRY["tls"].validate({"host": "a.example", "ca_bundle": path})
        assert error.value.field == "ca_bundle"
        with pytest.raises(_trust.CARefused, match=f"^{REFUSAL}$"):
            _trust.read_ca_bundle(path)


def test_system_trees_are_refused_even_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKGATE_CA_DIRS", "/proc,/dev,/sys,/")
    for path in ("/proc/self/fd/0", "/proc/self/environ", "/dev/stdin", "/dev/null", "/sys/kernel/notes"):
        with pytest.raises(_trust.CARefused, match=f"^{REFUSAL}$"):
            without_blocking(lambda path=path: _trust.read_ca_bundle(path))


def test_without_ca_directories_every_path_is_refused(monkeypatch: pytest.MonkeyPatch, certs) -> None:
    monkeypatch.delenv("CHECKGATE_CA_DIRS")
    with pytest.raises(ParamError) as error:
        REGISTRY["http"].validate({"url": "https://a.example/", "ca_bundle": str(certs.ca)})
    assert error.value.field == "ca_bundle" and "ca_pem" in error.value.message
    with pytest.raises(_trust.CARefused, match=f"^{REFUSAL}$"):
        _trust.read_ca_bundle(str(certs.ca))


def test_a_bundle_in_the_directory_is_trusted_also_through_a_symlink_inside(
    cadir: Path, certs, tls_port: Callable[[str], int]
) -> None:
    shutil.copy(certs.ca, cadir / "ca.pem")
    (cadir / "sub").mkdir()
    (cadir / "sub" / "link.pem").symlink_to(cadir / "ca.pem")
    for path in (cadir / "ca.pem", cadir / "sub" / "link.pem"):
        result = tls_check("127.0.0.1", tls_port("valid"), server_name="localhost", ca_bundle=str(path))
        assert result["ok"] is True, result


def test_a_component_swapped_for_a_symlink_is_not_followed(cadir: Path, certs) -> None:
    """What the walk does when a directory or the file became a symlink after realpath looked."""
    (cadir / "sub").symlink_to(certs.ca.parent)
    (cadir / "link.pem").symlink_to(certs.ca)
    for parts in (["sub", certs.ca.name], ["link.pem"]):
        with pytest.raises((OSError, _trust.CARefused)):
            _trust._open_beneath(str(cadir), parts)


def test_tls_contexts_are_cached_by_content_not_by_mtime(cadir: Path, certs, tls_port: Callable[[str], int]) -> None:
    bundle = cadir / "ca.pem"
    shutil.copy(certs.ca, bundle)
    port = tls_port("valid")
    assert tls_check("127.0.0.1", port, server_name="localhost", ca_bundle=str(bundle))["ok"] is True
    hits = _cached_context.cache_info().hits
    assert tls_check("127.0.0.1", port, server_name="localhost", ca_bundle=str(bundle))["ok"] is True
    assert _cached_context.cache_info().hits > hits  # the same content is not loaded twice
    stamp = bundle.stat()
    bundle.write_text(certs.self_signed[0].read_text())  # another CA, same name, same mtime
    os.utime(bundle, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    result = tls_check("127.0.0.1", port, server_name="localhost", ca_bundle=str(bundle))
    assert (result["ok"], result["reason"]) == (False, "untrusted_certificate"), result


# --- ca_pem ---------------------------------------------------------------------------------------


def test_ca_pem_is_trusted_by_every_tls_check(certs, tls_port: Callable[[str], int]) -> None:
    pem = certs.ca.read_text()
    port = tls_port("valid")
    assert REGISTRY["tls"].validate({"host": "127.0.0.1", "ca_pem": pem})["ca_pem"] == pem
    assert tls_check("127.0.0.1", port, server_name="localhost", ca_pem=pem)["ok"] is True
    assert http_check(f"https://localhost:{port}/text", ca_pem=pem)["ok"] is True
    assert tcp_check("127.0.0.1", port, tls=True, server_name="localhost", ca_pem=pem)["ok"] is True
    # Without it, the same certificate is not trusted.
    assert tls_check("127.0.0.1", port, server_name="localhost")["reason"] == "untrusted_certificate"


def test_ca_pem_and_ca_bundle_are_both_trusted(cadir: Path, certs, tls_port: Callable[[str], int]) -> None:
    shutil.copy(certs.self_signed[0], cadir / "other.pem")
    pem = certs.ca.read_text()
    port = tls_port("valid")
    result = tls_check("127.0.0.1", port, server_name="localhost", ca_bundle=str(cadir / "other.pem"), ca_pem=pem)
    assert result["ok"] is True, result


def _pem(der: bytes) -> str:
    return f"-----BEGIN CERTIFICATE-----\n{base64.b64encode(der).decode()}\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("hello", "only PEM certificates"),
        ("   ", "no certificate"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n", "no -----END"),
        ("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----", "not base64"),
        (_pem(b"hello world"), "not a DER certificate"),
        (_pem(b"\x30\x05\x02\x01\x01"), "not a DER certificate"),  # the length says 5, 3 follow
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "only PEM certificates"),
        ("-----BEGIN CERTIFICATE-----\nMIIB☃\n-----END CERTIFICATE-----", "ASCII"),
    ],
)
def test_a_malformed_ca_pem_is_a_400_naming_it(text: str, needle: str) -> None:
    with pytest.raises(ParamError) as error:
        REGISTRY["tls"].validate({"host": "a.example", "ca_pem": text})
    assert error.value.field == "ca_pem"
    assert needle in error.value.message, error.value.message


def test_a_well_framed_ca_pem_that_is_no_certificate_is_named_by_the_worker(
    certs, tls_port: Callable[[str], int]
) -> None:
    trailing = certs.ca.read_text() + "junk after the certificate"
    with pytest.raises(ParamError, match="only PEM certificates"):
        REGISTRY["tls"].validate({"host": "a.example", "ca_pem": trailing})
    not_a_certificate = _pem(b"\x30\x03\x02\x01\x01")  # a DER SEQUENCE holding INTEGER 1
    REGISTRY["tls"].validate({"host": "a.example", "ca_pem": not_a_certificate})
    result = tls_check("127.0.0.1", tls_port("valid"), ca_pem=not_a_certificate)
    assert (result["ok"], result["reason"]) == (False, "bad_ca_bundle")
    assert result["detail"].startswith("ca_pem: cannot load the certificates"), result


def test_ca_pem_is_size_capped() -> None:
    with pytest.raises(ParamError, match="longer than"):
        REGISTRY["tls"].validate({"host": "a.example", "ca_pem": "A" * (_trust.MAX_CA_PEM_CHARS + 1)})


# --- real workers ---------------------------------------------------------------------------------


@pytest.fixture
def tls_stack(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A gateway over one `tls` worker with four slots, its CA directory under the test's tmp_path."""
    d = tmp_path / "ca"
    d.mkdir()
    with Stack(tmp_path, f"cgc{os.urandom(3).hex()}_", BROKER_URL, BACKEND_URL) as stack:
        stack.env["CHECKGATE_CA_DIRS"] = str(d)
        stack.start_worker("tls", ["tls"], concurrency=4)
        yield stack.start_gateway("gw"), d


def _tls(gateway: str, port: int, **params: str) -> tuple[int, dict]:
    query = urlencode({"host": "127.0.0.1", "port": port, "server_name": "localhost", "timeout": 10, **params})
    status, body, _ = http_get(f"{gateway}/check/tls?{query}", timeout=60)
    return status, body


def test_hostile_ca_bundles_get_one_refusal_and_never_jam_the_worker(
    tls_stack: tuple[str, Path], certs, tls_port: Callable[[str], int]
) -> None:
    gateway, d = tls_stack
    port = tls_port("valid")
    hostile = make_hostile(d, certs.ca)
    shutil.copy(certs.ca, d / "ca.pem")
    # Twice the worker's four slots of the kinds that blocked a thread for ever, all at once.
    blocking = [hostile[k] for k in ("fifo", "symlink to /proc/self/fd/0", "symlink to /dev/stdin")]
    paths = [str(p) for p in (blocking * 3)[:8]] + [str(p) for p in hostile.values()]
    with ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(lambda path: _tls(gateway, port, ca_bundle=path), paths))
    for path, (status, body) in zip(paths, answers, strict=True):
        assert status == 200, (path, body)
        result = body["result"]
        assert (result["ok"], result["reason"], result["detail"]) == (False, "bad_ca_bundle", REFUSAL), (path, body)
    # The worker answers other checks normally.
    status, body = _tls(gateway, port, ca_bundle=str(d / "ca.pem"))
    assert (status, body["result"]["ok"]) == (200, True), body
    # A path outside the directory does not even reach it.
    for path in ("/proc/self/fd/0", "/dev/stdin", "/etc/shadow"):
        status, body = _tls(gateway, port, ca_bundle=path)
        assert (status, body["field"]) == (400, "ca_bundle"), body


def test_ca_pem_through_the_gateway(tls_stack: tuple[str, Path], certs, tls_port: Callable[[str], int]) -> None:
    gateway, _ = tls_stack
    status, body = _tls(gateway, tls_port("valid"), ca_pem=certs.ca.read_text())
    assert (status, body["result"]["ok"]) == (200, True), body
    status, body = _tls(gateway, tls_port("valid"), ca_pem="not a certificate")
    assert (status, body["field"]) == (400, "ca_pem"), body
