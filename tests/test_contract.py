"""The HTTP contract's branches in process: the real Application and EdgeServer on a real socket, a stub
client for Celery (tests/support/stub_client.py). Milliseconds each; the end-to-end tests run the real
stack (test_gateway.py, test_edge.py, test_api_keys.py)."""

from __future__ import annotations

import errno
import json
import logging
import socket
import time
from typing import Any

import pytest
import tornado.web
from tornado.httpclient import HTTPResponse
from tornado.tcpclient import TCPClient
from tornado.testing import AsyncHTTPTestCase, gen_test

from gateway.aiocelery import BrokerRefused, BrokerUnavailable, DeadlinePassed, OutOfDescriptors
from gateway.aiocelery.results import EXPIRY_GRACE_S, pending_marker
from gateway.auth import ApiKey, KeyRing, digest
from gateway.config import Settings
from gateway.edge import ACCEPT_PAUSE_S, EdgeLimits, EdgeServer, _Acceptor
from gateway.http_api import make_app
from gateway.ratelog import RateLimitedLog
from gateway.state import Gateway
from tasks.registry import DEFAULT_MIN_TIMEOUT, load_checks
from tests.support.stub_client import StubClient

LIMITS = EdgeLimits(head_timeout=0.3, body_timeout=0.3, linger_s=0.2)


class EchoHandler(tornado.web.RequestHandler):
    """A handler that reads bodies, standing where the console's forms are (an EdgeServer body path)."""

    def post(self) -> None:
        self.write({"bytes": len(self.request.body)})


BIG_ANSWER = 32 * 1024 * 1024  # more than loopback socket buffers hold, so an unread answer stalls


class BigHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(b"x" * BIG_ANSWER)


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-case names) and JSON body (or raw bytes) of one HTTP/1.1 answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    try:
        return status, headers, json.loads(body)
    except ValueError:
        return status, headers, body


class ContractTest(AsyncHTTPTestCase):
    keys: KeyRing | None = None

    def get_app(self) -> tornado.web.Application:
        checks = load_checks()
        self.client = StubClient()
        self.gateway = Gateway(
            client=self.client,  # type: ignore[arg-type]
            settings=Settings(),
            checks=checks,
            queues={name: name for name in checks},
            keys=self.keys,
        )
        app = make_app(self.gateway)
        app.add_handlers(r".*", [(r"/echo/", EchoHandler), (r"/big", BigHandler)])
        return app

    def get_http_server(self) -> EdgeServer:
        return EdgeServer(self._app, limits=LIMITS, body_paths=("/echo/",), on_refusal=self.gateway.count_refusal)

    def json(self, path: str, method: str = "GET", **kwargs: Any) -> tuple[int, Any, HTTPResponse]:
        response = self.fetch(path, method=method, raise_error=False, **kwargs)
        return response.code, json.loads(response.body) if response.body else None, response

    async def raw(self, data: bytes, *, pause: float = 0.0, then: bytes = b"") -> bytes:
        """Send `data` on a new connection (then `then` after `pause` s); everything read until close."""
        stream = await TCPClient().connect("127.0.0.1", self.get_http_port())
        try:
            await stream.write(data)
            if then:
                await self.sleep(pause)
                await stream.write(then)
            return await stream.read_until_close()
        finally:
            stream.close()

    @staticmethod
    async def sleep(seconds: float) -> None:
        import asyncio

        await asyncio.sleep(seconds)


