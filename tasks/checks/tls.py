"""`tls`: is the certificate on host:port trusted, for the right name, and far from expiry?

blackbox_exporter reports these through `probe_ssl_*` on its http and tcp probers; a check of its own
keeps certificate monitoring one request. A certificate that fails verification is a valid probe with
``ok: false`` (e.g. ``untrusted_certificate``) that still describes the certificate: the check then
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
        Param("warn_days", float, default=14.0, min=0, max=3650, doc="not ok when fewer days than this are left"),
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
    """Verify the certificate of host:port; ok when trusted, valid for the name, and `warn_days` from expiry.

    Result: verified, protocol, cipher, subject, issuer, sans, serial, fingerprint_sha256, not_before,
    not_after (epoch seconds), days_left, and verify_error when it was not verified.
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
    days_left = facts.get("days_left")
    if failure is None and days_left is not None and days_left < warn_days:
        failure = (
            "certificate_expiring" if days_left >= 0 else "certificate_expired",
            f"{days_left:.1f} days left, fewer than {warn_days:g}",
        )
    return probe.result(*failure, **facts) if failure else probe.result(**facts)
