"""`format=prometheus`: a check's answer as Prometheus text, the way blackbox_exporter writes a probe.

Prometheus can scrape `/check/http?url=…&format=prometheus` directly. The blackbox names
(`probe_success`, `probe_duration_seconds`, `probe_http_status_code`, …) come first so existing
dashboards and alerts work unchanged; `checkgate_check_*` series follow, including one gauge per
numeric field of the result, so a team's own check types get metrics without writing any code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

# Result field → blackbox_exporter metric (and the factor to its unit). The certificate series come
# from `_tls_series` (they need more than one field each).
BLACKBOX_FIELDS: dict[str, tuple[str, float]] = {
    "status_code": ("probe_http_status_code", 1),
    "redirects": ("probe_http_redirects", 1),
    # The Content-Length header as sent, and the body's size once decoded (blackbox's names).
    "content_length": ("probe_http_content_length", 1),
    "body_bytes": ("probe_http_uncompressed_body_length", 1),
    "last_chain_expiry": ("probe_ssl_last_chain_expiry_timestamp_seconds", 1),
    "days_left": ("probe_ssl_days_left", 1),
    "connect_ms": ("probe_tcp_connect_seconds", 0.001),
}
# OpenSSL's protocol names → blackbox_exporter's `probe_tls_version_info{version}` values.
TLS_VERSIONS = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}
# Phase timings (a `phases_ms` dict) → blackbox's probe_http_duration_seconds{phase}.
BLACKBOX_PHASES = {
    "dns": "resolve",
    "connect": "connect",
    "tls": "tls",
    "first_byte": "processing",
    "transfer": "transfer",
}

_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _gauge(name: str, help_text: str, samples: list[tuple[str, float]]) -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} gauge"
    for labels, value in samples:
        yield f"{name}{labels} {_format(value)}"


def _tls_series(fields: dict[str, Any]) -> Iterator[str]:
    """blackbox_exporter's certificate series from a result that describes a TLS session.

    - ``probe_ssl_earliest_cert_expiry``: the earliest ``not_after`` of the certificates the server
      presented (``chain``), as blackbox's getEarliestCertExpiry over PeerCertificates; a result without
      ``chain`` gives its ``cert_expiry``. (The result's ``earliest_expiry`` also counts a verified chain's
      trust anchor from the local store, which blackbox's series does not see.)
    - ``probe_ssl_last_chain_expiry_timestamp_seconds``: ``last_chain_expiry`` (in `BLACKBOX_FIELDS`);
      absent, not a made-up value, when nothing was verified.
    - ``probe_ssl_last_chain_info{fingerprint_sha256,subject,issuer,subjectalternative,serialnumber} 1``:
      the leaf; subjectalternative lists its DNS names comma-separated, serialnumber is its serial's
      magnitude in hex, as blackbox writes them (subject and issuer keep RFC 4514 order).
    - ``probe_tls_version_info{version} 1``: ``tls_version`` (``protocol`` in the tls check), with
      blackbox's values (``TLS 1.3``). No ``probe_tls_cipher_info``: OpenSSL's TLS 1.2 cipher names are
      not the IANA names Go reports, so the label values would not match blackbox's.
    """
    chain = fields.get("chain")
    expiries = [e.get("not_after") for e in chain if isinstance(e, dict)] if isinstance(chain, list) else []
    earliest = min((v for raw in expiries if (v := _number(raw)) is not None), default=None)
    if earliest is None:
        earliest = _number(fields.get("cert_expiry"))
    if earliest is not None:
        yield from _gauge(
            "probe_ssl_earliest_cert_expiry",
            "Earliest expiry of the certificates the server presented.",
            [("", earliest)],
        )
    if isinstance(fields.get("fingerprint_sha256"), str):
        sans = fields.get("sans") if isinstance(fields.get("sans"), list) else []
        serial = str(fields.get("serial", ""))
        labels = {
            "fingerprint_sha256": fields["fingerprint_sha256"],
            "subject": str(fields.get("subject", "")),
            "issuer": str(fields.get("issuer", "")),
            "subjectalternative": ",".join(str(n)[4:] for n in sans if str(n).startswith("DNS:")),
            "serialnumber": serial[2:] if serial.startswith("00") and len(serial) > 2 else serial,
        }
        text = ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())
        yield from _gauge("probe_ssl_last_chain_info", "The leaf certificate of the session.", [(f"{{{text}}}", 1.0)])
    version = fields.get("tls_version", fields.get("protocol"))  # the dns check's protocol is udp or tcp
    if isinstance(version, str) and version.startswith(("TLS", "SSL")):
        label = f'{{version="{_escape(TLS_VERSIONS.get(version, version))}"}}'
        yield from _gauge("probe_tls_version_info", "The TLS version of the session.", [(label, 1.0)])


def render_check(type_name: str, state: str, result: Any, duration_ms: float | None) -> str:
    """The Prometheus text for one check answer (state SUCCESS with a dict result, or a failure)."""
    fields = result if isinstance(result, dict) else {}
    ran = state == "SUCCESS"
    ok = ran and (fields.get("ok", True) is True)
    duration_s = (fields.get("duration_ms") or duration_ms or 0.0) / 1000
    label = f'{{type="{_escape(type_name)}"}}'
    lines: list[str] = []
    lines += _gauge("probe_success", "Whether the probe succeeded.", [("", float(ok))])
    lines += _gauge("probe_duration_seconds", "How long the probe took.", [("", duration_s)])
    for field, (metric, factor) in BLACKBOX_FIELDS.items():
        value = _number(fields.get(field))
        if value is not None:
            lines += _gauge(metric, f"The check's {field}.", [("", value * factor)])
    lines += _tls_series(fields)
    phases = fields.get("phases_ms")
    if isinstance(phases, dict):
        samples = [
            (f'{{phase="{BLACKBOX_PHASES.get(k, _escape(str(k)))}"}}', v / 1000)
            for k, raw in phases.items()
            if k != "total" and (v := _number(raw)) is not None
        ]
        lines += _gauge("probe_http_duration_seconds", "Duration of each phase of the request.", samples)
    lines += _gauge("checkgate_check_success", "Whether the check ran and its target is ok.", [(label, float(ok))])
    lines += _gauge(
        "checkgate_check_ran", "Whether the check could run (0: task error or deadline).", [(label, float(ran))]
    )
    lines += _gauge("checkgate_check_duration_seconds", "How long the check took.", [(label, duration_s)])
    for field, raw in sorted(fields.items()):
        value = _number(raw)
        if value is None or field in ("ok", "duration_ms"):
            continue
        metric = "checkgate_check_" + _NAME_RE.sub("_", field)
        lines += _gauge(metric, f"The check's {field} field.", [(label, value)])
    return "\n".join(lines) + "\n"
