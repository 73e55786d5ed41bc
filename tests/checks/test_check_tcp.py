"""The `tcp` check against a real echo server (and the HTTPS server for TLS) on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tasks.checks._common import Probe
from tasks.checks._pattern import compile_pattern
from tasks.checks.tcp import MAX_REPLY_BYTES, _read_lines, decode_escapes, tcp_check
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
    assert result["detail"] == "target refused by policy"
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


# --- expect, line by line (issue #12 item 6) -------------------------------------------------------


@pytest.fixture
def scripted() -> Iterator[Callable[..., int]]:
    """`scripted(*steps, hold=True, tls=None) -> port`: a server on 127.0.0.1 that plays `steps` to each
    client (bytes are sent, floats are pauses in seconds), then keeps the connection open until the client
    hangs up (`hold`) or closes it. `tls`: a server SSLContext to speak TLS with."""
    stop = threading.Event()
    servers: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def play(conn: socket.socket, steps: tuple[bytes | float, ...], hold: bool, tls: ssl.SSLContext | None) -> None:
        with contextlib.suppress(OSError), conn:
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True)
            for step in steps:
                if isinstance(step, bytes):
                    conn.sendall(step)
                else:
                    time.sleep(step)
            conn.settimeout(0.1)
            while hold and not stop.is_set():
                try:
                    if not conn.recv(4096):
                        return
                except TimeoutError:
                    continue

    def start(*steps: bytes | float, hold: bool = True, tls: ssl.SSLContext | None = None) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(0.1)
        servers.append(server)

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(None)
                thread = threading.Thread(target=play, args=(conn, steps, hold, tls), daemon=True)
                thread.start()
                threads.append(thread)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        threads.append(thread)
        return server.getsockname()[1]

    yield start
    stop.set()
    for server in servers:
        server.close()
    for thread in threads:
        thread.join(timeout=5)


MULTILINE_BANNER = (b"220-hello\r\n", 0.05, b"220 ready\r\n")


def test_a_later_line_matches_at_once_while_the_peer_stays(scripted, soon: Callable[[float], float]) -> None:
    # The case: the server keeps the connection open after its second line.
    started = time.monotonic()
    result = tcp_check("127.0.0.1", scripted(*MULTILINE_BANNER), expect="^220 ready", deadline=soon(20))
    assert result["ok"] is True, result
    assert result["matched_line"] == "220 ready"
    assert result["reply"] == "220-hello\r\n220 ready\r\n"
    assert time.monotonic() - started < 10  # answered on the line, not at the deadline


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_dollar_anchors_at_the_end_of_the_line_whatever_its_ending(scripted, ending: bytes) -> None:
    port = scripted(b"220-hello" + ending, b"220 ready" + ending, b"250 more" + ending)
    result = tcp_check("127.0.0.1", port, expect="^220 ready$", deadline=time.time() + 20)
    assert (result["ok"], result["matched_line"]) == (True, "220 ready"), result


def test_a_line_is_matched_only_once_it_is_complete(scripted, soon: Callable[[float], float]) -> None:
    # "220 ready" arrives first, but the line is "220 ready for more": ready$ must not match its start.
    port = scripted(b"220 ready", 0.3, b" for more\r\n")
    result = tcp_check("127.0.0.1", port, expect="ready$", deadline=soon(1.5))
    assert (result["ok"], result["reason"]) == (False, "expect"), result
    assert "matched_line" not in result
    assert tcp_check("127.0.0.1", port, expect="^220 ready for more$", deadline=soon(5))["ok"] is True


def test_crlf_split_between_segments(scripted) -> None:
    result = tcp_check("127.0.0.1", scripted(b"220 ready\r", 0.2, b"\n"), expect="ready$", deadline=time.time() + 20)
    assert (result["ok"], result["matched_line"]) == (True, "220 ready"), result


def test_a_character_split_between_segments_still_matches(scripted) -> None:
    port = scripted(b"caf\xc3", 0.1, b"\xa9 ouvert\r\n")
    result = tcp_check("127.0.0.1", port, expect="^café ouvert$", deadline=time.time() + 20)
    assert result["ok"] is True, result


def test_last_line_without_ending_is_matched_when_the_peer_closes(scripted) -> None:
    result = tcp_check("127.0.0.1", scripted(b"SSH-2.0-OpenSSH_9.6", hold=False), expect=r"^SSH-2\.0-\S+$")
    assert (result["ok"], result["matched_line"]) == (True, "SSH-2.0-OpenSSH_9.6"), result


def test_prompt_without_ending_matches_at_once(scripted, soon: Callable[[float], float]) -> None:
    port = scripted(b"Welcome\r\n", b"login: ")
    started = time.monotonic()
    result = tcp_check("127.0.0.1", port, expect="^login:", deadline=soon(20))
    assert (result["ok"], result["matched_line"]) == (True, "login: "), result
    assert time.monotonic() - started < 10  # the match ends before the text so far: no need to wait
    # A match that reaches the end of what arrived could be undone by the rest of the line: it waits, and
    # the unfinished line is judged at the deadline.
    result = tcp_check("127.0.0.1", port, expect="^login: $", deadline=soon(0.8))
    assert (result["ok"], result["matched_line"]) == (True, "login: "), result


def test_binary_greeting_without_line_end_matches_at_once(scripted, soon: Callable[[float], float]) -> None:
    # A MySQL-like greeting: a binary packet (its protocol version byte is \n), then the server waits.
    port = scripted(b"J\x00\x00\x00\n8.0.36\x00\x08\x00\x00\x00\x01\x02mysql_native_password\x00")
    started = time.monotonic()
    result = tcp_check("127.0.0.1", port, expect="mysql_native_password", deadline=soon(20))
    assert result["ok"] is True, result
    assert time.monotonic() - started < 10


class _Drip:
    """A socket that hands out `data` one byte per recv, then times out."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def settimeout(self, _: float) -> None:
        pass

    def recv(self, _: int) -> bytes:
        if not self.data:
            raise TimeoutError("timed out")
        byte, self.data = self.data[:1], self.data[1:]
        return byte


