"""Test certificates: root CAs, intermediates and leaves with lifetimes of the test's choosing.

Made in process with `cryptography`'s X.509 builder (already a dependency of the checks). trustme would
be the first choice for a test CA, but the chain tests need intermediates and roots that expire (or
expired) on a given day, and trustme cannot make one: checked on trustme 1.2.1, `CA()` and
`CA.create_child_ca()` take no validity at all (every CA is valid from 2000-01-01 to 3000-01-01, its
DEFAULT_NOT_BEFORE and DEFAULT_EXPIRY), and only `issue_cert` takes `not_before`/`not_after`, for
leaves. One factory for every test: the check tests' servers (tests/checks/conftest.py) and the private
TLS RabbitMQ and Redis (tests/support/services.py).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp()

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _name(common_name: str, organization: str | None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _general_names(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _build(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: Issued | None,
    days: float,
    since: float,
    serial: int | None,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> Issued:
    now = dt.datetime.now(dt.UTC)
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=since))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        builder = builder.add_extension(aki, critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _key_usage(*granted: str) -> x509.KeyUsage:
    """The KeyUsage extension with only the `granted` usages set (x509.KeyUsage wants all nine)."""
    return x509.KeyUsage(**{usage: usage in granted for usage in _KEY_USAGES})


def authority(common_name: str, days: float, issuer: Issued | None = None, since: float = 1.0) -> Issued:
    """A CA certificate valid from `since` days ago for `days` more days: a root, or an intermediate of `issuer`."""
    usage = _key_usage("key_cert_sign", "crl_sign")
    extensions = [(x509.BasicConstraints(ca=True, path_length=None), True), (usage, True)]
    return _build(
        _name(common_name, None), ec.generate_private_key(ec.SECP256R1()), issuer, days, since, None, extensions
    )


def leaf(
    issuer: Issued | None,
    days: float,
    names: Iterable[str] = DEFAULT_NAMES,
    common_name: str = "localhost",
    organization: str | None = None,
    serial: int | None = None,
    since: float = 1.0,
    client: bool = False,
) -> Issued:
    """A server certificate for `names` signed by `issuer`, or self-signed when `issuer` is None; with
    `client`, a client certificate (extended key usage clientAuth) for mutual TLS."""
    usage = _key_usage("digital_signature")
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), False),
        (x509.SubjectAlternativeName(_general_names(names)), False),
    ]
    purpose = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    if issuer is not None:
        extensions += [(usage, True), (x509.ExtendedKeyUsage([purpose]), False)]
    key = ec.generate_private_key(ec.SECP256R1())
    return _build(_name(common_name, organization), key, issuer, days, since, serial, extensions)


def write_chain(path: Path, *certs: Issued) -> Path:
    """PEM certificates in the order given (a server's file: its leaf first, then what it sends with it)."""
    path.write_bytes(b"".join(cert.pem() for cert in certs))
    return path


def write_key(path: Path, issued: Issued) -> Path:
    path.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path
