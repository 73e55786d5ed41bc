"""The `http` check against real servers on 127.0.0.1."""

from __future__ import annotations

import gzip
import logging
import time
import tracemalloc
import zlib
from collections.abc import Callable
from urllib.parse import quote

import brotli
import pytest
from backports import zstd
from prometheus_client.parser import text_string_to_metric_families

from gateway.prometheus import render_check
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
    assert result["detail"] == "target refused by policy"


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


def test_guard_applies_to_resolved_addresses(
    http_base: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port = http_base.rsplit(":", 1)[1]
    monkeypatch.setenv("CHECKGATE_DENY_NETWORKS", "127.0.0.0/8,::1/128")
    caplog.set_level(logging.INFO, logger="tasks.checks._guard")
    # "localhost" is no literal: only the address it resolves to can be refused.
    result = http_check(f"http://localhost:{port}/text")
    assert (result["ok"], result["reason"], result["detail"]) == (False, "target_refused", "target refused by policy")
    assert "denied network" in caplog.text  # why: for the operator's log only


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


def test_header_values_go_out_as_latin_1_octets(raw_http, h2_server, certs) -> None:
    """Issue #11, F7: a value the gateway accepts (code points up to U+00FF, e.g. %C3%BF = ÿ) raised
    TypeError in the worker (httpcore takes text headers as ASCII only). Each character is now the octet
    it stands for, as fetch() sends a ByteString; over HTTP/2 too."""
    url = raw_http.answer("/latin-1-headers", _answer(body=b"ok"))
    result = http_check(url, headers="X-Latin: caf\xe9 \xff|Cookie: a\xe9=1")
    assert result["ok"] is True, result
    head = raw_http.requests["/latin-1-headers"][-1]
    assert b"\r\nX-Latin: caf\xe9 \xff\r\n" in head and b"\r\nCookie: a\xe9=1\r\n" in head
    port, routes = h2_server
    routes["/h2-latin-1"] = ([(":status", "200")], b"ok")
    result = http_check(f"https://localhost:{port}/h2-latin-1", http2=True, ca_bundle=str(certs.ca), headers="X: \xff")
    assert (result["ok"], result["http_version"]) == (True, "HTTP/2"), result


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


# --- issue #12: what a real HTTP client does right, replayed byte for byte (conftest's raw_http) ---


def _answer(
    status: str = "200 OK", headers: tuple[tuple[str, str | bytes], ...] = (), body: bytes = b"", length: bool = True
) -> bytes:
    """A raw HTTP/1.1 answer; Content-Length is added from the body unless `length` is false."""
    lines = [f"HTTP/1.1 {status}".encode()]
    lines += [
        name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()) for name, value in headers
    ]
    if length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


