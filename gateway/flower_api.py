"""Flower's REST task API, served by the gateway: the requests and JSON answers of Flower 2.x
(`flower/api/tasks.py`), on `gateway.aiocelery` instead of a thread parked per waiting request.

    POST /api/task/apply/<name>          run it and wait: {"task-id", "result"[, "traceback"], "state"}
    POST /api/task/async-apply/<name>    publish it:      {"task-id", "state": "PENDING"}
    POST /api/task/send-task/<name>      the same (Flower's variant that needs no task code)
    GET  /api/task/result/<id>[?timeout=<s>]   {"task-id", "state"[, "result"[, "traceback"]]}

Request body (JSON object; empty means `{}`), as Flower takes it: `args` (array), `kwargs` (object),
`timeout` (apply: seconds to wait), and the `apply_async` options `countdown` (s), `eta` and `expires`
(Flower's "%Y-%m-%d %H:%M:%S.%f" or any ISO 8601; naive is UTC; `expires` may also be seconds), `queue`,
`priority` (0-255), `headers`, `time_limit`, `soft_time_limit`. Anything else is a 400 naming it
(Flower hands unknown keys to `apply_async`; a gateway says what it will not do).

Off unless `CHECKGATE_TASK_API` lists the task names it may run, as comma-separated glob patterns
(`fnmatch`, case-sensitive; `*` also matches dots): `proj.tasks.*,billing.invoice`. A name no pattern
matches is Flower's 404 "Unknown task". With API keys (gateway/auth.py) every call needs a key, spends
one of its rate's tokens, and a key with a `checks` list may run a task whose full name is in it — or,
for checkgate's own check tasks (`checkgate.<type>`), whose check type is (`checks = ["http"]` allows
`checkgate.http`). Results are shown by the same rule, read from the task name the worker stored with
them (`result_extended`); a result stored without one is shown only to keys that may run every task.
An id whose result may not be shown reads PENDING, as an unknown id does (Flower's answer for both).

checkgate's own checks (`checkgate.<type>`) take keyword arguments only, validated by the check's
`Param`s as ``/check/<type>`` validates its query (`TaskApiHandler.check_kwargs`): a 400 naming the field
rather than a TypeError on the worker.

Every option becomes a field of the message workers act on, so each is bounded here (`task_options`),
a 400 naming it otherwise:
- a check: `expires`/`timeout` at most the type's `max_timeout`, and `expires` at least its
  `min_timeout`; no `time_limit`/`soft_time_limit` (a check ends at its deadline; a caller's hard limit
  would only kill a prefork child) (`expires` defaults to its default timeout, as /check sends
  it); `countdown` and `eta` at most `CHECK_MAX_DELAY` (5 s) from now (a delayed task waits in worker
  memory, not the broker, until due; checks are asked for now, schedules are beat's); `queue` only its own.
- other tasks: `expires`, `countdown` and `eta` within `CHECKGATE_TASK_API_MAX_TIMEOUT` from now (an
  `eta` no further in the past either);
  `queue` only one `CHECKGATE_TASK_API_QUEUES` allows, never a pidbox, event or `amq.` queue.
- one answer for every refused queue, and a 503 for an allowed one with nothing bound: no caller learns
  which queues exist.
- `headers`: at most 16; names 1-64 of `A-Za-z0-9_.-`, neither Celery's (protocol or request context)
  nor the broker's (`CC`/`BCC` route copies; `x-death`, `x-delay`... `BROKER_HEADERS`), nor
  `checkgate*` (the beat's `checkgate_schedule` records a scheduled run); values JSON scalars
  (strings <= 256 characters, finite numbers, 64-bit integers).
- task names outside `TASK_NAME_RE`, and `checkgate.<x>` that is no declared check, are 404 "Unknown
  task" whatever the globs match.

Differences from Flower, on purpose: errors are the gateway's JSON (`{"error", "field"}`) with Flower's
status codes (400, 401, 404, 503; 403 for a key's task, 429 over its rate); a FAILURE's `traceback` is
only its last line (the exception) unless `CHECKGATE_DEBUG=1`; `apply` without `timeout` waits at most
`CHECKGATE_TASK_API_MAX_TIMEOUT` (300 s, also the cap of a given timeout) and then answers like Flower
past its timeout (the state, no result); `async-apply` and `send-task` answer PENDING without asking
Redis; task ids carry the gateway's prefix instead of being UUIDs. Bodies are capped at
`MAX_BODY_BYTES` by the HTTP edge (gateway/edge.py), before they are read.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import states
from celery.app.task import Context
from celery.exceptions import QueueNotFound
from kombu.exceptions import EncodeError

from gateway.aiocelery import (
    AsyncTask,
    BackendUnavailable,
    BrokerRefused,
    BrokerUnavailable,
    ClientClosed,
    DeadlinePassed,
    ResultTimeout,
    TaskResult,
    Unroutable,
)
from gateway.aiocelery.messages import PROTOCOL_HEADERS
from gateway.auth import ApiKey
from gateway.http_api import TASK_ID_RE, ApiError, JsonHandler, backend_down, bad_param
from gateway.state import Gateway
from tasks.registry import CheckType, ParamError

# Where these endpoints live, and the largest request body the edge lets through to them.
PATH_PREFIX = "/api/task/"
MAX_BODY_BYTES = 16 * 1024
DEFAULT_MAX_TIMEOUT = 300.0
# The `apply_async` options a body may carry besides args and kwargs (and `timeout`).
OPTIONS = ("countdown", "eta", "expires", "queue", "priority", "headers", "time_limit", "soft_time_limit")
# checkgate's own check tasks are named `checkgate.<type>`; a key's `checks` list names types.
CHECK_TASK_PREFIX = "checkgate."
# The names a task may have here (Celery's dotted Python names, with `:` and `-` some apps use); any other
# name is Flower's 404 "Unknown task" whatever the allow-list's globs match (`*` matches any character).
TASK_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}")
# Caller headers: each becomes an attribute of the worker's `task.request`, so a name of the task protocol,
# of Celery's request context (`get`, `chord`, `reply_to`, ...) or of checkgate's own namespace
# (`checkgate_schedule` records a run as a scheduled check's) is refused, and names and values are bounded.
HEADER_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
RESERVED_HEADERS = frozenset(
    {name.lower() for name in PROTOCOL_HEADERS}
    | {name.lower() for name in dir(Context) if not name.startswith("__")}
    | {"meth", "properties", "reply_to", "correlation_id", "delivery_info", "hostname", "args", "kwargs"}
)
OWN_HEADER_PREFIX = "checkgate"
# Headers the broker itself reads or writes (any case): RabbitMQ's sender-selected distribution (`CC`,
# `BCC`: extra routing keys, so a caller could copy a task to other queues, and a value of another type
# closes the gateway's channel), dead-lettering's and quorum queues' bookkeeping, the delayed-message and
# headers-exchange arguments, streams' filter, federation's trail.
BROKER_HEADERS = frozenset(
    {
        "cc",
        "bcc",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
        "x-delay",
        "x-match",
        "x-received-from",
        "x-deduplication-header",
        "x-stream-filter-value",
    }
)
# The longest `countdown`/`eta` a checkgate check may be given (s): see `task_options`.
CHECK_MAX_DELAY = 5.0
MAX_HEADERS = 16
MAX_HEADER_CHARS = 256
# AMQP tables carry signed 64-bit integers; a larger one cannot be encoded.
MAX_HEADER_INT = 2**63 - 1
# Queues no task is sent to whatever an operator's globs say: workers' control (pidbox) and event queues,
# RabbitMQ's own.
INTERNAL_QUEUE_RE = re.compile(r".*\.pidbox|celeryev\..*|amq\..*|celery@.*", re.IGNORECASE)


@dataclass(frozen=True)
class TaskApiSettings:
    """What the task API may run: glob patterns of task names; the longest wait of an `apply`."""

    patterns: tuple[str, ...]
    max_timeout: float = DEFAULT_MAX_TIMEOUT
    # Glob patterns of the queues a request's `queue` option may name (tasks other than checkgate's checks).
    queues: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TaskApiSettings | None:
        """From `CHECKGATE_TASK_API` (comma-separated patterns; unset or empty: the API is off),
        `CHECKGATE_TASK_API_MAX_TIMEOUT` (seconds) and `CHECKGATE_TASK_API_QUEUES` (comma-separated queue
        patterns a request may name; default none) in `environ` (default: os.environ). Raises ValueError
        naming a bad value."""
        environ = os.environ if environ is None else environ
        patterns = tuple(p.strip() for p in environ.get("CHECKGATE_TASK_API", "").split(",") if p.strip())
        if not patterns:
            return None
        raw = environ.get("CHECKGATE_TASK_API_MAX_TIMEOUT", "")
        try:
            max_timeout = float(raw) if raw else DEFAULT_MAX_TIMEOUT
        except ValueError:
            raise ValueError(f"CHECKGATE_TASK_API_MAX_TIMEOUT: a number of seconds, got {raw!r}") from None
        if not 0 < max_timeout < math.inf:
            raise ValueError("CHECKGATE_TASK_API_MAX_TIMEOUT: a number of seconds > 0")
        queues = tuple(p.strip() for p in environ.get("CHECKGATE_TASK_API_QUEUES", "").split(",") if p.strip())
        return cls(patterns, max_timeout, queues)

    def allows(self, task_name: str) -> bool:
        """Whether `task_name` is a task name at all and some pattern matches it."""
        return TASK_NAME_RE.fullmatch(task_name) is not None and any(
            fnmatch.fnmatchcase(task_name, pattern) for pattern in self.patterns
        )

    def allows_queue(self, queue: str) -> bool:
        """Whether a request may name `queue`: some `queues` pattern matches it and it is no internal queue."""
        return INTERNAL_QUEUE_RE.fullmatch(queue) is None and any(
            fnmatch.fnmatchcase(queue, pattern) for pattern in self.queues
        )


def key_name(task_name: str) -> str:
    """The name a key's `checks` list gives a task: the check type of a checkgate check, else the task name."""
    return task_name.removeprefix(CHECK_TASK_PREFIX) if task_name.startswith(CHECK_TASK_PREFIX) else task_name


