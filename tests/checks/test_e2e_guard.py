"""No caller can turn checkgate against its own stack: end to end, gateway → RabbitMQ → worker → Redis → gateway.

The test deployment opens loopback (its targets live there, tests/support/env.py), so what is refused below is
refused as the deployment's own endpoint: the shared RabbitMQ and Redis the tests run on, the gateway's own port,
and the Flower and Supervisor ports its environment names (counting listeners stand in for those two).
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import redis

from tests.support.env import BACKEND_URL
from tests.support.forge import escaped, forge_command
from tests.support.listener import Listener
from tests.support.stack import Stack, http_get

REFUSED = "target refused by policy"  # what every refused target reads (tasks/checks/_guard.py)
REDIS_PORT = urllib.parse.urlsplit(BACKEND_URL).port or 6379


def check(gateway: str, kind: str, **params: object) -> tuple[int, dict]:
    status, body, _ = http_get(f"{gateway}/check/{kind}?{urlencode(params)}")
    return status, body


def assert_refused(status: int, body: dict) -> None:
    """403, reason target_refused, and a message that does not say which endpoint was hit."""
    assert status == 403, body
    assert (body["result"]["ok"], body["result"]["reason"]) == (False, "target_refused")
    assert body["error"] == body["result"]["detail"] == REFUSED
    for word in ("redis", "amqp", "rabbit", "broker", "backend", "flower", "supervisor", "gateway"):
        assert word not in body["error"].lower(), word


@pytest.fixture(scope="module")
def console_ports(stack: Stack) -> Iterator[tuple[Listener, Listener]]:
    """Listeners on the Flower and Supervisor ports the deployment's environment names."""
    flower = Listener(int(stack.env["CHECKGATE_FLOWER_PORT"]))
    supervisor = Listener(int(stack.env["CHECKGATE_SUPERVISOR_PORT"]))
    yield flower, supervisor
    flower.close()
    supervisor.close()


def test_a_forged_result_cannot_be_written_through_tcp(gateway: str, stack: Stack) -> None:
    """The issue's forge: SET celery-task-meta-<id> over the tcp check, then GET /result/<id> answered it."""
    task_id = f"{stack.prefix}forged-{secrets.token_hex(6)}"
    key = f"celery-task-meta-{task_id}".encode()
    db = urllib.parse.urlsplit(stack.backend_url).path.strip("/") or "0"
    payload = forge_command(task_id, db)
    for host in ("127.0.0.1", "::1", "localhost"):
        status, body = check(gateway, "tcp", host=host, port=REDIS_PORT, send=escaped(payload), expect=r"\+OK")
        assert_refused(status, body)
    assert redis.Redis.from_url(stack.backend_url).exists(key) == 0
    status, body, _ = http_get(f"{gateway}/result/{task_id}")
    assert status == 404, body


def test_other_callers_results_cannot_be_listed_or_read_through_tcp(gateway: str) -> None:
    status, body = check(gateway, "add", x=20, y=22)
    assert (status, body["result"]) == (200, 42)
    scan = r"SCAN 0 MATCH celery-task-meta-* COUNT 1000\r\n"
    assert_refused(*check(gateway, "tcp", host="127.0.0.1", port=REDIS_PORT, send=scan, expect="celery"))
    get = f"GET celery-task-meta-{body['id']}\\r\\n"
    assert_refused(*check(gateway, "tcp", host="127.0.0.1", port=REDIS_PORT, send=get, expect="SUCCESS"))


def test_the_broker_and_the_gateway_itself_are_refused_to_http(gateway: str, stack: Stack) -> None:
    assert urllib.parse.urlsplit(gateway).port == stack.gateway_port  # the deployment's gateway, as configured
    for url in (
        "http://127.0.0.1:5672/",  # the tests' RabbitMQ
        "http://[::1]:5672/",
        "http://127.0.0.1:15672/api/exchanges/%2F/amq.default/publish",  # its management API, where there is one
        f"{gateway}/health",  # the gateway answering this very request
        f"http://localhost:{stack.gateway_port}/console/",  # and the console it serves
    ):
        assert_refused(*check(gateway, "http", url=url))


def test_a_redirect_to_the_stack_is_refused(gateway: str, http_base: str) -> None:
    location = urllib.parse.quote(f"http://127.0.0.1:{REDIS_PORT}/", safe="")
    status, body = check(gateway, "http", url=f"{http_base}/redirect-to?url={location}")
    assert_refused(status, body)
    assert body["result"]["redirects"] == 1


def test_flower_and_supervisor_ports_from_the_environment_are_refused(
    gateway: str, console_ports: tuple[Listener, Listener]
) -> None:
    flower, supervisor = console_ports
    assert_refused(*check(gateway, "tcp", host="127.0.0.1", port=flower.port))
    assert_refused(*check(gateway, "http", url=f"http://localhost:{supervisor.port}/RPC2"))
    assert_refused(*check(gateway, "tls", host="::1", port=supervisor.port))
    assert (flower.accepted, supervisor.accepted) == (0, 0)


def test_a_dns_server_on_a_protected_endpoint_is_refused(gateway: str) -> None:
    for protocol in ("udp", "tcp"):
        params = {"name": "example.test", "server": "127.0.0.1", "port": REDIS_PORT, "protocol": protocol}
        assert_refused(*check(gateway, "dns", **params))
    assert_refused(*check(gateway, "dns", name="example.test", server="::1", port=5672, protocol="tcp"))


def test_a_plugin_check_is_judged_by_the_same_policy(gateway: str, echo_port: int) -> None:
    """`banner` (tests/support/extra_checks.py) connects the documented way: `tasks.checks.connect`."""
    status, body = check(gateway, "banner", host="127.0.0.1", port=echo_port)
    assert (status, body["result"]["ok"]) == (200, True), body
    assert body["result"]["banner"].startswith("HELLO checkgate-echo")
    assert_refused(*check(gateway, "banner", host="127.0.0.1", port=REDIS_PORT))
    assert_refused(*check(gateway, "banner", host="localhost", port=5672))


def test_the_gateway_refuses_metadata_literals_before_any_worker(gateway: str) -> None:
    """The DNS-free pre-check: 400 naming the field, for each embedded spelling of a metadata address."""
    for host in ("100.100.100.200", "192.0.0.192", "64:ff9b::a9fe:a9fe", "::a9fe:a9fe", "2002:a9fe:a9fe::"):
        status, body = check(gateway, "tcp", host=host, port=80)
        assert (status, body["field"]) == (400, "host"), host
        assert body["error"].endswith(f": {REFUSED}")  # the same text as every refusal (the log says why)
