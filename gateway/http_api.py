"""The HTTP contract of the gateway (the README's "HTTP contract" section), one handler per resource.

    GET /check/<type>?<params>[&mode=sync|async|fire][&timeout=<s>]   run a check
    GET /add?x=&y=                                                     the tornado-celery example
    GET /result/<id>                                                   state and result of a check
    GET /checks                                                        declared check types
    GET /health                                                        broker, backend, workers
    GET /metrics                                                       Prometheus text
    GET /schedule[/<name>]                                             latest run of scheduled checks

Status codes: 200 done, 202 accepted/pending, 400 bad parameter (the body names it), 401/403/429 API
key missing / not allowed (or a target refused by the address policy) / over its rate, 404 unknown
type/id/path (and ids of types the caller's key may not run), 405 other methods, 410 the task expired
unrun (final), 502 the task raised, 503 + Retry-After when overloaded or when the broker/backend is
down, 504 deadline passed (the body carries the id to poll). Requests that are malformed, too large or
too slow never reach these handlers: gateway/edge.py answers them (400, 405, 408, 413, 414, 431).
Every response is JSON (but /metrics); no error body carries a traceback unless debug is on. HEAD is
answered like GET, without the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import tornado.web
from celery import states

from gateway.aiocelery import (
    BackendUnavailable,
    BrokerRefused,
    BrokerUnavailable,
    DeadlinePassed,
    OutOfDescriptors,
    Unroutable,
)
from gateway.aiocelery.results import EXPIRED, EXPIRY_GRACE_S, settled
from gateway.auth import ApiKey, AuthError
from gateway.locations import NoConsumer, Placement, accepted_answer, verdict_answer
from gateway.metrics import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from gateway.metrics import ScheduledRun
from gateway.openapi import openapi_document
from gateway.prometheus import render_check, render_locations
from gateway.ratelog import RateLimitedLog
from gateway.sharing import cache_key
from gateway.state import Gateway
from tasks.checks._guard import REFUSED as TARGET_REFUSED
from tasks.checks._guard import PolicyConfigError
from tasks.locations import location_of
from tasks.registry import CheckType, ParamError

log = logging.getLogger("checkgate.gateway")
# A setting that fails at each request would otherwise log a traceback per request.
SETTINGS_LOG = RateLimitedLog(log)

MODES = ("sync", "async", "fire")
# The result reason of a check whose target the SSRF guard refused (tasks/checks/_guard.py).
REFUSED_TARGET = "target_refused"
# Failures that mean "did not finish by its deadline" (tasks/deadline.py; Celery's time limits are
# billiard's classes): answered 504, like the gateway's own deadline and an expired (REVOKED) task.
DEADLINE_ERRORS = frozenset(
    {
        ("tasks.deadline", "DeadlineExceeded"),
        ("billiard.exceptions", "TimeLimitExceeded"),
        ("billiard.exceptions", "SoftTimeLimitExceeded"),
    }
)
FORMATS = ("json", "prometheus")
TASK_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNKNOWN_ID = "unknown or expired id"


class ApiError(tornado.web.HTTPError):
    """An error answer: HTTP status plus a JSON body (and maybe headers); Tornado sends it."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.body = body
        self.headers = headers or {}


def to_json(body: dict[str, Any]) -> str:
    """Compact JSON; values JSON lacks (dates, bytes) become strings rather than errors."""
    return json.dumps(body, default=str, separators=(",", ":"))


def backend_down(exc: BackendUnavailable) -> str:
    """What a 503 says when results cannot be reached: the backend, or this process out of descriptors."""
    if isinstance(exc, OutOfDescriptors):
        return "gateway overloaded: out of file descriptors"
    return "result backend unavailable"


def bad_param(exc: ParamError) -> ApiError:
    """400 naming the field that is wrong and why."""
    return ApiError(400, {"error": f"invalid parameter {exc.field!r}: {exc.message}", "field": exc.field})


