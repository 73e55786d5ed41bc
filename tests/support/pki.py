"""Test certificates: root CAs, intermediates and leaves with lifetimes of the test's choosing.

Made in process with `cryptography`'s X.509 builder (already a dependency of the checks). trustme would
be the first choice for a test CA, but the chain tests need intermediates and roots that expire (or
expired) on a given day, and trustme cannot make one: checked on trustme 1.2.1, `CA()` and
`CA.create_child_ca()` take no validity at all (every CA is valid from 2000-01-01 to 3000-01-01, its
DEFAULT_NOT_BEFORE and DEFAULT_EXPIRY), and only `issue_cert` takes `not_before`/`not_after`, for
leaves. One factory for every test: the check tests' servers (tests/checks/conftest.py) and the private
TLS RabbitMQ and Redis (tests/support/services.py).

Certificates a hostile server may present but no builder makes (a duplicate extension, an x400Address
name, a name in an odd string type, a negative serial, an unknown version) are `odd_leaf`s: built with
placeholders by the builder, then rewritten byte for byte (`forge`) and signed again, so their signature
is still valid and a client that trusts their issuer gets as far as the certificate's content.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
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


@dataclass(frozen=True)
class Forged:
    """A certificate rewritten after it was built (`forge`): DER that cryptography may refuse to load."""

    der_bytes: bytes
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        return ssl.DER_cert_to_PEM_cert(self.der_bytes).encode()

    def der(self) -> bytes:
        return self.der_bytes


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
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
) -> Issued:
    """A server certificate for `names` (no SubjectAlternativeName when empty) signed by `issuer`, or
    self-signed when `issuer` is None; with `client`, a client certificate (extended key usage clientAuth)
    for mutual TLS; `extensions` (extension, critical) are added last."""
    usage = _key_usage("digital_signature")
    general_names = _general_names(names)
    built: list[tuple[x509.ExtensionType, bool]] = [(x509.BasicConstraints(ca=False, path_length=None), False)]
    if general_names:
        built.append((x509.SubjectAlternativeName(general_names), False))
    purpose = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    if issuer is not None:
        built += [(usage, True), (x509.ExtendedKeyUsage([purpose]), False)]
    key = ec.generate_private_key(ec.SECP256R1())
    return _build(_name(common_name, organization), key, issuer, days, since, serial, [*built, *extensions])


def write_chain(path: Path, *certs: Issued | Forged) -> Path:
    """PEM certificates in the order given (a server's file: its leaf first, then what it sends with it)."""
    path.write_bytes(b"".join(cert.pem() for cert in certs))
    return path


def write_key(path: Path, issued: Issued | Forged) -> Path:
    path.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


# --- certificates no builder makes ----------------------------------------------------------------

# AlgorithmIdentifier ecdsa-with-SHA256 (1.2.840.10045.4.3.2): every key here is P-256, signed with SHA-256.
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
_SAN_OID = bytes.fromhex("0603551d11")  # 2.5.29.17
_SAN_PLACEHOLDER = bytes.fromhex("0603551d7f")  # 2.5.29.127: same length, swapped for the SAN's OID
_SERIAL = 0x7E5A5A5A5A5A5A5A  # positive, recognizable: its high byte is swapped to make it negative
_CN_PLACEHOLDER = "forged-common-name-placeholder!"  # 31 characters (odd: for the BMPString), a UTF8String

# The odd certificates `odd_leaf` makes: what each is, and what `tasks.checks._x509` makes of it:
# "sans_error" (names, dates and serial; no SANs, and why), "decoded" (everything), "undecodable"
# (ValueError: a check reports its fingerprint only).
ODD_KINDS = {
    # two SubjectAlternativeName extensions (RFC 5280 forbids it; OpenSSL sends it in a chain)
    "duplicate_san": "sans_error",
    # a SAN holding an x400Address beside a DNS name and an IP (valid; cryptography does not decode it)
    "x400_san": "sans_error",
    "edi_party_san": "sans_error",  # a SAN holding an ediPartyName (likewise)
    "malformed_san": "sans_error",  # a SAN whose value is not GeneralNames
    "unknown_critical_extension": "decoded",  # a critical extension of a private OID
    "t61_common_name": "undecodable",  # the CN as a TeletexString of Latin-1 bytes (old CAs did this)
    "bad_utf8_common_name": "undecodable",  # a UTF8String that is not UTF-8
    "odd_bmp_common_name": "undecodable",  # a BMPString of an odd number of bytes
    "octet_string_common_name": "decoded",  # a CN whose value is an OCTET STRING, not a string type
    "negative_serial": "decoded",  # a serial number below zero
    "version_4": "undecodable",  # version field 3 (there is no X.509 v4)
    "far_dates": "decoded",  # valid from 1950 to 9999 (UTCTime's first year, GeneralizedTime's last)
}


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER element (definite length)."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def forge(issued: Issued, swaps: Iterable[tuple[bytes, bytes]], signer: Issued | None = None) -> Forged:
    """`issued` with byte strings of its TBSCertificate swapped, wherever they occur, for others of the same
    length (a self-signed certificate's subject is also its issuer), signed again by `signer` (itself when
    None)."""
    tbs = issued.cert.tbs_certificate_bytes
    for old, new in swaps:
        assert len(old) == len(new) and old in tbs, (old, new)
        tbs = tbs.replace(old, new)
    signature = (signer or issued).key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return Forged(_tlv(0x30, tbs + _ECDSA_SHA256 + _tlv(0x03, b"\x00" + signature)), issued.key)


def _san(*names: bytes) -> x509.UnrecognizedExtension:
    """A SubjectAlternativeName extension whose GeneralNames are the DER elements `names`, as they are."""
    return x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.17"), _tlv(0x30, b"".join(names)))


def odd_leaf(kind: str, issuer: Issued | None = None, days: float = 30) -> Forged:
    """A leaf for localhost and 127.0.0.1 (SAN), of the `ODD_KINDS` `kind`, signed by `issuer` (itself when None).

    Every kind keeps the key, the validity of `days` days (but far_dates) and a signature its issuer made."""
    dns = _tlv(0x82, b"localhost")
    ip = _tlv(0x87, bytes([127, 0, 0, 1]))

    def built(**options: object) -> Issued:
        return leaf(issuer, **{"days": days, "serial": _SERIAL, **options})  # type: ignore[arg-type]

    swaps: list[tuple[bytes, bytes]] = []
    placeholder = _tlv(0x0C, _CN_PLACEHOLDER.encode())
    if kind == "duplicate_san":
        second = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.127"), _tlv(0x30, dns))
        cert, swaps = built(extensions=[(second, False)]), [(_SAN_PLACEHOLDER, _SAN_OID)]
    elif kind == "x400_san":  # x400Address [3] IMPLICIT ORAddress: an empty built-in-standard-attributes
        cert = built(names=(), extensions=[(_san(dns, ip, _tlv(0xA3, _tlv(0x30, b""))), False)])
    elif kind == "edi_party_san":  # ediPartyName [5]: partyName [1] DirectoryString (UTF8String)
        cert = built(names=(), extensions=[(_san(dns, ip, _tlv(0xA5, _tlv(0xA1, _tlv(0x0C, b"edi")))), False)])
    elif kind == "malformed_san":
        cert = built(
            names=(), extensions=[(x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.17"), b"\x05\x00"), False)]
        )
    elif kind == "unknown_critical_extension":
        private = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
        cert = built(extensions=[(private, True)])
    elif kind.endswith("_common_name"):
        tag, content = {
            "t61_common_name": (0x14, "caf\xe9 ".encode("latin-1")),
            "bad_utf8_common_name": (0x0C, b"\xff\xfe"),
            "odd_bmp_common_name": (0x1E, b"\x00a\x00"),
            "octet_string_common_name": (0x04, b"\x01\x02"),
        }[kind]
        content = (content * 32)[: len(_CN_PLACEHOLDER)]
        cert, swaps = built(common_name=_CN_PLACEHOLDER), [(placeholder, _tlv(tag, content))]
    elif kind == "negative_serial":
        serial = _tlv(0x02, _SERIAL.to_bytes(8, "big"))
        cert, swaps = built(), [(serial, _tlv(0x02, b"\xfe" + serial[3:]))]
    elif kind == "version_4":
        cert, swaps = built(), [(bytes.fromhex("a003020102"), bytes.fromhex("a003020103"))]
    elif kind == "far_dates":
        now = dt.datetime.now(dt.UTC)
        first, last = dt.datetime(1950, 1, 2, tzinfo=dt.UTC), dt.datetime(9999, 12, 30, tzinfo=dt.UTC)
        cert = built(since=(now - first).days, days=(last - now).days)
    else:
        raise ValueError(f"unknown kind {kind!r}, not one of {ODD_KINDS}")
    return forge(cert, swaps, signer=issuer)
