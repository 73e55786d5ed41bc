"""What every check shares: the result shape, the time budget, guarded connections and TLS.

The result shape (as blackbox_exporter's `probe_success` plus details): every check returns a dict with
``ok`` (bool), ``reason`` (machine-readable, only when not ok), ``detail`` (human-readable, only when not
ok), ``duration_ms``, then its own fields. A target that is down, slow or wrong is a normal return with
``ok: false``; only bugs raise.

Reasons shared by all checks: ``timeout``, ``dns_error``, ``connection_refused``, ``connection_error``,
``target_refused`` (the SSRF guard), ``invalid_target``, ``tls_error``, ``untrusted_certificate``,
``hostname_mismatch``, ``certificate_expired``, ``certificate_not_yet_valid``, ``certificate_invalid``,
``bad_ca_bundle`` (``ca_bundle`` or ``ca_pem`` unusable, see `_trust`), ``protocol_error``. A failed
assertion's reason is the name of the parameter that asserted it (``status_codes``, ``body_match``,
``expect``, ``rcode``…).
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import tasks.checks._guard as _guard
import tasks.checks._resolver as _resolver
import tasks.checks._trust as _trust
from tasks.checks._pattern import MAX_PATTERN_CHARS, compile_pattern, validate_pattern, worst_case_seconds
from tasks.checks._x509 import CertInfo, parse_certificate
from tasks.deadline import current as current_deadline
from tasks.registry import Param

# How long a check may take when it is called without a deadline (tests, direct calls).
DEFAULT_TIMEOUT = 10.0
# Finish this much before the task's deadline (at most 10 % of the budget) so the result still arrives
# in time to be an answer rather than a 504, as blackbox_exporter's --timeout-offset does.
DEADLINE_MARGIN = 0.5
MAX_DETAIL = 200

_FAMILIES = {"any": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}

# X509_V_ERR_* codes (OpenSSL's x509_vfy.h) that deserve their own reason.
_VERIFY_REASONS = {
    2: "untrusted_certificate",  # unable to get issuer certificate
    9: "certificate_not_yet_valid",
    10: "certificate_expired",
    18: "untrusted_certificate",  # self-signed certificate
    19: "untrusted_certificate",  # self-signed certificate in chain
    20: "untrusted_certificate",  # unable to get local issuer certificate
    21: "untrusted_certificate",  # unable to verify the first certificate
    62: "hostname_mismatch",
    64: "hostname_mismatch",  # IP address mismatch
}


class ProbeFailure(Exception):
    """The target is down, slow or wrong: the check answers ``ok: false`` with this reason, not a task error.

    Raise it from a check (or let `resolve`, `connect` and `Deadline.remaining` raise it) and catch it
    with `NETWORK_ERRORS`; `classify` turns it into its ``(reason, detail)``.

    Parameters:
      reason(str): machine-readable, snake_case: one of the shared reasons (module docstring) or the
        name of the parameter whose assertion failed.
      detail(str): for people, at most `MAX_DETAIL` characters are kept in the answer.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# What a check catches and reports as ``ok: false`` (through `classify`); anything else is a bug and
# raises, which the caller sees as a 502.
NETWORK_ERRORS = (ProbeFailure, OSError, http.client.HTTPException)


def classify(exc: BaseException) -> tuple[str, str]:
    """The ``(reason, detail)`` of an exception out of `NETWORK_ERRORS`, for `Probe.result`.

    A `ProbeFailure` keeps its own; certificate errors map to ``untrusted_certificate``,
    ``hostname_mismatch``, ``certificate_expired``… (OpenSSL's verify code), other TLS errors to
    ``tls_error``, timeouts to ``timeout``, refusals to ``connection_refused``, lookup errors to
    ``dns_error``, HTTP framing errors to ``protocol_error`` and any other `OSError` to
    ``connection_error``. Never raises.
    """
    if isinstance(exc, ProbeFailure):
        return exc.reason, exc.detail
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_REASONS.get(exc.verify_code, "certificate_invalid"), exc.verify_message or str(exc)
    if isinstance(exc, ssl.SSLError):
        return "tls_error", exc.reason or str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout", str(exc) or "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused", str(exc)
    if isinstance(exc, socket.gaierror):
        return "dns_error", str(exc)
    if isinstance(exc, http.client.HTTPException):
        return "protocol_error", f"{type(exc).__name__}: {exc}"
    return "connection_error", f"{type(exc).__name__}: {exc}"