DATABASE_DOWN = b"<html><body><h1>Error</h1><p>Could not connect to database</p></body></html>\n"


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def test_body_not_match_on_a_cut_body_is_not_a_pass(raw_http) -> None:
    """FATAL past max_body_bytes was never read: not finding it there proves nothing (ok:false,
    body_truncated); found within the bytes read, or a body read whole, is judged as before."""
    body = b"x" * 2000 + b"FATAL"
    url = raw_http.answer(
        "/fatal-late", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    result = http_check(url, body_not_match="FATAL", max_body_bytes=1000)
    assert (result["ok"], result["reason"], result["body_truncated"]) == (False, "body_truncated", True)
    assert "body_not_match" in result["detail"] and "max_body_bytes" in result["detail"]
    assert http_check(url, body_not_match="FATAL")["reason"] == "body_not_match"  # whole body read
    assert http_check(url, body_not_match="x{10}", max_body_bytes=1000)["reason"] == "body_not_match"
    assert http_check(url, body_match="x{10}", max_body_bytes=1000)["ok"] is True  # a positive match holds
    assert http_check(url, max_body_bytes=1000)["ok"] is True  # no assertion on the body


def test_body_match_reaching_the_cut_is_not_a_pass(raw_http) -> None:
    """A match that ends where max_body_bytes cut the body (``$`` at the cut, a run reaching it) is no
    pass: the whole body (``ERROR`` past the cut) fails it. A match ending before the cut still holds."""
    body = b"OK" + b"a" * 5000 + b"ERROR"
    url = raw_http.answer(
        "/cut-match", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    result = http_check(url, body_match="^[OKa]*$", max_body_bytes=100)
    assert (result["ok"], result["reason"], result["body_truncated"]) == (False, "body_truncated", True)
    assert "body_match" in result["detail"] and "max_body_bytes" in result["detail"]
    assert http_check(url, body_match="^[OKa]*$")["reason"] == "body_match"  # the whole body fails it
    assert http_check(url, body_match=r"a+\z", max_body_bytes=100)["reason"] == "body_truncated"
    assert http_check(url, body_match="a{98}", max_body_bytes=100)["reason"] == "body_truncated"  # ends at the cut
    assert http_check(url, body_match="^OKa", max_body_bytes=100)["ok"] is True  # ends before the cut
    assert http_check(url, body_match=r"a+", max_body_bytes=100)["ok"] is True  # some match ends before it
    assert http_check(url, body_match="ERROR", max_body_bytes=100)["reason"] == "body_match"  # not in the part read


def test_gzip_body_is_matched_decoded(raw_http) -> None:
    """Issue #12, 1: a gzipped error page was matched undecoded, so body_not_match passed a broken site."""
    wire = gzip.compress(DATABASE_DOWN)
    url = raw_http.answer("/gzip-down", _answer(headers=(("Content-Encoding", "gzip"),), body=wire))
    result = http_check(url, body_not_match="database")
    assert (result["ok"], result["reason"], result["status_code"]) == (False, "body_not_match", 200), result
    result = http_check(url, body_match="database")
    assert result["ok"] is True, result
    assert (result["body_bytes"], result["body_wire_bytes"], result["content_length"]) == (
        len(DATABASE_DOWN),
        len(wire),
        len(wire),
    )
    assert result["body_truncated"] is False


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZip", gzip.compress),
        ("deflate", _zlib),
        ("deflate", _raw_deflate),  # what some servers send for deflate: no zlib wrapper
        ("br", brotli.compress),
        ("zstd", zstd.compress),
        ("gzip, br", lambda data: brotli.compress(gzip.compress(data))),  # applied in this order
        ("identity", lambda data: data),
    ],
)
def test_content_codings_are_decoded(raw_http, coding: str, encode: Callable[[bytes], bytes]) -> None:
    wire = encode(DATABASE_DOWN)
    url = raw_http.answer(
        f"/coding/{coding.replace(' ', '')}/{len(wire)}", _answer(headers=(("Content-Encoding", coding),), body=wire)
    )
    result = http_check(url, body_match="Could not connect to database", body_not_match="\x1f|\x00")
    assert result["ok"] is True, result
    assert (result["body_bytes"], result["body_wire_bytes"]) == (len(DATABASE_DOWN), len(wire))


def test_gzip_in_chunks_split_anywhere(raw_http) -> None:
    wire = gzip.compress(DATABASE_DOWN * 50)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(wire[i : i + 7]), wire[i : i + 7]) for i in range(0, len(wire), 7))
    head = _answer(headers=(("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")), length=False)
    url = raw_http.answer("/gzip-chunked", head, chunked, b"0\r\n\r\n", pause=0.01)
    result = http_check(url, body_match="database")
    assert (result["ok"], result["body_bytes"], result["body_wire_bytes"]) == (True, 50 * len(DATABASE_DOWN), len(wire))
    assert "content_length" not in result


@pytest.mark.parametrize(
    ("coding", "wire"),
    [
        ("gzip", b"\x1f\x8b\x08\x00garbage that is not deflate data"),
        ("gzip", gzip.compress(DATABASE_DOWN)[:-12] + b"\x00" * 12),  # a wrong CRC and length trailer
        ("br", b"not brotli at all"),
        ("zstd", b"\x28\xb5\x2f\xfd" + b"broken frame"),
        ("deflate", b"\xff\xfe not deflate"),
    ],
)
def test_corrupt_coded_body_is_a_protocol_error(raw_http, coding: str, wire: bytes) -> None:
    url = raw_http.answer(
        f"/corrupt/{coding}/{wire.hex()[-8:]}", _answer(headers=(("Content-Encoding", coding),), body=wire)
    )
    result = http_check(url, body_match="database")
    assert (result["ok"], result["reason"], result["status_code"]) == (False, "protocol_error", 200), result
    assert coding in result["detail"]


