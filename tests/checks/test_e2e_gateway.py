"""Each check type end to end: gateway → RabbitMQ → a real worker → Redis → gateway, against local targets."""

import socket
import threading
from urllib.parse import urlencode

from prometheus_client.parser import text_string_to_metric_families

from tests.support.dns_server import scripted_tcp_server
from tests.support.stack import http_get


def check(gateway: str, kind: str, **params: object) -> tuple[int, dict]:
    status, body, _ = http_get(f"{gateway}/check/{kind}?{urlencode(params)}")
    return status, body


def test_http_end_to_end(gateway: str, http_base: str) -> None:
    status, body = check(gateway, "http", url=f"{http_base}/redirect/2", body_match="hello")
    assert status == 200, body
    result = body["result"]
    assert (result["ok"], result["status_code"], result["redirects"]) == (True, 200, 2)
    assert result["final_url"] == f"{http_base}/text"
    assert set(result["phases_ms"]) >= {"dns", "connect", "first_byte", "total"}
    status, body = check(gateway, "http", url=f"{http_base}/status/503")
    assert (status, body["result"]["ok"], body["result"]["reason"]) == (200, False, "status_codes")


def test_http_gzip_body_end_to_end(gateway: str, http_base: str) -> None:
    """Issue #12, 1 through the real stack: a gzipped error page is matched decoded, and both sizes are
    reported (JSON fields and blackbox's series)."""
    url = f"{http_base}/gzip?{urlencode({'text': 'Could not connect to database'})}"
    status, body = check(gateway, "http", url=url, body_not_match="database")
    assert status == 200, body
    result = body["result"]
    assert (result["ok"], result["reason"], result["status_code"]) == (False, "body_not_match", 200), result
    assert result["body_bytes"] == len("Could not connect to database")
    assert result["body_wire_bytes"] == result["content_length"] > 0
    params = urlencode({"url": url, "body_match": "database", "format": "prometheus"})
    status, text, _ = http_get(f"{gateway}/check/http?{params}")
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert (status, samples["probe_success"]) == (200, 1)
    assert samples["probe_http_uncompressed_body_length"] == len("Could not connect to database")
    assert samples["probe_http_content_length"] == result["content_length"]


def test_http_redirect_to_metadata_is_refused_after_resolution(gateway: str, http_base: str) -> None:
    status, body = check(gateway, "http", url=f"{http_base}/redirect-to?url=http://169.254.169.254/latest/meta-data/")
    assert status == 403, body
    assert body["error"] == "target refused by policy"
    assert (body["result"]["ok"], body["result"]["reason"]) == (False, "target_refused")
    status, body = check(gateway, "http", url="http://169.254.169.254/latest/meta-data/")
    assert (status, body["field"]) == (400, "url")


def test_tls_end_to_end(gateway: str, tls_port, certs) -> None:
    status, body = check(
        gateway, "tls", host="127.0.0.1", port=tls_port("valid"), server_name="localhost", ca_bundle=certs.ca
    )
    assert status == 200, body
    assert body["result"]["ok"] is True
    assert 28 <= body["result"]["days_left"] <= 30
    status, body = check(
        gateway, "tls", host="127.0.0.1", port=tls_port("expiring"), server_name="localhost", ca_bundle=certs.ca
    )
    assert (body["result"]["ok"], body["result"]["reason"]) == (False, "certificate_expiring")
    status, body = check(gateway, "tls", host="127.0.0.1", port=tls_port("self_signed"), server_name="localhost")
    assert (body["result"]["ok"], body["result"]["reason"]) == (False, "untrusted_certificate")


def test_tls_prometheus_has_blackbox_expiry(gateway: str, tls_port, certs) -> None:
    params = {"host": "127.0.0.1", "port": tls_port("valid"), "server_name": "localhost", "ca_bundle": certs.ca}
    status, text, _ = http_get(f"{gateway}/check/tls?{urlencode(params)}&format=prometheus")
    assert status == 200
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples["probe_success"] == 1
    assert samples["probe_ssl_earliest_cert_expiry"] > 1_700_000_000


def test_tcp_end_to_end(gateway: str, echo_port: int) -> None:
    status, body = check(gateway, "tcp", host="127.0.0.1", port=echo_port, send="hello\\n", expect="ECHO hello")
    assert status == 200, body
    assert body["result"]["ok"] is True
    assert "ECHO hello" in body["result"]["reply"]


