"""The facts a check reports about one X.509 certificate, decoded with pyca `cryptography`.

The stdlib decodes only a certificate it has verified, and only the leaf (`getpeercert()` is empty
otherwise), but a check must describe every certificate of the chain a server presents, including the
self-signed or expired ones it refuses. `cryptography` is the maintained decoder of the Python world
(pyca; what pyOpenSSL, urllib3 and trustme build on): its Rust ASN.1 parser is strict and fuzzed, it
knows every string type of a Name and most GeneralNames, and it replaced our hand-written DER reader.
A certificate it refuses is reported as undecodable, never as a failed check: `DECODE_ERRORS` are what it
raises on a stranger's bytes. Its extensions are decoded on their own: a certificate whose extensions
cryptography refuses (a duplicate extension, which RFC 5280 forbids but OpenSSL sends; a SAN holding an
x400Address or ediPartyName, which are valid but which cryptography does not decode; a malformed SAN)
keeps its names, dates and fingerprint, and says why it has no ``sans`` (``sans_error``).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

# Names beyond RFC 4514's short ones that certificates commonly carry (else shown as a dotted OID).
_ATTRIBUTE_NAMES = {NameOID.EMAIL_ADDRESS: "emailAddress", NameOID.SERIAL_NUMBER: "serialNumber"}
# What cryptography raises on a certificate (or extension) it cannot decode. 300,000 certificates with
# random bytes changed (tests/checks/test_x509.py fuzzes the same way) raised nothing else.
DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # malformed DER, a string that is not in its type's encoding, an unexpected tag
    TypeError,  # e.g. a BIT STRING as a name attribute other than x500UniqueIdentifier
    OverflowError,
    x509.InvalidVersion,  # a version field other than v1 or v3
    x509.DuplicateExtension,  # the same extension twice
    x509.UnsupportedGeneralNameType,  # x400Address, ediPartyName
)
_SAN_KINDS: tuple[tuple[type[x509.GeneralName], str], ...] = (
    (x509.DNSName, "DNS"),
    (x509.IPAddress, "IP"),
    (x509.RFC822Name, "email"),
    (x509.UniformResourceIdentifier, "URI"),
)


@dataclass(frozen=True)
class CertInfo:
    """What a check reports about a certificate.

    subject, issuer: RFC 4514 strings, most specific RDN first (``O=Example,CN=example.com``).
    serial: the DER INTEGER's content bytes in hex (``03e9``; a leading ``00`` when the high bit is set).
    not_before, not_after: epoch seconds (UTC). sans: ``DNS:``, ``IP:``, ``email:``, ``URI:`` entries in
    the certificate's order. sha256: hex digest of the DER encoding (the fingerprint). sans_error: why the
    extensions, hence the SANs, could not be decoded (None when they could; sans is then empty).
    """

    subject: str
    issuer: str
    serial: str
    not_before: int
    not_after: int
    sans: tuple[str, ...]
    sha256: str
    sans_error: str | None = None

    @property
    def self_issued(self) -> bool:
        return self.subject == self.issuer


def parse_certificate(der: bytes) -> CertInfo:
    """Decode a DER certificate; ValueError when its names, serial or dates cannot be decoded (cryptography
    parses some parts lazily). Extensions that cannot be decoded leave ``sans`` empty and say why in
    ``sans_error``."""
    with warnings.catch_warnings():
        # Negative serial numbers and similar quirks are the server's business, not the worker log's.
        warnings.simplefilter("ignore")
        try:
            cert = x509.load_der_x509_certificate(der)
            subject = cert.subject.rfc4514_string(_ATTRIBUTE_NAMES)
            issuer = cert.issuer.rfc4514_string(_ATTRIBUTE_NAMES)
            serial = _serial_hex(cert.serial_number)
            not_before = int(cert.not_valid_before_utc.timestamp())
            not_after = int(cert.not_valid_after_utc.timestamp())
        except DECODE_ERRORS as exc:
            raise ValueError(f"malformed certificate ({type(exc).__name__}: {exc})") from None
        try:
            sans, sans_error = _sans(cert), None
        except DECODE_ERRORS as exc:
            sans, sans_error = (), f"undecodable extensions ({type(exc).__name__}: {exc})"
    return CertInfo(subject, issuer, serial, not_before, not_after, sans, hashlib.sha256(der).hexdigest(), sans_error)


def _serial_hex(serial: int) -> str:
    """The serial as its DER content bytes (minimal two's complement), as `openssl x509 -serial` shows."""
    return serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True).hex()


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    """The SAN entries `_SAN_KINDS` names (others are left out); raises what cryptography raises."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out = []
    for name in names:
        for kind, label in _SAN_KINDS:
            if isinstance(name, kind):
                out.append(f"{label}:{name.value}")
    return tuple(out)
