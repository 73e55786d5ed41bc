"""What a check's result must be to be stored: something the result serializer encodes, of a bounded size.

A check returns a dict that Celery stores with the configured ``result_serializer`` (msgpack, through
kombu). msgpack refuses integers outside -2^63..2^64-1, strings holding lone surrogates, types it does not
know (a set, an object) and structures nested too deep (its recursion limit: a list 5,000 deep); Celery
then stores ``EncodeError`` as the task's FAILURE, which the gateway answers 502 "the task raised",
although the check ran. `encode_result` is the last line behind every check, built-in or plugin: a result
the serializer refuses becomes a documented ``ok: false`` answer, ``reason: unencodable_result``, whose
detail names the first field it refused and why (the worker logs the same at WARNING). The checks
themselves keep what a target sends within those limits (issue #11, F6); this only catches what they
missed. The task wrapper (`tasks.deadline.task_body`) calls `bounded_result` on every check's result.

The size bound (issue #11, F5): a result is stored in Redis, published through the result stream to every
gateway and may be kept in a gateway's shared-results cache, so a check — a plugin, or a built-in one
echoing what a target sent — must not answer megabytes. A result whose encoding is larger than
``CHECKGATE_MAX_RESULT_BYTES`` (default `DEFAULT_MAX_RESULT_BYTES`, 1 MiB; read by celeryconfig as
``checkgate_max_result_bytes``) becomes ``ok: false``, ``reason: result_too_large``, a detail giving the
size and the bound, its ``duration_ms`` and its small top-level fields (numbers, booleans, None, strings
of at most `MAX_KEPT_CHARS` characters; `MAX_KEPT_FIELDS` at most), so a status code or an address still
shows. The built-in checks keep far below it (tcp ``reply`` 256 characters, http echoes no body, dns
``answers`` 64 Ki characters).

Cost: the result is encoded twice (here to measure it, then by Celery to store it): `bounded_result` of
an http check's usual result (17 fields) takes 2.0-2.5 us on the 2-core dev VM (5 rounds of 100,000,
``timeit``), where a worker spends 1,500-2,300 us of CPU per task (tasks/deadline.py).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.exceptions import EncodeError
from kombu.serialization import dumps

log = logging.getLogger(__name__)

REASON = "unencodable_result"
TOO_LARGE = "result_too_large"
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
# The small fields of a too-large result that are kept in its answer.
MAX_KEPT_FIELDS = 32
MAX_KEPT_CHARS = 200
# How deep `_refused_field` looks for the refused value: far enough for any check's result shape.
_MAX_DEPTH = 16


def encode_result(result: Any, serializer: str) -> tuple[Any, bytes]:
    """(`result`, its encoding by `serializer`), or (the ``unencodable_result`` answer, its encoding)
    when the serializer refuses `result`.

    `serializer` is a kombu serializer name (the app's ``result_serializer``). Raises only what kombu
    raises for an unknown serializer (``SerializerNotInstalled``)."""
    try:
        return result, dumps(result, serializer=serializer)[2]
    except EncodeError as exc:
        answer = unencodable_answer(result, exc, serializer)
        return answer, dumps(answer, serializer=serializer)[2]


def bounded_result(result: Any, serializer: str, max_bytes: int) -> Any:
    """`result` when `serializer` encodes it in at most `max_bytes` bytes; else the ``unencodable_result``
    answer (`encode_result`) or the ``result_too_large`` one (`too_large_answer`).

    Raises only what kombu raises for an unknown serializer."""
    answer, payload = encode_result(result, serializer)
    if len(payload) <= max_bytes:
        return answer
    return too_large_answer(answer, len(payload), max_bytes)


def too_large_answer(result: Any, size: int, max_bytes: int) -> dict[str, Any]:
    """The answer stored instead of `result`, whose encoding is `size` bytes, over `max_bytes`: ``ok: false``,
    ``reason: result_too_large``, ``detail`` naming both sizes, and the result's small top-level fields."""
    detail = f"the check's result is {size} bytes encoded, more than the {max_bytes} bytes a result may have"
    log.warning("a check's result is not stored: %s", detail)
    answer: dict[str, Any] = {"ok": False, "reason": TOO_LARGE, "detail": detail}
    if isinstance(result, dict):
        kept = 0
        for key, value in result.items():
            if kept >= MAX_KEPT_FIELDS:
                break
            if not isinstance(key, str) or key in answer or len(key) > MAX_KEPT_CHARS:
                continue
            small = value is None or isinstance(value, bool | int | float)
            if small or (isinstance(value, str) and len(value) <= MAX_KEPT_CHARS):
                answer[key] = value
                kept += 1
    return answer


def unencodable_answer(result: Any, exc: BaseException, serializer: str) -> dict[str, Any]:
    """The answer stored instead of `result`, which `serializer` refused with `exc`: ``ok: false``,
    ``reason: unencodable_result``, ``detail`` (the refused field and the serializer's complaint) and the
    result's ``duration_ms`` when it had a number there."""
    field, cause = _refused_field(result, serializer, "result", 0) or ("result", exc)
    detail = f"{field}: {type(cause).__name__}: {cause}"[:200]
    log.warning("a check's result cannot be stored with %s (%s)", serializer, detail)
    answer: dict[str, Any] = {"ok": False, "reason": REASON, "detail": detail}
    duration = result.get("duration_ms") if isinstance(result, dict) else None
    if isinstance(duration, int | float) and not isinstance(duration, bool) and abs(duration) < 2**53:
        answer["duration_ms"] = duration
    return answer


def _refused_field(value: Any, serializer: str, path: str, depth: int) -> tuple[str, BaseException] | None:
    """The path of the innermost value `serializer` refuses within `value` (a key or an item), with the
    serializer's complaint; None when it encodes `value`."""
    try:
        dumps(value, serializer=serializer)
        return None
    except EncodeError as exc:
        # kombu raises EncodeError(the serializer's exception), without chaining it as the cause.
        cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
        refused = path, cause
    if depth >= _MAX_DEPTH:
        return refused
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}[{key!r:.40}]"
            found = _refused_field(key, serializer, f"{where} (the key)", depth + 1)
            found = found or _refused_field(item, serializer, where, depth + 1)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if found := _refused_field(item, serializer, f"{path}[{index}]", depth + 1):
                return found
    return refused