class JsonHandler(tornado.web.RequestHandler):
    """Base handler: JSON answers, JSON errors, strict query parsing."""

    gateway: Gateway

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        if self.gateway.draining and not self._headers_written:
            # This process is going away (even if it was not when the request came): the client's next
            # request opens a connection, which reaches another process.
            self.set_header("Connection", "close")
        return super().finish(chunk)

    def compute_etag(self) -> str | None:
        # Answers are no-store and never revalidated: hashing every body for an ETag is wasted work
        # on the hot path.
        return None

    async def head(self, *args: str) -> None:
        """HEAD: the GET answer's status and headers (Tornado leaves the body out)."""
        get = getattr(self, "get", None)
        if get is None:
            raise tornado.web.HTTPError(405)
        answer = get(*args)
        if answer is not None:
            await answer

    def send(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        """Finish the request with `body` as JSON."""
        self.set_status(status)
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.finish(to_json(body))

    def unavailable(self, reason: str, **extra: Any) -> ApiError:
        """503 with Retry-After: the caller should come back, nothing was accepted (`extra`: more fields)."""
        retry = str(self.gateway.settings.retry_after)
        return ApiError(503, {"error": reason, "retry_after": int(retry), **extra}, {"Retry-After": retry})

    def authorize(self, check_name: str | None) -> ApiKey | None:
        """When API keys are configured: the caller's key must exist, allow `check_name`, have tokens.
        Returns the key (None when no keys are configured)."""
        keys = self.gateway.keys
        if keys is None:
            return None
        header = self.request.headers.get("Authorization", "")
        presented = header[7:].strip() if header[:7].lower() == "bearer " else self.request.headers.get("X-API-Key")
        try:
            return keys.authorize(presented, check_name)
        except AuthError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="checkgate"'
            raise ApiError(exc.status, {"error": exc.reason}, headers) from None

    def query_values(self) -> dict[str, str]:
        """Query parameters as text, one value each; duplicates and invalid UTF-8 are 400s."""
        values: dict[str, str] = {}
        for raw_name, raw_values in self.request.query_arguments.items():
            try:
                # Tornado decodes names as latin-1; undo that to check they are UTF-8.
                name = raw_name.encode("latin-1").decode("utf-8")
            except UnicodeError:
                raise ApiError(400, {"error": "parameter name is not valid UTF-8", "field": raw_name}) from None
            if len(raw_values) > 1:
                raise ApiError(400, {"error": f"parameter {name!r} given more than once", "field": name})
            try:
                values[name] = raw_values[0].decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, {"error": f"parameter {name!r} is not valid UTF-8", "field": name}) from None
        return values

    def on_finish(self) -> None:
        self.gateway.metrics.count_response(self.metric_label(), self.get_status())

    def metric_label(self) -> str:
        """The label this request is counted under in /metrics."""
        return type(self).__name__.removesuffix("Handler").lower()

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if isinstance(value, PolicyConfigError):  # the operator's setting, not a bug: one line, no traceback
            SETTINGS_LOG.log(logging.ERROR, "setting", "a setting cannot be used: %s", value)
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        body: dict[str, Any] = {"error": self._reason}
        if status_code == 405:
            self.set_header("Allow", "GET, HEAD")
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], PolicyConfigError):
            # Checked at start (gateway.config.check_read_later); changed under a running process only by
            # code. The caller learns which setting, not its value; the log has the whole message.
            variable = exc_info[1].variable
            error = self.unavailable(f"the gateway's setting {variable} cannot be used (see its log)", setting=variable)
            self.set_status(error.status_code)
            body = error.body
            for name, value in error.headers.items():
                self.set_header(name, value)
        elif exc_info and isinstance(exc_info[1], ApiError):
            body = exc_info[1].body
            for name, value in exc_info[1].headers.items():
                self.set_header(name, value)
        elif self.gateway.settings.debug and exc_info:
            body["exception"] = repr(exc_info[1])
        self.finish(to_json(body))


