"""The workers' AMQP client (tasks/transport.py): which one each broker URL gets, and the librabbitmq
transport's consumer under kombu 5.x (consume, reject, redelivery, ack) on the real RabbitMQ."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable

import pytest
from kombu import Connection, Consumer, Producer, Queue

from tasks import transport
from tasks.transport import SCHEME, choose, with_transport
from tests.support.env import BROKER_URL
from tests.support.infra import missing_librabbitmq, require

LOCAL = "amqp://u:p@127.0.0.1:5672//"
REMOTE = "amqp://u:p@rabbit-a.internal:5672//"


def have(value: bool) -> Callable[[], bool]:
    return lambda: value


@pytest.mark.parametrize(
    ("setting", "url", "available", "expected"),
    [
        # auto: librabbitmq only where it imports, the URL is plain and every node is on this host.
        ("auto", LOCAL, True, SCHEME),
        ("", "amqp://[::1]//;pyamqp://localhost:5673//", True, SCHEME),
        ("auto", LOCAL, False, "pyamqp"),
        ("auto", REMOTE, True, "pyamqp"),
        ("auto", f"{LOCAL};{REMOTE}", True, "pyamqp"),
        ("auto", "amqps://u:p@127.0.0.1:5671//", True, "pyamqp"),
        ("auto", "amqp://127.0.0.1:5672/?ssl=1", True, "pyamqp"),
        # Explicit choices; librabbitmq never with TLS, never where it does not import.
        ("pyamqp", LOCAL, True, "pyamqp"),
        ("librabbitmq", REMOTE, True, SCHEME),
        ("LibRabbitMQ", LOCAL, True, SCHEME),
        ("librabbitmq", "amqps://u:p@rabbit-a.internal//", True, "pyamqp"),
        ("librabbitmq", f"{LOCAL};amqps://rabbit-a.internal//", True, "pyamqp"),
        ("librabbitmq", LOCAL, False, "pyamqp"),
        ("librabbitmq", "redis://127.0.0.1:6379/0", True, "pyamqp"),
    ],
)
def test_each_broker_url_gets_its_client(setting: str, url: str, available: bool, expected: str) -> None:
    assert choose(setting, url, available=have(available)) == expected


def test_an_unknown_setting_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="CHECKGATE_BROKER_TRANSPORT='c-amqp': expected one of auto, pyamqp"):
        choose("c-amqp", LOCAL)


def test_every_plain_url_of_a_failover_list_names_the_client() -> None:
    # kombu takes each failover URL's own scheme when it switches nodes, so each carries the choice.
    url = "amqp://a@h1//;librabbitmq://h2;pyamqp://h3;amqps://h4//"
    assert with_transport(url, SCHEME) == f"{SCHEME}://a@h1//;{SCHEME}://h2;{SCHEME}://h3;amqps://h4//"
    assert with_transport(url, "pyamqp") == "pyamqp://a@h1//;pyamqp://h2;pyamqp://h3;amqps://h4//"


def test_celeryconfig_pins_the_choice_in_the_url() -> None:
    import runpy
    from pathlib import Path

    path = str(Path(__file__).resolve().parents[1] / "celeryconfig.py")
    env = {**os.environ, "CHECKGATE_BROKER_URL": REMOTE, "CHECKGATE_BROKER_TRANSPORT": "auto"}
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        assert runpy.run_path(path)["broker_url"] == "pyamqp://u:p@rabbit-a.internal:5672//"
        os.environ["CHECKGATE_BROKER_TRANSPORT"] = "bogus"
        with pytest.raises(ValueError, match="CHECKGATE_BROKER_TRANSPORT"):
            runpy.run_path(path)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_keepalive_bounds_a_silent_broker_by_three_heartbeats() -> None:
    options = transport.keepalive_options(5)
    assert options[socket.TCP_KEEPIDLE] + options[socket.TCP_KEEPINTVL] * options[socket.TCP_KEEPCNT] == 15
    assert options.get(socket.TCP_USER_TIMEOUT, 15000) == 15000


def test_librabbitmq_consumer_consumes_rejects_gets_redelivery_and_acks() -> None:
    """kombu 5.x's consumer passes `on_cancel=`: the stock librabbitmq transport raises TypeError, ours runs."""
    require(missing_librabbitmq())
    queue = Queue(f"cgt{secrets.token_hex(3)}_transport", durable=False, auto_delete=True)
    url = with_transport(BROKER_URL, SCHEME)
    with Connection(url, heartbeat=5) as conn:
        channel = conn.channel()
        bound = queue(channel)
        bound.declare()
        producer = Producer(channel)
        for n in (1, 2):
            producer.publish({"n": n}, routing_key=queue.name)
        seen: list[tuple[int, bool]] = []

        def on_message(body: dict, message) -> None:
            seen.append((body["n"], message.delivery_info["redelivered"]))
            if body["n"] == 1 and len(seen) == 1:
                message.reject(requeue=True)
            else:
                message.ack()

        with Consumer(channel, [queue], callbacks=[on_message]):
            for _ in range(10):
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    break
        assert seen == [(1, False), (2, False), (1, True)]
        assert conn.info()["transport"] == SCHEME
        # Keepalive is on the connection's socket (the worker's side of a silent broker).
        sock = socket.socket(fileno=os.dup(conn.connection.fileno()))
        try:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5
        finally:
            sock.close()
        bound.delete()
    with Connection(with_transport(BROKER_URL, "librabbitmq")) as stock, pytest.raises(TypeError, match="on_cancel"):
        Consumer(stock.channel(), [queue], callbacks=[on_message]).consume()


