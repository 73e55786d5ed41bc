"""The HTTP contract's branches in process: the real Application and EdgeServer on a real socket, a stub
client for Celery (tests/support/stub_client.py). Milliseconds each; the end-to-end tests run the real
stack (test_gateway.py, test_edge.py, test_api_keys.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import HTTPResponse
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.testing import AsyncHTTPTestCase, gen_test

from gateway.aiocelery import (
    BackendUnavailable,
    BrokerRefused,
    BrokerUnavailable,
    DeadlinePassed,
    OutOfDescriptors,
    Unroutable,
)
from gateway.aiocelery.results import EXPIRY_GRACE_S, pending_marker, undecodable_meta
from gateway.auth import ApiKey, KeyRing, digest
from gateway.config import Settings
from gateway.edge import ACCEPT_PAUSE_S, EdgeLimits, EdgeServer, _Acceptor
from gateway.http_api import make_app
from gateway.ratelog import RateLimitedLog
from gateway.state import Gateway
from tasks.checks._guard import REFUSED as TARGET_REFUSED
from tasks.registry import DEFAULT_MIN_TIMEOUT, REGISTRY, CheckType, load_checks
from tests.support.stub_client import StubClient, StubMessage

LIMITS = EdgeLimits(head_timeout=0.3, body_timeout=0.3, linger_s=0.2)


class EchoHandler(tornado.web.RequestHandler):
    """A handler that reads bodies, standing where the console's forms are (an EdgeServer body path)."""

    def post(self) -> None:
        self.write({"bytes": len(self.request.body)})


BIG_ANSWER = 32 * 1024 * 1024  # more than loopback socket buffers hold, so an unread answer stalls


class BigHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(b"x" * BIG_ANSWER)