def key_may_run(key: ApiKey | None, task_name: str) -> bool:
    """Whether `key` (None: no keys configured) may run `task_name` through the task API."""
    return key is None or key.may_run(task_name) or key.may_run(key_name(task_name))


def safe_result(value: Any) -> Any:
    """The value as Flower answers it: itself when JSON can encode it, else its repr (exceptions too)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def answer(task_id: str, result: TaskResult | None, debug: bool, *, state_first: bool = False) -> dict[str, Any]:
    """Flower's body for a task: its id, (when ready) its result and a FAILURE's traceback, and its state —
    last, as `apply` answers; `state_first` right after the id, as `result` answers."""
    state = result.state if result is not None else states.PENDING
    body: dict[str, Any] = {"task-id": task_id, "state": state} if state_first else {"task-id": task_id}
    if result is not None and result.ready:
        body["result"] = safe_result(result.result)
        if result.state == states.FAILURE:
            traceback = result.traceback
            if traceback and not debug:
                traceback = traceback.rstrip().rsplit("\n", 1)[-1]
            body["traceback"] = traceback
    body["state"] = state
    return body


def _bad(name: str, message: str) -> ApiError:
    return ApiError(400, {"error": f"invalid option {name!r}: {message}", "field": name})


def _number(options: dict[str, Any], name: str, *, positive: bool = False) -> float | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(name, "a number of seconds")
    try:
        value = float(value)  # an integer of 400 digits is JSON too: beyond a float, OverflowError
    except OverflowError:
        raise _bad(name, "a number of seconds") from None
    if not math.isfinite(value):
        raise _bad(name, "a number of seconds")
    if positive and value <= 0:
        raise _bad(name, "a number of seconds > 0")
    return float(value)


def _time(options: dict[str, Any], name: str) -> datetime | None:
    value = options.get(name)
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        at = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(name, "a time as 'YYYY-MM-DD HH:MM:SS.ffffff' or ISO 8601") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _headers(value: Any) -> dict[str, Any] | None:
    """The caller's message headers, each checked (400 naming `headers` or `headers.<name>`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("headers", "an object of strings, numbers, booleans or nulls")
    if len(value) > MAX_HEADERS:
        raise _bad("headers", f"at most {MAX_HEADERS} headers")
    for name, item in value.items():
        field = f"headers.{name[:64]}"
        if not HEADER_NAME_RE.fullmatch(name):
            raise ApiError(
                400,
                {
                    "error": f"invalid header name {name[:64]!r}: 1-64 of A-Z a-z 0-9 _ . -, a letter first",
                    "field": field,
                },
            )
        lower = name.lower()
        if lower in RESERVED_HEADERS or lower in BROKER_HEADERS or lower.startswith(OWN_HEADER_PREFIX):
            message = f"header {name!r} is reserved (Celery's task protocol, the broker's, or checkgate's own)"
            raise ApiError(400, {"error": message, "field": field})
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, int) and -MAX_HEADER_INT - 1 <= item <= MAX_HEADER_INT:
            continue
        if isinstance(item, float) and math.isfinite(item):
            continue
        if isinstance(item, str) and len(item) <= MAX_HEADER_CHARS:
            continue
        message = (
            f"header {name!r}: a string of at most {MAX_HEADER_CHARS} characters, a finite number "
            "(integers within 64 bits), a boolean or null"
        )
        raise ApiError(400, {"error": message, "field": field})
    return value


