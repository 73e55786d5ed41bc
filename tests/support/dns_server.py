"""An authoritative DNS server on 127.0.0.1 (UDP) answering from a zone given as a dict, for the dns check."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable, Iterator

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
