"""Flower's task API (gateway/flower_api.py) in process: the real Application and EdgeServer on a socket, a
stub Celery client (tests/support/stub_client.py). Every branch of the contract in milliseconds; the real
stack side by side with a real Flower is tests/test_flower_compat.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import tornado.web
from celery.exceptions import TaskRevokedError
from tornado.httpclient import HTTPResponse
from tornado.tcpclient import TCPClient
from tornado.testing import AsyncHTTPTestCase, gen_test

from gateway.aiocelery import BrokerUnavailable, ResultTimeout, TaskResult, Unroutable
from gateway.auth import ApiKey, KeyRing, digest
from gateway.config import Settings
from gateway.edge import EdgeLimits, EdgeServer
from gateway.flower_api import MAX_BODY_BYTES, PATH_PREFIX, TaskApiSettings, answer, task_api_routes
from gateway.http_api import make_app
from gateway.state import Gateway
from tasks.registry import load_checks
from tests.support.stub_client import StubClient

ADD_KEY, ANY_KEY = "add-only-key", "any-task-key"
BAD_BODIES: list[tuple[Any, str]] = [
    (b"{not json", "body"),
    (b"\xff\xfe", "body"),
    ([1, 2], "body"),
    ({"args": {"x": 1}}, "args"),
    ({"args": "12"}, "args"),
    ({"kwargs": [1]}, "kwargs"),
    ({"retry": False}, "retry"),
    ({"task_id": "mine"}, "task_id"),
    ({"countdown": "soon"}, "countdown"),
    ({"countdown": True}, "countdown"),
    ({"eta": "tomorrow"}, "eta"),
    ({"expires": [1]}, "expires"),
    ({"priority": 256}, "priority"),
    ({"priority": 1.5}, "priority"),
    ({"queue": ""}, "queue"),
    ({"headers": ["x"]}, "headers"),
    ({"headers": {"x-deep": {"a": {"b": 1}}}}, "headers"),
    (b"[" * 5000 + b"]" * 5000, "body"),
    ({"time_limit": 0}, "time_limit"),
    ({"timeout": "long"}, "timeout"),
]
SETTINGS = TaskApiSettings(("proj.*", "checkgate.add", "checkgate.boom"), max_timeout=30.0)


class TaskApiTest(AsyncHTTPTestCase):
    keys: KeyRing | None = None
    settings = SETTINGS

    def get_app(self) -> tornado.web.Application:
        self.client = StubClient()
        self.gateway = Gateway(
            client=self.client,  # type: ignore[arg-type]
            settings=Settings(),
            checks=load_checks(),
            queues={},
            keys=self.keys,
        )
        app = make_app(self.gateway)
        if self.settings is not None:
            app.add_handlers(r".*", task_api_routes(self.gateway, self.settings))
        return app

    def get_http_server(self) -> EdgeServer:
        return EdgeServer(self._app, limits=EdgeLimits(), body_paths={PATH_PREFIX: MAX_BODY_BYTES})

    def call(self, path: str, body: Any = None, method: str = "POST", **kwargs: Any) -> tuple[int, Any, HTTPResponse]:
        data = body if isinstance(body, bytes | str) or body is None else json.dumps(body)
        if method == "POST" and data is None:
            data = b""
        response = self.fetch(PATH_PREFIX + path, method=method, body=data, raise_error=False, **kwargs)
        try:
            return response.code, json.loads(response.body), response
        except ValueError:
            return response.code, response.body, response


class TestTaskApi(TaskApiTest):
    def test_apply_answers_flowers_shape(self) -> None:
        status, body, response = self.call("apply/proj.add", {"args": [1, 2], "timeout": 5})
        assert status == 200 and list(body) == ["task-id", "result", "state"]
        assert body["result"] == 3 and body["state"] == "SUCCESS"
        assert self.client.sent == [("proj.add", [1, 2], {}, {})]
        assert self.client.waited == [(body["task-id"], 5.0)]
        assert response.headers["Content-Type"].startswith("application/json")

    def test_apply_without_timeout_waits_at_most_the_configured_cap(self) -> None:
        self.call("apply/proj.add", {})
        assert self.client.waited[0][1] == SETTINGS.max_timeout
        self.call("apply/proj.add", {"timeout": 10_000})
        assert self.client.waited[1][1] == SETTINGS.max_timeout

    def test_apply_past_its_timeout_answers_the_state_without_result(self) -> None:
        self.client.task_outcome = lambda task_id: ResultTimeout(task_id, 0.5)
        self.client.fetched["stub-1"] = TaskResult("stub-1", "STARTED", {"pid": 1})
        status, body, _ = self.call("apply/proj.slow", {"timeout": 0.5})
        assert (status, body) == (200, {"task-id": "stub-1", "state": "STARTED"})

    def test_a_failure_has_flowers_repr_and_only_the_last_traceback_line(self) -> None:
        traceback = 'Traceback (most recent call last):\n  File "/srv/app/x.py", line 3\nValueError: boom 42\n'
        self.client.task_outcome = lambda task_id: TaskResult(task_id, "FAILURE", ValueError("boom 42"), traceback)
        status, body, _ = self.call("apply/checkgate.boom", {"kwargs": {"code": 42}})
        assert status == 200 and list(body) == ["task-id", "result", "traceback", "state"]
        assert body["result"] == "ValueError('boom 42')" and body["traceback"] == "ValueError: boom 42"
        assert answer("i", TaskResult("i", "FAILURE", ValueError("x"), traceback), debug=True)["traceback"] == traceback

    def test_a_revoked_task_has_no_traceback(self) -> None:
        self.client.task_outcome = lambda task_id: TaskResult(task_id, "REVOKED", TaskRevokedError("revoked"))
        _, body, _ = self.call("apply/proj.add", {})
        assert body == {"task-id": "stub-1", "result": "TaskRevokedError('revoked')", "state": "REVOKED"}

    @pytest.mark.filterwarnings("ignore")
    def test_async_apply_and_send_task_answer_the_id_at_once(self) -> None:
        for endpoint in ("async-apply", "send-task"):
            status, body, _ = self.call(f"{endpoint}/proj.add", {"args": [1], "kwargs": {"y": 2}, "countdown": 3})
            assert status == 200 and list(body) == ["task-id", "state"] and body["state"] == "PENDING"
        assert [s[3] for s in self.client.sent] == [{"countdown": 3.0}] * 2
        assert self.client.waited == []

    def test_options_reach_send_task_as_its_keywords(self) -> None:
        options = {
            "countdown": 1,
            "eta": "2030-01-02 03:04:05.000006",
            "expires": 60,
            "queue": "proj",
            "priority": 7,
            "headers": {"x-tenant": "acme"},
            "time_limit": 30,
            "soft_time_limit": 20,
        }
        status, _, _ = self.call("async-apply/proj.add", options)
        sent = self.client.sent[0][3]
        assert status == 200
        assert sent["eta"].isoformat() == "2030-01-02T03:04:05.000006+00:00"
        assert {k: v for k, v in sent.items() if k != "eta"} == {
            "countdown": 1.0,
            "expires": 60.0,
            "queue": "proj",
            "priority": 7,
            "headers": {"x-tenant": "acme"},
            "time_limit": 30.0,
            "soft_time_limit": 20.0,
        }
        self.call("async-apply/proj.add", {"expires": "2030-01-02 03:04:05.000006"})
        assert self.client.sent[1][3]["expires"].isoformat() == "2030-01-02T03:04:05.000006+00:00"

    def test_an_empty_body_is_an_empty_call(self) -> None:
        status, _, _ = self.call("async-apply/proj.noop", b"")
        assert status == 200 and self.client.sent == [("proj.noop", [], {}, {})]

    def test_bad_bodies_are_400_naming_the_field(self) -> None:
        for body, field in BAD_BODIES:
            for endpoint in ("apply", "async-apply"):
                if field == "timeout" and endpoint == "async-apply":
                    continue  # accepted and ignored there, as Flower hands it to apply_async
                status, answered, _ = self.call(f"{endpoint}/proj.add", body)
                assert (status, answered["field"]) == (400, field), (body, answered)
        assert self.client.sent == []

    def test_names_off_the_allow_list_are_flowers_unknown_task(self) -> None:
        for path in ("apply/checkgate.http", "send-task/other.add", "async-apply/proj"):
            status, body, _ = self.call(path, {})
            assert (status, body["error"]) == (404, f"Unknown task '{path.split('/')[1]}'")
        assert self.client.sent == []

    def test_publish_failures_are_their_statuses(self) -> None:
        cases = [
            (ValueError("headers: 'task' is a header of the task protocol itself"), {}, 400, "headers"),
            (Unroutable("no queue bound"), {"queue": "nowhere"}, 400, "queue"),
            (Unroutable("no queue bound"), {}, 503, None),
            (BrokerUnavailable("down"), {}, 503, None),
        ]
        for error, options, status, field in cases:
            self.client.send_error = error
            answered, body, response = self.call("async-apply/proj.add", options)
            assert answered == status, body
            assert body.get("field") == field
            if status == 503:
                assert response.headers["Retry-After"]

    def test_result_reads_pending_then_the_result(self) -> None:
        status, body, _ = self.call("result/stub-9", method="GET")
        assert (status, body) == (200, {"task-id": "stub-9", "state": "PENDING"})
        self.client.fetched["stub-9"] = TaskResult("stub-9", "SUCCESS", [1, "x"], name="proj.add")
        _, body, _ = self.call("result/stub-9", method="GET")
        assert body == {"task-id": "stub-9", "result": [1, "x"], "state": "SUCCESS"}
        assert list(body) == ["task-id", "state", "result"]  # Flower's order here (apply: state last)
        _, body, _ = self.call("result/stub-9?timeout=2.5", method="GET")
        assert self.client.waited == [("stub-9", 2.5)] and body["state"] == "SUCCESS"

    def test_result_refuses_bad_ids_and_timeouts(self) -> None:
        for path, field in (("result/a%20b", "id"), ("result/ok?timeout=-1", "timeout"), ("result/ok?wait=1", "wait")):
            status, body, _ = self.call(path, method="GET")
            assert (status, body["field"]) == (400, field)

    def test_results_of_tasks_off_the_allow_list_read_pending(self) -> None:
        self.client.fetched["stub-7"] = TaskResult("stub-7", "SUCCESS", "secret", name="checkgate.http")
        _, body, _ = self.call("result/stub-7", method="GET")
        assert body == {"task-id": "stub-7", "state": "PENDING"}

    def test_other_methods_are_405_naming_the_allowed_one(self) -> None:
        status, _, response = self.call("apply/proj.add", method="GET")
        assert (status, response.headers["Allow"]) == (405, "POST")
        status, _, response = self.call("result/x", b"{}", method="POST")
        assert (status, response.headers["Allow"]) == (405, "GET, HEAD")

    def test_the_edge_caps_bodies_on_these_paths_only(self) -> None:
        big = json.dumps({"args": ["x" * MAX_BODY_BYTES]})
        status, body, _ = self.call("apply/proj.add", big)
        assert (status, body["field"]) == (413, "body")
        status, body, _ = self.call("apply/proj.add", {"args": ["x" * (MAX_BODY_BYTES - 100)]})
        assert status == 200
        response = self.fetch("/check/add", method="POST", body="{}", raise_error=False)
        assert response.code == 405
        assert self.client.sent[0][1] == ["x" * (MAX_BODY_BYTES - 100)]

    @gen_test(timeout=10)
    async def test_a_chunked_body_is_held_to_the_same_cap(self) -> None:
        stream = await TCPClient().connect("127.0.0.1", self.get_http_port())
        chunk = b"x" * 8192
        head = b"POST /api/task/apply/proj.add HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
        try:
            await stream.write(head + body)
            answer_ = await stream.read_until_close()
        finally:
            stream.close()
        assert answer_.split(b"\r\n", 1)[0].startswith(b"HTTP/1.1 413 ")
        assert self.client.sent == []

    def test_the_in_flight_cap_sheds_load(self) -> None:
        self.gateway.inflight = self.gateway.settings.max_inflight
        status, body, response = self.call("apply/proj.add", {})
        assert (status, body["error"]) == (503, "too many requests in flight")
        assert response.headers["Retry-After"]


class TestTaskApiChecks(TaskApiTest):
    """checkgate's own checks through the task API: validated as /check/<type> validates them."""

    settings = TaskApiSettings(("checkgate.*", "proj.*"), max_timeout=30.0)

    def test_a_checks_kwargs_are_validated_by_its_params_as_check_does(self) -> None:
        cases = [
            ("checkgate.add", {"kwargs": {"x": "a", "y": 2}}, "/check/add?x=a&y=2", "x"),
            ("checkgate.add", {"kwargs": {"x": 1}}, "/check/add?x=1", "y"),
            ("checkgate.add", {"kwargs": {"x": 1, "y": 2, "z": 3}}, "/check/add?x=1&y=2&z=3", "z"),
            ("checkgate.add", {"kwargs": {"x": True, "y": 2}}, "/check/add?x=true&y=2", "x"),
            ("checkgate.add", {"kwargs": {"x": 2**60, "y": 2}}, f"/check/add?x={2**60}&y=2", "x"),
            # The target policy at the gateway, as for /check (a metadata address: refused whatever is allowed).
            (
                "checkgate.http",
                {"kwargs": {"url": "http://169.254.169.254/"}},
                "/check/http?url=http://169.254.169.254/",
                "url",
            ),
        ]
        for task, body, path, field in cases:
            expected = self.fetch(path, raise_error=False)
            assert expected.code == 400, path
            for endpoint in ("apply", "async-apply", "send-task"):
                status, answered, _ = self.call(f"{endpoint}/{task}", body)
                assert (status, answered) == (400, json.loads(expected.body)), (endpoint, body)
                assert answered["field"] == field
        for value in (None, [1], {"a": 1}):
            status, answered, _ = self.call("apply/checkgate.add", {"kwargs": {"x": value, "y": 2}})
            assert (status, answered["field"]) == (400, "x")
        assert self.client.sent == []

    def test_a_check_takes_no_positional_args(self) -> None:
        for endpoint in ("apply", "async-apply", "send-task"):
            status, answered, _ = self.call(f"{endpoint}/checkgate.add", {"args": [2, 3]})
            assert (status, answered["field"]) == (400, "args")
            assert "keyword arguments only" in answered["error"]
        assert self.client.sent == []

    def test_a_checks_kwargs_are_sent_converted_with_its_defaults(self) -> None:
        assert self.call("async-apply/checkgate.add", {"kwargs": {"x": "2", "y": 3}})[0] == 200
        assert self.call("async-apply/checkgate.boom", {})[0] == 200
        # Any other task's arguments are its own business, as in Flower.
        assert self.call("async-apply/proj.add", {"args": [1], "kwargs": {"z": [1]}})[0] == 200
        assert [sent[:3] for sent in self.client.sent] == [
            ("checkgate.add", [], {"x": 2, "y": 3}),
            ("checkgate.boom", [], {"code": 42}),
            ("proj.add", [1], {"z": [1]}),
        ]


