"""The `http` check against real servers on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

import pytest

from tasks.checks.http import http_check
from tasks.registry import REGISTRY
from tests.support.listener import Listener


def test_registry_binds_the_function_with_a_deadline() -> None:
    assert REGISTRY["http"].fn is http_check
    assert REGISTRY["http"].wants_deadline


def test_200_is_ok_with_phases_and_sizes(http_base: str) -> None:
    result = http_check(f"{http_base}/text")
    assert result["ok"] is True
    assert "reason" not in result
    assert result["status_code"] == 200
    assert result["http_version"] == "HTTP/1.1"
    assert result["final_url"] == f"{http_base}/text"
    assert result["redirects"] == 0
    assert result["ip"] == "127.0.0.1"
    assert result["body_bytes"] == len(b"hello from checkgate tests\n")
    assert result["body_truncated"] is False
    phases = result["phases_ms"]
    assert set(phases) == {"dns", "connect", "tls", "first_byte", "transfer", "total"}
    assert phases["tls"] == 0 and phases["connect"] > 0
    assert 0 < result["duration_ms"] < 2000
    assert "tls_version" not in result


def test_error_status_is_a_normal_not_ok_result(http_base: str) -> None:
    result = http_check(f"{http_base}/status/503")
    assert (result["ok"], result["reason"], result["status_code"]) == (False, "status_codes", 503)
    assert "503" in result["detail"]


@pytest.mark.parametrize(("code", "ok"), [(200, True), (503, False)])
def test_http_10_server_that_closes(http_base: str, code: int, ok: bool) -> None:
    """http.client lets go of the connection before the body: the body must still be read."""
    result = http_check(f"{http_base}/old/{code}", body_match="^old ok")
    assert (result["ok"], result["status_code"], result["http_version"]) == (ok, code, "HTTP/1.0"), result
    assert result["body_bytes"] == 7


@pytest.mark.parametrize(
    ("spec", "status", "ok"),
    [("500-599", 503, True), ("2xx,503", 503, True), ("200,204", 204, True), ("200-299,301", 404, False)],
)
def test_status_codes_lists_ranges_and_classes(http_base: str, spec: str, status: int, ok: bool) -> None:
    assert http_check(f"{http_base}/status/{status}", status_codes=spec)["ok"] is ok


def test_redirects_are_followed_and_counted(http_base: str) -> None:
    result = http_check(f"{http_base}/redirect/3")
    assert result["ok"] is True
    assert (result["redirects"], result["final_url"]) == (3, f"{http_base}/text")


def test_max_redirects_and_not_following(http_base: str) -> None:
    result = http_check(f"{http_base}/redirect/3", max_redirects=2)
    assert (result["ok"], result["reason"], result["redirects"]) == (False, "too_many_redirects", 2)
    result = http_check(f"{http_base}/redirect/3", follow_redirects=False)
    assert (result["ok"], result["reason"], result["status_code"]) == (False, "status_codes", 302)
    assert http_check(f"{http_base}/redirect/3", follow_redirects=False, status_codes="302")["ok"] is True


@pytest.mark.parametrize(
    "location",
    ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/"],
)
def test_redirect_to_metadata_is_refused(http_base: str, location: str) -> None:
    result = http_check(f"{http_base}/redirect-to?url={quote(location, safe='')}")
    assert (result["ok"], result["reason"]) == (False, "target_refused")
    assert result["redirects"] == 1
    assert result["duration_ms"] < 1000  # refused before any connection attempt


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:6379/",  # the tests' Redis, where results live
        "http://[::1]:6379/",  # the same Redis, on the other loopback address
        "http://localhost:5672/",  # the tests' RabbitMQ
        "http://127.0.0.1:15672/api/queues",  # RabbitMQ's management API beside it
    ],
)
def test_redirect_to_a_protected_endpoint_is_refused(http_base: str, location: str) -> None:
    """Loopback is open for the tests (it is our machine), the stack's own endpoints are not."""
    result = http_check(f"{http_base}/redirect-to?url={quote(location, safe='')}")
    assert (result["ok"], result["reason"], result["redirects"]) == (False, "target_refused", 1)
    assert "a protected endpoint of this deployment" in result["detail"]


