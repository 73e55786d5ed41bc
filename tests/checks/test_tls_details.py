"""`_common.tls_details` on both kinds of TLS object the checks and HTTP client libraries hold."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tasks.checks._common import tls_details


def _context(ca: str | None) -> ssl.SSLContext:
    if ca:
        return ssl.create_default_context(cafile=ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@contextmanager
def _ssl_socket(port: int, ca: str | None) -> Iterator[ssl.SSLSocket]:
    with _context(ca).wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost") as tls:
        yield tls


@contextmanager
def _ssl_object(port: int, ca: str | None) -> Iterator[ssl.SSLObject]:
    """A handshake through memory BIOs, as asyncio and anyio-based clients do it."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _context(ca).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "server closed during the handshake"
                incoming.write(data)
        sock.sendall(outgoing.read())
        yield tls


_CHAIN_FIELDS = ("earliest_expiry", "earliest_expiry_subject", "earliest_expiry_in", "earliest_expiry_position")


def test_ssl_object_and_ssl_socket_agree(tls_port: Callable[[str], int], certs) -> None:
    port = tls_port("short_intermediate")
    with _ssl_socket(port, str(certs.ca)) as tls:
        by_socket = tls_details(tls)
    with _ssl_object(port, str(certs.ca)) as tls:
        by_object = tls_details(tls)
    for field in (*_CHAIN_FIELDS, "chain", "verified_chain", "last_chain_expiry", "subject", "not_after"):
        assert by_object[field] == by_socket[field], field
    assert by_object["earliest_expiry_subject"] == "CN=checkgate short intermediate"
    assert len(by_object["verified_chain"]) == 3


def test_unverified_session_has_no_verified_chain(tls_port: Callable[[str], int]) -> None:
    # Without verification OpenSSL hands back the presented chain as "verified": it must not be reported.
    with _ssl_object(tls_port("short_intermediate"), None) as tls:
        details = tls_details(tls)
    assert len(details["chain"]) == 2
    assert "verified_chain" not in details and "last_chain_expiry" not in details
    assert details["earliest_expiry_subject"] == "CN=checkgate short intermediate"


class _LeafOnly:
    """A TLS object of a Python with no chain API at all: only the leaf can be had."""

    def __init__(self, tls: ssl.SSLSocket) -> None:
        self._tls = tls
        self.context = tls.context

    def __getattr__(self, name: str) -> Any:
        if name in ("cipher", "version", "getpeercert"):
            return getattr(self._tls, name)
        raise AttributeError(name)


def test_without_a_chain_api_the_leaf_is_reported(tls_port: Callable[[str], int], certs) -> None:
    with _ssl_socket(tls_port("short_intermediate"), str(certs.ca)) as tls:
        details = tls_details(_LeafOnly(tls))  # type: ignore[arg-type]
    assert [c["subject"] for c in details["chain"]] == [details["subject"]]
    assert details["earliest_expiry"] == details["not_after"]


def test_undecodable_certificate_in_the_chain(monkeypatch, tls_port: Callable[[str], int], certs) -> None:
    from tasks.checks import _common

    real = _common.parse_certificate

    def picky(der: bytes):
        cert = real(der)
        if "intermediate" in cert.subject:
            raise ValueError("malformed certificate (test)")
        return cert

    monkeypatch.setattr(_common, "parse_certificate", picky)
    with _ssl_socket(tls_port("short_intermediate"), str(certs.ca)) as tls:
        details = tls_details(tls)
    assert details["chain"][1]["error"] == "undecodable certificate"
    assert len(details["chain"][1]["fingerprint_sha256"]) == 64
    assert details["earliest_expiry_subject"] == "CN=checkgate test CA"  # the earliest of what could be read