def test_unknown_coding_is_not_matched_undecoded(raw_http) -> None:
    body = b"Could not connect to database, compressed by a codec nobody asked for"
    url = raw_http.answer("/compress", _answer(headers=(("Content-Encoding", "compress"),), body=body))
    result = http_check(url, body_not_match="database")
    assert (result["ok"], result["reason"]) == (False, "protocol_error"), result
    assert "compress" in result["detail"]
    # Nothing asks for the text: the status decides, and the body is counted as it came.
    result = http_check(url)
    assert (result["ok"], result["body_bytes"], result["body_wire_bytes"]) == (True, len(body), len(body))


def _zeros(coding: str, size: int) -> bytes:
    if coding == "gzip":
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        block = b"\0" * (1 << 20)
        return b"".join(compressor.compress(block) for _ in range(size >> 20)) + compressor.flush()
    if coding == "br":
        compressor = brotli.Compressor(quality=5)
        block = b"\0" * (1 << 20)
        return b"".join(compressor.process(block) for _ in range(size >> 20)) + compressor.finish()
    return zstd.compress(b"\0" * size)


@pytest.mark.parametrize(("coding", "size"), [("br", 256 << 20), ("zstd", 256 << 20), ("gzip", 64 << 20)])
def test_decompression_bomb_is_decoded_only_to_the_cap(raw_http, coding: str, size: int) -> None:
    """A few KiB that decode to hundreds of MiB: only max_body_bytes are ever decoded."""
    wire = _zeros(coding, size)
    url = raw_http.answer(f"/bomb/{coding}", _answer(headers=(("Content-Encoding", coding),), body=wire))
    tracemalloc.start()
    try:
        result = http_check(url, max_body_bytes=100_000, body_not_match="x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The pattern makes the check decode the body to text; on the cut body it cannot pass (body_truncated).
    assert (result["reason"], result["body_bytes"], result["body_truncated"]) == ("body_truncated", 100_000, True)
    assert result["body_wire_bytes"] <= 100_000 + 64 * 1024
    assert peak < 16 << 20, f"decoding took {peak >> 20} MiB"


def test_wire_bytes_are_capped_when_decoding_yields_nothing(raw_http) -> None:
    """Empty gzip members decode to nothing: the wire read stops at max_body_bytes + 64 KiB all the same."""
    wire = gzip.compress(b"") * 100_000  # 2 MB that decode to zero bytes
    url = raw_http.answer("/empty-members", _answer(headers=(("Content-Encoding", "gzip"),), body=wire))
    result = http_check(url, max_body_bytes=1000)
    assert (result["ok"], result["body_bytes"], result["body_truncated"]) == (True, 0, True), result
    assert result["body_wire_bytes"] == 1000 + 64 * 1024


def test_sizes_of_an_identity_body(http_base: str) -> None:
    result = http_check(f"{http_base}/big?bytes=5000", max_body_bytes=1000)
    assert (result["body_bytes"], result["body_wire_bytes"], result["content_length"]) == (1000, 1000, 5000)
    assert result["body_truncated"] is True


def test_body_shorter_than_its_content_length_is_a_protocol_error(raw_http) -> None:
    """Issue #12, 2: Content-Length 5000, 1,000 bytes, then close passed as a whole body."""
    url = raw_http.answer("/short", _answer(headers=(("Content-Length", "5000"),), body=b"x" * 1000, length=False))
    result = http_check(url)
    assert (result["ok"], result["reason"], result["status_code"]) == (False, "protocol_error", 200), result
    assert "body_truncated" not in result
    # The chunked equivalent, as before.
    head = _answer(headers=(("Transfer-Encoding", "chunked"),), length=False)
    url = raw_http.answer("/short-chunked", head + b"3e8\r\n" + b"x" * 500)
    result = http_check(url)
    assert (result["ok"], result["reason"]) == (False, "protocol_error"), result


def test_content_length_longer_with_keep_alive(raw_http, soon: Callable[[float], float]) -> None:
    """The server keeps the connection open: the rest never comes, so the check waits to its deadline,
    unless max_body_bytes was reached first (then the rest is not wanted, and it is known to exist)."""
    head = _answer(headers=(("Content-Length", "5000"),), body=b"x" * 1000, length=False)
    url = raw_http.answer("/short-kept-alive", head, hold=3)
    started = time.monotonic()
    result = http_check(url, deadline=soon(1.0))
    assert (result["ok"], result["reason"], result["status_code"]) == (False, "timeout", 200), result
    assert time.monotonic() - started < 1.5
    result = http_check(url, max_body_bytes=1000, deadline=soon(1.0))
    assert (result["ok"], result["body_bytes"], result["body_truncated"]) == (True, 1000, True), result


def test_longer_body_than_content_length_is_read_to_its_length(raw_http) -> None:
    url = raw_http.answer("/long", _answer(headers=(("Content-Length", "5"),), body=b"hello and more", length=False))
    result = http_check(url, body_not_match="more")
    assert (result["ok"], result["body_bytes"], result["body_truncated"]) == (True, 5, False), result


def test_http10_body_read_to_close(raw_http) -> None:
    head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    url = raw_http.answer("/http10-close", head, b"first part, ", b"second part", pause=0.05)
    result = http_check(url, body_match="first part, second part$")
    assert (result["ok"], result["http_version"], result["body_bytes"]) == (True, "HTTP/1.0", 23), result
    assert "content_length" not in result


def test_head_with_content_length(raw_http) -> None:
    url = raw_http.answer("/head", _answer(headers=(("Content-Length", "1234"),), length=False))
    result = http_check(url, method="HEAD", deadline=time.time() + 3)
    assert (result["ok"], result["body_bytes"], result["content_length"]) == (True, 0, 1234), result
    assert result["body_truncated"] is False
    result = http_check(url, method="HEAD", max_body_bytes=0)
    assert (result["ok"], result["body_truncated"]) == (True, False), result


_GZ_HELLO = gzip.compress(b"hello")


@pytest.mark.parametrize(
    ("name", "answer", "reason", "body_bytes"),
    [
        (
            "trailers",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            None,
            5,
        ),
        (
            "te-over-cl",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            None,
            5,
        ),
        ("lf-only", b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", None, 5),  # as browsers accept
        ("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello", None, 5),
        ("gzip-empty", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n", None, 0),
        ("204-body", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", None, 0),
        (
            "te-gzip",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (len(_GZ_HELLO), _GZ_HELLO),
            "protocol_error",
            None,
        ),
        (
            "six-codings",  # urllib3 refuses chains longer than 5 (CVE-2025-66418)
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip,gzip,gzip,gzip,gzip,gzip\r\nContent-Length: 5\r\n\r\nhello",
            "protocol_error",
            None,
        ),
        ("leading-crlf", b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "protocol_error", None),
        ("space-before-colon", b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", "protocol_error", None),
        ("nul-in-header", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello", "protocol_error", None),
        ("closed-silently", b"", "protocol_error", None),
    ],
)
def test_framing_edge_cases(raw_http, name: str, answer: bytes, reason: str | None, body_bytes: int | None) -> None:
    url = raw_http.answer(f"/framing/{name}", answer, hold=0.5)
    result = http_check(url, status_codes="200-299", deadline=time.time() + 3)
    assert (result["ok"], result.get("reason"), result.get("body_bytes")) == (reason is None, reason, body_bytes), (
        result
    )


def test_no_body_codings_on_head_and_304(raw_http) -> None:
    head = b"HTTP/1.1 %s\r\nContent-Encoding: gzip\r\nContent-Length: 25\r\n\r\n"
    url = raw_http.answer("/head-gzip", head % b"200 OK")
    result = http_check(url, method="HEAD", body_not_match="x")
    assert (result["ok"], result["body_bytes"], result["content_length"]) == (True, 0, 25), result
    url = raw_http.answer("/304-gzip", head % b"304 Not Modified")
    result = http_check(url, status_codes="304", body_not_match="x")
    assert (result["ok"], result["body_bytes"], result["body_truncated"]) == (True, 0, False), result


@pytest.mark.parametrize("length", ["5, 6", "abc", "-1", "5\r\nContent-Length: 6"])
def test_invalid_content_length_is_a_protocol_error(raw_http, length: str) -> None:
    url = raw_http.answer(
        f"/bad-length/{length.encode().hex()}",
        _answer(headers=(("Content-Length", length),), body=b"hello!", length=False),
    )
    result = http_check(url)
    assert (result["ok"], result["reason"]) == (False, "protocol_error"), result


@pytest.mark.parametrize(
    "informational",
    [
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n",  # issue #12, 3
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 102 Processing\r\n\r\n",
        b"HTTP/1.1 199 Misc\r\n\r\n",
        b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.js>\r\n\r\n",
    ],
)
def test_informational_responses_are_skipped(raw_http, informational: bytes) -> None:
    url = raw_http.answer(f"/1xx/{hash(informational) & 0xFFFF}", informational, _answer(body=b"final"), pause=0.02)
    result = http_check(url, body_match="^final$")
    assert (result["ok"], result["status_code"]) == (True, 200), result


def test_unsolicited_101_is_a_protocol_error(raw_http) -> None:
    raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    result = http_check(raw_http.answer("/101", raw))
    assert (result["ok"], result["reason"]) == (False, "protocol_error"), result


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 99 Low\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 1000 High\r\nContent-Length: 0\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
        b"\x16\x03\x01\x00\x2a",  # a TLS record
    ],
)
def test_invalid_response_head_is_a_protocol_error(raw_http, head: bytes) -> None:
    url = raw_http.answer(f"/bad-head/{head.hex()[:16]}", head, hold=3)
    result = http_check(url, deadline=time.time() + 2)
    assert (result["ok"], result["reason"]) == (False, "protocol_error"), result


@pytest.mark.parametrize("first", [None, 90 * 1024], ids=["one-write", "90KiB-then-the-rest"])
def test_header_block_too_large_is_a_protocol_error(raw_http, first: int | None) -> None:
    """The head's bound holds however its bytes arrive: h11 checks it only while the head is incomplete,
    so 90 KiB and then the rest once used to pass a 150 KiB head (and so did one large read, on a loaded
    machine where the bytes pile up before the check reads them)."""
    raw = _answer(headers=tuple((f"X-Filler-{i}", "y" * 1000) for i in range(150)))  # 150 KiB of head
    parts = (raw,) if first is None else (raw[:first], raw[first:])
    url = raw_http.answer(f"/huge-head/{first}", *parts, pause=0.3, hold=3)
    result = http_check(url, deadline=time.time() + 2)
    assert (result["ok"], result["reason"]) == (False, "protocol_error"), result
    assert "response head" in result["detail"] or "too long" in result["detail"], result


@pytest.mark.parametrize(
    ("location", "final_path"),
    [
        (b"/caf\xc3\xa9", "/caf%C3%A9"),  # issue #12, 4: raw UTF-8
        (b"/caf\xe9", "/caf%E9"),  # a Latin-1 byte, not UTF-8: percent-encoded as it is
        (b"/caf%C3%A9", "/caf%C3%A9"),  # already encoded: not encoded twice
        (b"/with space/x y", "/with%20space/x%20y"),
        (b"caf%C3%A9", "{dir}/caf%C3%A9"),  # relative to {dir}/start
        (b"../up", "/up"),
        (b"?q=\xc3\xbc", "{dir}/start?q=%C3%BC"),
        (b"/done#fragment", "/done"),
        (b"//127.0.0.1:{port}/done", "/done"),  # protocol-relative
        ("http://ｌｏｃａｌｈｏｓｔ:{port}/done".encode(), "/done"),  # raw UTF-8 host name (full-width)
    ],
)
def test_location_header_forms(raw_http, location: bytes, final_path: str) -> None:
    case = f"/loc-{location.hex()[:40]}"
    location = location.replace(b"{port}", str(raw_http.port).encode())
    start = raw_http.answer(f"{case}/start", _answer("302 Found", (("Location", location),)))
    path = final_path.replace("{dir}", case)
    raw_http.answer(path, _answer(body=b"arrived"))
    result = http_check(start, body_match="^arrived$")
    assert (result["ok"], result["redirects"]) == (True, 1), result
    assert result["final_url"].endswith(f":{raw_http.port}{path}"), result["final_url"]


@pytest.mark.parametrize("location", [b"/a\tb", b"http://exa mple.com/", b"/\\evil.example/", b"ftp://127.0.0.1/"])
def test_location_that_is_no_url_is_a_bad_redirect(raw_http, location: bytes) -> None:
    url = raw_http.answer(f"/bad-location/{location.hex()}", _answer("302 Found", (("Location", location),)))
    result = http_check(url)
    assert (result["ok"], result["reason"], result["redirects"]) == (False, "bad_redirect", 0), result


@pytest.mark.parametrize(
    ("content_type", "body", "pattern"),
    [
        ("text/html; charset=iso-8859-1", "Café fermé".encode("latin-1"), "Café fermé"),
        ("text/plain; charset=latin1", "naïve".encode("latin-1"), "^naïve$"),
        ("text/plain; charset=latin-1", "naïve".encode(), "^naïve$"),  # Python's alias, no web label: UTF-8
        ("text/plain; charset=utf-16", "Ünïcode".encode("utf-16"), "^Ünïcode$"),
        ("text/plain", "Ünïcode".encode("utf-16"), "^Ünïcode$"),  # no charset: the byte-order mark says
        ('text/plain; charset="UTF-8"', "Grüße".encode(), "^Grüße$"),
        ("text/plain; charset=windows-1252", "5 €".encode("cp1252"), "^5 €$"),
        ("text/plain; charset=shift_jis", "日本語".encode("shift_jis"), "^日本語$"),
        ("text/plain; charset=x-no-such-charset", "Grüße".encode(), "^Grüße$"),  # unknown: UTF-8
        (None, "Grüße".encode(), "^Grüße$"),
        # Issue #11, F15: the labels are the Encoding Standard's, not Python's codec names.
        ("text/plain; charset=utf-7", b"+AGEAYgBj-", r"^\+AGEAYgBj-$"),  # not a web label: UTF-8, not "abc"
        ("text/plain; charset=unicode_escape", b"\\u0041", r"^\\u0041$"),  # likewise, not "A"
        ("text/plain; charset=us-ascii", "café".encode("latin-1"), "^café$"),  # ascii is windows-1252
        ("text/plain; charset=unicodeFFFE", "Grüße".encode("utf-16-be"), "^Grüße$"),  # a label Python lacks
        ("text/plain; charset=utf-16", "Grüße".encode("utf-16-le"), "^Grüße$"),  # no BOM: little-endian
        ("text/plain; charset=x-user-defined", b"a\x80", "^a\uf780$"),
        ("text/plain; charset=iso-2022-kr", b"abc", "^\ufffd+$"),  # the replacement encoding
    ],
)
def test_body_text_is_read_in_its_charset(raw_http, content_type: str | None, body: bytes, pattern: str) -> None:
    headers = (("Content-Type", content_type),) if content_type else ()
    url = raw_http.answer(f"/charset/{abs(hash((content_type, body))) % 10**8}", _answer(headers=headers, body=body))
    result = http_check(url, body_match=pattern)
    assert result["ok"] is True, result


def test_connection_goes_to_the_checked_address_with_the_urls_host(raw_http) -> None:
    url = raw_http.answer("/pinned", _answer(body=b"ok")).replace("127.0.0.1", "localhost")
    result = http_check(url, ip_version="4")
    assert (result["ok"], result["ip"]) == (True, "127.0.0.1"), result
    head = raw_http.requests["/pinned"][-1]
    assert f"\r\nHost: localhost:{raw_http.port}\r\n".encode() in head
    assert b"Accept-Encoding" not in head


def test_http2_when_offered(h2_server, certs) -> None:
    port, routes = h2_server
    routes["/h2"] = ([(":status", "200"), ("content-encoding", "gzip")], gzip.compress(DATABASE_DOWN))
    url = f"https://localhost:{port}/h2"
    result = http_check(url, http2=True, ca_bundle=str(certs.ca), body_match="database")
    assert (result["ok"], result["http_version"], result["status_code"]) == (True, "HTTP/2", 200), result
    assert result["body_bytes"] == len(DATABASE_DOWN)
    assert result["phases_ms"]["tls"] > 0 and result["phases_ms"]["first_byte"] > 0
    # Informational answers are skipped in HTTP/2 too.
    routes["/h2-hints"] = ([(":status", "103"), ("link", "</a.css>"), (":status", "200")], b"final")
    result = http_check(f"https://localhost:{port}/h2-hints", http2=True, ca_bundle=str(certs.ca), body_match="^final$")
    assert (result["ok"], result["status_code"]) == (True, 200), result
    # Not offered: this server speaks HTTP/2 only, so the HTTP/1.1 request goes unanswered.
    result = http_check(url, ca_bundle=str(certs.ca))
    assert (result["ok"], result["reason"]) == (False, "protocol_error"), result


def test_http2_is_not_offered_to_plain_http(raw_http) -> None:
    url = raw_http.answer("/h2-plain", _answer(body=b"ok"))
    result = http_check(url, http2=True)
    assert (result["ok"], result["http_version"]) == (True, "HTTP/1.1"), result
    assert b"\r\nConnection: close\r\n" in raw_http.requests["/h2-plain"][-1]


def test_prometheus_uses_blackbox_names_for_body_sizes() -> None:
    result = {"ok": True, "duration_ms": 5.0, "content_length": 120, "body_wire_bytes": 120, "body_bytes": 470}
    text = render_check("http", "SUCCESS", result, 5.0)
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples["probe_http_content_length"] == 120
    assert samples["probe_http_uncompressed_body_length"] == 470
