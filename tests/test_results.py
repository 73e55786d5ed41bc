"""tasks.results: a check's result the result serializer refuses becomes a documented not-ok answer."""

from __future__ import annotations

import logging

import msgpack
import pytest
from kombu.serialization import dumps

from celeryconfig import result_serializer
from tasks.results import REASON, encode_result


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
