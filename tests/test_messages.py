"""Unit tests of what the gateway puts on the wire: Celery protocol-2 messages, ids, routing."""

import time
import uuid
from datetime import UTC, datetime

import pytest
import redis
from kombu.serialization import loads

from gateway.aiocelery import CeleryClient
from gateway.aiocelery.results import KEY_PREFIX, glob_escape
from tasks.celery import app
from tasks.deadline import deadline_of
from tasks.registry import REGISTRY
from tests.support.env import BACKEND_URL, RUN_PREFIX


@pytest.fixture
def client() -> CeleryClient:
    return CeleryClient(app, id_prefix="unit-")


def test_message_is_celery_protocol_2(client: CeleryClient) -> None:
    task_id = client.new_id()
    msg = client.build_message(task_id, REGISTRY["add"].task_name, {"x": 1, "y": 2}, timeout=10)
    assert task_id.startswith("unit-") and len(task_id) == len("unit-") + 20
    headers = msg.headers
    assert headers["lang"] == "py"
    assert headers["task"] == "checkgate.add"
    assert headers["id"] == headers["root_id"] == task_id
    # Headers at their defaults are left out (workers read them with .get()).
    assert "ignore_result" not in headers
    assert headers["retries"] == 0
    assert not {"eta", "group", "parent_id", "shadow", "timelimit", "stamped_headers"} & set(headers)
    expires_in = (datetime.fromisoformat(headers["expires"]) - datetime.now(UTC)).total_seconds()
    assert 9 < expires_in <= 10
    assert msg.expiration == 10
    assert msg.content_type == "application/x-msgpack"
    args, kwargs, embed = loads(msg.body, msg.content_type, msg.content_encoding, accept=["application/x-msgpack"])
    assert args == []
    assert kwargs == {"x": 1, "y": 2}
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_route_is_the_default_exchange_and_the_prefixed_queue(client: CeleryClient) -> None:
    for name in ("add", "sleep", "http"):
        msg = client.build_message(client.new_id(), REGISTRY[name].task_name, {}, timeout=1)
        assert (msg.exchange, msg.routing_key) == ("", RUN_PREFIX + name)


def test_fire_mode_overrides_ignore_result(client: CeleryClient) -> None:
    msg = client.build_message(client.new_id(), REGISTRY["sleep"].task_name, {"ms": 1}, timeout=5, ignore_result=True)
    assert msg.headers["ignore_result"] is True


def test_ids_are_unique(client: CeleryClient) -> None:
    ids = {client.new_id() for _ in range(10_000)}
    assert len(ids) == 10_000


def test_default_id_prefix_differs_per_client() -> None:
    assert CeleryClient(app).id_prefix != CeleryClient(app).id_prefix


def test_glob_escape_matches_only_itself_in_real_redis() -> None:
    """A prefix full of glob characters must not let the PSUBSCRIBE see other processes' ids."""
    prefix = "p*?[x]\\-"
    assert glob_escape(prefix) == "p\\*\\?\\[x\\]\\\\-"
    client = redis.Redis.from_url(BACKEND_URL)
    pubsub = client.pubsub()
    pubsub.psubscribe(KEY_PREFIX + glob_escape(prefix) + "*")
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
    tag = uuid.uuid4().hex
    client.publish(KEY_PREFIX + "pab[x]-" + tag, "other")  # would match the unescaped pattern
    client.publish(KEY_PREFIX + prefix + tag, "mine")
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not seen:
        message = pubsub.get_message(timeout=1)
        if message and message["type"] == "pmessage":
            seen.append(message["data"])
    time.sleep(0.2)
    message = pubsub.get_message(timeout=0.5)
    pubsub.close()
    client.close()
    assert seen == [b"mine"]
    assert message is None


def test_deadline_of_reads_celery_expires_header() -> None:
    assert deadline_of(None) is None
    assert deadline_of("2026-01-01T00:00:10+00:00") == datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC).timestamp()
    assert deadline_of("2026-01-01T00:00:10") == datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("name", "kwargs", "ignore_result"), [("add", {"x": 1, "y": 2}, False), ("sleep", {"ms": 5}, True)]
)
def test_messages_from_the_template_equal_celerys_own(
    client: CeleryClient, name: str, kwargs: dict, ignore_result: bool
) -> None:
    check = REGISTRY[name]
    task_id = client.new_id()
    msg = client.build_message(task_id, check.task_name, kwargs, timeout=10, ignore_result=ignore_result)
    expires = datetime.fromisoformat(msg.headers["expires"])
    headers, body = client.messages.celery_message(task_id, check.task_name, (), kwargs, expires, ignore_result)
    assert msg.headers == headers
    assert list(msg.headers) == list(headers)
    decoded = loads(msg.body, msg.content_type, msg.content_encoding, accept=["application/x-msgpack"])
    assert decoded == [list(body[0]), body[1], body[2]]


def test_every_header_of_celerys_protocol_2_is_refused_as_an_extra_header(client: CeleryClient) -> None:
    """`headers=` adds headers, never replaces the protocol's: the refused set covers every header Celery's
    own `create_task_message` writes (with every option set) and the v2 spec's `meth`."""
    from gateway.aiocelery.messages import PROTOCOL_HEADERS

    written = app.amqp.create_task_message(
        "id-1",
        "checkgate.add",
        (1,),
        {"y": 2},
        countdown=1,
        expires=10,
        group_id="g",
        group_index=0,
        retries=1,
        chord=None,
        time_limit=5,
        soft_time_limit=4,
        root_id="r",
        parent_id="p",
        shadow="s",
        origin="o",
        ignore_result=True,
        stamped_headers=["x"],
        stamps={"x": 1},
        x=1,
        replaced_task_nesting=1,
    ).headers
    assert set(written) - PROTOCOL_HEADERS == set()
    for name in PROTOCOL_HEADERS | {"meth"}:
        with pytest.raises(ValueError, match="header of the task protocol"):
            client.messages.build_task(client.new_id(), "checkgate.add", (), {}, headers={name: "x"})