class TestChecksContract(ContractTest):
    def test_timeout_below_the_declared_minimum_is_400_naming_timeout(self) -> None:
        status, body, _ = self.json("/check/add?x=1&y=1&timeout=0.0001")
        assert (status, body["field"]) == (400, "timeout")
        assert f">= {DEFAULT_MIN_TIMEOUT:g}" in body["error"]
        assert self.client.published == []
        status, body, _ = self.json(f"/check/add?x=1&y=1&timeout={DEFAULT_MIN_TIMEOUT}")
        assert status == 200, body

    def test_checks_and_openapi_declare_min_timeout_and_expired(self) -> None:
        _, body, _ = self.json("/checks")
        assert {c["name"]: c["min_timeout"] for c in body["checks"]}["add"] == DEFAULT_MIN_TIMEOUT
        _, doc, _ = self.json("/openapi.json")
        params = {p["name"]: p for p in doc["paths"]["/check/add"]["get"]["parameters"]}
        assert params["timeout"]["schema"]["minimum"] == DEFAULT_MIN_TIMEOUT
        assert "EXPIRED" in doc["components"]["schemas"]["Answer"]["properties"]["state"]["enum"]
        assert {"410", "404", "401"} <= set(doc["paths"]["/result/{id}"]["get"]["responses"])
        assert {"414", "431", "413"} <= set(doc["paths"]["/check/add"]["get"]["responses"])

    def test_checks_reports_coalesce_and_cache_ttl_as_declared(self) -> None:
        _, body, _ = self.json("/checks")
        sharing = {c["name"]: (c["coalesce"], c["cache_ttl"]) for c in body["checks"]}
        # tls only caches (its identical requests in flight share a task too, as a cache implies).
        assert (sharing["add"], sharing["tls"], sharing["sleep"]) == ((True, 0.0), (False, 30.0), (False, 0.0))

    def test_a_deadline_passed_before_the_confirm_is_504_with_the_id_in_every_mode(self) -> None:
        self.client.publish_error = DeadlinePassed("deadline of 0.2s passed before the broker confirmed")
        for mode in ("async", "fire"):
            status, body, _ = self.json(f"/check/sleep?ms=1&timeout=0.2&mode={mode}")
            assert status == 504, body
            assert "before the broker confirmed" in body["error"]
            assert body["id"].startswith("stub-")
        assert body["state"] == "SENT" and "result_url" not in body  # fire: nothing will be stored
        self.client.answer = lambda check, kwargs, timeout: None  # sync: no result by the deadline
        started = time.time()
        status, body, _ = self.json("/check/sleep?ms=1&timeout=0.2")
        assert (status, body["state"], body["result_url"]) == (504, "PENDING", f"/result/{body['id']}")
        marker = self.client.results.stored[body["id"]]
        assert marker["status"] == "PENDING" and started < marker["deadline"] <= time.time() + 0.2

    def test_503_says_what_is_unavailable(self) -> None:
        self.client.answer = lambda check, kwargs, timeout: BrokerRefused("nack")  # type: ignore[return-value,arg-type]
        status, body, response = self.json("/check/add?x=1&y=2")
        assert (status, body["error"]) == (503, "broker refused the task (queue full?)")
        assert response.headers["Retry-After"]
        self.client.answer = lambda check, kwargs, timeout: BrokerUnavailable("down")  # type: ignore[return-value,arg-type]
        assert self.json("/check/add?x=1&y=2")[1]["error"] == "broker unavailable"
        self.client.results.fail = OutOfDescriptors("out of file descriptors")
        status, body, _ = self.json("/result/stub-1")
        assert (status, body["error"]) == (503, "gateway overloaded: out of file descriptors")

    def test_head_answers_like_get_without_a_body(self) -> None:
        response = self.fetch("/health", method="HEAD")
        assert (response.code, response.body) == (200, b"")
        assert response.headers["Content-Type"].startswith("application/json")

    def test_other_methods_are_405_allowing_get_and_head(self) -> None:
        status, body, response = self.json("/check/add?x=1&y=2", method="DELETE")
        assert status == 405 and "error" in body
        assert response.headers["Allow"] == "GET, HEAD"


class TestResultStates(ContractTest):
    def store(self, task_id: str, meta: dict[str, Any]) -> None:
        self.client.results.stored[task_id] = meta

    def test_pending_until_deadline_and_grace_then_expired(self) -> None:
        now = time.time()
        self.store("gw-waiting", pending_marker("gw-waiting", "checkgate.sleep", now))
        self.store("gw-gone", pending_marker("gw-gone", "checkgate.sleep", now - EXPIRY_GRACE_S - 1))
        status, body, _ = self.json("/result/gw-waiting")
        assert (status, body["state"], body["type"]) == (202, "PENDING", "sleep")
        status, body, _ = self.json("/result/gw-gone")
        assert (status, body["state"], body["type"]) == (410, "EXPIRED", "sleep")
        assert "expired" in body["error"]

    def test_a_worker_that_got_the_task_too_late_ends_in_the_same_final_state(self) -> None:
        revoked = {"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"}
        self.store("gw-late", {"status": "REVOKED", "result": revoked, "name": "checkgate.add"})
        status, body, _ = self.json("/result/gw-late")
        assert (status, body["state"]) == (410, "EXPIRED")
        # A revoke by an operator is not an expiry.
        by_hand = {**revoked, "exc_message": ["revoked"]}
        self.store("gw-revoked", {"status": "REVOKED", "result": by_hand, "name": "checkgate.add"})
        assert self.json("/result/gw-revoked")[1]["state"] == "REVOKED"

    def test_a_real_result_always_wins_over_the_marker(self) -> None:
        old = time.time() - 3600
        self.store("gw-done", {"status": "SUCCESS", "result": 3, "name": "checkgate.add", "deadline": old})
        status, body, _ = self.json("/result/gw-done")
        assert (status, body["result"]) == (200, 3)


