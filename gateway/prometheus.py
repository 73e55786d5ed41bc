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

# Result field → blackbox_exporter metric (and the factor to its unit).
BLACKBOX_FIELDS: dict[str, tuple[str, float]] = {
    "status_code": ("probe_http_status_code", 1),
    "redirects": ("probe_http_redirects", 1),
    # The Content-Length header as sent, and the body's size once decoded (blackbox's names).
    "content_length": ("probe_http_content_length", 1),
    "body_bytes": ("probe_http_uncompressed_body_length", 1),
    "cert_expiry": ("probe_ssl_earliest_cert_expiry", 1),
    "not_after": ("probe_ssl_earliest_cert_expiry", 1),
    "days_left": ("probe_ssl_days_left", 1),
    "connect_ms": ("probe_tcp_connect_seconds", 0.001),
}
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
