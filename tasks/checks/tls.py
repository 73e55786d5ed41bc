"""`tls`: is the certificate chain on host:port trusted, for the right name, and far from expiry?

blackbox_exporter reports these through `probe_ssl_*` on its http and tcp probers; a check of its own
keeps certificate monitoring one request. Expiry is judged on the whole chain, not the leaf alone: the
earliest ``not_after`` of every certificate the server presented and of the chain verification built
(`_common.tls_details`), because a connection fails as soon as any of them expires (issue #12).
A certificate that fails verification is a valid probe with ``ok: false`` (e.g.
``untrusted_certificate``) that still describes the chain the server presented: the check then
connects a second time without verification, only to read it.
"""

from __future__ import annotations

import ssl
from typing import Any

from tasks.checks._common import (
    NETWORK_ERRORS,
    Probe,
    ca_bundle_param,
    ca_pem_param,
    classify,
    connect,
    host_param,
    ip_version_param,
    port_param,
    server_name_for,
    server_name_param,
    start_tls,
    tls_context,
    tls_details,
)
from tasks.registry import Param, check


def _handshake(
    host: str, port: int, server_name: str | None, ctx: ssl.SSLContext, probe: Probe, ip_version: str
) -> tuple[dict[str, Any], str]:
    """Connect, shake hands under `ctx`, and describe the session; returns (details, server name)."""
    sock, endpoint = connect(host, port, probe, ip_version)
    try:
        name = server_name_for(endpoint, server_name)
        sock = start_tls(sock, name, ctx, probe)
        return {"ip": endpoint.ip, **tls_details(sock)}, name
    finally:
        sock.close()


@check(
    "tls",
    params=(
        host_param(),
        port_param(default=443),
        server_name_param(),
        Param(
            "warn_days",
            float,
            default=14.0,
            min=0,
            max=3650,
            doc="not ok when fewer days than this are left before the first certificate of the chain expires "
            "(the leaf, an intermediate or the trust anchor: days_left, earliest_expiry_subject)",
        ),
        ca_bundle_param(),
        ca_pem_param(),
        ip_version_param(),
    ),
    default_timeout=30.0,
    max_timeout=120.0,
    # A certificate changes rarely; dashboards polling many hosts every few seconds need not re-handshake.
    cache_ttl=30.0,
)
def tls_check(
    host: str,
    port: int = 443,
    server_name: str | None = None,
    warn_days: float = 14.0,
    ca_bundle: str | None = None,
    ca_pem: str | None = None,
    ip_version: str = "any",
    deadline: float | None = None,
) -> dict[str, Any]:
    """Verify the chain of host:port; ok when trusted, valid for the name, and `warn_days` from expiry.

    Result: verified, protocol, cipher; the leaf's subject, issuer, sans, serial, fingerprint_sha256,
    not_before, not_after (epoch seconds) and leaf_days_left; the chain's earliest_expiry (epoch
    seconds), earliest_expiry_subject / _in / _position (which certificate expires first), days_left
    (until earliest_expiry: what `warn_days` is judged on), chain (as presented), and when verified
    verified_chain and last_chain_expiry; verify_error when it was not verified (see
    `_common.tls_details`). Reasons: certificate_expiring, certificate_expired, and the shared ones.
    """
    probe = Probe(deadline)
    facts: dict[str, Any] = {"host": host, "port": port}
    failure: tuple[str, str] | None = None
    try:
        try:
            details, name = _handshake(
                host, port, server_name, tls_context(True, ca_bundle, ca_pem=ca_pem), probe, ip_version
            )
            facts.update(server_name=name, verified=True)
        except ssl.SSLCertVerificationError as exc:
            failure = classify(exc)
            details, name = _handshake(host, port, server_name, tls_context(False), probe, ip_version)
            facts.update(server_name=name, verified=False, verify_error=failure[1])
    except NETWORK_ERRORS as exc:
        return probe.result(*(failure or classify(exc)), **facts)
    facts["protocol"] = details.pop("tls_version")
    facts.update(details)
    if failure is not None and failure[0] == "certificate_expired" and facts.get("days_left", 0) < 0:
        # OpenSSL says "certificate has expired" without saying which: the chain says it.
        failure = (failure[0], f"{failure[1]}: {_first_to_expire(facts)} expired {-facts['days_left']:.1f} days ago")
    days_left = facts.get("days_left")
    if failure is None and days_left is not None and days_left < warn_days:
        failure = (
            "certificate_expiring" if days_left >= 0 else "certificate_expired",
            f"{days_left:.1f} days left, fewer than {warn_days:g}: {_first_to_expire(facts)} expires first",
        )
    return probe.result(*failure, **facts) if failure else probe.result(**facts)


def _first_to_expire(facts: dict[str, Any]) -> str:
    """Which certificate expires first, e.g. ``chain[1] CN=R11,O=Let's Encrypt``."""
    return f"{facts['earliest_expiry_in']}[{facts['earliest_expiry_position']}] {facts['earliest_expiry_subject']}"
