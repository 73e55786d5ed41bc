"""Just enough X.509 (DER) to describe a peer certificate.

The stdlib only decodes certificates it has verified (`getpeercert()` is empty otherwise), but a check
must describe the self-signed or expiring certificate it refuses; Python 3.11 has no public decoder.
"""

from __future__ import annotations

import calendar
import hashlib
import ipaddress
from dataclasses import dataclass

_SEQUENCE, _SET, _OID, _INTEGER, _OCTETS = 0x30, 0x31, 0x06, 0x02, 0x04
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_EXTENSIONS = 0xA3  # [3] EXPLICIT in TBSCertificate
_SAN_OID = "2.5.29.17"

_ATTRIBUTE_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
}
_STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be", 0x1C: "utf-32-be"}
# GeneralName choices that carry text ([1] rfc822Name, [2] dNSName, [6] URI) or bytes ([7] iPAddress).
_SAN_KINDS = {0x81: "email", 0x82: "DNS", 0x86: "URI", 0x87: "IP"}


@dataclass(frozen=True)
class CertInfo:
    """What a check reports about a certificate."""

    subject: str
    issuer: str
    serial: str
    not_before: int
    not_after: int
    sans: tuple[str, ...]
    sha256: str

    @property
    def self_issued(self) -> bool:
        return self.subject == self.issuer


def parse_certificate(der: bytes) -> CertInfo:
    """Decode a DER certificate; ValueError when it is malformed."""
    try:
        return _parse(der)
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed certificate ({exc})") from None


def _parse(der: bytes) -> CertInfo:
    tag, start, end = _tlv(der, 0)
    _expect(tag, _SEQUENCE)
    tbs_tag, tbs_start, tbs_end = _children(der, start, end)[0]
    _expect(tbs_tag, _SEQUENCE)
    fields = _children(der, tbs_start, tbs_end)
    if fields[0][0] == 0xA0:  # [0] version, absent in v1 certificates
        fields = fields[1:]
    serial, _signature, issuer, validity, subject = fields[:5]
    _expect(serial[0], _INTEGER)
    not_before, not_after = (_time(der, *t) for t in _children(der, validity[1], validity[2])[:2])
    extensions = next((f for f in fields[6:] if f[0] == _EXTENSIONS), None)
    return CertInfo(
        subject=_name(der, subject),
        issuer=_name(der, issuer),
        serial=der[serial[1] : serial[2]].hex(),
        not_before=not_before,
        not_after=not_after,
        sans=_sans(der, extensions) if extensions else (),
        sha256=hashlib.sha256(der).hexdigest(),
    )


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """Tag, content start and content end of the element at `pos`."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        if not 0 < size <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        element = _tlv(data, start)
        out.append(element)
        start = element[2]
    return out


def _expect(tag: int, wanted: int) -> None:
    if tag != wanted:
        raise ValueError(f"unexpected DER tag 0x{tag:02x}, wanted 0x{wanted:02x}")


def _oid(raw: bytes) -> str:
    parts, value = [], 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)  # the first subidentifier packs two arcs: 40 * X + Y
    return ".".join(map(str, [first, parts[0] - 40 * first, *parts[1:]]))


def _name(data: bytes, element: tuple[int, int, int]) -> str:
    """An X.501 Name in RFC 4514 order (most specific first), e.g. ``CN=example.com,O=Example``."""
    _expect(element[0], _SEQUENCE)
    pairs = []
    for rdn_tag, rdn_start, rdn_end in _children(data, element[1], element[2]):
        _expect(rdn_tag, _SET)
        for _, attr_start, attr_end in _children(data, rdn_start, rdn_end):
            (oid_tag, oid_start, oid_end), (value_tag, value_start, value_end) = _children(data, attr_start, attr_end)
            _expect(oid_tag, _OID)
            oid = _oid(data[oid_start:oid_end])
            codec = _STRING_CODECS.get(value_tag, "latin-1")
            value = data[value_start:value_end].decode(codec).replace(",", "\\,")
            pairs.append(f"{_ATTRIBUTE_NAMES.get(oid, oid)}={value}")
    return ",".join(reversed(pairs))


def _time(data: bytes, tag: int, start: int, end: int) -> int:
    text = data[start:end].decode("ascii").rstrip("Z")
    if tag == _UTC_TIME:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME:
        raise ValueError(f"unexpected time tag 0x{tag:02x}")
    fields = (int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]), int(text[12:14]))
    return calendar.timegm((*fields, 0, 0, 0))


def _sans(data: bytes, extensions: tuple[int, int, int]) -> tuple[str, ...]:
    (seq_tag, seq_start, seq_end) = _children(data, extensions[1], extensions[2])[0]
    _expect(seq_tag, _SEQUENCE)
    for _, ext_start, ext_end in _children(data, seq_start, seq_end):
        parts = _children(data, ext_start, ext_end)
        if _oid(data[parts[0][1] : parts[0][2]]) != _SAN_OID:
            continue
        octets = parts[-1]
        _expect(octets[0], _OCTETS)
        names_tag, names_start, names_end = _tlv(data[: octets[2]], octets[1])
        _expect(names_tag, _SEQUENCE)
        return tuple(_general_name(data, *n) for n in _children(data, names_start, names_end) if n[0] in _SAN_KINDS)
    return ()


def _general_name(data: bytes, tag: int, start: int, end: int) -> str:
    raw = data[start:end]
    if tag == 0x87:
        return f"IP:{ipaddress.ip_address(raw)}" if len(raw) in (4, 16) else f"IP:{raw.hex()}"
    return f"{_SAN_KINDS[tag]}:{raw.decode('ascii', 'replace')}"
