"""`format=prometheus`: a check's answer as Prometheus text, the way blackbox_exporter writes a probe.

Prometheus can scrape `/check/http?url=…&format=prometheus` directly. The blackbox names
(`probe_success`, `probe_duration_seconds`, `probe_http_status_code`, …) come first so existing
dashboards and alerts work unchanged; `checkgate_check_*` series follow, including one gauge per
numeric field of the result, so a team's own check types get metrics without writing any code.

Each answer is rendered by prometheus_client from a registry of its own (as blackbox_exporter builds one
per probe), which escapes label values (certificate subjects, plugin phase names) and HELP text.

Names derived from result fields can collide: `checkgate_check_<field>` with the fixed
`checkgate_check_success`, `checkgate_check_ran` and `checkgate_check_duration_seconds` (a field named
`success`, `ran` or `duration_seconds`), or with each other when fields differ only in characters the
name sanitizer maps to `_` (`a-b`, `a.b`). A family name is never written twice: the first comer keeps
it — the fixed series, then fields in the sorted order of their names — and a later field with the same
name is left out of the text (it stays in the JSON answer), with a DEBUG log line naming it. Likewise a
phase whose blackbox name another phase of the result already took (`dns` and `resolve` both map to
`phase="resolve"`) is left out. Renaming instead (a suffix) would make a series' name depend on which
other fields a result happens to carry.

Cost (`python -m bench.metrics_cost`, CPU time, 2-core VM under other load, 2026-11-30): 0.13–0.16 ms
per answer for a `tls` or `http` result, 0.43–0.50 ms for a plugin's 50 fields — 5–6× the former
hand-written text (26–29 µs, 79–118 µs), prometheus_client escaping and validating every sample. Off the
benchmark's hot path, which answers JSON; a Prometheus scraping 1,000 targets every 15 s adds ~1 % of a core.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger("checkgate.prometheus")

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
# Result fields the fixed series already report (`ok` → success, `duration_ms` → duration_seconds).
REPORTED_FIELDS = ("ok", "duration_ms")

_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")


def _number(value: Any) -> float | None:
    """`value` as a sample value: a bool, or a finite int or float that a float holds (else None)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond a float's range
            return None
        return number if math.isfinite(number) else None
    return None


class Families:
    """The gauge families of one answer, in the order they were added, each name at most once.

    `common`: labels every sample carries (`location` for a check run in one); added after its own.
    Also a prometheus_client collector: registered in the answer's own registry, it renders them.
    """

    def __init__(self, common: Mapping[str, str] | None = None) -> None:
        self._families: dict[str, GaugeMetricFamily] = {}
        self._common = dict(common or {})

    def gauge(self, name: str, documentation: str, value: float, labels: dict[str, str] | None = None) -> None:
        """Add a one-sample family, unless `name` is already taken (then a DEBUG line says what is left out)."""
        if name in self._families:
            log.debug("format=prometheus: %s already written, %r left out", name, documentation)
            return
        labels = {**(labels or {}), **self._common}
        family = GaugeMetricFamily(name, documentation, labels=list(labels))
        family.add_metric(list(labels.values()), value)
        self._families[name] = family

    def labelled(self, name: str, documentation: str, label: str, samples: Sequence[tuple[str, float]]) -> None:
        """Add a family with one sample per value of `label`; a repeated value keeps its first sample."""
        family = GaugeMetricFamily(name, documentation, labels=[label, *self._common])
        seen: set[str] = set()
        for label_value, value in samples:
            if label_value in seen:
                log.debug(
                    "format=prometheus: %s{%s=%r} already written, later sample left out", name, label, label_value
                )
                continue
            seen.add(label_value)
            family.add_metric([label_value, *self._common.values()], value)
        if family.samples and name not in self._families:
            self._families[name] = family

    def merge(self, other: Families) -> None:
        """Add `other`'s samples (another location's answer) to this answer's families of the same name
        and label names; a family of a name not yet here joins as it is. A family whose label names
        differ from the one of its name here is left out (a DEBUG line names it)."""
        for name, family in other._families.items():
            mine = self._families.get(name)
            if mine is None:
                self._families[name] = family
            elif set(mine.samples[0].labels) == set(family.samples[0].labels):
                mine.samples.extend(family.samples)
            else:
                log.debug("format=prometheus: %s with other labels left out", name)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families.values())

    def describe(self) -> Iterator[Metric]:
        return self.collect()