def test_flower_stays_on_pyamqp_as_its_broker_views_need() -> None:
    """Flower's broker page and queue-length API build a client from the connection's URI and know only
    amqp://: supervisord.conf pins Flower to py-amqp whatever the node's workers use."""
    import configparser
    from pathlib import Path

    from flower.utils.broker import Broker

    with pytest.raises(NotImplementedError):
        Broker(Connection(f"{SCHEME}://g:p@h//").as_uri(include_password=True))
    Broker(Connection(with_transport("amqp://g:p@h//", "pyamqp")).as_uri(include_password=True), http_api=None)
    conf = configparser.RawConfigParser()
    conf.read(Path(__file__).resolve().parents[1] / "supervisord.conf")
    assert 'CHECKGATE_BROKER_TRANSPORT="pyamqp"' in conf["program:flower"]["environment"]


def test_settling_a_delivery_after_its_connection_closed_is_a_logged_connection_error() -> None:
    """A task that ends after a reconnect acks on a channel kombu detached from its dead connection: with
    librabbitmq that was an AttributeError, which kills a Celery worker; now it is logged, as with py-amqp."""
    require(missing_librabbitmq())
    import logging

    queue = Queue(f"cgt{secrets.token_hex(3)}_settle", durable=False, auto_delete=False)
    url = with_transport(BROKER_URL, SCHEME)
    with Connection(url) as admin:
        queue(admin.channel()).declare()
        Producer(admin.channel()).publish({"n": 1}, routing_key=queue.name)
        Producer(admin.channel()).publish({"n": 2}, routing_key=queue.name)
    try:
        conn = Connection(url)
        channel = conn.channel()
        first, second = queue(channel).get(no_ack=False), queue(channel).get(no_ack=False)
        conn.collect()  # what kombu does with a connection that failed: its channels lose it
        errors = conn.connection_errors + conn.channel_errors
        first.ack_log_error(logging.getLogger("test"), errors)
        second.reject_log_error(logging.getLogger("test"), errors, requeue=True)
        with pytest.raises(errors):
            first.ack()
    finally:
        with Connection(url) as admin:
            queue(admin.channel()).delete()