class Deadline:
    """The time a check may still spend: its deadline (epoch seconds, less a margin), or `DEFAULT_TIMEOUT`."""

    def __init__(self, deadline: float | None, default: float = DEFAULT_TIMEOUT) -> None:
        budget = default if deadline is None else deadline - time.time()
        budget -= min(DEADLINE_MARGIN, max(budget, 0) * 0.1)
        self.at = time.monotonic() + budget

    def remaining(self) -> float:
        """Seconds left; raises `ProbeFailure("timeout")` when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise ProbeFailure("timeout", "deadline reached")
        return left


class Probe:
    """One run of a check: its clock, its deadline, its phase timings and its answer.

    Make one at the start of the check function and pass it to `resolve` and `connect`, which time
    their phases on it and stop at its deadline. ``probe.deadline.remaining()`` is the time left, in
    seconds, for a socket timeout or a client library's; it raises `ProbeFailure` (``timeout``) when
    none is. `result` builds the answer.

    Parameters:
      deadline(float): epoch seconds, as a check function receives it; None: the deadline of the task
        running in this thread (`tasks.deadline`), else `DEFAULT_TIMEOUT` (10 s) from now (a direct
        call). The probe finishes `DEADLINE_MARGIN` (0.5 s, at most 10 % of the budget) before it, so
        its answer still arrives in time.
    """

    def __init__(self, deadline: float | None = None) -> None:
        self.started = time.perf_counter()
        self.deadline = Deadline(current_deadline() if deadline is None else deadline)
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase; repeated phases (redirect hops, retries) add up."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + (time.perf_counter() - began) * 1000

    def phases_ms(self, *names: str) -> dict[str, float]:
        """Milliseconds spent in each named phase (0.0 for a phase that did not run), rounded to µs."""
        return {name: round(self.phases.get(name, 0.0), 3) for name in names}

    def elapsed_ms(self) -> float:
        """Milliseconds since the probe was made, rounded to µs."""
        return round((time.perf_counter() - self.started) * 1000, 3)

    def result(self, reason: str | None = None, detail: str = "", **fields: Any) -> dict[str, Any]:
        """The check's answer: ``{"ok", "reason", "detail", "duration_ms", **fields}``.

        ``ok`` is true unless a `reason` is given; ``reason`` and ``detail`` (cut to `MAX_DETAIL`
        characters) appear only then; ``duration_ms`` is `elapsed_ms`. After an exception of
        `NETWORK_ERRORS`: ``probe.result(*classify(exc), **fields)``. `fields` must serialize with
        msgpack (str, numbers, bools, None, lists, dicts).
        """
        out: dict[str, Any] = {"ok": reason is None}
        if reason is not None:
            out["reason"] = reason
            if detail:
                out["detail"] = detail[:MAX_DETAIL]
        out["duration_ms"] = self.elapsed_ms()
        out.update(fields)
        return out


# A search whose worst case is this short may still run at the deadline: judging what arrived is part
# of the answer (a reply read until the deadline is matched then).
MATCH_SLACK_S = 0.05


def affordable(probe: Probe, compiled: Any, length: int, what: str) -> None:
    """Raise `ProbeFailure("timeout")` unless searching `compiled` over `length` characters surely ends
    by the probe's deadline, give or take `MATCH_SLACK_S` (`_pattern.worst_case_seconds`: a search is one
    C call that no deadline stops)."""
    need = worst_case_seconds(compiled, length)
    left = max(probe.deadline.at - time.monotonic(), 0.0)
    if need > left + MATCH_SLACK_S:
        detail = f"matching {what} over {length} characters could take up to {need:.1f}s, {left:.1f}s left"
        raise ProbeFailure("timeout", detail)


def search(probe: Probe, pattern: str, text: str | bytes | bytearray, what: str, *, before_end: bool = False) -> bool:
    r"""Whether the caller's `pattern` (RE2) matches anywhere in `text`, given the time the probe has left
    (raises `ProbeFailure("timeout")` when the search might outlast it; `what` names the parameter).

    `text` is a str, or the UTF-8 bytes of one: RE2 searches those bytes either way, so the answer is the
    same, and bytes spare the str and RE2's UTF-8 copy of it (the http check's bodies).

    `before_end`: only a match that ends before the end of `text` counts, its assertions still seeing the
    whole `text` (RE2's `endpos` keeps the text as context: ``$`` and ``\z`` cannot match before its end,
    ``\b`` looks at the next character). For a text cut at a read limit such a match is also a match of
    the whole text, whatever followed; one that reaches the cut (``^[a]*$``, ``a+`` at the very end) is not."""
    compiled = compile_pattern(pattern)
    affordable(probe, compiled, len(text), what)
    if before_end:
        return len(text) > 0 and compiled.search(text, 0, len(text) - 1) is not None
    return compiled.search(text) is not None


# --- resolving and connecting under the guard -----------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A resolved address the target policy allows: what a socket may connect (or send) to.

    ``host`` is the normalized (ASCII, IDNA) name it was resolved from, the TLS server name by default;
    ``family`` is `socket.AF_INET` or `socket.AF_INET6`; ``sockaddr`` is what `socket.connect` and
    `socket.sendto` take.
    """

    host: str
    family: int
    sockaddr: tuple[Any, ...]

    @property
    def ip(self) -> str:
        """The address as text (``192.0.2.7``, ``2001:db8::7``)."""
        return self.sockaddr[0]


