"""Flower's task API (gateway/flower_api.py) in process: the real Application and EdgeServer on a socket, a
stub Celery client (tests/support/stub_client.py). Every branch of the contract in milliseconds; the real
stack side by side with a real Flower is tests/test_flower_compat.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
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
from gateway.flower_api import CHECK_MAX_DELAY, MAX_BODY_BYTES, PATH_PREFIX, TaskApiSettings, answer, task_api_routes
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
    ({"headers": {"x-deep": {"a": {"b": 1}}}}, "headers.x-deep"),
    (b"[" * 5000 + b"]" * 5000, "body"),
    ({"time_limit": 0}, "time_limit"),
    ({"timeout": "long"}, "timeout"),
]
SETTINGS = TaskApiSettings(("proj.*", "checkgate.add", "checkgate.boom"), max_timeout=30.0, queues=("proj", "proj-*"))


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
        at = (datetime.now(UTC) + timedelta(seconds=20)).replace(tzinfo=None)
        eta = at.strftime("%Y-%m-%d %H:%M:%S.%f")
        options = {
            "countdown": 1,
            "eta": eta,
            "expires": 25,
            "queue": "proj",
            "priority": 7,
            "headers": {"x-tenant": "acme"},
            "time_limit": 30,
            "soft_time_limit": 20,
        }
        status, _, _ = self.call("async-apply/proj.add", options)
        sent = self.client.sent[0][3]
        assert status == 200
        assert sent["eta"] == at.replace(tzinfo=UTC)
        assert {k: v for k, v in sent.items() if k != "eta"} == {
            "countdown": 1.0,
            "expires": 25.0,
            "queue": "proj",
            "priority": 7,
            "headers": {"x-tenant": "acme"},
            "time_limit": 30.0,
            "soft_time_limit": 20.0,
        }
        self.call("async-apply/proj.add", {"expires": eta})
        assert self.client.sent[1][3]["expires"] == at.replace(tzinfo=UTC)

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
            (Unroutable("no queue bound"), {"queue": "proj-nowhere"}, 503, None),
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


class TestTaskApiBounds(TaskApiTest):
    """Every option of a request becomes a field of the message workers act on: each is bounded here."""

    settings = TaskApiSettings(("checkgate.*", "proj.*"), max_timeout=30.0, queues=("proj",))

    def refused(self, task: str, body: dict[str, Any], field: str) -> None:
        for endpoint in ("apply", "async-apply", "send-task"):
            status, answered, _ = self.call(f"{endpoint}/{task}", body)
            assert (status, answered.get("field")) == (400, field), (task, body, answered)

    def test_headers_in_checkgates_namespace_or_celerys_are_refused(self) -> None:
        add = {"kwargs": {"x": 1, "y": 1}}
        for name in ("checkgate_schedule", "CheckGate_Schedule", "checkgate-anything", "task", "meth", "shadow"):
            self.refused("checkgate.add", {**add, "headers": {name: "billing-db-secret"}}, f"headers.{name}")
            self.refused("proj.add", {"headers": {name: "x"}}, f"headers.{name}")
        # Names of Celery's request context become `task.request` attributes: `get` would shadow its method.
        for name in ("get", "reply_to", "chord", "callbacks", "hostname", "delivery_info", "_protected", "a b"):
            self.refused("proj.add", {"headers": {name: "x"}}, f"headers.{name}")
        assert self.client.sent == []

    def test_header_values_are_bounded_json_scalars(self) -> None:
        for value in ("x" * 257, 2**64, [1], {"a": 1}):
            self.refused("proj.add", {"headers": {"x-tenant": value}}, "headers.x-tenant")
        self.refused("proj.add", b'{"headers": {"x-big": 1e400}}', "headers.x-big")  # type: ignore[arg-type]
        self.refused("proj.add", {"headers": {f"x-{i}": i for i in range(17)}}, "headers")
        assert self.client.sent == []
        fine = {"x-tenant": "acme", "x-n": 2**63 - 1, "x-f": 1.5, "x-b": True, "x-none": None}
        assert self.call("async-apply/proj.add", {"headers": fine})[0] == 200
        assert self.client.sent[0][3]["headers"] == fine

    def test_headers_the_broker_reads_are_refused(self) -> None:
        """RabbitMQ reads CC/BCC as extra routing keys (a string closed the gateway's channel: 406) and
        keeps its own bookkeeping in x-death, x-delivery-count...: none is a caller's to set."""
        add = {"kwargs": {"x": 1, "y": 1}}
        for name in ("CC", "BCC", "cc", "x-death", "X-Delivery-Count", "x-delay", "x-match"):
            self.refused("checkgate.add", {**add, "headers": {name: "x"}}, f"headers.{name}")
            self.refused("proj.add", {"headers": {name: "x"}}, f"headers.{name}")
        assert self.client.sent == []

    def test_a_check_takes_no_time_limits_and_an_eta_is_not_long_past(self) -> None:
        add = {"kwargs": {"x": 1, "y": 1}}
        for name in ("time_limit", "soft_time_limit"):  # a tiny hard limit killed a prefork child
            self.refused("checkgate.add", {**add, name: 0.000001}, name)
            self.refused("checkgate.add", {**add, name: 5}, name)
        for eta in ("0001-01-01T00:00:00+14:00", (datetime.now(UTC) - timedelta(days=1)).isoformat()):
            self.refused("checkgate.add", {**add, "eta": eta}, "eta")
            self.refused("proj.add", {"eta": eta}, "eta")
        assert self.client.sent == []
        just_past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        assert self.call("async-apply/checkgate.add", {**add, "eta": just_past})[0] == 200

    def test_a_checks_deadlines_are_its_max_timeout(self) -> None:
        http = {"kwargs": {"x": 1, "y": 1}}
        max_timeout = self.gateway.checks["add"].max_timeout
        for name in ("expires", "time_limit", "soft_time_limit"):
            self.refused("checkgate.add", {**http, name: max_timeout + 1}, name)
        status, answered, _ = self.call("apply/checkgate.add", {**http, "timeout": max_timeout + 1})
        assert (status, answered["field"]) == (400, "timeout")
        self.refused("checkgate.add", {**http, "expires": self.gateway.checks["add"].min_timeout / 2}, "expires")
        later = (datetime.now(UTC) + timedelta(seconds=max_timeout + 60)).isoformat()
        self.refused("checkgate.add", {**http, "expires": later}, "expires")
        soon = (datetime.now(UTC) + timedelta(seconds=CHECK_MAX_DELAY + 2)).isoformat()
        for name, value in (("countdown", CHECK_MAX_DELAY + 1), ("eta", soon), ("eta", "9999-12-31 00:00:00")):
            self.refused("checkgate.add", {**http, name: value}, name)
        assert self.client.sent == []
        # Without expires a check still gets the deadline /check gives it: its default timeout, or `timeout`.
        assert self.call("async-apply/checkgate.add", http)[0] == 200
        assert self.call("apply/checkgate.add", {**http, "timeout": 7})[0] == 200
        assert self.call("async-apply/checkgate.add", {**http, "expires": 5})[0] == 200
        default = self.gateway.checks["add"].default_timeout
        assert [sent[3]["expires"] for sent in self.client.sent] == [default, 7.0, 5.0]
        # A short delay, as Flower's clients send one, is taken.
        assert self.call("async-apply/checkgate.add", {**http, "countdown": CHECK_MAX_DELAY})[0] == 200

    def test_other_tasks_deadlines_are_the_apis_max_timeout(self) -> None:
        far = (datetime.now(UTC) + timedelta(seconds=31)).isoformat()
        for name, value in (("expires", 31), ("expires", far), ("countdown", 31), ("eta", far), ("eta", "9999-12-31")):
            self.refused("proj.add", {name: value}, name)
        for value in (1e300, -1e300, 1e10, -1, 0):
            self.refused("proj.add", {"expires": value}, "expires")
        for value in (1e300, -1e300, 1e10, -1):
            self.refused("proj.add", {"countdown": value}, "countdown")
        for raw in (b'{"expires": 1e400}', b'{"countdown": -1e400}', b'{"time_limit": 1e400}'):
            field = json.loads(raw.replace(b"e400", b"")).popitem()[0]
            self.refused("proj.add", raw, field)  # type: ignore[arg-type]
        for field in ("expires", "countdown", "time_limit", "soft_time_limit", "timeout"):
            # An integer of 400 digits is valid JSON and no float: a 400, not an OverflowError's 500.
            status, answered, _ = self.call("apply/proj.add", b'{"%s": 1%s}' % (field.encode(), b"0" * 400))
            assert (status, answered.get("field")) == (400, field)
        assert self.client.sent == []
        assert self.call("async-apply/proj.add", {"expires": 30, "countdown": 30})[0] == 200

    def test_a_check_runs_on_its_own_queue_only(self) -> None:
        http = {"kwargs": {"x": 1, "y": 1}}
        own = self.gateway.queues.get("add", self.gateway.checks["add"].queue)
        answers = set()
        for queue in ("http", "add@vm.celery.pidbox", "celery", "nowhere", "proj"):
            for endpoint in ("apply", "async-apply"):
                status, answered, _ = self.call(f"{endpoint}/checkgate.add", {**http, "queue": queue})
                assert (status, answered["field"]) == (400, "queue")
                answers.add(answered["error"])
        assert len(answers) == 1  # one answer whatever the queue: no oracle of which queues exist
        assert self.client.sent == []
        assert self.call("async-apply/checkgate.add", {**http, "queue": own})[0] == 200

    def test_other_tasks_queues_are_the_operators_allow_list(self) -> None:
        answers = set()
        for queue in ("add", "http", "w1@vm.celery.pidbox", "celeryev.1234", "amq.rabbitmq.reply-to", "nowhere"):
            status, answered, _ = self.call("async-apply/proj.add", {"queue": queue})
            assert (status, answered["field"]) == (400, "queue")
            answers.add(answered["error"])
        assert len(answers) == 1
        assert TaskApiSettings(("proj.*",), queues=("*",)).allows_queue("w1.celery.pidbox") is False
        assert self.client.sent == []
        assert self.call("async-apply/proj.add", {"queue": "proj"})[0] == 200
        # An allowed queue with nothing bound: the broker's state, one 503 whatever the queue.
        self.client.send_error = Unroutable("no queue bound")
        status, answered, response = self.call("async-apply/proj.add", {"queue": "proj"})
        assert status == 503 and "field" not in answered and response.headers["Retry-After"]

    def test_task_names_have_a_syntax_and_checks_must_be_declared(self) -> None:
        for name in (
            "checkgate.a%01dd",
            "checkgate.%C3%A9",
            "checkgate.*",
            "proj.%2A",
            "proj.a%20b",
            "proj.add%0a",
            "checkgate.nope",
        ):
            for endpoint in ("apply", "async-apply", "send-task"):
                status, answered, _ = self.call(f"{endpoint}/{name}", {})
                assert (status, answered["field"]) == (404, "taskname"), (name, answered)
                assert answered["error"].startswith("Unknown task '")
        assert self.client.sent == []
        assert not TaskApiSettings(("*",)).allows("a" * 201) and TaskApiSettings(("*",)).allows("proj.tasks:add-1")


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


def test_queues_a_request_may_name_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKGATE_TASK_API", "proj.*")
    monkeypatch.delenv("CHECKGATE_TASK_API_QUEUES", raising=False)
    settings = TaskApiSettings.from_env()
    assert settings is not None and settings.queues == () and not settings.allows_queue("proj")
    monkeypatch.setenv("CHECKGATE_TASK_API_QUEUES", " proj , reports-* ,")
    settings = TaskApiSettings.from_env()
    assert settings is not None and settings.queues == ("proj", "reports-*")
    assert settings.allows_queue("reports-eu") and not settings.allows_queue("http")
