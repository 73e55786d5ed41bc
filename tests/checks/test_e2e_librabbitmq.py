"""Every built-in check type end to end once with its worker consuming over librabbitmq (tasks/transport.py):
gateway → RabbitMQ → a librabbitmq worker → Redis → gateway, against the same local targets as
test_e2e_gateway.py. One worker serves every queue here; skipped where librabbitmq does not import."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tasks.transport import SCHEME
from tests.support.stack import Stack, http_get


@pytest.fixture(scope="module")
def lr_gateway(librabbitmq_stack: Stack) -> str:
    queues = ["add", "sleep", "http", "tcp", "tls", "dns"]
    librabbitmq_stack.start_worker("all", queues, pool="threads", concurrency=8)
    return librabbitmq_stack.start_gateway("gw")


def check(gateway: str, kind: str, **params: object) -> dict:
    status, body, _ = http_get(f"{gateway}/check/{kind}?{urlencode(params)}")
    assert status == 200, body
    return body


def test_every_check_type_over_librabbitmq(
    librabbitmq_stack: Stack, lr_gateway: str, http_base: str, echo_port: int, dns_port: int, tls_port, certs
) -> None:
    body = check(lr_gateway, "add", x=2, y=3)
    assert body["result"] == 5
    node = body["worker"]
    stats = librabbitmq_stack.client_app().control.inspect(destination=[node], timeout=5).stats() or {}
    assert stats[node]["broker"]["transport"] == SCHEME
    assert check(lr_gateway, "sleep", ms=10)["result"] == {"ok": True, "slept_ms": 10}
    result = check(lr_gateway, "http", url=f"{http_base}/redirect/1", body_match="hello")["result"]
    assert (result["ok"], result["status_code"], result["redirects"]) == (True, 200, 1), result
    result = check(lr_gateway, "tcp", host="127.0.0.1", port=echo_port, send="hi\\n", expect="ECHO hi")["result"]
    assert result["ok"] is True, result
    params = {"host": "127.0.0.1", "port": tls_port("valid"), "server_name": "localhost", "ca_bundle": certs.ca}
    result = check(lr_gateway, "tls", **params)["result"]
    assert result["ok"] is True, result
    params = {"name": "example.test", "record_type": "MX", "server": "127.0.0.1", "port": dns_port}
    result = check(lr_gateway, "dns", **params, answer_includes="10 mail.example.test.")["result"]
    assert (result["ok"], result["rcode"]) == (True, "NOERROR"), result
