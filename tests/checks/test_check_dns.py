"""The `dns` check against a real dnspython server on a loopback UDP port."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.message
import pytest

from tasks.checks import dns as dns_module
from tasks.checks.dns import dns_check, system_nameserver
from tests.support.listener import Listener


def _ask(port: int, name: str = "example.test", **kwargs) -> dict:
    return dns_check(name, server="127.0.0.1", port=port, **kwargs)


@pytest.mark.parametrize(
    ("record_type", "answers"),
    [
        ("A", ["192.0.2.10", "192.0.2.11"]),
        ("AAAA", ["2001:db8::10"]),
        ("MX", ["10 mail.example.test.", "20 backup.example.test."]),
        ("TXT", ["v=spf1 -all", "hello world"]),
    ],
)
def test_answers_per_type(dns_port: int, record_type: str, answers: list[str]) -> None:
    result = _ask(dns_port, record_type=record_type)
    assert result["ok"] is True, result
    assert sorted(result["answers"]) == sorted(answers)
    assert (result["rcode"], result["server"], result["port"], result["protocol"]) == (
        "NOERROR",
        "127.0.0.1",
        dns_port,
        "udp",
    )
    assert (result["ttl"], result["authoritative"]) == (300, True)
    assert result["query_ms"] > 0


def test_answer_includes(dns_port: int) -> None:
    assert _ask(dns_port, answer_includes="192.0.2.11,192.0.2.10")["ok"] is True
    assert _ask(dns_port, record_type="MX", answer_includes="10 MAIL.example.test")["ok"] is True
    result = _ask(dns_port, answer_includes="192.0.2.10,192.0.2.99")
    assert (result["ok"], result["reason"]) == (False, "answer_includes")
    assert "192.0.2.99" in result["detail"]


def test_answer_match(dns_port: int) -> None:
    assert _ask(dns_port, record_type="TXT", answer_match="^v=spf1 ")["ok"] is True
    result = _ask(dns_port, answer_match=r"^10\.")
    assert (result["ok"], result["reason"]) == (False, "answer_match")


def test_rcode(dns_port: int) -> None:
    result = _ask(dns_port, name="nope.example.test")
    assert (result["ok"], result["reason"], result["rcode"], result["answers"]) == (False, "rcode", "NXDOMAIN", [])
    assert _ask(dns_port, name="nope.example.test", rcode="NXDOMAIN")["ok"] is True
    # A name with records but none of this type: NOERROR and no answers, which is ok by itself.
    assert _ask(dns_port, record_type="SRV")["answers"] == []


def test_unicode_name_is_idna_encoded(dns_port: int) -> None:
    result = _ask(dns_port, name="Bücher.example.test")
    assert result["answers"] == ["192.0.2.20"]


def test_silent_server_times_out_by_the_deadline(dns_port: int, soon: Callable[[float], float]) -> None:
    started = time.monotonic()
    result = _ask(dns_port, name="silent.example.test", deadline=soon(0.5))
    assert (result["ok"], result["reason"]) == (False, "timeout")
    assert time.monotonic() - started < 1.0


def _udp_and_tcp_on_one_port() -> tuple[socket.socket, socket.socket]:
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket()
        try:
            tcp.bind(udp.getsockname())
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen()
        return udp, tcp
    raise RuntimeError("no port free for both UDP and TCP")


def test_the_tcp_fallback_gets_only_the_time_left(soon: Callable[[float], float]) -> None:
    """A slow truncated UDP answer, then a TCP server that never answers: the check still ends by its
    deadline (dnspython's udp_with_fallback gave the TCP retry a second full timeout)."""
    udp, tcp = _udp_and_tcp_on_one_port()

    def answer_late_and_truncated() -> None:
        wire, peer = udp.recvfrom(4096)
        time.sleep(0.6)
        response = dns.message.make_response(dns.message.from_wire(wire))
        response.flags |= dns.flags.TC
        udp.sendto(response.to_wire(), peer)

    server = threading.Thread(target=answer_late_and_truncated, daemon=True)
    server.start()
    try:
        started = time.monotonic()
        result = _ask(udp.getsockname()[1], deadline=soon(1.0))
        assert (result["ok"], result["reason"]) == (False, "timeout"), result
        assert time.monotonic() - started < 1.0
    finally:
        server.join(5)
        udp.close()
        tcp.close()


def test_server_is_guarded() -> None:
    result = dns_check("example.test", server="169.254.169.254")
    assert (result["ok"], result["reason"]) == (False, "target_refused")


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_a_server_on_a_protected_endpoint_is_refused(protocol: str, protected_listener: Listener) -> None:
    for server in ("127.0.0.1", "localhost"):
        result = dns_check("example.test", server=server, port=protected_listener.port, protocol=protocol)
        assert (result["ok"], result["reason"]) == (False, "target_refused"), server
    result = dns_check("example.test", server="::1", port=6379, protocol=protocol)  # the tests' Redis
    assert (result["ok"], result["reason"]) == (False, "target_refused")
    assert protected_listener.accepted == 0


def test_the_system_nameserver_on_another_port_is_the_callers_target(
    protected_listener: Listener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The resolver is the operator's choice on port 53; with the caller's port it is the caller's target."""
    monkeypatch.setattr(dns_module, "system_nameserver", lambda filename=None: "127.0.0.1")
    result = dns_check("example.test", port=protected_listener.port, protocol="tcp")
    assert (result["ok"], result["reason"]) == (False, "target_refused")
    assert protected_listener.accepted == 0
    monkeypatch.delenv("CHECKGATE_ALLOW_NETWORKS")
    caplog.set_level(logging.INFO, logger="tasks.checks._guard")
    result = dns_check("example.test", port=8053, protocol="tcp")
    assert (result["ok"], result["reason"], result["detail"]) == (False, "target_refused", "target refused by policy")
    assert "loopback" in caplog.text  # why: for the operator's log only


def test_system_nameserver(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.test\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n")
    assert system_nameserver(str(conf)) == "192.0.2.53"
    conf.write_text("search example.test\n")
    assert system_nameserver(str(conf)) is None
    assert system_nameserver(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("record_type", "pattern", "ok"),
    [
        ("A", r"^192\.0\.2\.11$", True),  # the second record, anchored on its own
        ("TXT", "^hello world$", True),  # a TXT record's strings ("hello" " world") joined, then matched
        ("MX", r"^20 backup\.example\.test\.$", True),
        ("A", r"192\.0\.2\.10.*192\.0\.2\.11", False),  # no pattern spans two answers
        ("A", r"\tIN\tA\t", False),  # not blackbox's whole "name TTL IN A data" line: the data alone
    ],
)
def test_answer_match_meets_each_answer_alone(dns_port: int, record_type: str, pattern: str, ok: bool) -> None:
    result = _ask(dns_port, record_type=record_type, answer_match=pattern)
    assert result["ok"] is ok, result
