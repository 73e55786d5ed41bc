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


# --- expiry over the whole chain (issue #12 item 5) ------------------------------------------------


def test_intermediate_that_expires_first_decides(tls_port: Callable[[str], int], certs) -> None:
    # The case: a 200-day leaf under an intermediate that expires in 5 days.
    port = tls_port("short_intermediate")
    result = tls_check("127.0.0.1", port, ca_bundle=str(certs.ca), warn_days=14)
    assert (result["ok"], result["reason"], result["verified"]) == (False, "certificate_expiring", True), result
    assert 4.9 < result["days_left"] < 5.1
    assert 199.9 < result["leaf_days_left"] < 200.1
    assert result["not_after"] == int(certs.expiries["short_intermediate.0"])  # the leaf's, as before
    assert result["earliest_expiry"] == int(certs.expiries["short_intermediate.1"])
    assert result["earliest_expiry_subject"] == "CN=checkgate short intermediate"
    assert (result["earliest_expiry_in"], result["earliest_expiry_position"]) == ("chain", 1)
    assert "chain[1] CN=checkgate short intermediate" in result["detail"]
    assert [c["subject"] for c in result["chain"]] == [
        certs.subjects["short_intermediate.0"],
        certs.subjects["short_intermediate.1"],
    ]
    assert [c["subject"] for c in result["verified_chain"]] == [
        certs.subjects["short_intermediate.0"],
        certs.subjects["short_intermediate.1"],
        "CN=checkgate test CA",
    ]
    assert result["chain"][0]["fingerprint_sha256"] == result["fingerprint_sha256"]
    assert result["last_chain_expiry"] == result["earliest_expiry"]
    assert tls_check("127.0.0.1", port, ca_bundle=str(certs.ca), warn_days=3)["ok"] is True


def test_expired_intermediate_is_named_and_the_chain_still_reported(tls_port: Callable[[str], int], certs) -> None:
    result = tls_check("127.0.0.1", tls_port("expired_intermediate"), ca_bundle=str(certs.ca))
    assert (result["ok"], result["reason"], result["verified"]) == (False, "certificate_expired", False), result
    assert result["days_left"] < 0 < result["leaf_days_left"]
    assert (result["earliest_expiry_subject"], result["earliest_expiry_position"]) == (
        "CN=checkgate expired intermediate",
        1,
    )
    assert "CN=checkgate expired intermediate expired" in result["detail"]
    assert len(result["chain"]) == 2
    # Nothing was verified, so there is no verified chain and no last_chain_expiry (not a made-up value).
    assert "verified_chain" not in result and "last_chain_expiry" not in result


def test_trust_anchor_that_expires_first_is_in_the_verified_chain_only(tls_port: Callable[[str], int], certs) -> None:
    # The server sends leaf + intermediate; the 10-day root comes from the caller's CA bundle.
    result = tls_check("127.0.0.1", tls_port("short_root"), ca_bundle=str(certs.short_root_ca), warn_days=14)
    assert (result["ok"], result["reason"]) == (False, "certificate_expiring"), result
    assert 9.9 < result["days_left"] < 10.1
    assert (result["earliest_expiry_in"], result["earliest_expiry_position"]) == ("verified_chain", 2)
    assert result["earliest_expiry_subject"] == "CN=checkgate short root"
    assert len(result["chain"]) == 2 and len(result["verified_chain"]) == 3
    assert result["last_chain_expiry"] == int(certs.expiries["short_root"])


def test_extra_certificate_counts_for_earliest_but_not_for_the_verified_chain(
    tls_port: Callable[[str], int], certs
) -> None:
    # blackbox_exporter #340's shape: the server also sends a certificate no verified chain uses.
    result = tls_check("127.0.0.1", tls_port("extra_expiring"), ca_bundle=str(certs.ca), warn_days=14)
    assert (result["ok"], result["reason"]) == (False, "certificate_expiring"), result
    assert (result["earliest_expiry_subject"], result["earliest_expiry_position"]) == ("CN=checkgate old cross-sign", 2)
    assert result["earliest_expiry"] == int(certs.expiries["extra"])
    assert "CN=checkgate old cross-sign" not in [c["subject"] for c in result["verified_chain"]]
    assert result["last_chain_expiry"] == int(certs.expiries["root"])  # the verified chain's earliest: its root
    assert result["last_chain_expiry"] > result["earliest_expiry"]


def test_single_certificate_chain(tls_port: Callable[[str], int], certs) -> None:
    result = tls_check("127.0.0.1", tls_port("self_signed"))
    assert len(result["chain"]) == 1 and "verified_chain" not in result
    assert result["earliest_expiry"] == result["not_after"]
    assert result["days_left"] == result["leaf_days_left"]
    assert (result["earliest_expiry_in"], result["earliest_expiry_position"]) == ("chain", 0)