def _seconds_from_now(at: datetime, now: datetime) -> float:
    return (at - now).total_seconds()


def task_options(
    options: dict[str, Any],
    settings: TaskApiSettings | None = None,
    check: CheckType | None = None,
    own_queue: str | None = None,
) -> dict[str, Any]:
    """Flower's `apply_async` options of a request body as `CeleryClient.send_task` keywords, each bounded
    (400s name the field at fault).

    For a checkgate check (`check`, whose queue is `own_queue`): `expires`, `timeout`, `time_limit` and
    `soft_time_limit` at most its `max_timeout` (s), `expires` defaulting to its `default_timeout` (or the
    `timeout` given) so the worker ends it at a deadline as for /check; `countdown` and `eta` at most
    `CHECK_MAX_DELAY` from now (a delayed task is held in worker memory until due); `queue` only its own. For other
    tasks: `expires`, `countdown` and `eta` within `settings.max_timeout` seconds from now, and `queue`
    only one `settings.queues` allows. `headers`: see `_headers`."""
    settings = settings if settings is not None else TaskApiSettings(())
    unknown = sorted(set(options) - set(OPTIONS) - {"timeout"})
    if unknown:
        allowed = ", ".join(("args", "kwargs", "timeout", *OPTIONS))
        raise ApiError(400, {"error": f"unknown option {unknown[0]!r} (allowed: {allowed})", "field": unknown[0]})
    now = datetime.now(UTC)
    cap = check.max_timeout if check is not None else settings.max_timeout
    whose = f"the max_timeout of check {check.name!r}" if check is not None else "CHECKGATE_TASK_API_MAX_TIMEOUT"
    out: dict[str, Any] = {
        "countdown": _number(options, "countdown"),
        "eta": _time(options, "eta"),
        "time_limit": _number(options, "time_limit", positive=True),
        "soft_time_limit": _number(options, "soft_time_limit", positive=True),
    }
    expires = options.get("expires")
    out["expires"] = _time(options, "expires") if isinstance(expires, str) else _number(options, "expires")
    timeout = _number(options, "timeout")
    if check is not None:
        for name in ("time_limit", "soft_time_limit"):
            if out[name] is not None:
                # A check ends at its deadline (tasks/deadline.py: the worker's own soft and hard limits
                # follow `expires`); a caller's shorter hard limit would only kill a prefork child.
                raise _bad(name, f"checks end at their deadline: give expires or timeout (check {check.name!r})")
        for name in ("timeout",):
            value = timeout if name == "timeout" else out[name]
            if value is not None and value > cap:
                raise _bad(name, f"at most {cap:g} s ({whose})")
    # How far ahead each may reach, in seconds from now.
    ahead = {
        "countdown": out["countdown"],
        "eta": _seconds_from_now(out["eta"], now) if out["eta"] is not None else None,
        "expires": _seconds_from_now(out["expires"], now) if isinstance(out["expires"], datetime) else out["expires"],
    }
    for name, seconds in ahead.items():
        if seconds is None:
            continue
        if name == "expires" and check is not None and seconds < check.min_timeout:
            # As /check's `timeout`: a deadline no check can meet is the caller's error, not a 504 or a 503.
            raise _bad(name, f"at least {check.min_timeout:g} s from now for check {check.name!r}")
        if name == "expires" and seconds <= 0:
            raise _bad(name, "in the future (seconds > 0, or a later time)")
        if name == "countdown" and seconds < 0:
            raise _bad(name, "a number of seconds >= 0")
        if name == "eta" and seconds < -cap:
            # A time long past is no delay; one at the edge of the calendar overflows the worker's
            # conversion to UTC (the task then fails with OverflowError).
            raise _bad(name, f"at most {cap:g} s in the past ({whose})")
        if check is not None and name != "expires" and seconds > min(CHECK_MAX_DELAY, cap):
            # A delayed task leaves the broker for the worker's memory until it is due (prefetch does not
            # hold it back): checks are asked for now, a short delay is all Flower's clients need.
            message = f"at most {min(CHECK_MAX_DELAY, cap):g} s from now for checkgate's checks (CHECK_MAX_DELAY)"
            raise _bad(name, message)
        if seconds > cap:
            raise _bad(name, f"at most {cap:g} s from now ({whose})")
    if check is not None and out["expires"] is None:
        out["expires"] = max(check.min_timeout, min(timeout, cap)) if timeout else check.default_timeout
    queue = options.get("queue")
    if queue is not None:
        if not (isinstance(queue, str) and 0 < len(queue) <= 255):
            raise _bad("queue", "a queue name (1-255 characters)")
        # One answer for every queue refused, so that it tells nothing about which queues exist.
        if check is not None and queue != own_queue:
            raise _bad("queue", f"check {check.name!r} runs on its own queue only")
        if check is None and not settings.allows_queue(queue):
            raise _bad("queue", "not a queue this API sends tasks to (CHECKGATE_TASK_API_QUEUES)")
    out["queue"] = queue
    priority = options.get("priority")
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255
    ):
        raise _bad("priority", "an integer 0-255")
    out["priority"] = priority
    out["headers"] = _headers(options.get("headers"))
    return {k: v for k, v in out.items() if v is not None}


