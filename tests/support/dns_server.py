"""DNS servers on 127.0.0.1 for the dns check: an authoritative one (UDP) answering from a zone given as a
dict, and a scripted one (TCP) that answers each query with the bytes a test chooses."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable, Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

# (absolute lower-case name, record type) -> the records' data in zone-file syntax.
Zone = dict[tuple[str, str], list[str]]


def dns_answer(wire: bytes, zone: Zone, silent: Iterable[str] = ()) -> bytes | None:
    """The answer to the query `wire` from `zone` (authoritative; NXDOMAIN for names it lacks, an empty
    NOERROR for a type a known name lacks); None (no answer at all) for a name in `silent`."""
    query = dns.message.from_wire(wire)
    question = query.question[0]
    name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
    if name in silent:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    values = zone.get((name, rdtype))
    if values:
        response.answer.append(dns.rrset.from_text(question.name, 300, "IN", rdtype, *values))
    elif not any(key[0] == name for key in zone):
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response.to_wire()


@contextlib.contextmanager
def dns_server(zone: Zone, silent: Iterable[str] = ()) -> Iterator[int]:
    """Serve `zone` (see `dns_answer`) on an ephemeral UDP port of 127.0.0.1 until the block ends; yields
    the port."""
    silent = frozenset(silent)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            answer = dns_answer(wire, zone, silent)
            if answer is not None:
                sock.sendto(answer, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        sock.close()


@contextlib.contextmanager
def scripted_tcp_server(reply: Callable[[bytes], bytes]) -> Iterator[int]:
    """A DNS-over-TCP server on an ephemeral port of 127.0.0.1 that reads one query per connection (its
    length prefix, then the message), sends ``reply(query)`` as it is (b"": nothing) and closes; yields
    the port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                size = int.from_bytes(conn.recv(2), "big")
                query = b""
                while len(query) < size and (chunk := conn.recv(size - len(query))):
                    query += chunk
                conn.sendall(reply(query))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()