def resolve(host: str, port: int, probe: Probe, ip_version: str = "any", *, operator_chosen: bool = False) -> Endpoint:
    """The one address of `host` a check may connect or send to on `port`: resolved, judged and pinned.

    Every check, built-in or plugin, reaches the network through this function (TCP through `connect`,
    which calls it; UDP or a client library with the returned `Endpoint`): the target policy
    (`_guard.target_refusal`) judges the name and port before the lookup, then the chosen address after
    it, so neither a DNS answer nor a redirect hop can lead a check to a refused target. Connect or send to
    ``endpoint.sockaddr``, never to the name again: a second lookup may answer differently. The address is
    chosen as blackbox_exporter does (the first one, no fallback).

    `operator_chosen`: the host is the operator's, not the caller's (the system resolver on its own port),
    so only the deployment's own endpoints are refused. Raises `ProbeFailure` with ``invalid_target``,
    ``target_refused``, ``dns_error`` or ``timeout``.
    """
    try:
        host = _guard.normalize_host(host)
    except ValueError as exc:
        raise ProbeFailure("invalid_target", str(exc)) from None
    if why := _guard.target_refusal(host, port, operator_chosen=operator_chosen):
        raise ProbeFailure("target_refused", why)
    family = _FAMILIES[ip_version]
    with probe.phase("dns"):
        infos = _getaddrinfo(host, port, family, probe)
    if not infos:
        raise ProbeFailure("dns_error", f"{host}: no address")
    chosen = Endpoint(host, infos[0][0], infos[0][4])
    if why := _guard.target_refusal(host, port, chosen.ip, operator_chosen=operator_chosen):
        raise ProbeFailure("target_refused", why)
    return chosen


def _getaddrinfo(host: str, port: int, family: int, probe: Probe) -> list[Any]:
    try:
        if _guard.parse_ip(host) is not None:  # literals need no lookup
            return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        # Bounded by the deadline and cancelled there: a name whose server never answers holds nothing after.
        return _resolver.getaddrinfo(host, port, family, probe.deadline.remaining())
    except TimeoutError:
        raise ProbeFailure("timeout", f"resolving {host}") from None
    except socket.gaierror as exc:
        raise ProbeFailure("dns_error", f"{host}: {exc.strerror}") from None


