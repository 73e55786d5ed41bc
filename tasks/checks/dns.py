"""`dns`: ask one DNS server one question and judge the answer.

Modeled on blackbox_exporter's prober/dns.go: the server is queried directly (no cache, no search
list), so the answer is that server's. The default server is the first nameserver of the worker's
/etc/resolv.conf; a server the caller names goes through the target policy like any other target, over
UDP and TCP alike.
"""

from __future__ import annotations

from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from tasks.checks._common import (
    NETWORK_ERRORS,
    Deadline,
    Endpoint,
    Probe,
    ProbeFailure,
    classify,
    port_param,
    regex_param,
    resolve,
    search,
)
from tasks.checks._guard import normalize_name, validate_host, validate_name
from tasks.registry import Param, check

RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV")
RCODES = ("NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP")
RESOLV_CONF = "/etc/resolv.conf"
# Characters of ``answers`` a result shows at most. A 64 KiB message can hold ~4,000 records whose names
# are 2-byte compression pointers to one 255-character name: over 1 MB of text, past the result-size bound
# (tasks/results.py). The assertions still see every answer; ``answers_truncated`` says when some are not shown.
MAX_ANSWERS_CHARS = 64 * 1024


def system_nameserver(filename: str = RESOLV_CONF) -> str | None:
    """The first nameserver of a resolv.conf, or None when it names none."""
    try:
        nameservers = dns.resolver.Resolver(filename=filename).nameservers
    except (dns.exception.DNSException, OSError, ValueError):
        return None
    return str(nameservers[0]) if nameservers else None


def _answer_text(rdata: Any) -> str:
    """An answer as dig +short shows it, but TXT unquoted (its strings joined) so regexes read naturally."""
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")
    return rdata.to_text()


def _comparable(answer: str) -> str:
    """Case and trailing dots do not matter when comparing answers: ``10 Mail.example.`` = ``10 mail.example``."""
    return " ".join(token.rstrip(".") for token in answer.lower().split())


def _judge(probe: Probe, answers: list[str], includes: str | None, match: str | None) -> tuple[str, str] | None:
    if includes:
        present = {_comparable(a) for a in answers}
        missing = [item.strip() for item in includes.split(",") if _comparable(item) not in present]
        if missing:
            return "answer_includes", f"missing from the answers: {', '.join(missing)}"
    if match is not None and not any(search(probe, match, answer, "answer_match") for answer in answers):
        return "answer_match", f"no answer matches {match!r}"
    return None


def _query(message: dns.message.Message, ip: str, port: int, protocol: str, deadline: Deadline) -> tuple[Any, str]:
    """Send the query; returns the response and the transport it came over (udp falls back to tcp).

    Each exchange gets only the time left: dnspython's udp_with_fallback would give the tcp retry a
    second full timeout, running the check past its deadline."""
    timeout = deadline.remaining()
    try:
        if protocol == "udp":
            try:
                return dns.query.udp(message, ip, timeout=timeout, port=port, raise_on_truncation=True), "udp"
            except dns.message.Truncated:
                timeout = deadline.remaining()
        return dns.query.tcp(message, ip, timeout=timeout, port=port), "tcp"
    except dns.exception.Timeout:
        raise ProbeFailure("timeout", f"no answer from {ip} in {timeout:.2f}s") from None
    except dns.exception.DNSException as exc:
        raise ProbeFailure("protocol_error", f"{type(exc).__name__}: {exc}") from None
    except EOFError:  # dnspython's TCP read of a connection closed before a whole answer
        raise ProbeFailure("protocol_error", f"{ip} closed the connection before a complete answer") from None