def _tls_series(fields: dict[str, Any], out: Families) -> None:
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
        out.gauge(
            "probe_ssl_earliest_cert_expiry", "Earliest expiry of the certificates the server presented.", earliest
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
        out.gauge("probe_ssl_last_chain_info", "The leaf certificate of the session.", 1.0, labels)
    version = fields.get("tls_version", fields.get("protocol"))  # the dns check's protocol is udp or tcp
    if isinstance(version, str) and version.startswith(("TLS", "SSL")):
        labels = {"version": TLS_VERSIONS.get(version, version)}
        out.gauge("probe_tls_version_info", "The TLS version of the session.", 1.0, labels)


def check_families(
    type_name: str, state: str, result: Any, duration_ms: float | None, common: Mapping[str, str] | None = None
) -> Families:
    """The gauge families of one check answer (state SUCCESS with a dict result, or a failure): blackbox's
    series, then checkgate's, then one per numeric result field (see the module doc for collisions);
    every sample also carries the `common` labels."""
    fields = result if isinstance(result, dict) else {}
    ran = state == "SUCCESS"
    ok = ran and (fields.get("ok", True) is True)
    duration_s = (_number(fields.get("duration_ms")) or _number(duration_ms) or 0.0) / 1000
    out = Families(common)
    out.gauge("probe_success", "Whether the probe succeeded.", float(ok))
    out.gauge("probe_duration_seconds", "How long the probe took.", duration_s)
    for field, (metric, factor) in BLACKBOX_FIELDS.items():
        value = _number(fields.get(field))
        if value is not None:
            out.gauge(metric, f"The check's {field}.", value * factor)
    _tls_series(fields, out)
    phases = fields.get("phases_ms")
    if isinstance(phases, dict):
        samples = [
            (BLACKBOX_PHASES.get(k, str(k)), v / 1000)
            for k, raw in phases.items()
            if k != "total" and (v := _number(raw)) is not None
        ]
        out.labelled("probe_http_duration_seconds", "Duration of each phase of the request.", "phase", samples)
    label = {"type": type_name}
    out.gauge("checkgate_check_success", "Whether the check ran and its target is ok.", float(ok), label)
    out.gauge("checkgate_check_ran", "Whether the check could run (0: task error or deadline).", float(ran), label)
    out.gauge("checkgate_check_duration_seconds", "How long the check took.", duration_s, label)
    for field, raw in sorted(fields.items(), key=lambda item: str(item[0])):
        value = _number(raw)
        if value is None or field in REPORTED_FIELDS:
            continue
        out.gauge("checkgate_check_" + _NAME_RE.sub("_", str(field)), f"The check's {field} field.", value, label)
    return out


def render_check(
    type_name: str, state: str, result: Any, duration_ms: float | None, location: str | None = None
) -> str:
    """The Prometheus text (format 0.0.4) for one check answer, from a registry of its own; every series
    labelled `location` when the check ran in one."""
    registry = CollectorRegistry()
    common = {"location": location} if location else None
    registry.register(check_families(type_name, state, result, duration_ms, common))
    return generate_latest(registry).decode()


def render_locations(type_name: str, answers: Mapping[str, Mapping[str, Any]], ok: bool | None, require: str) -> str:
    """The Prometheus text of a check run in several locations: each location's series as `render_check`
    writes them, labelled `location` (a location whose task could not run reads `probe_success 0`), then
    the verdict: `checkgate_check_verdict{type,require}` (1 passed; 0 failed or undecided) and
    `checkgate_check_verdict_decided{type,require}` (0: too few locations answered by the deadline)."""
    out = Families()
    for where, answer in answers.items():
        state = str(answer.get("state", ""))
        out.merge(
            check_families(type_name, state, answer.get("result"), answer.get("duration_ms"), {"location": where})
        )
    labels = {"type": type_name, "require": require}
    out.gauge("checkgate_check_verdict", "Whether enough locations passed (require).", float(ok is True), labels)
    out.gauge("checkgate_check_verdict_decided", "Whether the verdict was decided.", float(ok is not None), labels)
    registry = CollectorRegistry()
    registry.register(out)
    return generate_latest(registry).decode()