OPS_KEY = "ops-key"
ANY_KEY = "any-key"


class TestResultAuthorization(ContractTest):
    keys = None

    def get_app(self) -> tornado.web.Application:
        self.keys = KeyRing([ApiKey("ops", digest(OPS_KEY), checks=frozenset({"add"})), ApiKey("all", digest(ANY_KEY))])
        return super().get_app()

    def get_as(self, path: str, key: str) -> tuple[int, Any]:
        status, body, _ = self.json(path, headers={"Authorization": f"Bearer {key}"})
        return status, body

    def test_result_of_a_type_the_key_may_not_run_is_a_404_like_an_unknown_id(self) -> None:
        self.client.results.stored["gw-sleep"] = {
            "status": "SUCCESS",
            "result": {"ok": True},
            "name": "checkgate.sleep",
        }
        self.client.results.stored["gw-add"] = {"status": "SUCCESS", "result": 3, "name": "checkgate.add"}
        self.client.results.stored["gw-anon"] = {"status": "SUCCESS", "result": 1}
        assert self.get_as("/result/gw-add", OPS_KEY) == (200, self.get_as("/result/gw-add", ANY_KEY)[1])
        hidden = self.get_as("/result/gw-sleep", OPS_KEY)
        unknown = self.get_as("/result/gw-nosuch", OPS_KEY)
        assert hidden[0] == unknown[0] == 404
        assert hidden[1] == {**unknown[1], "id": "gw-sleep"}
        assert self.get_as("/result/gw-anon", OPS_KEY)[0] == 404  # no type: not provably allowed
        assert self.get_as("/result/gw-sleep", ANY_KEY)[0] == 200
        assert self.json("/result/gw-add")[0] == 401

    def test_schedule_lists_only_runs_of_types_the_key_may_run(self) -> None:
        self.client.results.runs = {
            "nightly-add": {"status": "SUCCESS", "result": 3, "name": "checkgate.add", "task_id": "a"},
            "nightly-sleep": {"status": "SUCCESS", "result": {}, "name": "checkgate.sleep", "task_id": "b"},
        }
        assert set(self.get_as("/schedule", OPS_KEY)[1]["schedule"]) == {"nightly-add"}
        assert set(self.get_as("/schedule", ANY_KEY)[1]["schedule"]) == {"nightly-add", "nightly-sleep"}
        hidden, unknown = self.get_as("/schedule/nightly-sleep", OPS_KEY), self.get_as("/schedule/nowhere", OPS_KEY)
        assert hidden[0] == unknown[0] == 404
        assert hidden[1] == {**unknown[1], "error": unknown[1]["error"].replace("nowhere", "nightly-sleep")}
        assert self.get_as("/schedule/nightly-add", OPS_KEY)[0] == 200