class CheckHandler(JsonHandler):
    """GET /check/<type>: validate, publish to the type's queue (or a location's), answer per mode."""

    # Seconds this request's own task was out of the gateway's hands (None: no task of its own).
    away: float | None = None

    def metric_label(self) -> str:
        return getattr(self, "check_name", "unknown")

    async def get(self, type_name: str) -> None:
        check = self.gateway.checks.get(type_name)
        if check is not None:  # counted under its type from here on, a key's refusal (401/403/429) included
            self.check_name = check.name
        self.authorize(type_name)
        if check is None:
            allowed = sorted(self.gateway.checks)
            raise ApiError(404, {"error": f"unknown check type {type_name!r}", "field": "type", "allowed": allowed})
        given = self.query_values()
        gateway = self.gateway
        try:
            mode, timeout, self.output = self._gateway_params(check, given)
            asked = gateway.locations.parse(given, mode)
            kwargs = check.validate(given)
        except ParamError as exc:
            raise bad_param(exc) from None
        placement = None
        if asked is not None:
            try:
                placement = gateway.locations.place(check.name, asked, gateway.queue_stats)
            except NoConsumer as exc:
                raise self.unavailable(str(exc), locations=list(exc.locations)) from None
        queues = [gateway.locations.queue(check.name, w) for w in placement.locations] if placement else [None]
        for queue in queues:
            refusal = gateway.refusal(check, queue)
            if refusal is not None:
                raise self.unavailable(refusal)
        gateway.inflight += 1
        gateway.inflight_by_type[check.name] += 1
        try:
            if placement is not None and placement.fanout:
                await self._fan_out(check, kwargs, mode, timeout, placement)
            else:
                await self._run(check, kwargs, mode, timeout, placement.locations[0] if placement else None)
        finally:
            gateway.inflight -= 1
            gateway.inflight_by_type[check.name] -= 1

    @staticmethod
    def _gateway_params(check: CheckType, given: dict[str, str]) -> tuple[str, float, str]:
        """Pop and check the parameters the gateway itself consumes: (mode, timeout, format)."""
        mode = given.pop("mode", "sync")
        if mode not in MODES:
            raise ParamError("mode", f"must be one of {', '.join(MODES)}")
        output = given.pop("format", "json")
        if output not in FORMATS:
            raise ParamError("format", f"must be one of {', '.join(FORMATS)}")
        if output == "prometheus" and mode != "sync":
            raise ParamError("format", "prometheus output needs mode=sync")
        raw_timeout = given.pop("timeout", None)
        if raw_timeout is None:
            return mode, check.default_timeout, output
        try:
            timeout = float(raw_timeout)
        except ValueError:
            raise ParamError("timeout", f"must be a number of seconds, got {raw_timeout[:40]!r}") from None
        if not check.min_timeout <= timeout <= check.max_timeout:  # also rejects nan and inf
            bounds = f">= {check.min_timeout:g} and <= {check.max_timeout:g}"
            raise ParamError("timeout", f"must be {bounds} seconds for check {check.name!r}")
        return mode, timeout, output

    async def _run(
        self, check: CheckType, kwargs: dict[str, Any], mode: str, timeout: float, location: str | None
    ) -> None:
        status, body, headers, self.away = await self._answer(check, kwargs, mode, timeout, location)
        self.send(status, body, headers)
        if self.away is not None:
            # The gateway's own time: the whole request (from its parsed head) but the stretch the
            # task spent with the broker, the worker and Redis.
            self.gateway.metrics.observe_overhead(check.name, self.request.request_time() - self.away)

    async def _fan_out(
        self, check: CheckType, kwargs: dict[str, Any], mode: str, timeout: float, placement: Placement
    ) -> None:
        """Run the check in every location of `placement` at once, each with the same deadline, and answer
        one body (gateway/locations.py); 503 only when no location's task could be published."""
        started = time.perf_counter()

        async def one(location: str) -> tuple[int, dict[str, Any], float | None]:
            try:
                status, body, _, away = await self._answer(check, kwargs, mode, timeout, location)
            except ApiError as exc:  # its 503: nothing was published there
                return exc.status_code, exc.body, None
            return status, body, away

        outcomes = await asyncio.gather(*(one(where) for where in placement.locations))
        answers = {
            where: (status, body) for where, (status, body, _) in zip(placement.locations, outcomes, strict=True)
        }
        if all(status == 503 for status, _ in answers.values()):
            raise self.unavailable(outcomes[0][1]["error"], locations=list(placement.locations))
        if mode == "sync":
            status, body = verdict_answer(check.name, placement, answers, timeout, started)
        else:
            status, body = accepted_answer(check.name, "SENT" if mode == "fire" else states.PENDING, placement, answers)
        self.send(status, body)
        aways = [away for _, _, away in outcomes]
        if mode == "sync" and None not in aways:
            # The tasks ran side by side: the request waited for the one longest away.
            self.away = max(a for a in aways if a is not None)
            self.gateway.metrics.observe_overhead(check.name, self.request.request_time() - self.away)

    async def _answer(
        self, check: CheckType, kwargs: dict[str, Any], mode: str, timeout: float, location: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str], float | None]:
        """Publish one task (to `location`'s queue when given) and make its answer: (status, body, headers,
        seconds its own task was away or None). Raises ApiError (503) when nothing could be published."""
        client = self.gateway.client
        if mode != "fire" and not client.results.available:
            raise self.unavailable("result backend unavailable")
        queue = self.gateway.locations.queue(check.name, location) if location else None
        started = time.perf_counter()
        deadline = time.time() + timeout  # the task's `expires`, as epoch seconds
        task_id = ""
        away = None
        try:
            if mode == "sync" and check.shares_results:

                async def run(new_id: str) -> tuple[str, dict[str, Any] | None, float]:
                    return await client.call(
                        check.task_name,
                        kwargs,
                        timeout=timeout,
                        task_id=new_id,
                        queue=queue,
                        may_republish=check.idempotent,
                    )

                task_id, meta, shared, away = await self.gateway.shared.call(
                    cache_key(check.name, kwargs, location or ""), timeout, check.cache_ttl, client.new_id, run
                )
            elif mode == "sync":
                task_id, meta, away = await client.call(
                    check.task_name, kwargs, timeout=timeout, queue=queue, may_republish=check.idempotent
                )
            else:
                task_id = client.new_id()
                message = client.build_message(
                    task_id, check.task_name, kwargs, timeout=timeout, ignore_result=mode == "fire", queue=queue
                )
                if mode == "async":
                    await client.results.mark_pending(task_id, check.task_name, deadline)
                await client.publish(message, may_republish=check.idempotent)
        except DeadlinePassed:
            # Async and fire publish without waiting for a result, but still for the broker's confirm,
            # which their own deadline cut short: that is this request's 504, not a broker outage.
            when = "before the broker confirmed the task"
            body = await self._deadline_passed(check, task_id, timeout, deadline, when, mode)
            return 504, located(body, location), {}, None
        except BrokerRefused:
            raise self.unavailable("broker refused the task (queue full?)") from None
        except BrokerUnavailable:
            raise self.unavailable("broker unavailable") from None
        except BackendUnavailable as exc:
            raise self.unavailable(backend_down(exc)) from None
        except Unroutable:
            raise self.unavailable(
                f"no queue {queue or self.gateway.queues[check.name]!r} for check type {check.name!r}"
            ) from None
        if mode == "fire":
            return 202, located({"id": task_id, "type": check.name, "state": "SENT"}, location), {}, None
        if mode == "async":
            url = f"/result/{task_id}"
            body = {"id": task_id, "type": check.name, "state": states.PENDING, "result_url": url}
            return 202, located(body, location), {"Location": url}, None
        if meta is None:
            body = await self._deadline_passed(check, task_id, timeout, deadline)
            return 504, located(body, location), {}, None
        status, body = task_answer(meta, check.name, task_id, self.gateway.settings.debug, started)
        if check.shares_results:
            body["shared"] = shared
        return status, located(body, location), {}, away

    def send(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        """Like JsonHandler.send, but a task outcome in format=prometheus is blackbox-style text.

        As with blackbox_exporter, a check that could not run (502) or did not finish (504) is still
        a scrape that succeeded, with probe_success 0; errors before any task (400, 503) keep their code.
        A fan-out's text has each location's series and the verdict (gateway/prometheus.py).
        """
        if getattr(self, "output", "json") != "prometheus" or "state" not in body:
            super().send(status, body, headers)
            return
        self.set_status(200)
        self.set_header("Content-Type", PROMETHEUS_CONTENT_TYPE)
        if "locations" in body:
            self.finish(render_locations(body["type"], body["locations"], body.get("ok"), body.get("require", "all")))
            return
        self.finish(
            render_check(body["type"], body["state"], body.get("result"), body.get("duration_ms"), body.get("location"))
        )

    async def _deadline_passed(
        self, check: CheckType, task_id: str, timeout: float, deadline: float, when: str = "", mode: str = "sync"
    ) -> dict[str, Any]:
        """The 504 body with the id: a task that started before its deadline may still store its result,
        and /result/<id> knows the id meanwhile (PENDING, then EXPIRED once the deadline is long past)."""
        error = f"deadline of {timeout:g}s passed" + (f" {when}" if when else "")
        if mode == "fire":  # no result will be stored: nothing to poll
            return {"id": task_id, "type": check.name, "state": "SENT", "error": error}
        with contextlib.suppress(BackendUnavailable):
            await self.gateway.client.results.mark_pending(task_id, check.task_name, deadline)
        return {
            "id": task_id,
            "type": check.name,
            "state": states.PENDING,
            "error": error,
            "result_url": f"/result/{task_id}",
        }


def located(body: dict[str, Any], location: str | None) -> dict[str, Any]:
    """`body` saying where its check ran, when it was asked to run in a location."""
    if location:
        body["location"] = location
    return body


class AddHandler(CheckHandler):
    """GET /add?x=&y=: the tornado-celery example, the `add` check under its old path."""

    async def get(self) -> None:  # type: ignore[override]
        await super().get("add")


def task_answer(
    meta: dict[str, Any], type_name: str, task_id: str, debug: bool, started: float | None = None
) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for a task's stored meta (shared by /check and /result)."""
    state = meta.get("status", states.PENDING)
    body: dict[str, Any] = {"id": task_id, "type": type_name, "state": state}
    if started is not None:
        body["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
    if meta.get("worker"):
        body["worker"] = meta["worker"]
    if (where := location_of(meta.get("queue"))) is not None:
        body["location"] = where
    if state == states.SUCCESS:
        result = body["result"] = meta.get("result")
        if isinstance(result, dict) and result.get("reason") == REFUSED_TARGET:
            # The worker's address policy refused the target after resolving it (or on a redirect):
            # a refusal by policy, answered as such rather than as a target that is down.
            # One text whatever the worker's reason (a plugin's detail, an older worker's included): no
            # answer may tell the deployment's own endpoints from any other refused target.
            body["error"] = TARGET_REFUSED
            body["result"] = {**result, "detail": TARGET_REFUSED}
            return 403, body
        return 200, body
    if state == EXPIRED:
        # Final: no worker ran it in time and none will (see celery_client.settled).
        body["error"] = f"the task expired: no result within {EXPIRY_GRACE_S:g}s of its deadline; it will not run"
        return 410, body
    if state == states.PENDING or state not in states.READY_STATES:
        body["result_url"] = f"/result/{task_id}"
        return 202, body
    exc = meta.get("result") if isinstance(meta.get("result"), dict) else {}
    args = exc.get("exc_message") or []
    message = str(args[0]) if isinstance(args, list | tuple) and len(args) == 1 else str(args)
    body["error"] = {"type": exc.get("exc_type", "Error"), "message": message}
    if state == states.REVOKED:
        body["error"]["message"] = message or "revoked"
        return 504, body
    if (exc.get("exc_module"), exc.get("exc_type")) in DEADLINE_ERRORS:
        body["result_url"] = f"/result/{task_id}"
        return 504, body
    if debug and meta.get("traceback"):
        body["error"]["traceback"] = meta["traceback"]
    return 502, body


class ResultHandler(JsonHandler):
    """GET /result/<id>: what became of an earlier check.

    With API keys, the key must be allowed the check's type (read from the stored meta's task name); an
    id of a type the key may not run is answered exactly like an unknown id (404), so a key cannot even
    learn that such an id exists. A PENDING id whose deadline is long past reads EXPIRED (410, final).
    """

    async def get(self, task_id: str) -> None:
        key = self.authorize(None)
        if not TASK_ID_RE.fullmatch(task_id):
            message = "invalid parameter 'id': expected 1 to 128 of A-Z a-z 0-9 . _ : -"
            raise ApiError(400, {"error": message, "field": "id"})
        try:
            meta = await self.gateway.client.results.fetch(task_id)
        except BackendUnavailable as exc:
            raise self.unavailable(backend_down(exc)) from None
        type_name = scheduled_type(meta) if meta is not None else ""
        if meta is None or (key is not None and not key.may_run(type_name)):
            raise ApiError(404, {"error": UNKNOWN_ID, "id": task_id})
        self.send(*task_answer(settled(meta, time.time()), type_name, task_id, self.gateway.settings.debug))


class ChecksHandler(JsonHandler):
    """GET /checks: every check type with its queue, parameters, limits and doc; the deployment's
    locations, and each type's queue and live consumers in each (from the last second's queue stats)."""

    def get(self) -> None:
        gateway = self.gateway
        checks = []
        for check in gateway.checks.values():
            described = check.describe()
            described["queue"] = gateway.queues[check.name]
            described["locations"] = gateway.locations.describe(check.name, gateway.queue_stats)
            checks.append(described)
        self.send(200, {"checks": checks, "locations": list(gateway.locations.names)})


class HealthHandler(JsonHandler):
    """GET /health: broker and backend reachable, workers (consumers) and depth per queue, and per
    location whether any consumer is live there (a dark location makes the status `degraded`).

    `broker` and `backend` are the answering process's own connections; `inflight`, `waiting_results`
    and `processes` are the whole gateway's (every process's gauges, at most a second old:
    `GatewayMetrics.gateway_wide`); `process` says which process answered (`num`: its process number,
    "" when alone; `pid`); `workers`: each Celery worker that answered and its AMQP client (node →
    transport and client, as the workers announce it in Redis, read ≤ 5 s ago; tasks/presence.py)."""

    async def get(self) -> None:
        client = self.gateway.client
        broker_ok = client.broker.available
        backend_ok = client.results.available and await client.results.ping()
        queues: dict[str, Any] = {}
        if broker_ok:
            try:
                queues = await client.broker.queue_stats()
            except BrokerUnavailable as exc:
                log.warning("%s", exc)
                broker_ok = False
        locations = self.gateway.locations.health(queues)
        self.gateway.sample_metrics()
        # A location serves the types its workers were given; it is degraded only when none is live there.
        plain = (q for name, q in queues.items() if location_of(name) is None)
        if not (broker_ok and backend_ok):
            status = "down"
        elif any(q["consumers"] == 0 for q in plain) or not all(w["live"] for w in locations.values()):
            status = "degraded"
        else:
            status = "ok"
        body = {
            "status": status,
            "broker": {"ok": broker_ok},
            "backend": {"ok": backend_ok},
            "queues": queues,
            "locations": locations,
            **self.gateway.metrics.gateway_wide(),
            "process": {"num": self.gateway.settings.process_num, "pid": os.getpid()},
            # Each Celery worker that answered and the AMQP client it consumes with (tasks/transport.py).
            "workers": self.gateway.workers_seen(),
        }
        self.send(200 if status != "down" else 503, body)


class MetricsHandler(JsonHandler):
    """GET /metrics: the process's metrics (gateway/metrics.py) and the scheduled checks' latest runs, read
    from Redis without blocking (none while it is away), in Prometheus text format."""

    async def get(self) -> None:
        try:
            runs = await self.gateway.scheduled_runs()
        except BackendUnavailable:
            runs = {}
        self.gateway.sample_metrics()
        self.set_header("Content-Type", PROMETHEUS_CONTENT_TYPE)
        self.finish(self.gateway.metrics.exposition(scheduled_run(name, meta) for name, meta in runs.items()))


def scheduled_run(name: str, meta: dict[str, Any]) -> ScheduledRun:
    """What /metrics says of a scheduled check's latest stored run."""
    result = meta.get("result")
    ok = meta.get("status") == states.SUCCESS and not (isinstance(result, dict) and result.get("ok") is False)
    try:
        finished_at: float | None = datetime.fromisoformat(str(meta["date_done"])).timestamp()
    except (KeyError, TypeError, ValueError):
        finished_at = None
    return ScheduledRun(name, scheduled_type(meta), ok, finished_at)


class ScheduleHandler(JsonHandler):
    """GET /schedule[/<name>]: the latest finished run of every scheduled check (or of one); with API
    keys, only runs of the types the key may run (another type's name is a 404 like an unknown one)."""

    async def get(self, name: str | None = None) -> None:
        key = self.authorize(None)
        try:
            runs = await self.gateway.scheduled_runs()
        except BackendUnavailable as exc:
            raise self.unavailable(backend_down(exc)) from None
        if key is not None:
            # Only runs of types the key may run, and no sign of the others (as /result does).
            runs = {n: m for n, m in runs.items() if key.may_run(scheduled_type(m))}
        now = time.time()
        runs = {n: settled(m, now) for n, m in runs.items()}
        debug = self.gateway.settings.debug
        answers = {n: task_answer(m, scheduled_type(m), m["task_id"], debug)[1] for n, m in sorted(runs.items())}
        if name is None:
            self.send(200, {"schedule": answers})
        elif name in runs:
            self.send(*task_answer(runs[name], scheduled_type(runs[name]), runs[name]["task_id"], debug))
        else:
            raise ApiError(404, {"error": f"no finished run of scheduled check {name!r}", "field": "name"})


def scheduled_type(meta: dict[str, Any]) -> str:
    """The check type of a stored meta (its task name without the `checkgate.` prefix; "" unknown)."""
    return str(meta.get("name") or "").removeprefix("checkgate.")


class OpenApiHandler(JsonHandler):
    """GET /openapi.json: the API, generated from the check declarations."""

    def get(self) -> None:
        self.send(200, openapi_document(self.gateway.checks, self.gateway.locations.names))


class NotFoundHandler(JsonHandler):
    """Any other path: JSON 404."""

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, {"error": f"no such resource {self.request.path!r}"})


def make_app(gateway: Gateway) -> tornado.web.Application:
    """The Tornado application serving the contract above."""
    args = {"gateway": gateway}
    return tornado.web.Application(
        [
            (r"/check/([^/]+)", CheckHandler, args),
            (r"/add", AddHandler, args),
            (r"/result/([^/]+)", ResultHandler, args),
            (r"/checks", ChecksHandler, args),
            (r"/health", HealthHandler, args),
            (r"/metrics", MetricsHandler, args),
            (r"/openapi.json", OpenApiHandler, args),
            (r"/schedule", ScheduleHandler, args),
            (r"/schedule/([A-Za-z0-9_.-]{1,100})", ScheduleHandler, args),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=args,
        debug=False,
        log_function=_log_request,
    )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Per-request INFO lines cost throughput at thousands of requests per second; log failures only.
    status = handler.get_status()
    if status >= 500 and status not in (502, 503, 504):
        log.error("%d %s %.1fms", status, handler.request.uri, 1000 * handler.request.request_time())
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("%d %s %.1fms", status, handler.request.uri, 1000 * handler.request.request_time())
