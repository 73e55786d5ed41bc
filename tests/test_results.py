"""tasks.results: a check's result the result serializer refuses becomes a documented not-ok answer."""

from __future__ import annotations

import logging

import msgpack
import pytest
from kombu.serialization import dumps

from celeryconfig import result_serializer
from tasks.results import (
    DEFAULT_MAX_RESULT_BYTES,
    MAX_KEPT_CHARS,
    MAX_KEPT_FIELDS,
    REASON,
    TOO_LARGE,
    bounded_result,
    encode_result,
)
from tests.support.stack import Stack, http_get


def _refused(result: object) -> dict:
    answer, payload = encode_result(result, result_serializer)
    assert msgpack.unpackb(payload) == answer
    assert (answer["ok"], answer["reason"]) == (False, REASON), answer
    return answer


def test_an_encodable_result_is_stored_as_it_is() -> None:
    result = {"ok": True, "duration_ms": 1.5, "chain": [{"serial": "01", "not_after": 2**63 - 1}], "raw": b"\xff"}
    answer, payload = encode_result(result, result_serializer)
    assert answer is result
    assert payload == dumps(result, serializer=result_serializer)[2]


@pytest.mark.parametrize(
    ("result", "field", "complaint"),
    [
        ({"ok": True, "duration_ms": 2.0, "content_length": 2**64}, "result['content_length']", "OverflowError"),
        (
            {"ok": True, "chain": [{"serial": "01"}, {"not_after": -(2**63) - 1}]},
            "result['chain'][1]['not_after']",
            "OverflowError",
        ),
        ({"ok": True, "reply": "half a pair: \ud800"}, "result['reply']", "UnicodeEncodeError"),
        ({"ok": True, "tags": {"a", "b"}}, "result['tags']", "TypeError"),
        ({"ok": True, 2**70: "a key"}, "(the key)", "OverflowError"),
        ({"a", "set"}, "result", "TypeError"),
    ],
)
def test_what_the_serializer_refuses_is_named(result: object, field: str, complaint: str) -> None:
    answer = _refused(result)
    assert field in answer["detail"] and complaint in answer["detail"], answer["detail"]
    if isinstance(result, dict) and "duration_ms" in result:
        assert answer["duration_ms"] == result["duration_ms"]


def test_too_deep_a_structure_is_refused_with_a_bounded_search(caplog: pytest.LogCaptureFixture) -> None:
    deep: list = []
    inner = deep
    for _ in range(10_000):
        inner.append([])
        inner = inner[0]
    with caplog.at_level(logging.WARNING, logger="tasks.results"):
        answer = _refused({"ok": True, "deep": deep})
    assert answer["detail"].startswith("result['deep'][0][0]") and "ValueError" in answer["detail"], answer
    assert "cannot be stored" in caplog.text


# --- the size bound (issue #11, F5) ---------------------------------------------------------------


def test_a_result_within_the_bound_is_stored_as_it_is() -> None:
    result = {"ok": True, "duration_ms": 2.0, "reply": "x" * 1000}
    assert bounded_result(result, result_serializer, 2048) is result


def test_a_result_past_the_bound_keeps_only_its_small_fields(caplog: pytest.LogCaptureFixture) -> None:
    result = {"ok": False, "reason": "expect", "duration_ms": 3.5, "status_code": 200, "ip": "192.0.2.7"}
    result |= {"reply": "x" * 5000, "chain": [{"serial": "01"}], "long": "y" * (MAX_KEPT_CHARS + 1)}
    size = len(dumps(result, serializer=result_serializer)[2])
    with caplog.at_level(logging.WARNING, logger="tasks.results"):
        answer = bounded_result(result, result_serializer, 4096)
    assert answer == {
        "ok": False,
        "reason": TOO_LARGE,
        "detail": f"the check's result is {size} bytes encoded, more than the 4096 bytes a result may have",
        "duration_ms": 3.5,
        "status_code": 200,
        "ip": "192.0.2.7",
    }
    assert "not stored" in caplog.text


def test_the_answer_to_a_result_of_countless_small_fields_is_small() -> None:
    result = {f"f{i}": i for i in range(100_000)}
    answer = bounded_result(result, result_serializer, 4096)
    assert answer["reason"] == TOO_LARGE and len(answer) == 3 + MAX_KEPT_FIELDS
    assert len(dumps(answer, serializer=result_serializer)[2]) < 4096


def test_a_result_that_is_not_a_dict_is_bounded_too() -> None:
    answer = bounded_result(["x" * 100] * 100, result_serializer, 1024)
    assert (answer["ok"], answer["reason"]) == (False, TOO_LARGE)


def test_the_worker_bounds_every_result(stack: Stack, gateway: str) -> None:
    """Through a real worker (the `bulky` plugin check, tests/support/extra_checks.py): a 2 MiB result is
    stored as `result_too_large`, one msgpack refuses as `unencodable_result`, and a small one as it is."""
    status, body, _ = http_get(f"{gateway}/check/bulky?kib=2048")
    assert status == 200, body
    assert (body["result"]["ok"], body["result"]["reason"]) == (False, TOO_LARGE), body
    assert str(DEFAULT_MAX_RESULT_BYTES) in body["result"]["detail"]
    assert (body["result"]["status_code"], body["result"]["duration_ms"]) == (200, 1.25)
    status, body, _ = http_get(f"{gateway}/check/bulky?kib=1&unencodable=true")
    assert status == 200, body
    assert (body["result"]["reason"], body["result"]["detail"][:15]) == (REASON, "result['tags']:"), body
    status, body, _ = http_get(f"{gateway}/check/bulky?kib=1")
    assert (status, body["result"]["ok"], len(body["result"]["blob"])) == (200, True, 1024), body