def body_of(response: HTTPResponse) -> Any:
    """The JSON body of an answer; text (Prometheus) or None as it is."""
    if not response.body:
        return None
    try:
        return json.loads(response.body)
    except ValueError:
        return response.body.decode()


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
        checks = dict(load_checks())  # a copy: a test may redeclare a type for itself
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
        return response.code, body_of(response), response

    async def aget(self, path: str, **kwargs: Any) -> tuple[int, Any, HTTPResponse]:
        """GET from inside a `gen_test` coroutine, so that several requests can be in flight at once."""
        response = await self.http_client.fetch(self.get_url(path), raise_error=False, **kwargs)
        return response.code, body_of(response), response

    @staticmethod
    async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (on the test's loop) until `condition()` holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            await asyncio.sleep(0.002)

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
SLOW_KEY = "slow-key"


class TestResultAuthorization(ContractTest):
    keys = None

    def get_app(self) -> tornado.web.Application:
        self.keys = KeyRing(
            [
                ApiKey("ops", digest(OPS_KEY), checks=frozenset({"add"})),
                ApiKey("all", digest(ANY_KEY)),
                ApiKey("slow", digest(SLOW_KEY), rate=0.001, burst=1),
            ]
        )
        return super().get_app()

    def test_key_refusals_are_counted_under_the_check_type_the_path_names(self) -> None:
        assert self.json("/check/sleep?ms=1")[0] == 401
        assert self.get_as("/check/sleep?ms=1", OPS_KEY)[0] == 403
        assert self.get_as("/add?x=1&y=2", SLOW_KEY)[0] == 200
        assert self.get_as("/add?x=1&y=2", SLOW_KEY)[0] == 429
        assert self.json("/check/nosuch")[0] == 401  # no such type: not a label of its own
        (family,) = (
            f
            for f in text_string_to_metric_families(self.fetch("/metrics").body.decode())
            if f.name == "checkgate_http_responses"
        )
        counted = {(s.labels["handler"], s.labels["code"]): s.value for s in family.samples}
        assert counted == {
            ("sleep", "401"): 1,
            ("sleep", "403"): 1,
            ("add", "200"): 1,
            ("add", "429"): 1,
            ("unknown", "401"): 1,
        }

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
        (family,) = (
            f for f in text_string_to_metric_families(response.body.decode()) if f.name == "checkgate_http_responses"
        )
        assert [(s.labels, s.value) for s in family.samples] == [({"handler": "edge", "code": "405"}, 1)]


SLOW_HEAD_LIMIT = 16 * 1024


class TestHeadSentInTinyPieces(ContractTest):
    """F9: a head that arrives a few bytes at a time (slowloris up to the size limit) is searched for its end
    about once per byte, not once per byte per arrival, and still gets its JSON answer."""

    def get_http_server(self) -> EdgeServer:
        limits = EdgeLimits(max_head_bytes=SLOW_HEAD_LIMIT, head_timeout=30)
        return EdgeServer(self._app, limits=limits, on_refusal=self.gateway.count_refusal)

    async def trickle(self, head: bytes, piece: int = 8) -> tuple[bytes, int]:
        """Send `head` in `piece`-byte writes, each read by the server before the next; (answer, arrivals)."""
        server = self.http_server
        stream = await TCPClient().connect("127.0.0.1", self.get_http_port())
        stream.set_nodelay(True)
        arrivals = 0
        try:
            for start in range(0, len(head), piece):
                scanned = server.scanned_bytes
                await stream.write(head[start : start + piece])
                for _ in range(200):  # until the server has searched what arrived (a few loop turns)
                    if server.scanned_bytes != scanned or stream.closed():
                        break
                    await asyncio.sleep(0)
                arrivals += server.scanned_bytes != scanned
                if stream.closed() or stream.reading():
                    break
            return await stream.read_until_close(), arrivals
        except StreamClosedError:
            return b"", arrivals
        finally:
            stream.close()

    def assert_linear(self, arrivals: int, sent: int) -> None:
        # Each arrival searches its own bytes plus the 3 before them (and at most 3 past the limit), and
        # there are no more arrivals than pieces; Tornado's own search took the whole buffer each time:
        # ~arrivals * sent / 2 (here ~16 MB for 2,000 arrivals, against ~23 KB).
        assert arrivals > 500, arrivals  # the pieces did arrive (mostly) one by one
        pieces = -(-sent // 8)
        assert self.http_server.scanned_bytes <= sent + 4 * pieces, (self.http_server.scanned_bytes, sent)

    @gen_test(timeout=30)
    async def test_a_head_too_long_sent_in_pieces_is_a_431_after_linear_work(self) -> None:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (SLOW_HEAD_LIMIT + 100)
        raw, arrivals = await self.trickle(head)
        status, headers, body = parse(raw)
        assert (status, body["field"], headers["connection"]) == (431, "headers", "close")
        self.assert_linear(arrivals, SLOW_HEAD_LIMIT)

    @gen_test(timeout=30)
    async def test_a_malformed_head_sent_in_pieces_is_a_400_after_linear_work(self) -> None:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 12_000 + b"\r\nBad Name: x\r\n\r\n"
        raw, arrivals = await self.trickle(head)
        status, _, body = parse(raw)
        assert (status, body["field"]) == (400, "headers")
        self.assert_linear(arrivals, len(head))


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


# --- every status code of the contract, path by path ----------------------------------------------
#
# The in-process layer reaches each branch below with the stub client; the end-to-end tests
# (test_gateway.py, test_edge.py, test_api_keys.py) keep what crosses a process boundary.

# Path → every status code its handler can answer, each reached by a test of this module. The HTTP edge
# (gateway/edge.py) answers before any handler, whatever the path: EDGE, reached by TestEdge.
CONTRACT: dict[str, set[int]] = {
    "/check/{type}": {200, 202, 400, 401, 403, 404, 405, 429, 502, 503, 504},
    "/add": {200, 202, 400, 401, 403, 405, 429, 502, 503, 504},
    "/result/{id}": {200, 202, 400, 401, 404, 405, 410, 429, 502, 503, 504},
    "/checks": {200, 405},
    "/health": {200, 405, 503},
    "/metrics": {200, 405},
    "/openapi.json": {200, 405},
    "/schedule": {200, 401, 405, 429, 503},
    "/schedule/{name}": {200, 401, 404, 405, 410, 429, 502, 503, 504},
}
EDGE = {400, 405, 408, 413, 414, 431}
FAILURE = {"exc_type": "ValueError", "exc_message": ["boom 7"], "exc_module": "builtins"}


def failed(check: CheckType, exc: dict[str, Any], traceback: str | None = None) -> dict[str, Any]:
    return {"status": "FAILURE", "result": exc, "name": check.task_name, "traceback": traceback}


class TestModes(ContractTest):
    def test_sync_is_200_with_the_answer_of_one_task(self) -> None:
        self.client.answer = lambda check, kwargs, timeout: {
            "status": "SUCCESS",
            "result": kwargs["x"] + kwargs["y"],
            "worker": "add@test",
        }
        for path in ("/check/add?x=1&y=2", "/add?x=1&y=2"):
            status, body, response = self.json(path + "&timeout=7")
            assert status == 200, body
            assert response.headers["Content-Type"].startswith("application/json")
            assert (body["type"], body["state"], body["result"], body["worker"]) == ("add", "SUCCESS", 3, "add@test")
            assert body["id"].startswith("stub-") and body["duration_ms"] >= 0
            assert body["shared"] is False  # add coalesces: the answer says whether it was another's task
        assert [(c[0], c[1], c[2]) for c in self.client.calls] == [("checkgate.add", {"x": 1, "y": 2}, 7.0)] * 2

    def test_async_is_202_at_once_with_location_and_a_pending_marker(self) -> None:
        status, body, response = self.json("/check/sleep?ms=5&mode=async")
        assert (status, body["state"], body["type"]) == (202, "PENDING", "sleep")
        assert response.headers["Location"] == body["result_url"] == f"/result/{body['id']}"
        assert self.client.published == [
            StubMessage(body["id"], "checkgate.sleep", {"ms": 5}, REGISTRY["sleep"].default_timeout, False)
        ]
        assert self.client.results.stored[body["id"]]["status"] == "PENDING"
        assert self.client.calls == []  # nothing waited for
        status, again, _ = self.json(body["result_url"])
        assert (status, again["state"]) == (202, "PENDING")
        assert self.json("/add?x=1&y=2&mode=async")[0] == 202

    def test_fire_is_202_sent_and_asks_the_worker_to_store_nothing(self) -> None:
        status, body, _ = self.json("/check/sleep?ms=5&mode=fire")
        assert (status, body) == (202, {"id": body["id"], "type": "sleep", "state": "SENT"})
        assert self.client.published[0].ignore_result is True
        assert body["id"] not in self.client.results.stored  # no marker: nothing to poll
        assert self.json(f"/result/{body['id']}")[0] == 404

    def test_every_mode_publishes_with_the_requests_timeout_as_deadline(self) -> None:
        for mode in ("async", "fire"):
            self.json(f"/check/sleep?ms=1&mode={mode}&timeout=2.5")
        assert [m.timeout for m in self.client.published] == [2.5, 2.5]

    def test_head_answers_every_path_like_get_without_a_body(self) -> None:
        self.client.results.stored["gw-1"] = {"status": "SUCCESS", "result": 3, "name": "checkgate.add"}
        for path in (
            "/check/add?x=1&y=2",
            "/add?x=1&y=2",
            "/result/gw-1",
            "/checks",
            "/health",
            "/metrics",
            "/openapi.json",
            "/schedule",
        ):
            get, head = self.fetch(path), self.fetch(path, method="HEAD")
            assert (head.code, head.body) == (get.code, b""), path
            assert head.headers["Content-Type"] == get.headers["Content-Type"], path


class TestTaskOutcomes(ContractTest):
    def test_a_target_refused_by_the_workers_policy_is_403(self) -> None:
        refused = {"ok": False, "reason": "target_refused", "detail": "127.0.0.1:6379 is refused: a protected endpoint"}
        self.client.answer = lambda check, kwargs, timeout: {"status": "SUCCESS", "result": refused}
        status, body, _ = self.json("/check/tcp?host=example.com&port=6379")
        assert (status, body["state"], body["result"]) == (403, "SUCCESS", {**refused, "detail": TARGET_REFUSED})
        # One text for every refusal, whatever the worker (a plugin, an older version) said: no map of the stack.
        assert body["error"] == TARGET_REFUSED

    def test_a_setting_that_fails_at_a_request_is_a_503_naming_it_not_a_bare_500(self) -> None:
        # Checked at start (tests/test_config.py); this is the defence when one fails at a request all the same.
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CHECKGATE_ALLOW_NETWORKS", "garbage")
            for path in ("/check/http?url=http://example.com/", "/check/tcp?host=example.com&port=80"):
                status, body, response = self.json(path)
                assert status == 503, body
                assert body["setting"] == "CHECKGATE_ALLOW_NETWORKS"
                assert "CHECKGATE_ALLOW_NETWORKS" in body["error"] and "garbage" not in body["error"]
                assert response.headers["Retry-After"]
        assert self.json("/check/http?url=http://example.com/")[0] == 200

    def test_a_task_that_raised_is_502_with_its_type_and_message_and_no_traceback(self) -> None:
        self.client.answer = lambda check, kwargs, timeout: failed(check, FAILURE, "Traceback (most recent…")
        for path in ("/check/boom?code=7", "/add?x=1&y=2"):
            status, body, _ = self.json(path)
            assert (status, body["state"], body["error"]) == (
                502,
                "FAILURE",
                {"type": "ValueError", "message": "boom 7"},
            )
        self.gateway.settings = Settings(debug=True)
        status, body, _ = self.json("/check/boom?code=8")
        assert (status, body["error"]["traceback"]) == (502, "Traceback (most recent…")

    def test_a_result_the_gateway_cannot_decode_is_502_saying_so(self) -> None:
        self.client.answer = lambda check, kwargs, timeout: undecodable_meta("x")
        status, body, _ = self.json("/check/sleep?ms=1")
        assert (status, body["state"], body["error"]["type"]) == (502, "FAILURE", "UndecodableResult")

    def test_a_check_ended_at_its_deadline_is_504_with_the_id_to_poll(self) -> None:
        for module, kind in (("tasks.deadline", "DeadlineExceeded"), ("billiard.exceptions", "TimeLimitExceeded")):
            ended = {"exc_type": kind, "exc_message": ["deadline"], "exc_module": module}
            self.client.answer = lambda check, kwargs, timeout, ended=ended: failed(check, ended)
            for path in ("/check/sleep?ms=50000&timeout=1", "/add?x=1&y=2"):
                status, body, _ = self.json(path)
                assert (status, body["state"], body["error"]["type"]) == (504, "FAILURE", kind)
                assert body["result_url"] == f"/result/{body['id']}"

    def test_a_sync_request_past_its_deadline_is_504_with_the_id_on_every_path(self) -> None:
        self.client.answer = lambda check, kwargs, timeout: None
        for path in ("/check/sleep?ms=1&timeout=1", "/add?x=5&y=5&timeout=1"):
            status, body, _ = self.json(path)
            assert (status, body["state"], body["error"]) == (504, "PENDING", "deadline of 1s passed")
            assert self.client.results.stored[body["id"]]["status"] == "PENDING"

    def test_a_revoked_task_is_504(self) -> None:
        revoked = {"exc_type": "TaskRevokedError", "exc_message": ["revoked"], "exc_module": "celery.exceptions"}
        self.client.answer = lambda check, kwargs, timeout: {"status": "REVOKED", "result": revoked}
        status, body, _ = self.json("/check/sleep?ms=1")
        assert (status, body["state"], body["error"]["message"]) == (504, "REVOKED", "revoked")

    def test_prometheus_format_is_a_successful_scrape_whatever_the_task_did(self) -> None:
        self.client.answer = lambda check, kwargs, timeout: {"status": "SUCCESS", "result": {"ok": True}}
        status, text, response = self.json("/check/sleep?ms=1&format=prometheus")
        assert status == 200 and response.headers["Content-Type"].startswith("text/plain")
        assert samples(text)["probe_success"] == 1.0
        for answer in (lambda check, kwargs, timeout: failed(check, FAILURE), lambda check, kwargs, timeout: None):
            self.client.answer = answer  # a task that raised (502) or did not finish (504)
            status, text, _ = self.json("/check/sleep?ms=1&format=prometheus&timeout=1")
            assert (status, samples(text)["probe_success"]) == (200, 0.0)
        # Errors before any task keep their status and their JSON.
        assert self.json("/check/sleep?ms=1&format=prometheus&mode=async")[:2][0] == 400
        self.client.broker.available = False
        self.client.answer = lambda check, kwargs, timeout: BrokerUnavailable("down")  # type: ignore[return-value,arg-type]
        status, body, _ = self.json("/check/sleep?ms=1&format=prometheus")
        assert (status, body["error"]) == (503, "broker unavailable")


def samples(text: str) -> dict[str, float]:
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


BAD_INPUT = [
    ("/check/add?x=abc&y=2", "x"),
    ("/add?x=abc&y=2", "x"),
    ("/check/add?x=1", "y"),
    ("/check/add?x=1&y=2&z=3", "z"),
    ("/check/add?x=1&x=2&y=2", "x"),
    ("/check/add?x=%FF&y=1", "x"),
    ("/check/add?x=99999999999999999999&y=1", "x"),
    ("/check/add?x=9007199254740992&y=1", "x"),
    ("/check/add?x=1&y=2&mode=bogus", "mode"),
    ("/check/add?x=1&y=2&timeout=-1", "timeout"),
    ("/check/add?x=1&y=2&timeout=nan", "timeout"),
    ("/check/add?x=1&y=2&timeout=inf", "timeout"),
    ("/check/add?x=1&y=2&timeout=abc", "timeout"),
    ("/check/add?x=1&y=2&timeout=1e9", "timeout"),
    ("/check/add?x=1&y=1&timeout=0.0001", "timeout"),
    ("/check/add?x=1&y=2&format=xml", "format"),
    ("/check/add?x=1&y=2&format=prometheus&mode=fire", "format"),
    ("/check/sleep?ms=60001", "ms"),
    ("/check/sleep?ms=", "ms"),
    ("/check/http?url=file:///etc/passwd", "url"),
    ("/check/http?url=gopher://127.0.0.1:70/x", "url"),
    ("/check/http?url=http://169.254.169.254/", "url"),
    ("/check/tcp?host=example.com&port=70000", "port"),
    ("/check/http?url=http://example.com/&body_match=(a)\\1", "body_match"),
    ("/result/bad$id", "id"),
    ("/result/" + "a" * 129, "id"),
]


class TestBadInput(ContractTest):
    def test_bad_input_is_400_naming_the_field_and_nothing_is_sent(self) -> None:
        for path, field in BAD_INPUT:
            status, body, response = self.json(path)
            assert status == 400, (path, body)
            assert body["field"] == field and field in body["error"], (path, body)
            assert "Traceback" not in str(body) and response.headers["Content-Type"].startswith("application/json")
        assert self.client.published == [] and self.client.calls == []  # refused before anything was sent


class TestNotFound(ContractTest):
    def test_unknown_type_path_and_id_are_json_404(self) -> None:
        status, body, _ = self.json("/check/nosuch?x=1")
        assert (status, body["field"]) == (404, "type")
        assert {"add", "sleep", "http"} <= set(body["allowed"])
        status, body, _ = self.json("/nowhere")
        assert (status, body["error"]) == (404, "no such resource '/nowhere'")
        status, body, _ = self.json("/result/gw-unknown-1")
        assert (status, body) == (404, {"error": "unknown or expired id", "id": "gw-unknown-1"})
        status, body, _ = self.json("/schedule/nowhere")
        assert (status, body["field"]) == (404, "name")


class TestMethods(ContractTest):
    PATHS = ("/check/add?x=1&y=2", "/add?x=1&y=2", "/result/gw-1", "/checks", "/health", "/metrics")
    PATHS += ("/openapi.json", "/schedule", "/schedule/nightly")

    def test_other_methods_are_json_405_allowing_get_and_head(self) -> None:
        for path in self.PATHS:
            for method, body in (("DELETE", None), ("OPTIONS", None), ("PUT", b"x"), ("POST", b"{}")):
                status, answer, response = self.json(path, method=method, body=body)
                assert status == 405, (path, method)
                assert response.headers["Allow"] == "GET, HEAD" and "error" in answer, (path, method)
        assert self.client.published == []


class TestShedding(ContractTest):
    @gen_test
    async def test_past_max_inflight_new_requests_get_503_with_retry_after(self) -> None:
        self.gateway.settings = Settings(max_inflight=2, retry_after=7)
        self.client.hold["sleep"] = asyncio.Event()
        held = [asyncio.ensure_future(self.aget(f"/check/sleep?ms={i}")) for i in (1, 2)]
        await self.until(lambda: self.gateway.inflight == 2)
        for path in ("/check/add?x=1&y=2", "/add?x=1&y=2", "/check/sleep?ms=3&mode=fire"):
            status, body, response = await self.aget(path)
            assert (status, body["error"], body["retry_after"]) == (503, "too many requests in flight", 7)
            assert response.headers["Retry-After"] == "7"
        self.client.hold["sleep"].set()
        assert [(await f)[0] for f in held] == [200, 200]
        assert (self.gateway.inflight, sum(self.gateway.inflight_by_type.values())) == (0, 0)
        assert (await self.aget("/check/add?x=1&y=2"))[0] == 200

    @gen_test
    async def test_a_type_at_its_own_cap_leaves_room_for_the_others(self) -> None:
        self.gateway.settings = Settings(max_inflight_per_type=1)
        self.client.hold["sleep"] = asyncio.Event()
        held = asyncio.ensure_future(self.aget("/check/sleep?ms=1"))
        await self.until(lambda: self.gateway.inflight == 1)
        status, body, _ = await self.aget("/check/sleep?ms=2")
        assert (status, body["error"]) == (503, "too many 'sleep' checks in flight")
        assert (await self.aget("/check/add?x=1&y=2"))[0] == 200
        self.client.hold["sleep"].set()
        assert (await held)[0] == 200

    def test_a_deep_queue_sheds_its_type_in_every_mode_and_only_its_type(self) -> None:
        self.gateway.settings = Settings(max_queue_depth=5)
        self.gateway.queue_stats = {"sleep": {"messages": 5, "consumers": 0}, "add": {"messages": 4, "consumers": 1}}
        for mode in ("sync", "async", "fire"):
            status, body, response = self.json(f"/check/sleep?ms=1&mode={mode}")
            assert (status, body["error"]) == (503, "queue 'sleep' holds 5 waiting tasks")
            assert response.headers["Retry-After"] == "2"
        assert self.json("/check/add?x=1&y=2")[0] == 200
        assert self.client.published == [StubMessage("stub-1", "checkgate.add", {"x": 1, "y": 2}, 30.0)]

    @gen_test
    async def test_the_queue_depth_comes_from_the_broker_and_is_forgotten_while_it_is_away(self) -> None:
        self.client.broker.stats = {"sleep": {"messages": 9, "consumers": 1}}
        watcher = asyncio.ensure_future(self.gateway.watch_queues(interval=0.01))
        try:
            await self.until(lambda: self.gateway.queue_stats.get("sleep", {}).get("messages") == 9)
            self.client.broker.stats_error = BrokerUnavailable("down")
            await self.until(lambda: self.gateway.queue_stats == {})  # no stale depth sheds load
        finally:
            watcher.cancel()

    def test_outages_are_503_saying_what_is_down(self) -> None:
        answers: list[tuple[str, BaseException, str]] = [
            ("answer", BrokerRefused("nack"), "broker refused the task (queue full?)"),
            ("answer", BrokerUnavailable("down"), "broker unavailable"),
            ("answer", BackendUnavailable("down"), "result backend unavailable"),
            ("answer", OutOfDescriptors("EMFILE"), "gateway overloaded: out of file descriptors"),
            ("answer", Unroutable("no route"), "no queue 'add' for check type 'add'"),
        ]
        for _, exc, error in answers:
            self.client.answer = lambda check, kwargs, timeout, exc=exc: exc  # type: ignore[misc]
            for path in ("/check/add?x=1&y=2", "/add?x=1&y=2"):
                status, body, response = self.json(path)
                assert (status, body["error"]) == (503, error), path
                assert response.headers["Retry-After"] == "2"
        self.client.publish_error = BrokerUnavailable("down")
        for mode in ("async", "fire"):
            assert self.json(f"/check/add?x=1&y=2&mode={mode}")[1]["error"] == "broker unavailable"

    def test_with_the_backend_down_waiting_modes_are_refused_but_fire_still_works(self) -> None:
        self.client.results.available = False
        for mode in ("sync", "async"):
            status, body, _ = self.json(f"/check/add?x=1&y=2&mode={mode}")
            assert (status, body["error"]) == (503, "result backend unavailable")
        assert self.json("/check/add?x=1&y=2&mode=fire")[:2] == (202, {"id": "stub-1", "type": "add", "state": "SENT"})


class TestSharing(ContractTest):
    """`coalesce` (add) and `cache_ttl` (tls): identical sync requests share one task (gateway/sharing.py)."""

    @gen_test
    async def test_identical_requests_in_flight_share_one_task(self) -> None:
        self.client.hold["add"] = asyncio.Event()
        same = [asyncio.ensure_future(self.aget("/check/add?x=1&y=2")) for _ in range(5)]
        other = asyncio.ensure_future(self.aget("/check/add?x=2&y=2"))
        longer = asyncio.ensure_future(self.aget("/check/add?x=1&y=2&timeout=25"))  # may wait longer: its own
        await self.until(lambda: self.gateway.inflight == 7)
        self.client.hold["add"].set()
        answers = [await f for f in same]
        assert [status for status, _, _ in answers] == [200] * 5
        assert len({body["id"] for _, body, _ in answers}) == 1
        assert sorted(body["shared"] for _, body, _ in answers) == [False] + [True] * 4
        assert {(await other)[1]["id"], (await longer)[1]["id"]}.isdisjoint({answers[0][1]["id"]})
        assert len(self.client.calls) == 3
        # No cache: once the shared task ended, the next identical request runs its own.
        status, again, _ = await self.aget("/check/add?x=1&y=2")
        assert (status, again["shared"], len(self.client.calls)) == (200, False, 4)

    @gen_test
    async def test_async_and_fire_requests_never_share(self) -> None:
        for mode in ("async", "async", "fire", "fire"):
            assert (await self.aget(f"/check/add?x=1&y=2&mode={mode}"))[0] == 202
        assert len({m.task_id for m in self.client.published}) == 4

    @gen_test
    async def test_those_sharing_a_task_share_its_failure_and_its_deadline(self) -> None:
        for answer, code in ((lambda *_: BrokerUnavailable("down"), 503), (lambda *_: None, 504)):
            self.client.answer = answer  # type: ignore[assignment]
            self.client.hold["add"] = asyncio.Event()
            started = len(self.client.calls)
            waiting = [asyncio.ensure_future(self.aget("/check/add?x=3&y=4")) for _ in range(3)]
            await self.until(lambda: self.gateway.inflight == 3)
            self.client.hold["add"].set()
            assert [(await f)[0] for f in waiting] == [code] * 3
            assert len(self.client.calls) == started + 1

    def test_a_cached_type_answers_from_its_recent_result_then_runs_again(self) -> None:
        tls = self.gateway.checks["tls"]
        assert (tls.coalesce, tls.cache_ttl) == (False, 30.0)
        first = self.json("/check/tls?host=example.com")[1]
        status, second, _ = self.json("/check/tls?host=example.com")
        assert (status, second["id"], second["shared"], first["shared"]) == (200, first["id"], True, False)
        assert len(self.client.calls) == 1
        assert self.json("/check/tls?host=example.org")[1]["shared"] is False  # other arguments: its own task
        self.gateway.checks["tls"] = dataclasses.replace(tls, cache_ttl=0.05)
        self.json("/check/tls?host=example.net")
        time.sleep(0.1)  # past the (redeclared) cache_ttl
        assert self.json("/check/tls?host=example.net")[1]["shared"] is False
        assert len(self.client.calls) == 4

    def test_only_successes_are_cached(self) -> None:
        self.client.answer = lambda check, kwargs, timeout: failed(check, FAILURE)
        assert self.json("/check/tls?host=example.com")[0] == 502
        self.client.answer = StubClient._success
        status, body, _ = self.json("/check/tls?host=example.com")
        assert (status, body["shared"], len(self.client.calls)) == (200, False, 2)


OPS = "ops-key"  # may run add only
SLEEPER = "sleeper-key"  # may run sleep only
SLOW = "slow-key"  # any type, 1 request/s with a burst of 2


class TestAuth(ContractTest):
    def get_app(self) -> tornado.web.Application:
        self.keys = KeyRing(
            [
                ApiKey("ops", digest(OPS), checks=frozenset({"add"})),
                ApiKey("sleeper", digest(SLEEPER), checks=frozenset({"sleep"})),
                ApiKey("slow", digest(SLOW), rate=1, burst=2),
            ]
        )
        return super().get_app()

    def as_key(self, path: str, key: str | None, header: str = "Authorization") -> tuple[int, Any, HTTPResponse]:
        headers = {} if key is None else {header: f"Bearer {key}" if header == "Authorization" else key}
        return self.json(path, headers=headers)

    def test_without_a_valid_key_every_guarded_path_is_401(self) -> None:
        self.client.results.stored["gw-1"] = {"status": "SUCCESS", "result": 3, "name": "checkgate.add"}
        for path in ("/check/add?x=1&y=2", "/add?x=1&y=2", "/result/gw-1", "/schedule", "/schedule/nightly"):
            for key in (None, "not-a-key"):
                status, body, response = self.as_key(path, key)
                assert status == 401, (path, key)
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="checkgate"'
                assert "API key" in body["error"]
        assert self.client.published == []

    def test_public_paths_need_no_key(self) -> None:
        for path in ("/checks", "/health", "/metrics", "/openapi.json"):
            assert self.as_key(path, None)[0] == 200, path

    def test_a_type_the_key_may_not_run_is_403_and_nothing_is_sent(self) -> None:
        status, body, _ = self.as_key("/check/sleep?ms=1", OPS)
        assert (status, body["error"]) == (403, "this API key may not run 'sleep' checks")
        assert self.as_key("/add?x=1&y=2", SLEEPER)[0] == 403
        assert self.client.published == []
        assert self.as_key("/add?x=1&y=2", OPS, header="X-API-Key")[0] == 200
        assert self.as_key("/check/add?x=1&y=2&mode=async", OPS)[0] == 202

    def test_past_its_rate_a_key_gets_429_with_retry_after_on_every_guarded_path(self) -> None:
        assert [self.as_key("/check/sleep?ms=1", SLOW)[0] for _ in range(2)] == [200, 200]  # the burst
        for path in ("/check/sleep?ms=1", "/add?x=1&y=2", "/result/stub-1", "/schedule", "/schedule/nightly"):
            status, body, response = self.as_key(path, SLOW)
            assert (status, body["error"]) == (429, "rate limit of this API key exceeded"), path
            assert int(response.headers["Retry-After"]) >= 1
        assert len(self.client.calls) == 2
        assert self.as_key("/check/add?x=1&y=2", OPS)[0] == 200  # another key's bucket is its own


class TestResultCodes(ContractTest):
    def test_every_state_of_a_stored_result(self) -> None:
        now = time.time()
        stored = {
            "gw-done": {"status": "SUCCESS", "result": 3, "name": "checkgate.add"},
            "gw-waiting": pending_marker("gw-waiting", "checkgate.sleep", now + 60),
            "gw-gone": pending_marker("gw-gone", "checkgate.sleep", now - EXPIRY_GRACE_S - 1),
            "gw-raised": failed(REGISTRY["boom"], FAILURE),
            "gw-ended": failed(REGISTRY["sleep"], {"exc_type": "DeadlineExceeded", "exc_module": "tasks.deadline"}),
            "gw-revoked": {"status": "REVOKED", "result": {"exc_message": ["revoked"]}, "name": "checkgate.add"},
            "gw-bytes": {**undecodable_meta("gw-bytes"), "name": "checkgate.add"},
        }
        self.client.results.stored.update(stored)
        codes = {task_id: self.json(f"/result/{task_id}")[0] for task_id in stored}
        assert codes == {
            "gw-done": 200,
            "gw-waiting": 202,
            "gw-gone": 410,
            "gw-raised": 502,
            "gw-ended": 504,
            "gw-revoked": 504,
            "gw-bytes": 502,
        }
        self.client.results.fail = BackendUnavailable("down")
        status, body, response = self.json("/result/gw-done")
        assert (status, body["error"], response.headers["Retry-After"]) == (503, "result backend unavailable", "2")


class TestScheduleCodes(ContractTest):
    def test_schedule_answers_each_run_with_its_own_code(self) -> None:
        self.client.results.runs = {
            "nightly": {"status": "SUCCESS", "result": 3, "name": "checkgate.add", "task_id": "a"},
            "broken": {**failed(REGISTRY["boom"], FAILURE), "task_id": "b"},
            "late": {
                "status": "REVOKED",
                "result": {"exc_message": ["revoked"]},
                "name": "checkgate.add",
                "task_id": "c",
            },
        }
        expired = {"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"}
        self.client.results.runs["unrun"] = {
            "status": "REVOKED",
            "result": expired,
            "name": "checkgate.add",
            "task_id": "d",
        }
        status, body, _ = self.json("/schedule")
        assert (status, sorted(body["schedule"])) == (200, ["broken", "late", "nightly", "unrun"])
        assert body["schedule"]["broken"]["error"]["type"] == "ValueError"
        names = ("nightly", "broken", "late", "unrun", "nowhere")
        codes = {name: self.json(f"/schedule/{name}")[0] for name in names}
        assert codes == {"nightly": 200, "broken": 502, "late": 504, "unrun": 410, "nowhere": 404}
        self.client.results.fail = BackendUnavailable("down")
        for path in ("/schedule", "/schedule/nightly"):
            status, body, _ = self.json(path)
            assert (status, body["error"]) == (503, "result backend unavailable")


class TestHealthCodes(ContractTest):
    def test_ok_degraded_and_down(self) -> None:
        self.client.broker.stats = {"add": {"messages": 0, "consumers": 1}}
        status, body, _ = self.json("/health")
        assert (status, body["status"], body["queues"]) == (200, "ok", self.client.broker.stats)
        self.client.broker.stats["sleep"] = {"messages": 3, "consumers": 0}
        assert self.json("/health")[:2][0] == 200 and self.json("/health")[1]["status"] == "degraded"
        self.client.broker.stats_error = BrokerUnavailable("gone while asked")
        status, body, _ = self.json("/health")
        assert (status, body["status"], body["broker"]) == (503, "down", {"ok": False})
        self.client.broker.stats_error = None
        self.client.results.available = False
        status, body, _ = self.json("/health")
        assert (status, body["backend"]) == (503, {"ok": False})
        self.client.broker.available = False
        assert self.json("/health")[1]["broker"] == {"ok": False}


class TestOpenApi(ContractTest):
    def test_every_status_code_of_the_contract_is_documented_for_its_path(self) -> None:
        _, doc, _ = self.json("/openapi.json")
        documented = {path: {int(code) for code in op["get"]["responses"]} for path, op in doc["paths"].items()}
        for path, codes in CONTRACT.items():
            # One path per declared type: an unknown type's 404 is not one of theirs.
            paths = [f"/check/{name}" for name in self.gateway.checks] if path == "/check/{type}" else [path]
            wanted = (codes | EDGE) - ({404} if path == "/check/{type}" else set())
            for each in paths:
                assert wanted <= documented[each], (each, sorted(wanted - documented[each]))
