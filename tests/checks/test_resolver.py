"""Name lookups end at the check's deadline and hold nothing after it (tasks/checks/_resolver.py, issue #11 F4).

Every lookup goes to a DNS server of the test on 127.0.0.1 (``CHECKGATE_RESOLVERS``) that answers
``answered.test`` and never answers ``blackhole.test``. The system resolver is replaced by the same
behaviour (`_system_like_the_server`), so the checkout before this fix — whose lookups went through
`socket.getaddrinfo` — meets the same black hole without any query leaving the machine.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tasks.checks import _guard, _resolver
from tasks.checks._common import Probe, ProbeFailure, resolve
from tests.support.dns_server import dns_server

ZONE = {("answered.test.", "A"): ["127.0.0.2"], ("six.test.", "AAAA"): ["::1"]}
SILENT = ("blackhole.test.",)
# More lookups at once than the 32 threads the resolver pool had.
CALLERS = 40


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    with dns_server(ZONE, silent=SILENT) as port:
        monkeypatch.setenv(_resolver.SERVERS_ENV, f"127.0.0.1:{port}")
        _system_like_the_server(monkeypatch)
        yield port


def _system_like_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """`socket.getaddrinfo` as if the system's resolver were the test's server: black-holed names hang
    (as glibc does, 5 s × 2 attempts), answered ones answer, localhost and literals as before."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, *rest: Any, **kw: Any) -> list:
        name = str(host).lower().rstrip(".") + "."
        if name in SILENT:
            time.sleep(10)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if (name, "A") in ZONE:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ZONE[(name, "A")][0], port))]
        return real(host, port, family, type, *rest, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _timed_resolve(host: str, seconds: float) -> tuple[str, float]:
    """(the address or the failure's reason, seconds taken) of `resolve` with a deadline `seconds` away."""
    began = time.monotonic()
    try:
        outcome = resolve(host, 80, Probe(time.time() + seconds)).ip
    except ProbeFailure as exc:
        outcome = exc.reason
    return outcome, time.monotonic() - began


def test_black_holed_lookups_end_at_their_deadline_and_others_answer_meanwhile(server: int) -> None:
    assert _timed_resolve("answered.test", 1.0)[0] == "127.0.0.2"  # whatever a first lookup starts, once
    threads_before = threading.active_count()
    with ThreadPoolExecutor(CALLERS + 2) as pool:
        stuck = [pool.submit(_timed_resolve, "blackhole.test", 1.0) for _ in range(CALLERS)]
        time.sleep(0.3)  # every black-holed lookup is in flight
        answered = pool.submit(_timed_resolve, "answered.test", 1.0).result()
        local = pool.submit(_timed_resolve, "localhost", 1.0).result()
        ended = [future.result() for future in stuck]
    assert answered[0] == "127.0.0.2" and answered[1] < 0.2, answered
    assert local[0] == "127.0.0.1" and local[1] < 0.2, local
    # Probe keeps a 10 % margin: the deadline of a 1 s check is 0.9 s away.
    assert all(reason == "timeout" and 0.85 < took < 1.2 for reason, took in ended), ended
    # Nothing of them runs on: no thread of the process is still waiting for an answer.
    time.sleep(0.2)
    assert threading.active_count() <= threads_before, threading.enumerate()
    # And the next check resolves at once.
    assert _timed_resolve("answered.test", 1.0)[1] < 0.2


def test_resolve_keeps_its_families_and_reasons(server: int) -> None:
    probe = Probe(time.time() + 2)
    assert resolve("answered.test", 80, probe, "4").ip == "127.0.0.2"
    assert resolve("six.test", 80, probe, "6").ip == "::1"
    assert resolve("six.test", 80, probe).ip == "::1"
    assert resolve("answered.test", 80, probe).ip == "127.0.0.2"
    with pytest.raises(ProbeFailure, match="dns_error"):
        resolve("answered.test", 80, probe, "6")
    assert resolve("localhost", 80, probe, "4").ip == "127.0.0.1"
    assert resolve("127.0.0.3", 80, probe).ip == "127.0.0.3"  # a literal needs no lookup
    with pytest.raises(ProbeFailure) as missing:
        resolve("missing.answered-not.test", 80, probe)
    assert missing.value.reason == "dns_error" and "missing.answered-not.test" in missing.value.detail
    with pytest.raises(ProbeFailure, match="dns_error"):
        resolve("127.0.0.1", 80, probe, "6")


def test_the_lookup_cancels_its_query_when_interrupted(server: int) -> None:
    """The worker ends a late check with an exception in its thread (tasks/deadline.py): the lookup it was
    in is cancelled, and the thread's next lookup is not confused by it."""
    calls: list[str] = []
    real_cancel = _resolver.pycares.Channel.cancel

    def cancel(self: Any) -> None:
        calls.append("cancel")
        real_cancel(self)

    channel = _resolver._channel()
    original = channel.poller

    class Interrupting:
        def poll(self, timeout: float) -> list:
            raise KeyboardInterrupt  # stands for the worker's interrupt

        def __getattr__(self, name: str) -> Any:
            return getattr(original, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_resolver.pycares.Channel, "cancel", cancel)
        channel.poller = Interrupting()  # type: ignore[assignment]
        try:
            with pytest.raises(KeyboardInterrupt):
                _resolver.getaddrinfo("blackhole.test", 80, socket.AF_INET, 5)
        finally:
            channel.poller = original
    assert calls == ["cancel"]
    assert _resolver.getaddrinfo("answered.test", 80, socket.AF_INET, 1)[0][4] == ("127.0.0.2", 80)


def test_a_protected_name_that_never_resolves_costs_a_short_bounded_wait(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_guard, "PROTECTED_LOOKUP_TIMEOUT", 0.3, raising=False)
    began = time.monotonic()
    assert _guard.lookup_protected_name("blackhole.test") == frozenset()
    assert time.monotonic() - began < 1.0
    assert {str(ip) for ip in _guard.lookup_protected_name("answered.test")} == {"127.0.0.2"}


def test_a_malformed_resolver_list_is_a_dns_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_resolver.SERVERS_ENV, "not a server")
    with pytest.raises(socket.gaierror, match=_resolver.SERVERS_ENV):
        _resolver.getaddrinfo("answered.test", 80, socket.AF_INET, 1)
