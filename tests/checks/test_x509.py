"""The DER decoder against what openssl says about the same certificates, and on odd and mutated ones."""

from __future__ import annotations

import calendar
import collections
import hashlib
import random
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tasks.checks._x509 import parse_certificate
from tests.support import pki


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


@pytest.mark.parametrize("kind", pki.ODD_KINDS)
def test_odd_certificates_decode_or_raise_value_error(kind: str) -> None:
    """Issue #11 F6: cryptography raises DuplicateExtension, UnsupportedGeneralNameType and InvalidVersion,
    none of them a ValueError; the check then raised (a 502). Now each is decoded as far as it can be."""
    der = pki.odd_leaf(kind).der()
    outcome = pki.ODD_KINDS[kind]
    if outcome == "undecodable":
        with pytest.raises(ValueError, match="malformed certificate"):
            parse_certificate(der)
        return
    cert = parse_certificate(der)
    assert cert.sha256 == hashlib.sha256(der).hexdigest()
    assert cert.not_after > cert.not_before
    if outcome == "sans_error":
        assert (cert.sans, cert.subject) == ((), "CN=localhost")
        assert cert.sans_error and cert.sans_error.startswith("undecodable extensions")
    else:
        assert (cert.sans, cert.sans_error) == (("DNS:localhost", "IP:127.0.0.1"), None)


def test_odd_values_read_as_openssl_reads_them() -> None:
    negative = parse_certificate(pki.odd_leaf("negative_serial").der())
    assert negative.serial == "fe5a5a5a5a5a5a5a"  # the DER content bytes, as openssl x509 -serial shows them
    far = parse_certificate(pki.odd_leaf("far_dates").der())
    assert calendar.timegm((9999, 12, 29, 0, 0, 0)) <= far.not_after < calendar.timegm((9999, 12, 31, 0, 0, 0))
    assert calendar.timegm((1950, 1, 1, 0, 0, 0)) <= far.not_before < calendar.timegm((1950, 1, 3, 0, 0, 0))


def test_mutated_certificates_decode_or_raise_value_error() -> None:
    """Bytes changed at random in real and odd certificates: whatever cryptography makes of them,
    parse_certificate returns or raises ValueError, nothing else (the kind of F6, searched for)."""
    root = pki.authority("fuzz CA", days=60)
    seeds = [pki.leaf(root, 30).der(), root.der()] + [pki.odd_leaf(kind, issuer=root).der() for kind in pki.ODD_KINDS]
    rnd = random.Random(11)
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(20_000):
        der = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 4)):
            der[rnd.randrange(len(der))] = rnd.choice((0x00, 0x7F, 0x80, 0xFF, rnd.randrange(256)))
        try:
            cert = parse_certificate(bytes(der))
        except ValueError:
            outcomes["undecodable"] += 1
        else:
            outcomes["sans_error" if cert.sans_error else "decoded"] += 1
    assert min(outcomes.values()) > 100, outcomes  # every branch was reached
