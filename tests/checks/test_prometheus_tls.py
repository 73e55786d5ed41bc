"""blackbox_exporter's certificate series from real tls, tcp and dns results (in process, no gateway)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from gateway.prometheus import render_check
from tasks.checks.dns import dns_check
from tasks.checks.tcp import tcp_check
from tasks.checks.tls import tls_check


def _series(type_name: str, result: dict) -> dict[str, list]:
    text = render_check(type_name, "SUCCESS", result, None)
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(names) == len(set(names)), f"a metric family written twice: {names}"
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_issue_chain_series(tls_port: Callable[[str], int], certs) -> None:
    result = tls_check("127.0.0.1", tls_port("short_intermediate"), ca_bundle=str(certs.ca))
    series = _series("tls", result)
    intermediate = int(certs.expiries["short_intermediate.1"])
    assert series["probe_ssl_earliest_cert_expiry"][0].value == intermediate  # not the leaf's any more
    assert series["probe_ssl_last_chain_expiry_timestamp_seconds"][0].value == intermediate
    assert 4.9 < series["probe_ssl_days_left"][0].value < 5.1
    (info,) = series["probe_ssl_last_chain_info"]
    assert info.value == 1
    assert info.labels == {
        "fingerprint_sha256": result["fingerprint_sha256"],
        "subject": "O=checkgate tests,CN=localhost",
        "issuer": "CN=checkgate short intermediate",
        "subjectalternative": "localhost",
        "serialnumber": result["serial"].removeprefix("00"),
    }
    (version,) = series["probe_tls_version_info"]
    assert version.labels["version"] in ("TLS 1.2", "TLS 1.3")


def test_presented_earliest_and_last_chain_differ(tls_port: Callable[[str], int], certs) -> None:
    # An extra certificate the server sends counts for the first series, not for the verified chain's.
    series = _series("tls", tls_check("127.0.0.1", tls_port("extra_expiring"), ca_bundle=str(certs.ca)))
    assert series["probe_ssl_earliest_cert_expiry"][0].value == int(certs.expiries["extra"])
    assert series["probe_ssl_last_chain_expiry_timestamp_seconds"][0].value == int(certs.expiries["root"])
    # A root that only the local store holds is not presented: blackbox's series does not see it.
    result = tls_check("127.0.0.1", tls_port("short_root"), ca_bundle=str(certs.short_root_ca))
    series = _series("tls", result)
    assert series["probe_ssl_earliest_cert_expiry"][0].value == int(certs.expiries["short_root.0"])
    assert series["probe_ssl_last_chain_expiry_timestamp_seconds"][0].value == int(certs.expiries["short_root"])
    assert result["earliest_expiry"] == int(certs.expiries["short_root"])  # the verdict does see it


def test_unverified_session_has_no_last_chain_expiry(tls_port: Callable[[str], int], certs) -> None:
    series = _series("tls", tls_check("127.0.0.1", tls_port("expired_intermediate"), ca_bundle=str(certs.ca)))
    assert series["probe_ssl_earliest_cert_expiry"][0].value == int(certs.expiries["expired_intermediate.1"])
    assert "probe_ssl_last_chain_expiry_timestamp_seconds" not in series
    assert series["probe_success"][0].value == 0


def test_tcp_over_tls_has_the_series(tls_port: Callable[[str], int], certs) -> None:
    result = tcp_check("127.0.0.1", tls_port("short_intermediate"), tls=True, ca_bundle=str(certs.ca))
    series = _series("tcp", result)
    assert series["probe_ssl_earliest_cert_expiry"][0].value == int(certs.expiries["short_intermediate.1"])
    assert "probe_ssl_last_chain_info" in series and "probe_tls_version_info" in series


def test_http_cert_expiry_without_a_chain_still_maps() -> None:
    series = _series("http", {"ok": True, "duration_ms": 1.0, "cert_expiry": 1_900_000_000, "tls_version": "TLSv1.2"})
    assert series["probe_ssl_earliest_cert_expiry"][0].value == 1_900_000_000
    assert series["probe_tls_version_info"][0].labels == {"version": "TLS 1.2"}


def test_dns_protocol_is_not_a_tls_version(dns_port: int) -> None:
    series = _series("dns", dns_check("example.test", server="127.0.0.1", port=dns_port))
    assert not any(name.startswith(("probe_ssl", "probe_tls")) for name in series)