class TaskApiHandler(JsonHandler):
    """What the task endpoints share: the allow-list and keys, the body, the errors of a publish."""

    settings_: TaskApiSettings
    # The methods a 405 names.
    allow = "POST"

    def initialize(self, gateway: Gateway, settings: TaskApiSettings) -> None:  # type: ignore[override]
        super().initialize(gateway)
        self.settings_ = settings

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            self.set_header("Allow", self.allow)
            self.finish({"error": f"method {self.request.method} not allowed here (allowed: {self.allow})"})
            return
        super().write_error(status_code, **kwargs)

    def allowed(self, task_name: str) -> ApiKey | None:
        """The caller's key (None without keys) once it may run `task_name`: 401/429 from the key,
        404 for a name off the allow-list (Flower's "Unknown task"), 403 for a key's other tasks."""
        key = self.authorize(None)
        unknown = not self.settings_.allows(task_name) or (
            task_name.startswith(CHECK_TASK_PREFIX) and self.check_of(task_name) is None
        )
        if unknown:
            shown = task_name if TASK_NAME_RE.fullmatch(task_name) else repr(task_name[:200])[1:-1]
            raise ApiError(404, {"error": f"Unknown task '{shown}'", "field": "taskname"})
        if not key_may_run(key, task_name):
            raise ApiError(403, {"error": f"this API key may not run task {task_name!r}", "field": "taskname"})
        return key

    def body_options(self) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        """(args, kwargs, the rest of the options) of the JSON request body, as Flower reads it."""
        raw = self.request.body
        try:
            options = json.loads(raw) if raw else {}
        except ValueError as exc:  # UnicodeDecodeError included
            raise ApiError(400, {"error": f"request body is not JSON: {exc}", "field": "body"}) from None
        except RecursionError:
            raise ApiError(400, {"error": "request body nests too deep", "field": "body"}) from None
        if not isinstance(options, dict):
            raise ApiError(400, {"error": "invalid options: the body must be a JSON object", "field": "body"})
        args = options.pop("args", None)
        args = [] if args is None else args
        if not isinstance(args, list):
            raise ApiError(400, {"error": "args must be an array", "field": "args"})
        kwargs = options.pop("kwargs", None)
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(kwargs, dict):
            raise ApiError(400, {"error": "kwargs must be an object", "field": "kwargs"})
        return args, kwargs, options

    def check_of(self, task_name: str) -> CheckType | None:
        """The declared check `task_name` runs (`checkgate.<type>`), or None."""
        check = self.gateway.checks.get(task_name.removeprefix(CHECK_TASK_PREFIX))
        return check if check is not None and check.task_name == task_name else None

    def options_of(self, task_name: str, options: dict[str, Any]) -> dict[str, Any]:
        """`task_options` with this API's bounds and, for a check, the check's own."""
        check = self.check_of(task_name)
        own_queue = self.gateway.queues.get(check.name, check.queue) if check is not None else None
        return task_options(options, self.settings_, check, own_queue)

    def check_kwargs(self, task_name: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments to send: for a declared check (`checkgate.<type>`), validated by its `Param`s
        exactly as ``/check/<type>`` validates its query (400 naming the field, the target policy included;
        converted, defaults filled in), and positional `args` refused (checks take keywords only); any other
        task's as given."""
        check = self.check_of(task_name)
        if check is None:
            return kwargs
        if args:
            message = f"task {task_name!r} is a check: it takes keyword arguments only (kwargs), not args"
            raise ApiError(400, {"error": message, "field": "args"})
        given = {}
        for name, value in kwargs.items():
            if isinstance(value, bool):
                given[name] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                given[name] = str(value)
            else:  # null, an array or an object: no query value means that
                message = f"invalid parameter {name!r}: must be a string, a number or a boolean"
                raise ApiError(400, {"error": message, "field": name})
        try:
            return check.validate(given)
        except ParamError as exc:
            raise bad_param(exc) from None

    def admit(self) -> None:
        """Shed load as /check does: 503 + Retry-After past the gateway's in-flight cap."""
        if self.gateway.inflight >= self.gateway.settings.max_inflight:
            raise self.unavailable("too many requests in flight")

    async def publish(
        self, task_name: str, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> AsyncTask:
        """`send_task` with the body's options. Each failure is its status: 400 (a bad option,
        an unknown queue), 503 (broker or backend down, refused, no queue bound), 504 (its own expiry
        passed before the broker confirmed it)."""
        sending = {k: v for k, v in options.items() if k != "timeout"}
        try:
            task = await self.gateway.client.send_task(task_name, args, kwargs, **sending)
        except (TypeError, ValueError) as exc:
            field = str(exc).partition(":")[0] if str(exc).partition(":")[0] in OPTIONS else "body"
            raise ApiError(400, {"error": f"invalid options: {exc}", "field": field}) from None
        except EncodeError as exc:
            raise ApiError(400, {"error": f"the arguments cannot be encoded: {exc}", "field": "args"}) from None
        except (QueueNotFound, Unroutable):
            # An allowed queue (or the task's route) with none bound: the operator's to fix, and the same
            # answer whatever the queue, so that a caller learns nothing about which queues exist.
            raise self.unavailable(f"no queue bound for task {task_name!r}") from None
        except DeadlinePassed as exc:
            raise ApiError(504, {"error": f"the task's expiry passed before the broker confirmed it: {exc}"}) from None
        except BrokerRefused:
            raise self.unavailable("broker refused the task (queue full?)") from None
        except (BrokerUnavailable, ClientClosed):
            raise self.unavailable("broker unavailable") from None
        except BackendUnavailable as exc:
            raise self.unavailable(backend_down(exc)) from None
        return task


class TaskApplyHandler(TaskApiHandler):
    """POST /api/task/apply/<name>: publish, wait for the result (up to `timeout`), answer it."""

    async def post(self, task_name: str) -> None:
        self.allowed(task_name)
        args, kwargs, options = self.body_options()
        kwargs = self.check_kwargs(task_name, args, kwargs)
        sending = self.options_of(task_name, options)
        timeout = _number(options, "timeout")
        wait = self.settings_.max_timeout if timeout is None else min(max(timeout, 0.0), self.settings_.max_timeout)
        self.admit()
        client = self.gateway.client
        if not client.results.available:
            raise self.unavailable("result backend unavailable")
        gateway = self.gateway
        gateway.inflight += 1
        try:
            task = await self.publish(task_name, args, kwargs, sending)
            try:
                result: TaskResult | None = await task.wait(wait)
            except ResultTimeout:
                # As Flower past its timeout: the state now (PENDING, or STARTED with track_started), no result.
                try:
                    result = await client.fetch(task.id)
                except BackendUnavailable:
                    result = None
            except ClientClosed:
                raise self.unavailable("the gateway is shutting down") from None
        finally:
            gateway.inflight -= 1
        self.send(200, answer(task.id, result, gateway.settings.debug))


class TaskAsyncApplyHandler(TaskApiHandler):
    """POST /api/task/async-apply/<name> (and send-task): publish, answer its id at once."""

    async def post(self, task_name: str) -> None:
        self.allowed(task_name)
        args, kwargs, options = self.body_options()
        kwargs = self.check_kwargs(task_name, args, kwargs)
        sending = self.options_of(task_name, options)
        self.admit()
        self.gateway.inflight += 1
        try:
            task = await self.publish(task_name, args, kwargs, sending)
        finally:
            self.gateway.inflight -= 1
        self.send(200, {"task-id": task.id, "state": states.PENDING})


class TaskSendHandler(TaskAsyncApplyHandler):
    """POST /api/task/send-task/<name>: Flower's apply by name; here the same as async-apply."""


class TaskResultHandler(TaskApiHandler):
    """GET /api/task/result/<id>[?timeout=<s>]: the state, and the result once ready (waiting up to
    `timeout` seconds for it). Results the caller may not see read PENDING, like unknown ids."""

    allow = "GET, HEAD"

    async def get(self, task_id: str) -> None:
        key = self.authorize(None)
        if not TASK_ID_RE.fullmatch(task_id):
            message = "invalid parameter 'id': expected 1 to 128 of A-Z a-z 0-9 . _ : -"
            raise ApiError(400, {"error": message, "field": "id"})
        values = self.query_values()
        unknown = sorted(set(values) - {"timeout"})
        if unknown:
            raise ApiError(400, {"error": f"unknown parameter {unknown[0]!r}", "field": unknown[0]})
        timeout = None
        if "timeout" in values:
            try:
                timeout = float(values["timeout"])
            except ValueError:
                timeout = math.nan
            if not 0 <= timeout < math.inf:
                raise ApiError(400, {"error": "Invalid argument 'timeout': a number of seconds", "field": "timeout"})
        client = self.gateway.client
        result: TaskResult | None
        try:
            if timeout:
                self.admit()
                self.gateway.inflight += 1
                try:
                    result = await client.task(task_id).wait(min(timeout, self.settings_.max_timeout))
                except ResultTimeout:
                    result = None
                finally:
                    self.gateway.inflight -= 1
            if not timeout or result is None:
                result = await client.fetch(task_id)
        except BackendUnavailable as exc:
            raise self.unavailable(backend_down(exc)) from None
        except ClientClosed:
            raise self.unavailable("result backend unavailable") from None
        if result.state != states.PENDING and not self.may_see(key, result):
            result = None
        self.send(200, answer(task_id, result, self.gateway.settings.debug, state_first=True))

    def may_see(self, key: ApiKey | None, result: TaskResult) -> bool:
        name = result.name
        if not name:
            return key is None or key.checks is None
        return self.settings_.allows(name) and key_may_run(key, name)


def task_api_routes(gateway: Gateway, settings: TaskApiSettings) -> list[tuple[str, type, dict[str, Any]]]:
    """The task endpoints for `tornado.web.Application` (add before its catch-all)."""
    args = {"gateway": gateway, "settings": settings}
    return [
        (PATH_PREFIX + r"apply/([^/]{1,255})", TaskApplyHandler, args),
        (PATH_PREFIX + r"async-apply/([^/]{1,255})", TaskAsyncApplyHandler, args),
        (PATH_PREFIX + r"send-task/([^/]{1,255})", TaskSendHandler, args),
        (PATH_PREFIX + r"result/([^/]+)", TaskResultHandler, args),
    ]