class _Counting:
    def __init__(self, pattern: str) -> None:
        self.pattern = compile_pattern(pattern)
        self.programsize = self.pattern.programsize
        self.chars = 0

    def search(self, text: str, *span: int):
        self.chars += len(text)
        return self.pattern.search(text, *span)


def test_matching_stays_linear_when_the_reply_drips_byte_by_byte() -> None:
    size = 20_000
    pattern = _Counting("never")
    reply, matched, _ = _read_lines(_Drip(b"x" * size + b"\n" + b"y" * size), pattern, Probe(time.time() + 30))
    assert matched is None and len(reply) == 2 * size + 1
    # Per line: its unfinished tries add up to under twice its length, plus one search of the whole line
    # (a search per byte would be size**2 / 2 characters per line).
    assert pattern.chars <= 2 * 3 * size


def test_a_line_longer_than_the_cap_is_judged_at_the_cap(scripted, soon: Callable[[float], float]) -> None:
    """The line cut at MAX_REPLY_BYTES is no whole line: a match ending before the cut counts, one
    reaching it (``$``) is reply_truncated, not a pass."""
    port = scripted(b"x" * (MAX_REPLY_BYTES + 1000) + b"\r\n")
    started = time.monotonic()
    result = tcp_check("127.0.0.1", port, expect="^x+", deadline=soon(20))
    assert result["ok"] is True, result
    assert len(result["matched_line"]) == 256 and len(result["reply"]) == 256
    result = tcp_check("127.0.0.1", port, expect="^x+$", deadline=soon(20))
    assert (result["ok"], result["reason"]) == (False, "reply_truncated"), result
    result = tcp_check("127.0.0.1", port, expect="y", deadline=soon(20))
    assert (result["ok"], result["reason"]) == (False, "expect")
    assert time.monotonic() - started < 10  # the cap ended the reading, not the deadline


def test_a_line_cut_at_the_cap_is_not_matched_whole(scripted, soon: Callable[[float], float]) -> None:
    """70,000 ``a`` then ``ERROR``: ``^a+$`` held on the 64 KiB prefix, taken for the line."""
    port = scripted(b"a" * 70_000 + b"ERROR\n", hold=False)
    result = tcp_check("127.0.0.1", port, expect="^a+$", deadline=soon(20))
    assert (result["ok"], result["reason"]) == (False, "reply_truncated"), result
    assert "^a+$" in result["detail"] and "MAX_REPLY_BYTES" in result["detail"]
    # The same line whole (the peer closes after it) is judged whole: it fails, as expect.
    port = scripted(b"a" * 1000 + b"ERROR", hold=False)
    assert tcp_check("127.0.0.1", port, expect="^a+$", deadline=soon(20))["reason"] == "expect"


def test_many_lines_before_the_match(scripted) -> None:
    port = scripted(b"noise line\r\n" * 3000, b"OK ready\r\n")
    result = tcp_check("127.0.0.1", port, expect="^OK", deadline=time.time() + 20)
    assert (result["ok"], result["matched_line"]) == (True, "OK ready"), result


def test_a_pattern_spanning_lines_never_matches_and_says_why(scripted, soon: Callable[[float], float]) -> None:
    result = tcp_check("127.0.0.1", scripted(*MULTILINE_BANNER, hold=False), expect=r"hello\r\n220 ready")
    assert (result["ok"], result["reason"]) == (False, "expect"), result
    assert "cannot span two" in result["detail"]
    result = tcp_check("127.0.0.1", scripted(*MULTILINE_BANNER, hold=False), expect="nothing like it")
    assert "cannot span" not in result["detail"]
    # A line break in an optional part is harmless, and accepted.
    assert tcp_check("127.0.0.1", scripted(*MULTILINE_BANNER), expect=r"^220 ready\r?$", deadline=soon(20))["ok"]


def test_lines_over_tls_and_the_chain_described(scripted, certs, soon: Callable[[float], float]) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*certs.short_intermediate)
    port = scripted(*MULTILINE_BANNER, tls=server_ctx)
    result = tcp_check("127.0.0.1", port, tls=True, ca_bundle=str(certs.ca), expect="^220 ready$", deadline=soon(20))
    assert (result["ok"], result["matched_line"]) == (True, "220 ready"), result
    assert result["earliest_expiry"] == int(certs.expiries["short_intermediate.1"])
    assert result["earliest_expiry_subject"] == "CN=checkgate short intermediate"
    assert 4.9 < result["days_left"] < 5.1
    assert len(result["chain"]) == 2 and len(result["verified_chain"]) == 3
    assert result["last_chain_expiry"] == result["earliest_expiry"]
