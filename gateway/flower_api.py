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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import states
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
from gateway.auth import ApiKey
from gateway.http_api import TASK_ID_RE, ApiError, JsonHandler, backend_down, bad_param
from gateway.state import Gateway
from tasks.registry import ParamError

# Where these endpoints live, and the largest request body the edge lets through to them.
PATH_PREFIX = "/api/task/"
MAX_BODY_BYTES = 16 * 1024
DEFAULT_MAX_TIMEOUT = 300.0
# The `apply_async` options a body may carry besides args and kwargs (and `timeout`).
OPTIONS = ("countdown", "eta", "expires", "queue", "priority", "headers", "time_limit", "soft_time_limit")
# checkgate's own check tasks are named `checkgate.<type>`; a key's `checks` list names types.
CHECK_TASK_PREFIX = "checkgate."


@dataclass(frozen=True)
class TaskApiSettings:
    """What the task API may run: glob patterns of task names; the longest wait of an `apply`."""

    patterns: tuple[str, ...]
    max_timeout: float = DEFAULT_MAX_TIMEOUT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TaskApiSettings | None:
        """From `CHECKGATE_TASK_API` (comma-separated patterns; unset or empty: the API is off) and
        `CHECKGATE_TASK_API_MAX_TIMEOUT` (seconds) in `environ` (default: os.environ). Raises ValueError
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
        return cls(patterns, max_timeout)

    def allows(self, task_name: str) -> bool:
        """Whether some pattern matches `task_name`."""
        return any(fnmatch.fnmatchcase(task_name, pattern) for pattern in self.patterns)


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


def _number(options: dict[str, Any], name: str, *, positive: bool = False) -> float | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, {"error": f"invalid option {name!r}: a number of seconds", "field": name})
    if positive and value <= 0:
        raise ApiError(400, {"error": f"invalid option {name!r}: a number of seconds > 0", "field": name})
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
        message = f"invalid option {name!r}: a time as 'YYYY-MM-DD HH:MM:SS.ffffff' or ISO 8601"
        raise ApiError(400, {"error": message, "field": name}) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def task_options(options: dict[str, Any]) -> dict[str, Any]:
    """Flower's `apply_async` options of a request body as `CeleryClient.send_task` keywords (400s name
    the field at fault)."""
    unknown = sorted(set(options) - set(OPTIONS) - {"timeout"})
    if unknown:
        allowed = ", ".join(("args", "kwargs", "timeout", *OPTIONS))
        raise ApiError(400, {"error": f"unknown option {unknown[0]!r} (allowed: {allowed})", "field": unknown[0]})
    out: dict[str, Any] = {
        "countdown": _number(options, "countdown"),
        "eta": _time(options, "eta"),
        "time_limit": _number(options, "time_limit", positive=True),
        "soft_time_limit": _number(options, "soft_time_limit", positive=True),
    }
    expires = options.get("expires")
    out["expires"] = _time(options, "expires") if isinstance(expires, str) else _number(options, "expires")
    queue = options.get("queue")
    if queue is not None and not (isinstance(queue, str) and 0 < len(queue) <= 255):
        raise ApiError(400, {"error": "invalid option 'queue': a queue name (1-255 characters)", "field": "queue"})
    out["queue"] = queue
    priority = options.get("priority")
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255
    ):
        raise ApiError(400, {"error": "invalid option 'priority': an integer 0-255", "field": "priority"})
    out["priority"] = priority
    headers = options.get("headers")
    if headers is not None and not (
        isinstance(headers, dict) and all(v is None or isinstance(v, str | int | float) for v in headers.values())
    ):
        message = "invalid option 'headers': an object of strings, numbers, booleans or nulls"
        raise ApiError(400, {"error": message, "field": "headers"})
    out["headers"] = headers
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
        if not self.settings_.allows(task_name):
            raise ApiError(404, {"error": f"Unknown task '{task_name}'", "field": "taskname"})
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

    def check_kwargs(self, task_name: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments to send: for a declared check (`checkgate.<type>`), validated by its `Param`s
        exactly as ``/check/<type>`` validates its query (400 naming the field, the target policy included;
        converted, defaults filled in), and positional `args` refused (checks take keywords only); any other
        task's as given."""
        check = self.gateway.checks.get(task_name.removeprefix(CHECK_TASK_PREFIX))
        if check is None or check.task_name != task_name:
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
        except QueueNotFound:
            raise ApiError(400, {"error": f"unknown queue {sending.get('queue')!r}", "field": "queue"}) from None
        except Unroutable:
            if "queue" in sending:
                raise ApiError(
                    400, {"error": f"no queue {sending['queue']!r} on the broker", "field": "queue"}
                ) from None
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
        sending = task_options(options)
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
        sending = task_options(options)
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
