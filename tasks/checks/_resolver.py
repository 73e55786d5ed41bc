"""Name lookups that end at a deadline: c-ares (pycares), driven by the thread that asks.

`socket.getaddrinfo` takes no timeout: a lookup of a name whose DNS server never answers lasts until the
system resolver gives up (resolv.conf's ``timeout`` × ``attempts`` per server; 5 s × 2 by default, longer
with more servers). The checks used to run it in a pool of 32 threads and stop *waiting* at their deadline,
but the lookup went on holding its thread: 32 callers asking for black-holed names filled the pool, and
every check of that worker then timed out in DNS (issue #11, F4). Here a lookup is a c-ares query on a
channel of the calling thread's own, which that thread drives (``poll`` on the channel's sockets) until the
answer or its deadline, and cancels then (``ares_cancel``): nothing outlives the check, nothing is shared
between checks, so no number of slow names can make another check wait.

**Why c-ares (pycares) and not dnspython**, which the dns check uses already: a check resolves its target
as the host does (``getaddrinfo``): /etc/hosts first, then DNS with resolv.conf's servers, search list and
``ndots``, both families sorted by RFC 6724 — c-ares implements that (``ares_getaddrinfo``, reading
/etc/hosts, resolv.conf and the ``hosts:`` line of /etc/nsswitch.conf), with per-query timeouts and
cancellation. dnspython's resolver reads resolv.conf but not /etc/hosts or nsswitch, so ``localhost`` and
every name an operator pins in /etc/hosts would stop resolving (or resolve otherwise than for every other
program on the host). What c-ares does not do: NSS modules other than ``files`` and ``dns`` (mdns,
myhostname, LDAP); systemd-resolved is still used through its stub server in resolv.conf. One difference
is avoided: c-ares answers ``localhost`` with ::1 first even where /etc/hosts lists only 127.0.0.1 for it
(RFC 6761), which would move checks of ``localhost`` to another address; that one name is left to the
system's getaddrinfo, which answers it from /etc/hosts without the network.

**Configuration.** ``CHECKGATE_RESOLVERS``: comma-separated DNS servers (``10.0.0.53``, ``10.0.0.53:5353``,
``[2001:db8::53]:53``) used instead of resolv.conf's (read when a channel is made; tests point it at a
local server). A thread's channel is made again after `CHANNEL_MAX_AGE` seconds, so edits of resolv.conf
and /etc/hosts reach running workers as they reach new ones. A channel is also per process: a forked
child never uses its parent's sockets.

**Cost** (2-core dev VM, load average 2.9 from other work; ``python -m bench.resolver_cost``: 2,000
lookups per round in one thread, 5 interleaved rounds, medians): a name of /etc/hosts through c-ares 38 us
per lookup, against 10 us for ``socket.getaddrinfo`` in the calling thread and 29 us through the former
32-thread pool (its hand-offs between threads); ``localhost`` 11 us here (the system's getaddrinfo) against
27 us through that pool; a name answered by a DNS server on 127.0.0.1 61 us (the server, a Python thread
of the same process, included); making a channel, once per thread per `CHANNEL_MAX_AGE`, 44 us. So
+9 us per lookup against the former path, where a check costs 500-700 us of CPU (tasks/checks/http.py).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from typing import Any

import pycares

SERVERS_ENV = "CHECKGATE_RESOLVERS"
# Seconds a thread keeps its channel before reading the system's configuration again.
CHANNEL_MAX_AGE = 30.0
# Addresses a lookup returns at most (a DNS answer can hold hundreds; the checks use the first).
MAX_ADDRESSES = 64

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]

_READ = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
# c-ares' answers that mean "no such name / no address": the resolver worked, the name has none.
_NO_NAME = frozenset({pycares.errno.ARES_ENOTFOUND, pycares.errno.ARES_ENODATA, pycares.errno.ARES_ENONAME})


class _Channel:
    """A c-ares channel driven by the thread that made it: its sockets, polled by that thread only."""

    def __init__(self, servers: str) -> None:
        self.pid = os.getpid()
        self.servers = servers
        self.made = time.monotonic()
        self.poller = select.poll()
        self.fds: set[int] = set()
        self.channel = pycares.Channel(sock_state_cb=self._socket_state, servers=_server_list(servers) or None)

    def _socket_state(self, fd: int, readable: bool, writable: bool) -> None:
        mask = (_READ if readable else 0) | (select.POLLOUT if writable else 0)
        if mask:
            if fd in self.fds:
                self.poller.modify(fd, mask)
            else:
                self.poller.register(fd, mask)
                self.fds.add(fd)
        elif fd in self.fds:
            self.fds.discard(fd)
            self.poller.unregister(fd)

    def fresh(self, servers: str) -> bool:
        return self.pid == os.getpid() and self.servers == servers and time.monotonic() - self.made < CHANNEL_MAX_AGE

    def close(self) -> None:
        self.channel.close()


_local = threading.local()


def _server_list(servers: str) -> list[str]:
    return [item.strip() for item in servers.split(",") if item.strip()]


def _channel() -> _Channel:
    servers = os.environ.get(SERVERS_ENV, "")
    current: _Channel | None = getattr(_local, "channel", None)
    if current is not None and current.fresh(servers):
        return current
    if current is not None and current.pid == os.getpid():
        current.close()
    try:
        _local.channel = made = _Channel(servers)
    except pycares.AresError as exc:  # e.g. a malformed CHECKGATE_RESOLVERS
        detail = f"cannot set up the resolver ({SERVERS_ENV}={servers!r}): {exc}"
        raise socket.gaierror(socket.EAI_FAIL, detail) from None
    return made


def getaddrinfo(host: str, port: int | None, family: int, timeout: float) -> list[AddrInfo]:
    """The addresses of `host` as `socket.getaddrinfo(host, port, family, SOCK_STREAM)` gives them (the
    tuples ``(family, type, proto, canonname, sockaddr)``, in the resolver's order, at most `MAX_ADDRESSES`),
    looked up for at most `timeout` seconds.

    `family`: ``AF_UNSPEC``, ``AF_INET`` or ``AF_INET6``. An IP literal is returned as it is, without a
    query; ``localhost`` as the system's getaddrinfo answers it (from /etc/hosts). Raises `TimeoutError`
    when `timeout` passes first (the query is cancelled: nothing of it runs on), `socket.gaierror` when
    the name has no address of `family` (``EAI_NONAME``) or the resolver fails (``EAI_AGAIN``: its servers
    did not answer within their own timeouts; ``EAI_FAIL`` otherwise).
    """
    if host.rstrip(".").lower() == "localhost":
        # The host's own name for itself: the system answers it from /etc/hosts, never the network (c-ares
        # would add ::1 for it where /etc/hosts lists only 127.0.0.1, and checks of localhost would change).
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[:MAX_ADDRESSES]
    at = time.monotonic() + timeout
    state = _channel()
    answer: list[tuple[Any, int | None]] = []

    def done(result: Any, error: int | None) -> None:
        answer.append((result, error))

    state.channel.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM, callback=done)
    try:
        while not answer:
            left = at - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"resolving {host}: no answer within {timeout:.3g}s")
            wait = max(state.channel.timeout(left), 0.001)  # c-ares' next retry or timeout, at most the time left
            events = state.poller.poll(wait * 1000)
            if not events:  # a timeout of c-ares' own: it retries or gives up
                state.channel.process_fd(pycares.ARES_SOCKET_BAD, pycares.ARES_SOCKET_BAD)
                continue
            for fd, event in events:
                readable = fd if event & _READ else pycares.ARES_SOCKET_BAD
                writable = fd if event & select.POLLOUT else pycares.ARES_SOCKET_BAD
                state.channel.process_fd(readable, writable)
    finally:
        if not answer:  # out of time, or interrupted at the check's deadline: end the query now
            state.channel.cancel()
    result, error = answer[0]
    if error is not None:
        raise _lookup_error(error)
    return [_addrinfo(node) for node in result.nodes[:MAX_ADDRESSES]]


def _addrinfo(node: Any) -> AddrInfo:
    ip = node.addr[0].decode("ascii") if isinstance(node.addr[0], bytes) else node.addr[0]
    return node.family, socket.SOCK_STREAM, node.protocol or socket.IPPROTO_TCP, "", (ip, *node.addr[1:])


def _lookup_error(error: int) -> socket.gaierror:
    text = pycares.errno.strerror(error)
    if error in _NO_NAME:
        return socket.gaierror(socket.EAI_NONAME, text)
    if error in (pycares.errno.ARES_ETIMEOUT, pycares.errno.ARES_ECONNREFUSED):
        return socket.gaierror(socket.EAI_AGAIN, text)
    return socket.gaierror(socket.EAI_FAIL, text)
