"""Where and how the gateway connects to the broker: the Celery app's configuration read with kombu's own
URL code (failover lists, query options, every `broker_use_ssl` option), and what it cannot honour
refused at start-up — never ignored."""

from __future__ import annotations

import itertools
import ssl
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

import tasks.transport  # noqa: F401  (registers librabbitmq-celery:// with kombu, as celeryconfig does)
from gateway.aiocelery.amqp import tls_context
from gateway.aiocelery.publisher import broker_nodes, node_order
from tests.support import pki


def celery_app(**conf: Any) -> Celery:
    """A bare Celery app with `conf` (broker_heartbeat 5, as celeryconfig sets it)."""
    app = Celery("t", set_as_current=False)
    app.conf.update({"broker_heartbeat": 5, **conf})
    return app


def describe(url: str, **conf: Any) -> list[tuple]:
    return [
        (n.host, n.port, n.username, n.password, n.vhost, n.ssl_context is not None, n.heartbeat, n.connect_timeout)
        for n in broker_nodes(celery_app(broker_url=url, **conf))
    ]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", [("127.0.0.1", 5672, "guest", "guest", "/", False, 5.0, 4.0)]),
        ("pyamqp://u%40x:p%2Fw@h/vh", [("h", 5672, "u@x", "p/w", "vh", False, 5.0, 4.0)]),
        ("amqps://u:p@h//", [("h", 5671, "u", "p", "/", True, 5.0, 4.0)]),
        # The workers' librabbitmq transport (tasks/transport.py), which celeryconfig may put in broker_url.
        ("librabbitmq-celery://u:p@h//", [("h", 5672, "u", "p", "/", False, 5.0, 4.0)]),
        ("amqp://h?heartbeat=7&connect_timeout=1.5", [("h", 5672, "guest", "guest", "/", False, 7.0, 1.5)]),
        ("amqp://h:1?ssl=true", [("h", 1, "guest", "guest", "/", True, 5.0, 4.0)]),
        ("amqps://h?ssl=false", [("h", 5671, "guest", "guest", "/", True, 5.0, 4.0)]),
        (
            "amqp://a:1@h1:5672//;amqps://b:2@h2/v2?heartbeat=9;pyamqp://h3:5673",
            [
                ("h1", 5672, "a", "1", "/", False, 5.0, 4.0),
                ("h2", 5671, "b", "2", "v2", True, 9.0, 4.0),
                ("h3", 5673, "guest", "guest", "/", False, 5.0, 4.0),
            ],
        ),
    ],
)
def test_every_node_of_a_failover_list(url: str, expected: list[tuple]) -> None:
    assert describe(url) == expected


def test_the_url_ssl_option_decides_for_its_node() -> None:
    nodes = describe("amqp://h1?ssl=false;amqp://h2", broker_use_ssl=True)
    assert [n[5] for n in nodes] == [False, True]


def test_configuration_fills_in_what_the_url_leaves_out() -> None:
    nodes = describe("amqp://h", broker_heartbeat=0, broker_connection_timeout=2)
    assert nodes == [("h", 5672, "guest", "guest", "/", False, 0.0, 2.0)]
    (only,) = broker_nodes(celery_app(broker_url="amqp://h", broker_transport_options={"frame_max": 8192}))
    assert only.frame_max == 8192
    assert only.socket_settings[18] == 1000  # py-amqp's TCP_USER_TIMEOUT, as the workers have it


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"broker_url": "redis://h:6379/0"}, "AMQP only"),
        ({"broker_url": "amqp://h?ssl_cert_reqs=required"}, "broker_use_ssl"),
        ({"broker_url": "amqp://h?ssl=maybe"}, "boolean"),
        ({"broker_url": "amqp://h?login_method=AMQPLAIN"}, "PLAIN only"),
        ({"broker_url": "amqp://h", "broker_login_method": "EXTERNAL"}, "PLAIN only"),
        ({"broker_url": "amqps://h", "broker_use_ssl": {"ca_cert": "/x"}}, "unsupported options \\['ca_cert'\\]"),
        ({"broker_url": "amqps://h", "broker_use_ssl": {"keyfile": "/x"}}, "keyfile without certfile"),
        ({"broker_url": "amqps://h", "broker_use_ssl": {"server_side": True}}, "server_side"),
        ({"broker_url": "amqp://h", "broker_transport_options": {"confirm_publish": False}}, "confirms"),
        ({"broker_url": "amqp://h", "broker_failover_strategy": "nearest"}, "nearest"),
    ],
)
def test_what_the_gateway_cannot_honour_is_refused(conf: dict[str, Any], message: str) -> None:
    app = celery_app(**conf)
    with pytest.raises(ValueError, match=message):
        nodes = broker_nodes(app)
        node_order(nodes, app.conf.broker_failover_strategy)


def test_an_unknown_url_option_is_refused_like_kombu_does() -> None:
    # kombu's own Connection raises TypeError for it; a worker with this URL would not start either.
    with pytest.raises((ValueError, TypeError)):
        broker_nodes(celery_app(broker_url="amqp://h?frame_max=8192"))


def test_failover_strategies_are_kombus() -> None:
    nodes = broker_nodes(celery_app(broker_url="amqp://a;amqp://b;amqp://c"))
    assert list(itertools.islice(node_order(nodes, "round-robin"), 5)) == [0, 1, 2, 0, 1]
    assert set(itertools.islice(node_order(nodes, "shuffle"), 200)) == {0, 1, 2}


@pytest.fixture(scope="module")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = pki.authority("test CA", days=2)
    client = pki.leaf(ca, days=2, names=["gateway"], common_name="gateway")
    return {
        "ca": pki.write_chain(directory / "ca.pem", ca),
        "cert": pki.write_chain(directory / "client.pem", client),
        "key": pki.write_key(directory / "client.key", client),
    }


def test_broker_use_ssl_is_honoured_whole(client_pki: dict[str, Path]) -> None:
    options = {
        "ca_certs": str(client_pki["ca"]),
        "certfile": str(client_pki["cert"]),
        "keyfile": str(client_pki["key"]),
        "cert_reqs": ssl.CERT_REQUIRED,
        "ciphers": "ECDHE+AESGCM",
        "tls_minimum_version": ssl.TLSVersion.TLSv1_2,
        "server_hostname": "rabbit.internal",
    }
    context, server_hostname = tls_context(options)
    assert server_hostname == "rabbit.internal"
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test CA"),),)]
    nodes = broker_nodes(celery_app(broker_url="amqps://h1:5671//;amqps://h2:5671//", broker_use_ssl=options))
    assert {id(n.ssl_context) for n in nodes} == {id(nodes[0].ssl_context)}  # built once, shared
    assert [n.server_hostname for n in nodes] == ["rabbit.internal"] * 2


def test_a_missing_client_certificate_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        tls_context({"certfile": str(tmp_path / "absent.pem")})


def test_verification_can_be_turned_off_only_explicitly() -> None:
    default, _ = tls_context(True)
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    off, _ = tls_context({"cert_reqs": ssl.CERT_NONE})
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname
    context, _ = tls_context({"context": {"cafile": None}, "server_hostname": "x"})
    assert not context.check_hostname  # py-amqp's rule for this form: check_hostname as given (None: off)
