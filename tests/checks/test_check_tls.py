"""The `tls` check against real TLS servers presenting certificates the tests made."""

from __future__ import annotations

import time
from collections.abc import Callable

from tasks.checks.tls import tls_check


def test_valid_certificate_from_the_local_ca(tls_port: Callable[[str], int], certs) -> None:
    result = tls_check("127.0.0.1", tls_port("valid"), ca_bundle=str(certs.ca))
    assert result["ok"] is True, result
    assert result["verified"] is True and "verify_error" not in result
    assert 29.9 < result["days_left"] < 30.1
    assert abs(result["not_after"] - (time.time() + 30 * 86400)) < 3600
    assert result["not_before"] < time.time()
    assert result["subject"] == "O=checkgate tests,CN=localhost"
    assert result["issuer"] == "CN=checkgate test CA"
    assert result["sans"] == ["DNS:localhost", "IP:127.0.0.1"]
    assert result["serial"] == f"{1001:04x}"
    assert len(result["fingerprint_sha256"]) == 64
    assert result["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert result["server_name"] == "127.0.0.1"


def test_server_name_by_host_name(tls_port: Callable[[str], int], certs) -> None:
    result = tls_check("localhost", tls_port("valid"), ca_bundle=str(certs.ca))
    assert (result["ok"], result["server_name"]) == (True, "localhost")
    result = tls_check("127.0.0.1", tls_port("valid"), server_name="wrong.example", ca_bundle=str(certs.ca))
    assert (result["ok"], result["reason"], result["verified"]) == (False, "hostname_mismatch", False)
    assert result["days_left"] > 29  # still described


def test_self_signed_is_a_valid_probe_that_is_not_ok(tls_port: Callable[[str], int]) -> None:
    result = tls_check("127.0.0.1", tls_port("self_signed"))
    assert (result["ok"], result["reason"], result["verified"]) == (False, "untrusted_certificate", False)
    assert "self-signed" in result["verify_error"]
    assert result["subject"] == result["issuer"] == "CN=localhost"
    assert 29 < result["days_left"] < 31


def test_certificate_from_an_unknown_ca(tls_port: Callable[[str], int]) -> None:
    result = tls_check("127.0.0.1", tls_port("valid"))  # the system store does not know our CA
    assert (result["ok"], result["reason"]) == (False, "untrusted_certificate")


def test_expiring_certificate(tls_port: Callable[[str], int], certs) -> None:
    port = tls_port("expiring")
    result = tls_check("127.0.0.1", port, ca_bundle=str(certs.ca), warn_days=14)
    assert (result["ok"], result["reason"], result["verified"]) == (False, "certificate_expiring", True)
    assert 4.9 < result["days_left"] < 5.1
    assert tls_check("127.0.0.1", port, ca_bundle=str(certs.ca), warn_days=3)["ok"] is True


def test_plain_tcp_and_closed_ports(echo_port: int, closed_port: int) -> None:
    assert tls_check("127.0.0.1", echo_port)["reason"] == "tls_error"
    assert tls_check("127.0.0.1", closed_port)["reason"] == "connection_refused"
    assert tls_check("169.254.169.254", 443)["reason"] == "target_refused"