class TestTaskApiOff(TaskApiTest):
    settings = None

    def test_off_by_default(self) -> None:
        status, _, _ = self.call("apply/proj.add", {})
        assert status in (404, 405) and self.client.sent == []
        status, _, _ = self.call("result/x", method="GET")
        assert status == 404


class TestTaskApiKeys(TaskApiTest):
    def get_app(self) -> tornado.web.Application:
        self.keys = KeyRing(
            [ApiKey("add", digest(ADD_KEY), checks=frozenset({"add", "proj.add"})), ApiKey("any", digest(ANY_KEY))]
        )
        return super().get_app()

    def test_keys_decide_who_runs_what(self) -> None:
        status, _, response = self.call("apply/proj.add", {})
        assert status == 401 and "Bearer" in response.headers["WWW-Authenticate"]
        add = {"Authorization": f"Bearer {ADD_KEY}"}
        assert self.call("apply/proj.add", {}, headers=add)[0] == 200
        assert self.call("apply/checkgate.add", {"kwargs": {"x": 1, "y": 2}}, headers=add)[0] == 200  # `add` check
        status, body, _ = self.call("apply/proj.other", {}, headers=add)
        assert (status, body["field"]) == (403, "taskname")
        assert self.call("apply/checkgate.http", {}, headers=add)[0] == 404  # off the allow-list first
        assert self.call("apply/proj.other", {}, headers={"X-API-Key": ANY_KEY})[0] == 200

    def test_results_follow_the_same_rule(self) -> None:
        add, any_ = {"Authorization": f"Bearer {ADD_KEY}"}, {"Authorization": f"Bearer {ANY_KEY}"}
        self.client.fetched["a"] = TaskResult("a", "SUCCESS", 1, name="proj.add")
        self.client.fetched["b"] = TaskResult("b", "SUCCESS", 2, name="proj.other")
        self.client.fetched["c"] = TaskResult("c", "SUCCESS", 3)  # stored without result_extended: no name
        seen = {
            (who, task_id): self.call(f"result/{task_id}", method="GET", headers=h)[1]["state"]
            for who, h in (("add", add), ("any", any_))
            for task_id in "abc"
        }
        assert seen == {
            ("add", "a"): "SUCCESS",
            ("add", "b"): "PENDING",
            ("add", "c"): "PENDING",
            ("any", "a"): "SUCCESS",
            ("any", "b"): "SUCCESS",
            ("any", "c"): "SUCCESS",
        }
        assert self.call("result/a", method="GET")[0] == 401


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHECKGATE_TASK_API", raising=False)
    assert TaskApiSettings.from_env() is None
    monkeypatch.setenv("CHECKGATE_TASK_API", " proj.* , billing.invoice ,")
    settings = TaskApiSettings.from_env()
    assert settings is not None and settings.patterns == ("proj.*", "billing.invoice")
    assert settings.allows("proj.tasks.add") and settings.allows("billing.invoice")
    assert not settings.allows("billing.invoice2") and not settings.allows("Proj.add")
    monkeypatch.setenv("CHECKGATE_TASK_API_MAX_TIMEOUT", "nope")
    with pytest.raises(ValueError, match="CHECKGATE_TASK_API_MAX_TIMEOUT"):
        TaskApiSettings.from_env()