def connect(host: str, port: int, probe: Probe, ip_version: str = "any") -> tuple[socket.socket, Endpoint]:
    """A TCP connection to the one address `resolve` allows for `host` and `port`.

    Parameters:
      host(str): a name or an IP literal, as the caller gave it (`host_param`).
      port(int): 1..65535.
      probe(Probe): times the phases ``dns`` and ``connect`` (milliseconds, `Probe.phases_ms`) and
        bounds both by its deadline.
      ip_version(str): ``any`` (the resolver's first address), ``4`` or ``6``.

    Returns:
      ``(sock, endpoint)``: a connected socket whose timeout is the time left at connect
      (set your own for later reads), which the caller closes, and the `Endpoint` it reached.

    Raises:
      ProbeFailure: ``invalid_target``, ``target_refused``, ``dns_error`` or ``timeout`` (from `resolve`).
      OSError: the connection failed (refused, unreachable, timed out): catch `NETWORK_ERRORS` and
        answer with `classify`.
    """
    endpoint = resolve(host, port, probe, ip_version)
    sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
    try:
        sock.settimeout(probe.deadline.remaining())
        with probe.phase("connect"):
            sock.connect(endpoint.sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock, endpoint


# --- TLS ------------------------------------------------------------------------------------------


def tls_context(
    verify: bool = True, ca_bundle: str | None = None, alpn: tuple[str, ...] = (), *, ca_pem: str | None = None
) -> ssl.SSLContext:
    """A client context trusting `ca_bundle` and/or `ca_pem` (`_trust`), or the system store.

    Contexts are shared and cached by what they trust (content hashes): loading a trust store costs
    milliseconds. Raises `ProbeFailure("bad_ca_bundle")` for trust anchors that cannot be used.
    """
    try:
        trusted = _trust.anchors(ca_bundle, ca_pem) if verify else None  # nothing verified, nothing read
        return _cached_context(verify, trusted, alpn)
    except _trust.CARefused as exc:
        raise ProbeFailure("bad_ca_bundle", exc.detail) from None


@functools.lru_cache(maxsize=32)
def _cached_context(verify: bool, trusted: _trust.Anchors | None, alpn: tuple[str, ...]) -> ssl.SSLContext:
    if verify and trusted is None:
        ctx = ssl.create_default_context()
    elif verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # what create_default_context(cadata=…) makes
        trusted.load_into(ctx)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def server_name_for(endpoint: Endpoint, server_name: str | None) -> str:
    """The name to send as SNI and match the certificate against: `server_name` or the host, in ASCII."""
    if server_name is None:
        return endpoint.host
    try:
        return _guard.normalize_host(server_name)
    except ValueError as exc:
        raise ProbeFailure("invalid_target", f"server_name: {exc}") from None


def start_tls(sock: socket.socket, server_name: str, ctx: ssl.SSLContext, probe: Probe) -> ssl.SSLSocket:
    """Handshake on a connected socket (phase ``tls``); the socket is closed when it fails."""
    sock.settimeout(probe.deadline.remaining())
    with probe.phase("tls"):
        # An IP literal as server_hostname sends no SNI and is matched against IP SANs.
        return ctx.wrap_socket(sock, server_hostname=server_name)


def tls_details(tls: ssl.SSLSocket | ssl.SSLObject) -> dict[str, Any]:
    """Protocol, cipher, and the certificates of a finished handshake (decoded even when not verified).

    Works on an `ssl.SSLSocket` and on an `ssl.SSLObject` (asyncio, HTTP client libraries). Fields:

    - ``tls_version``, ``cipher``: as `SSLSocket.version()` and `cipher()` name them.
    - The leaf (the server's own certificate), unchanged from earlier releases: ``subject``, ``issuer``
      (RFC 4514), ``sans``, ``serial`` (hex), ``fingerprint_sha256``, ``not_before``, ``not_after``
      (epoch seconds), and ``leaf_days_left``; ``sans_error`` when its extensions cannot be decoded (a
      duplicate extension, an x400Address SAN: `_x509`), ``sans`` then being empty. An undecodable leaf
      has none of these fields.
    - ``chain``: every certificate the server presented, in the order it sent them (0 = the leaf), each
      ``{subject, issuer, serial, fingerprint_sha256, not_before, not_after}`` (an undecodable one is
      ``{fingerprint_sha256, error}``). Not capped here: OpenSSL already refuses a certificate list over
      100 KiB (its max_cert_list default), a few hundred certificates at the very most.
    - ``verified_chain``: only when the handshake verified the peer: the chain OpenSSL built and trusted,
      leaf to trust anchor (which may come from the local store rather than from the server), same shape.
    - ``earliest_expiry``: the earliest ``not_after`` over ``chain`` and ``verified_chain`` together: the
      first moment some client stops accepting the connection. ``earliest_expiry_subject`` names that
      certificate; it is ``result[earliest_expiry_in][earliest_expiry_position]`` (``earliest_expiry_in``
      is ``chain`` when the server sent it, else ``verified_chain``).
    - ``days_left``: days until ``earliest_expiry`` (it was the leaf's until issue #12: an intermediate that
      expires first now shows here, and checks judge expiry on it; ``leaf_days_left`` keeps the leaf's).
    - ``last_chain_expiry``: only when verified: the earliest ``not_after`` of the verified chain, as
      blackbox_exporter's ``probe_ssl_last_chain_expiry_timestamp_seconds`` (OpenSSL builds one chain,
      so "the chain that lasts longest" is that chain).
    """
    cipher = tls.cipher()
    out: dict[str, Any] = {"tls_version": tls.version(), "cipher": cipher[0] if cipher else None}
    presented = _peer_chain(tls, "get_unverified_chain")
    if presented is None:  # no chain API: the leaf is all this Python can give
        leaf_der = tls.getpeercert(binary_form=True)
        presented = [leaf_der] if leaf_der else []
    if not presented:
        return out
    # Without verification OpenSSL's "verified" chain is just the presented one again: not a chain to report.
    verified = _peer_chain(tls, "get_verified_chain") if tls.context.verify_mode == ssl.CERT_REQUIRED else None
    now = time.time()
    chain = [_decode(der) for der in presented]
    leaf = chain[0]
    if isinstance(leaf, CertInfo):
        out.update(
            subject=leaf.subject,
            issuer=leaf.issuer,
            sans=list(leaf.sans),
            serial=leaf.serial,
            fingerprint_sha256=leaf.sha256,
            not_before=leaf.not_before,
            not_after=leaf.not_after,
            leaf_days_left=_days(leaf.not_after, now),
        )
        if leaf.sans_error is not None:
            out["sans_error"] = leaf.sans_error
    verified_chain = [_decode(der) for der in verified] if verified else []
    earliest = _earliest(chain, verified_chain)
    if earliest is not None:
        where, position, cert = earliest
        out.update(
            days_left=_days(cert.not_after, now),
            earliest_expiry=cert.not_after,
            earliest_expiry_subject=cert.subject,
            earliest_expiry_in=where,
            earliest_expiry_position=position,
        )
    verified_expiries = [c.not_after for c in verified_chain if isinstance(c, CertInfo)]
    if verified_expiries:
        out["last_chain_expiry"] = min(verified_expiries)
    out["chain"] = [_chain_entry(c, der) for c, der in zip(chain, presented, strict=True)]
    if verified:
        out["verified_chain"] = [_chain_entry(c, der) for c, der in zip(verified_chain, verified, strict=True)]
    return out


def _peer_chain(tls: ssl.SSLSocket | ssl.SSLObject, method: str) -> list[bytes] | None:
    """The DER certificates `method` (``get_unverified_chain`` or ``get_verified_chain``) returns.

    Python 3.13 made both public (lists of DER bytes). Python 3.10 to 3.12 have the very same OpenSSL
    calls (SSL_get_peer_cert_chain, SSL_get0_verified_chain) only on the private `_sslobj` of an
    SSLSocket or SSLObject, returning `_ssl.Certificate` objects whose `public_bytes()` is PEM. We use
    them because nothing public on 3.11 gives more than the leaf, and an expiry judged on the leaf alone
    misses an expiring intermediate (issue #12). None when neither exists (the caller falls back to the
    leaf).
    """
    public = getattr(tls, method, None)
    if callable(public):
        return list(public() or ())
    private = getattr(getattr(tls, "_sslobj", None), method, None)
    if not callable(private):
        return None
    return [ssl.PEM_cert_to_DER_cert(cert.public_bytes()) for cert in private() or ()]


def _decode(der: bytes) -> CertInfo | None:
    try:
        return parse_certificate(der)
    except ValueError:
        return None  # the handshake succeeded; a certificate we cannot decode is not the target's failure


def _days(when: float, now: float) -> float:
    return round((when - now) / 86400, 3)


def _earliest(chain: list[CertInfo | None], verified: list[CertInfo | None]) -> tuple[str, int, CertInfo] | None:
    """(list name, position, certificate) of the earliest expiry; presented certificates win ties."""
    sent = {c.sha256 for c in chain if c is not None}
    candidates = [("chain", i, c) for i, c in enumerate(chain) if c is not None]
    candidates += [("verified_chain", i, c) for i, c in enumerate(verified) if c is not None and c.sha256 not in sent]
    return min(candidates, key=lambda item: item[2].not_after, default=None)


def _chain_entry(cert: CertInfo | None, der: bytes) -> dict[str, Any]:
    if cert is None:
        return {"fingerprint_sha256": hashlib.sha256(der).hexdigest(), "error": "undecodable certificate"}
    return {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "serial": cert.serial,
        "fingerprint_sha256": cert.sha256,
        "not_before": cert.not_before,
        "not_after": cert.not_after,
    }


# --- parameters several checks declare ------------------------------------------------------------


def host_param(doc: str = "host name or IP address to connect to (IDNA-encoded when not ASCII)") -> Param:
    """The required parameter ``host`` (at most 300 characters), which the gateway pre-checks without
    DNS: a host name or IP literal the target policy does not refuse as written (a 400 naming ``host``
    otherwise). The worker judges it again after resolution (`resolve`). `doc`: its line in `/checks`."""
    return Param("host", str, required=True, max_length=300, doc=doc, validator=_guard.validate_host)


def port_param(default: int | None = None) -> Param:
    """The parameter ``port``, an integer 1..65535: required without a `default`, else optional."""
    return Param("port", int, required=default is None, default=default, min=1, max=65535, doc="TCP port, 1..65535")


def ip_version_param() -> Param:
    return Param(
        "ip_version",
        str,
        default="any",
        choices=("any", "4", "6"),
        doc="address family to use: any (the resolver's first address), 4 or 6",
    )


def verify_tls_param() -> Param:
    return Param("verify_tls", bool, default=True, doc="verify the certificate chain and host name")


def ca_bundle_param() -> Param:
    return Param(
        "ca_bundle",
        str,
        max_length=1024,
        doc="absolute path, on the worker, of a PEM CA bundle under CHECKGATE_CA_DIRS to trust instead of "
        "the system store",
        validator=_trust.validate_ca_bundle,
    )


def ca_pem_param() -> Param:
    return Param(
        "ca_pem",
        str,
        max_length=_trust.MAX_CA_PEM_CHARS,
        doc="PEM CA certificates (URL-encoded) to trust instead of the system store; with ca_bundle, both",
        validator=_trust.validate_ca_pem,
    )


def server_name_param() -> Param:
    return Param(
        "server_name",
        str,
        max_length=300,
        doc="TLS server name (SNI and certificate host name check); default: the host",
        validator=_guard.validate_host_syntax,
    )


def regex_param(name: str, doc: str) -> Param:
    """An optional parameter `name` holding a caller's regular expression (at most `MAX_PATTERN_CHARS`).

    The gateway compiles it with RE2 and answers a pattern RE2 refuses (backreferences, lookaround,
    a syntax error, a program too big) with a 400 naming `name`. Match it in the check with
    ``compile_pattern(value).search(text)``: RE2 runs in time linear in the text, so no pattern can
    hold a worker (`_pattern`). `doc` says what text it is matched against; " (RE2 syntax)" is added.
    """
    return Param(name, str, max_length=MAX_PATTERN_CHARS, doc=f"{doc} (RE2 syntax)", validator=validate_pattern)
