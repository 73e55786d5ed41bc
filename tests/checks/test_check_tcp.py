"""The `tcp` check against a real echo server (and the HTTPS server for TLS) on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tasks.checks.tcp import decode_escapes, tcp_check
from tests.support.listener import Listener


def test_connect_only(echo_port: int) -> None:
    result = tcp_check("127.0.0.1", echo_port)
    assert result["ok"] is True
    assert (result["ip"], result["port"]) == ("127.0.0.1", echo_port)
    assert result["connect_ms"] > 0
    assert "reply" not in result and "tls_version" not in result


def test_banner_matches_expect(echo_port: int) -> None:
    result = tcp_check("localhost", echo_port, expect=r"^HELLO checkgate-echo \d")
    assert result["ok"] is True
    assert result["reply"].startswith("HELLO checkgate-echo")


def test_send_then_expect_the_echo(echo_port: int) -> None:
    result = tcp_check("127.0.0.1", echo_port, send=r"ping 42\n", expect=r"ECHO ping 42")
    assert result["ok"] is True, result
    assert "ECHO ping 42" in result["reply"]


def test_reply_that_does_not_match_is_expect(echo_port: int) -> None:
    started = time.monotonic()
    result = tcp_check("127.0.0.1", echo_port, send=r"QUIT\r\n", expect="^SSH-2.0")
    assert (result["ok"], result["reason"]) == (False, "expect")
    assert "BYE" in result["reply"]
    assert time.monotonic() - started < 1.0  # the peer closed: no waiting for the deadline


def test_silence_until_the_deadline(echo_port: int, soon: Callable[[float], float]) -> None:
    # The banner arrives, the pattern never does, the server keeps the connection open.
    started = time.monotonic()
    result = tcp_check("127.0.0.1", echo_port, expect="never", deadline=soon(0.5))
    assert (result["ok"], result["reason"]) == (False, "expect")
    assert result["reply"].startswith("HELLO")
    assert time.monotonic() - started < 1.0


def test_closed_port(closed_port: int) -> None:
    result = tcp_check("127.0.0.1", closed_port)
    assert (result["ok"], result["reason"]) == (False, "connection_refused")


def test_metadata_address_is_refused_before_connecting() -> None:
    result = tcp_check("169.254.169.254", 80)
    assert (result["ok"], result["reason"]) == (False, "target_refused")
    assert "ip" not in result


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 6379), ("::1", 6379), ("localhost", 5672)])
def test_the_stacks_redis_and_broker_are_refused(host: str, port: int) -> None:
    """Loopback is open for the tests, and still the shared Redis and RabbitMQ the tests run on are not."""
    result = tcp_check(host, port, send=r"SCAN 0 MATCH celery-task-meta-* COUNT 1000\r\n", expect=".")
    assert (result["ok"], result["reason"]) == (False, "target_refused")
    assert result["detail"].endswith("a protected endpoint of this deployment")
    assert "ip" not in result and "reply" not in result


def test_a_protected_endpoint_is_never_connected(protected_listener: Listener) -> None:
    for host in ("127.0.0.1", "::ffff:127.0.0.1", "localhost", "127.0.0.2"):
        result = tcp_check(host, protected_listener.port, send=r"PING\r\n")
        assert (result["ok"], result["reason"]) == (False, "target_refused"), host
    assert protected_listener.accepted == 0


def test_tls(tls_port: Callable[[str], int], certs) -> None:
    port = tls_port("valid")
    result = tcp_check(
        "127.0.0.1", port, tls=True, ca_bundle=str(certs.ca), send=r"GET / HTTP/1.0\r\n\r\n", expect="^HTTP/1.[01] 200"
    )
    assert result["ok"] is True, result
    assert result["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert result["tls_ms"] > 0
    untrusted = tcp_check("127.0.0.1", tls_port("self_signed"), tls=True)
    assert (untrusted["ok"], untrusted["reason"]) == (False, "untrusted_certificate")
    assert tcp_check("127.0.0.1", tls_port("self_signed"), tls=True, verify_tls=False)["ok"] is True


def test_tls_against_plain_tcp_is_tls_error(echo_port: int) -> None:
    result = tcp_check("127.0.0.1", echo_port, tls=True, verify_tls=False)
    assert (result["ok"], result["reason"]) == (False, "tls_error")


def test_decode_escapes() -> None:
    assert decode_escapes(r"a\r\n\t\0\\\x41é") == b"a\r\n\t\0\\A" + "é".encode()
    assert decode_escapes(r"\q\x4") == rb"\q\x4"