def test_dns_end_to_end(gateway: str, dns_port: int) -> None:
    status, body = check(
        gateway,
        "dns",
        name="example.test",
        record_type="MX",
        server="127.0.0.1",
        port=dns_port,
        answer_includes="10 mail.example.test.",
    )
    assert status == 200, body
    result = body["result"]
    assert (result["ok"], result["rcode"]) == (True, "NOERROR")
    assert any("mail.example.test" in a for a in result["answers"])
    status, body = check(gateway, "dns", name="nope.test", server="127.0.0.1", port=dns_port)
    assert (body["result"]["ok"], body["result"]["rcode"], body["result"]["reason"]) == (False, "NXDOMAIN", "rcode")


def test_chain_expiry_end_to_end(gateway: str, tls_port, certs) -> None:
    # Issue #12 item 5 through the whole stack: the intermediate expires in 5 days, the leaf in 200.
    params = {"host": "127.0.0.1", "port": tls_port("short_intermediate"), "ca_bundle": certs.ca, "warn_days": 14}
    status, body = check(gateway, "tls", **params)
    assert status == 200, body
    result = body["result"]
    assert (result["ok"], result["reason"]) == (False, "certificate_expiring"), result
    assert 4.9 < result["days_left"] < 5.1
    assert result["earliest_expiry_subject"] == "CN=checkgate short intermediate"
    status, text, _ = http_get(f"{gateway}/check/tls?{urlencode(params)}&format=prometheus")
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples["probe_ssl_earliest_cert_expiry"] == int(certs.expiries["short_intermediate.1"])


def test_tcp_expect_line_by_line_end_to_end(gateway: str) -> None:
    # Issue #12 item 6: the matching line is the second, and the server keeps the connection open.
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"220-hello\r\n220 ready\r\n")
            done.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        status, body = check(
            gateway, "tcp", host="127.0.0.1", port=server.getsockname()[1], expect="^220 ready$", timeout=20
        )
        assert status == 200, body
        assert (body["result"]["ok"], body["result"]["matched_line"]) == (True, "220 ready"), body
    finally:
        done.set()
        thread.join(5)
        server.close()


def test_what_a_target_sends_is_an_answer_not_a_502(gateway: str, odd_tls, raw_http) -> None:
    """Issue #11, F6 through the real stack: each of these was a 502 "the task raised" (DuplicateExtension,
    UnsupportedGeneralNameType, UnicodeError, msgpack's EncodeError, EOFError); each is a 200 now."""
    port, position, ca = odd_tls("duplicate_san")
    status, body = check(gateway, "tls", host="127.0.0.1", port=port, server_name="localhost", ca_pem=ca)
    assert status == 200, body
    assert body["result"]["chain"][position]["subject"] == "CN=localhost", body
    port, _, _ = odd_tls("x400_san")
    status, body = check(gateway, "tcp", host="127.0.0.1", port=port, tls="true", verify_tls="false")
    assert (status, body["result"]["ok"], body["result"]["sans"]) == (200, True, []), body
    assert "UnsupportedGeneralNameType" in body["result"]["sans_error"]
    url = raw_http.answer(
        "/e2e-idna", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=idna\r\nContent-Length: 8\r\n\r\ndatabase"
    )
    status, body = check(gateway, "http", url=url, body_not_match="database")
    assert (status, body["result"]["ok"], body["result"]["reason"]) == (200, False, "body_not_match"), body
    url = raw_http.answer("/e2e-huge-length", b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n")
    status, body = check(gateway, "http", url=url, method="HEAD")
    assert (status, body["result"]["ok"], body["result"]["reason"]) == (200, False, "protocol_error"), body
    with scripted_tcp_server(lambda query: b"") as dns_port:
        status, body = check(gateway, "dns", name="example.test", server="127.0.0.1", port=dns_port, protocol="tcp")
    assert (status, body["result"]["ok"], body["result"]["reason"]) == (200, False, "protocol_error"), body


def test_header_values_beyond_ascii_end_to_end(gateway: str, raw_http) -> None:
    """Issue #11, F7: ``headers=X:%C3%BF`` passed the gateway and raised TypeError in the worker (a 502).
    A character up to U+00FF is sent as its Latin-1 octet; one beyond is the gateway's 400 naming the field."""
    url = raw_http.answer("/e2e-latin-1", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    status, body = check(gateway, "http", url=url, headers="X-Latin:\u00ff|Cookie:a\u00e9")
    assert (status, body["result"]["ok"]) == (200, True), body
    head = raw_http.requests["/e2e-latin-1"][-1]
    assert b"\r\nX-Latin: \xff\r\n" in head and b"\r\nCookie: a\xe9\r\n" in head, head
    status, body = check(gateway, "http", url=url, headers="X-Euro:\u20ac")
    assert (status, body["field"]) == (400, "headers"), body