class TestEdge(ContractTest):
    @gen_test
    async def test_malformed_heads_get_json_400(self) -> None:
        for head, field in (
            (b"GARBAGE\r\n\r\n", "request"),
            (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", "request"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\n folded: no\r\n\r\n", "headers"),
            (b"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n", "headers"),
            (b"GET /health HTTP/1.1\r\n\r\n", "headers"),  # no Host: the application's own check
            (b"GET /health HTTP/1.1\r\nHost: a b\r\n\r\n", "headers"),
        ):
            status, headers, body = parse(await self.raw(head))
            assert (status, body["field"], headers["connection"]) == (400, field, "close"), head
            assert headers["content-type"].startswith("application/json")

    @gen_test
    async def test_too_many_parameters_is_400_naming_the_query(self) -> None:
        query = "&".join(f"p{i}=1" for i in range(1001))
        status, _, body = parse(await self.raw(f"GET /checks?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
        assert (status, body["field"]) == (400, "query")
        assert "1000" in body["error"]

    @gen_test
    async def test_long_uri_414_long_head_431_even_past_the_read_limit(self) -> None:
        uri = b"/check/add?x=1&y=1&pad=" + b"a" * 20_000
        status, _, body = parse(await self.raw(b"GET " + uri + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert (status, body["field"]) == (414, "uri")
        status, _, body = parse(await self.raw(b"GET /" + b"a" * 300_000 + b" HTTP/1.1\r\n\r\n"))
        assert (status, body["field"]) == (414, "uri")
        big_header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 300_000 + b"\r\n\r\n"
        status, headers, body = parse(await self.raw(big_header))
        assert (status, body["field"], headers["connection"]) == (431, "headers", "close")
        many = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1234567890\r\n" * 70_000 + b"\r\n"  # 1.2 MB
        assert parse(await self.raw(many))[0] == 431

    @gen_test
    async def test_bodies_are_refused_from_the_head(self) -> None:
        raw = await self.raw(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        status, headers, body = parse(raw)
        assert (status, body["field"], headers["connection"]) == (413, "body", "close")
        post = b"POST /check/add?x=1&y=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 95000000\r\n\r\n"
        status, headers, body = parse(await self.raw(post + b"z" * 100_000))
        assert (status, headers["allow"], headers["connection"]) == (405, "GET, HEAD", "close")
        chunked = b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        assert parse(await self.raw(chunked))[0] == 405
        assert self.client.published == []

    @gen_test
    async def test_where_bodies_are_read_they_are_bounded_in_size_and_time(self) -> None:
        ok = b"POST /echo/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
        status, _, body = parse(await self.raw(ok))
        assert (status, body) == (200, {"bytes": 5})
        big = f"POST /echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMITS.max_body_bytes + 1}\r\n\r\n".encode()
        assert parse(await self.raw(big))[0] == 413
        stalled = b"POST /echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhi"
        status, headers, body = parse(await self.raw(stalled))
        assert (status, headers["connection"]) == (408, "close")
        assert "body" in body["error"]

    @gen_test
    async def test_a_chunk_size_line_too_long_is_a_json_400_not_a_dropped_connection(self) -> None:
        head = b"POST /echo/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        status, headers, body = parse(await self.raw(head + b"1" + b";ext" * 40 + b"\r\nx\r\n0\r\n\r\n"))
        assert (status, body["field"], headers["connection"]) == (400, "body", "close")

    @gen_test
    async def test_a_head_that_trickles_in_is_timed_out(self) -> None:
        started = time.monotonic()
        raw = await self.raw(b"GET /health HTTP/1.1\r\nHost: x\r\n", pause=LIMITS.head_timeout * 3, then=b"X: y\r\n")
        status, headers, body = parse(raw)
        assert (status, headers["connection"]) == (408, "close")
        assert "head" in body["error"]
        assert time.monotonic() - started < LIMITS.head_timeout * 3 + 5

    @gen_test
    async def test_keep_alive_and_pipelining_still_work(self) -> None:
        two = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /checks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        raw = await self.raw(two)
        assert raw.count(b"HTTP/1.1 200 OK") == 2

    def test_refusals_are_counted_in_metrics(self) -> None:
        self.fetch("/health", method="POST", body=b"x", raise_error=False)
        response = self.fetch("/metrics")
        assert b'checkgate_http_responses_total{handler="edge",code="405"} 1' in response.body


class TestAnswerNotTaken(ContractTest):
    def get_http_server(self) -> EdgeServer:
        limits = EdgeLimits(idle_timeout=0.5)
        return EdgeServer(self._app, limits=limits, on_refusal=self.gateway.count_refusal)

    @gen_test
    async def test_a_client_that_does_not_read_its_answer_is_closed_after_the_idle_timeout(self) -> None:
        stream = await TCPClient().connect("127.0.0.1", self.get_http_port())
        try:
            await stream.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            await self.sleep(2)  # not reading: the answer stalls in the socket buffers
            received = await stream.read_until_close()
        finally:
            stream.close()
        assert len(received) < BIG_ANSWER  # closed with most of the answer never taken


class FailingSocket(socket.socket):
    """A listening socket whose accept() fails with EMFILE a number of times first."""

    failures = 3

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


class TestAcceptLoop(AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        return tornado.web.Application()

    @gen_test
    async def test_accept_failures_pause_instead_of_spinning(self) -> None:
        import asyncio

        listener = FailingSocket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        accepted: list[socket.socket] = []
        ratelog = RateLimitedLog(logging.getLogger("test.accept"))
        acceptor = _Acceptor(listener, lambda conn, _addr: accepted.append(conn), ratelog)
        client = socket.create_connection(listener.getsockname())
        try:
            deadline = time.monotonic() + 5
            while not accepted and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert len(accepted) == 1
            # Three failures, each followed by a pause: three accept() calls that failed, not thousands.
            assert acceptor.pauses == 3
            assert ratelog.suppressed("accept 24") == 2
            assert ACCEPT_PAUSE_S * 3 <= 5
        finally:
            acceptor.stop()
            client.close()
            for conn in accepted:
                conn.close()
            listener.close()


def test_rate_limited_log_writes_one_line_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    ratelog = RateLimitedLog(logging.getLogger("test.ratelog"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.ratelog"):
        written = [ratelog.log(logging.INFO, "emfile", "accept failed") for _ in range(1000)]
        ratelog.log(logging.INFO, "other", "another kind")
        now[0] = 10.5
        ratelog.log(logging.INFO, "emfile", "accept failed")
    assert written.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "accept failed",
        "another kind",
        "accept failed (999 more like it in the last 10 s)",
    ]
