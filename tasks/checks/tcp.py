r"""`tcp`: does a port accept connections, and does it say what it should?

Modeled on blackbox_exporter's prober/tcp.go with one query/response step: connect (optionally over
TLS), send an optional string, and read the reply line by line until a line matches an optional regex.

`expect` is applied as blackbox_exporter's query_response applies it (its users' patterns assume that):
each line of the reply is matched on its own, without its ending (``\n``, or ``\r\n``: a ``\r`` before
the ``\n`` is dropped), so ``^`` and ``$`` anchor at the line's start and end. The first matching line
ends the wait at once, whether or not the peer closes. A line also ends where the peer closes, where
`MAX_REPLY_BYTES` have been read (the reply's cap, not just the line's), or at the deadline (a prompt
waits for its answer). A line cut at `MAX_REPLY_BYTES` is no whole line, though: only a match ending
before the cut counts, and one reaching it (``^a+$`` on 70,000 ``a`` then ``ERROR``) answers
``reason: reply_truncated``, not a pass. A line that
has not ended yet (a ``login: `` prompt, a binary greeting) is tried as it arrives, and a match counts
at once when it ends before the text received so far, so the rest of the line cannot undo it
(`_read_lines`); blackbox_exporter waits for the line's end there, and fails at its deadline.

Multi-line patterns: a line never contains a line break, so a pattern that needs one (``hello\r\n220``)
never matches, as in blackbox_exporter; the failure's detail then says why. Such patterns are not
refused up front: a line break in an optional or negated part (``ready\r?$``, ``[^\n]+``) is harmless,
and telling those apart would mean parsing RE2's syntax ourselves.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from tasks.checks._common import (
    NETWORK_ERRORS,
    Probe,
    ProbeFailure,
    affordable,
    ca_bundle_param,
    ca_pem_param,
    classify,
    connect,
    host_param,
    ip_version_param,
    port_param,
    regex_param,
    server_name_for,
    server_name_param,
    start_tls,
    tls_context,
    tls_details,
    verify_tls_param,
)
from tasks.checks._pattern import compile_pattern
from tasks.registry import Param, check

MAX_REPLY_BYTES = 64 * 1024  # read at most this much of a reply, all its lines together
EXCERPT_CHARS = 256
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|[rnt0\\])")
_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}
# A pattern that spells a line break: it cannot match inside one line (the failure's detail says so).
_LINE_BREAK_RE = re.compile(r"[\r\n]|\\[nr]|\\x0[aAdD]|\\x\{0*[aAdD]\}")


def decode_escapes(text: str) -> bytes:
    r"""`text` as UTF-8 with ``\r \n \t \0 \\ \xHH`` decoded: typing CRLF in a query string is awkward."""
    out, pos = [], 0
    for match in _ESCAPE_RE.finditer(text):
        out.append(text[pos : match.start()].encode())
        code = match[1]
        out.append(bytes([int(code[1:], 16)]) if code.startswith("x") else _ESCAPES[code])
        pos = match.end()
    out.append(text[pos:].encode())
    return b"".join(out)


def _line_text(raw: bytes) -> str:
    r"""A line as its pattern sees it: UTF-8 (bad bytes replaced), without its ``\r\n`` or ``\n``."""
    return raw.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", "replace")


def _matches_before_end(pattern: Any, line: str) -> bool:
    """Whether `pattern` matches `line` with a match ending before its last character: RE2's `endpos`
    keeps the whole line as context, so ``$`` cannot match there and ``\\b`` sees the next character.
    Such a match is also a match of the line however it goes on; one reaching the end may not be."""
    return len(line) > 0 and pattern.search(line, 0, len(line) - 1) is not None


def _read_lines(sock: socket.socket, pattern: Any, probe: Probe) -> tuple[str, str | None, str | None]:
    """Read the reply until one of its lines matches; returns (the reply read, the matching line or None,
    why the last line was cut or None).

    Stops at the first matching line, when the peer closes, after `MAX_REPLY_BYTES`, or at the deadline.
    The last, unterminated line is matched whole when the peer closed after it or at the deadline (a
    prompt waits for its answer); when `MAX_REPLY_BYTES` cut it instead, only a match ending before the
    cut counts, as for a line still arriving, and one reaching the cut sets the third value
    (``"MAX_REPLY_BYTES"``: the caller's ``reply_truncated``). A line still arriving is also tried as it
    grows (a prompt or a binary greeting may never end its line) and its match counts only if it ends
    before the text received so far does (`_matches_before_end`), while one that reaches the end
    (``ready$`` on ``220 ready`` of ``220 ready for more``) waits for the rest. Complete lines are matched
    once and an unfinished line only when it has doubled, so matching stays linear in the reply however
    it is cut into segments.
    """
    received = bytearray()
    start = 0  # where the line being read begins
    tried = 0  # how long the unfinished line was when it was last tried
    cut = "MAX_REPLY_BYTES"  # why the last line ended, when not by itself: only the cap cuts a line
    while True:
        while (end := received.find(b"\n", start)) >= 0:
            line = _line_text(received[start : end + 1])
            start, tried = end + 1, 0
            affordable(probe, pattern, len(line), "expect")
            if pattern.search(line):
                return received.decode("utf-8", "replace"), line, None
        unfinished = len(received) - start
        if unfinished and unfinished >= 2 * tried:
            tried = unfinished
            line = received[start:].decode("utf-8", "replace")
            affordable(probe, pattern, len(line), "expect")
            if _matches_before_end(pattern, line):
                return received.decode("utf-8", "replace"), line.removesuffix("\r"), None
        if len(received) >= MAX_REPLY_BYTES:
            break
        try:
            sock.settimeout(probe.deadline.remaining())
            chunk = sock.recv(MAX_REPLY_BYTES - len(received))
        except (TimeoutError, ProbeFailure):
            if received:  # something came, just not what was expected
                # A prompt (``login: ``) waits for the client: the line it ends at the deadline is whole.
                cut = ""
                break
            raise
        if not chunk:
            cut = ""  # the peer closed: the last line is whole
            break
        received += chunk
    reply = received.decode("utf-8", "replace")
    if start >= len(received):
        return reply, None, None
    line = _line_text(received[start:])
    affordable(probe, pattern, len(line), "expect")
    if not cut:
        return reply, (line if pattern.search(line) else None), None
    raw = received[start:].decode("utf-8", "replace")
    if pattern.search(raw) is None:
        return reply, None, None
    return (reply, line, None) if _matches_before_end(pattern, raw) else (reply, None, cut)


@check(
    "tcp",
    params=(
        host_param(),
        port_param(),
        Param("send", str, doc=r"text to send after connecting, UTF-8; \r \n \t \0 \\ \xHH are decoded"),
        regex_param(
            "expect",
            "regex one line of the reply must match, as blackbox_exporter's query_response: each line is matched "
            "on its own, without its \\n or \\r\\n, so ^ and $ anchor at the line; the first matching line ends "
            "the wait, else the check reads until the peer closes, 64 KiB or the deadline; a line still "
            "arriving (a prompt) matches at once when its match ends before the text received so far; a line "
            "cut at 64 KiB passes only with a match ending before the cut (one reaching it, e.g. ending in $: "
            "reason reply_truncated)",
        ),
        Param(
            "tls",
            bool,
            default=False,
            doc="speak TLS after connecting; the result then describes the certificate chain as the tls check does",
        ),
        server_name_param(),
        verify_tls_param(),
        ca_bundle_param(),
        ca_pem_param(),
        ip_version_param(),
    ),
    default_timeout=30.0,
    max_timeout=120.0,
)
def tcp_check(
    host: str,
    port: int,
    send: str | None = None,
    expect: str | None = None,
    tls: bool = False,
    server_name: str | None = None,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    ca_pem: str | None = None,
    ip_version: str = "any",
    deadline: float | None = None,
) -> dict[str, Any]:
    """Connect to host:port (optionally TLS), send `send`, and check the reply's lines against `expect`.

    Result: ip, port, connect_ms; with expect, reply (the first 256 characters read) and matched_line
    (the line that matched, 256 characters at most); with tls, tls_ms and what `_common.tls_details`
    says (tls_version, cipher, the leaf's fields, chain, verified_chain, earliest_expiry, days_left…).
    Reasons besides the shared ones: ``expect`` (no line matches), ``reply_truncated`` (only the last
    line, cut at `MAX_REPLY_BYTES`, matches, and only up to the cut).
    """
    probe = Probe(deadline)
    facts: dict[str, Any] = {"host": host, "port": port}
    try:
        sock, endpoint = connect(host, port, probe, ip_version)
        facts["ip"] = endpoint.ip
        try:
            if tls:
                ctx = tls_context(verify_tls, ca_bundle, ca_pem=ca_pem)
                sock = start_tls(sock, server_name_for(endpoint, server_name), ctx, probe)
                facts.update(tls_details(sock))
            if send:
                sock.settimeout(probe.deadline.remaining())
                sock.sendall(decode_escapes(send))
            if expect is not None:
                reply, matched, cut = _read_lines(sock, compile_pattern(expect), probe)
                facts["reply"] = reply[:EXCERPT_CHARS]
                if matched is None and cut:
                    detail = (
                        f"expect {expect!r} matches the last line only up to where it was cut ({cut}, "
                        f"{len(reply.encode())} bytes read): the rest of the line could undo it"
                    )
                    return _answer(probe, facts, "reply_truncated", detail)
                if matched is None:
                    return _answer(probe, facts, "expect", _no_match_detail(expect))
                facts["matched_line"] = matched[:EXCERPT_CHARS]
        finally:
            sock.close()
    except NETWORK_ERRORS as exc:
        return _answer(probe, facts, *classify(exc))
    return _answer(probe, facts)


def _no_match_detail(expect: str) -> str:
    detail = "no line of the reply matches"
    if _LINE_BREAK_RE.search(expect):  # first: the detail is cut at 200 characters, a pattern may be long
        detail += " (lines are matched one by one, without their endings: a pattern cannot span two)"
    return f"{detail}: {expect!r}"


def _answer(probe: Probe, facts: dict[str, Any], reason: str | None = None, detail: str = "") -> dict[str, Any]:
    timings = probe.phases_ms("connect", "tls")
    facts = {**facts, "connect_ms": timings["connect"]}
    if "tls_version" in facts:
        facts["tls_ms"] = timings["tls"]
    return probe.result(reason, detail, **facts)
