"""The DER decoder against what openssl says about the same certificates."""

from __future__ import annotations

import calendar
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tasks.checks._x509 import parse_certificate


def _openssl_facts(pem: Path) -> dict[str, str]:
    out = subprocess.run(
        ["openssl", "x509", "-in", str(pem), "-noout", "-enddate", "-startdate", "-serial", "-fingerprint", "-sha256"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def _epoch(openssl_time: str) -> int:
    return calendar.timegm(time.strptime(openssl_time, "%b %d %H:%M:%S %Y GMT"))


@pytest.mark.parametrize("which", ["valid", "expiring", "self_signed"])
def test_matches_openssl(certs, which: str) -> None:
    pem = getattr(certs, which)[0]
    facts = _openssl_facts(pem)
    cert = parse_certificate(ssl.PEM_cert_to_DER_cert(pem.read_text()))
    assert cert.not_after == _epoch(facts["notAfter"])
    assert cert.not_before == _epoch(facts["notBefore"])
    assert int(cert.serial, 16) == int(facts["serial"], 16)
    assert cert.sha256 == facts["sha256 Fingerprint"].replace(":", "").lower()
    assert cert.sans == ("DNS:localhost", "IP:127.0.0.1")
    assert cert.self_issued is (which == "self_signed")


def test_ca_has_no_sans(certs) -> None:
    cert = parse_certificate(ssl.PEM_cert_to_DER_cert(certs.ca.read_text()))
    assert (cert.subject, cert.issuer, cert.sans) == ("CN=checkgate test CA", "CN=checkgate test CA", ())


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x05\x02\x01", b"\x04\x00", b"\x30\x84\xff\xff\xff\xff"])
def test_malformed_is_value_error(der: bytes) -> None:
    with pytest.raises(ValueError):
        parse_certificate(der)


def test_truncated_real_certificate_is_value_error(certs) -> None:
    der = ssl.PEM_cert_to_DER_cert(certs.valid[0].read_text())
    for cut in range(0, len(der), 7):
        with pytest.raises(ValueError):
            parse_certificate(der[:cut])