@check(
    "dns",
    params=(
        Param("name", str, required=True, max_length=300, doc="name to query (IDNA-encoded)", validator=validate_name),
        Param("record_type", str, default="A", choices=RECORD_TYPES, doc="record type to ask for"),
        Param(
            "server",
            str,
            max_length=300,
            doc="DNS server (IP or host name) to ask; default: the worker's first /etc/resolv.conf nameserver",
            validator=validate_host,
        ),
        port_param(default=53),
        Param("protocol", str, default="udp", choices=("udp", "tcp"), doc="udp (tcp when truncated) or tcp"),
        Param("rcode", str, default="NOERROR", choices=RCODES, doc="expected response code"),
        Param(
            "answer_includes",
            str,
            max_length=1024,
            doc="comma-separated values that must all be among the answers, as shown in `answers` (case and "
            "trailing dots ignored), e.g. 192.0.2.1 or 10 mail.example.com",
        ),
        regex_param(
            "answer_match",
            "regex at least one answer must match, as blackbox_exporter's fail_if_none_matches_regexp: matched "
            "against each answer on its own, as `answers` shows it (the record's data: 192.0.2.1, "
            "10 mail.example.com., a TXT record's strings joined), not against blackbox's whole "
            "'name TTL IN type data' line; case-sensitive unless (?i)",
        ),
    ),
    # Twice the dead-host detection bound (15 s, celeryconfig.broker_heartbeat): a task held by a worker
    # host that vanished is redelivered to a live one before the caller's default deadline.
    default_timeout=30.0,
    max_timeout=60.0,
)
def dns_check(
    name: str,
    record_type: str = "A",
    server: str | None = None,
    port: int = 53,
    protocol: str = "udp",
    rcode: str = "NOERROR",
    answer_includes: str | None = None,
    answer_match: str | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Query `server` for `name`/`record_type`; ok when the rcode is `rcode` and the answer assertions hold.

    Result: server, port, protocol, rcode, answers (TXT unquoted; the first ones, `MAX_ANSWERS_CHARS`
    characters at most), answers_truncated, ttl (lowest), authoritative, query_ms.
    """
    probe = Probe(deadline)
    facts: dict[str, Any] = {"name": name, "record_type": record_type, "server": server, "port": port}
    try:
        qname = dns.name.from_text(normalize_name(name))
    except (ValueError, dns.exception.DNSException) as exc:
        return probe.result("invalid_target", str(exc), **facts)
    try:
        endpoint = resolve(server, port, probe) if server else _system_endpoint(port, probe)
        facts["server"] = endpoint.ip
        message = dns.message.make_query(qname, dns.rdatatype.from_text(record_type))
        with probe.phase("query"):
            response, facts["protocol"] = _query(message, endpoint.ip, port, protocol, probe.deadline)
    except NETWORK_ERRORS as exc:
        return probe.result(*classify(exc), **facts, query_ms=probe.phases_ms("query")["query"])
    question = message.question[0]
    # Records of another class (CH, HS…) for the same name and type are not answers to an IN question.
    rrsets = [r for r in response.answer if (r.rdtype, r.rdclass) == (question.rdtype, question.rdclass)]
    answers = [_answer_text(rdata) for rrset in rrsets for rdata in rrset]
    shown = _within(answers, MAX_ANSWERS_CHARS)
    facts.update(
        rcode=dns.rcode.to_text(response.rcode()),
        answers=shown,
        answers_truncated=len(shown) < len(answers),
        ttl=min((r.ttl for r in rrsets), default=None),
        authoritative=bool(response.flags & dns.flags.AA),
        query_ms=probe.phases_ms("query")["query"],
    )
    if facts["rcode"] != rcode:
        return probe.result("rcode", f"rcode {facts['rcode']}, expected {rcode}", **facts)
    try:
        failed = _judge(probe, answers, answer_includes, answer_match)
    except ProbeFailure as exc:  # no time left to match the answers (`affordable`)
        return probe.result(exc.reason, exc.detail, **facts)
    return probe.result(*failed, **facts) if failed else probe.result(**facts)


def _within(answers: list[str], max_chars: int) -> list[str]:
    """The first `answers` whose lengths add up to at most `max_chars`."""
    size = 0
    for count, answer in enumerate(answers):
        size += len(answer)
        if size > max_chars:
            return answers[:count]
    return answers


def _system_endpoint(port: int, probe: Probe) -> Endpoint:
    nameserver = system_nameserver()
    if nameserver is None:
        raise ProbeFailure("dns_error", f"no nameserver in {RESOLV_CONF}")
    # The system resolver is the operator's choice, on its own port: only the deployment's endpoints are
    # refused there. On any other port the caller chose the target, and the whole policy judges it.
    return resolve(nameserver, port, probe, operator_chosen=port == 53)