def test_the_gateways_own_port_is_refused_first_hand_and_after_a_redirect(
    http_base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = Listener()  # stands for the gateway: CHECKGATE_PORT is where it listens
    monkeypatch.setenv("CHECKGATE_PORT", str(listener.port))
    try:
        result = http_check(f"http://127.0.0.1:{listener.port}/health")
        assert (result["ok"], result["reason"]) == (False, "target_refused")
        location = quote(f"http://localhost:{listener.port}/console", safe="")
        result = http_check(f"{http_base}/redirect-to?url={location}&code=307")
        assert (result["ok"], result["reason"], result["redirects"]) == (False, "target_refused", 1)
        assert listener.accepted == 0
    finally:
        listener.close()


def test_redirect_to_another_scheme_is_a_bad_redirect(http_base: str) -> None:
    result = http_check(f"{http_base}/redirect-to?url={quote('file:///etc/passwd', safe='')}")
    assert (result["ok"], result["reason"]) == (False, "bad_redirect")


def test_guard_applies_to_resolved_addresses(http_base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = http_base.rsplit(":", 1)[1]
    monkeypatch.setenv("CHECKGATE_DENY_NETWORKS", "127.0.0.0/8,::1/128")
    # "localhost" is no literal: only the address it resolves to can be refused.
    result = http_check(f"http://localhost:{port}/text")
    assert (result["ok"], result["reason"]) == (False, "target_refused")
    assert "denied network" in result["detail"]


def test_guard_follows_each_redirect_hop(http_base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = http_base.rsplit(":", 1)[1]
    monkeypatch.setenv("CHECKGATE_DENY_HOSTS", "localhost")
    result = http_check(f"{http_base}/redirect-to?url={quote(f'http://localhost:{port}/text', safe='')}")
    assert (result["ok"], result["reason"], result["redirects"]) == (False, "target_refused", 1)


def test_slow_response_times_out_by_the_deadline(http_base: str, soon: Callable[[float], float]) -> None:
    started = time.monotonic()
    result = http_check(f"{http_base}/slow?ms=3000", deadline=soon(0.6))
    assert (result["ok"], result["reason"]) == (False, "timeout")
    assert time.monotonic() - started < 1.0


def test_big_body_is_read_up_to_the_cap(http_base: str) -> None:
    started = time.monotonic()
    result = http_check(f"{http_base}/big?bytes=50000000", max_body_bytes=1000)
    assert result["ok"] is True
    assert (result["body_bytes"], result["body_truncated"]) == (1000, True)
    assert time.monotonic() - started < 2.0
    whole = http_check(f"{http_base}/big?bytes=1000", max_body_bytes=1000)
    assert (whole["body_bytes"], whole["body_truncated"]) == (1000, False)


def test_chunked_body(http_base: str) -> None:
    result = http_check(f"{http_base}/chunked?chunks=3", body_match="chunk 2")
    assert (result["ok"], result["body_bytes"], result["body_truncated"]) == (True, 24, False)
    result = http_check(f"{http_base}/chunked?chunks=10000", max_body_bytes=100)
    assert (result["ok"], result["body_bytes"], result["body_truncated"]) == (True, 100, True)


def test_body_assertions(http_base: str) -> None:
    assert http_check(f"{http_base}/text", body_match=r"hello \w+")["ok"] is True
    result = http_check(f"{http_base}/text", body_match="^goodbye")
    assert (result["ok"], result["reason"]) == (False, "body_match")
    result = http_check(f"{http_base}/text", body_not_match="checkgate")
    assert (result["ok"], result["reason"]) == (False, "body_not_match")
    assert http_check(f"{http_base}/text", body_not_match="error")["ok"] is True


def test_post_with_body_and_headers(http_base: str) -> None:
    result = http_check(
        f"{http_base}/echo",
        method="POST",
        body='{"ping": 1}',
        headers="Content-Type: application/json|X-Probe: yes|User-Agent: probe/2",
        body_match='"X-Probe": "yes"',
        max_body_bytes=4096,
    )
    assert result["ok"] is True, result


def test_the_request_sent_is_the_one_asked_for(http_base: str) -> None:
    """/echo answers with what it received; body regexes read it back."""
    port = http_base.rsplit(":", 1)[1]

    def saw(pattern: str, **kwargs: str) -> bool:
        result = http_check(f"{http_base}/echo", body_match=pattern, **kwargs)
        assert result["status_code"] == 200, result
        return result["ok"]

    assert saw('"method": "POST"', method="POST", body="a=1")
    assert saw('"body": "a=1"', method="POST", body="a=1")
    assert saw('"Content-Length": "3"', method="POST", body="a=1")
    assert saw('"Content-Length": "0"', method="POST")
    assert saw(f'"Host": "127.0.0.1:{port}"')
    assert saw('"Host": "vhost.example"', headers="Host: vhost.example")
    assert saw('"User-Agent": "checkgate/')
    assert saw('"Connection": "close"')
    assert not saw("Accept-Encoding")


def test_post_redirected_by_303_becomes_get(http_base: str) -> None:
    echo = quote(f"{http_base}/echo", safe="")
    result = http_check(
        f"{http_base}/redirect-to?code=303&url={echo}", method="POST", body="x", body_match='"method": "GET"'
    )
    assert (result["ok"], result["redirects"]) == (True, 1)
    result = http_check(
        f"{http_base}/redirect-to?code=307&url={echo}", method="POST", body="x", body_match='"body": "x"'
    )
    assert (result["ok"], result["redirects"]) == (True, 1)


def test_head_reads_no_body(http_base: str) -> None:
    result = http_check(f"{http_base}/text", method="HEAD")
    assert (result["ok"], result["body_bytes"]) == (True, 0)


def test_closed_port_is_connection_refused(closed_port: int) -> None:
    result = http_check(f"http://127.0.0.1:{closed_port}/")
    assert (result["ok"], result["reason"]) == (False, "connection_refused")


def test_not_http_is_protocol_error(echo_port: int, http_base: str) -> None:
    result = http_check(f"http://127.0.0.1:{echo_port}/")  # answers with a banner, not a status line
    assert (result["ok"], result["reason"]) == (False, "protocol_error")
    result = http_check(http_base.replace("http://", "https://") + "/text")
    assert (result["ok"], result["reason"]) == (False, "tls_error")


def test_unknown_host_is_dns_error(soon: Callable[[float], float]) -> None:
    result = http_check("http://no-such-host.invalid/", deadline=soon(3))
    # Without a reachable resolver the lookup times out instead; either way a result, never an exception.
    assert (result["ok"], result["reason"] in ("dns_error", "timeout")) == (False, True)


def test_ip_version(http_base: str, http6_base: str) -> None:
    port = http_base.rsplit(":", 1)[1]
    assert http_check(f"http://localhost:{port}/text", ip_version="4")["ip"] == "127.0.0.1"
    result = http_check(f"http://127.0.0.1:{port}/text", ip_version="6")
    assert (result["ok"], result["reason"]) == (False, "dns_error")
    result = http_check(f"{http6_base}/text", ip_version="6")
    assert (result["ok"], result["ip"], result["final_url"]) == (True, "::1", f"{http6_base}/text")


def test_failure_halfway_keeps_what_was_learnt(http_base: str, soon: Callable[[float], float]) -> None:
    result = http_check(f"{http_base}/slow?ms=2000", deadline=soon(0.3))
    assert (result["reason"], result["ip"]) == ("timeout", "127.0.0.1")
    assert "status_code" not in result


def test_unicode_host_is_idna_mapped(http_base: str) -> None:
    port = http_base.rsplit(":", 1)[1]
    # Full-width letters map to "localhost" under UTS #46, full-width digits to 127.0.0.1.
    assert http_check(f"http://ｌｏｃａｌｈｏｓｔ:{port}/text")["ok"] is True
    assert http_check(f"http://１２７．０．０．１:{port}/text")["ok"] is True


def test_https_with_local_ca(tls_port: Callable[[str], int], certs) -> None:
    port = tls_port("valid")
    result = http_check(f"https://127.0.0.1:{port}/text", ca_bundle=str(certs.ca))
    assert result["ok"] is True, result
    assert result["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert 29 * 86400 < result["cert_expiry"] - time.time() < 31 * 86400
    assert result["phases_ms"]["tls"] > 0
    assert http_check(f"https://localhost:{port}/text", ca_bundle=str(certs.ca))["ok"] is True


def test_https_untrusted_and_unverified(tls_port: Callable[[str], int]) -> None:
    port = tls_port("self_signed")
    result = http_check(f"https://127.0.0.1:{port}/text")
    assert (result["ok"], result["reason"]) == (False, "untrusted_certificate")
    result = http_check(f"https://127.0.0.1:{port}/text", verify_tls=False)
    assert result["ok"] is True
    assert result["cert_expiry"] > time.time()


def test_bad_ca_bundle_is_reported(tls_port: Callable[[str], int], tmp_path) -> None:
    missing = str(tmp_path / "missing.pem")
    result = http_check(f"https://127.0.0.1:{tls_port('valid')}/", ca_bundle=missing)
    assert (result["ok"], result["reason"]) == (False, "bad_ca_bundle")


def test_cert_expiry_is_the_chains_earliest(tls_port: Callable[[str], int], certs) -> None:
    # A 200-day leaf under an intermediate that expires in 5 days: cert_expiry is the intermediate's.
    result = http_check(f"https://127.0.0.1:{tls_port('short_intermediate')}/text", ca_bundle=str(certs.ca))
    assert result["ok"] is True, result
    assert result["cert_expiry"] == int(certs.expiries["short_intermediate.1"])
