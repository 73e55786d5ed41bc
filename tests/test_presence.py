"""Workers announce their AMQP client in Redis (tasks/presence.py); the gateway reads it without Celery's
blocking broadcast. The real round trip (a worker's entry in /health) is tests/test_worker_transport.py."""

import json

from tasks.presence import STALE_S, client_of, presence_key, read_entries


def test_entries_seen_recently_are_shown_with_their_client() -> None:
    now = 1_000_000.0
    raw = {
        b"w1@h": json.dumps({"transport": "librabbitmq-celery", "seen": now - 1}).encode(),
        b"w2@h": json.dumps({"transport": "pyamqp", "seen": now - STALE_S + 1}).encode(),
    }
    assert read_entries(raw, now) == {
        "w1@h": {"transport": "librabbitmq-celery", "client": "librabbitmq"},
        "w2@h": {"transport": "pyamqp", "client": "py-amqp"},
    }


def test_a_worker_that_stopped_announcing_drops_out() -> None:
    now = 1_000_000.0
    raw = {b"gone@h": json.dumps({"transport": "pyamqp", "seen": now - STALE_S - 1}).encode()}
    assert read_entries(raw, now) == {}


def test_fields_that_are_not_announcements_are_skipped() -> None:
    raw = {b"a": b"not json", b"b": b"{}", b"c": json.dumps({"transport": "x", "seen": "soon"}).encode()}
    assert read_entries(raw, 0.0) == {}


def test_names() -> None:
    assert presence_key("cgt1_") == "checkgate:workers:cgt1_"
    assert client_of("amqps") == "py-amqp" and client_of("") == "unknown" and client_of("qpid") == "qpid"
