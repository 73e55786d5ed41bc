"""Checks from several locations: the contract's branches in process (the real Application, a stub client
for Celery: tests/support/stub_client.py), the worker's queue selection, and the queues celeryconfig
declares. End to end, with two sites as network namespaces and one going dark: tests/ha/test_locations.py."""

from __future__ import annotations

import json
import runpy
import time
from types import SimpleNamespace
from typing import Any

import jsonschema_rs
import pytest
import tornado.web
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import HTTPResponse
from tornado.testing import AsyncHTTPTestCase

from gateway.aiocelery import BrokerRefused, BrokerUnavailable
from gateway.aiocelery.messages import MessageFactory, route_of
from gateway.config import Settings
from gateway.http_api import make_app
from gateway.locations import Locations
from gateway.openapi import openapi_document
from gateway.state import Gateway
from tasks.locations import consume_location_queues, location_of, location_queue, parse_names, worker_selection
from tasks.registry import CheckType, load_checks
from tests.support.stack import ROOT, _environ
from tests.support.stub_client import StubClient

SITES = ("eu-west", "us-east", "ap-south")


def openapi_schema(name: str, checks: dict[str, CheckType]) -> dict[str, Any]:
    """A component schema of the OpenAPI document as JSON Schema (OpenAPI 3.0's `nullable` made a type)."""

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: convert(v) for k, v in node.items() if k != "nullable"}
            if node.get("nullable") and isinstance(node.get("type"), str):
                out["type"] = [node["type"], "null"]
            return out
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    return convert(openapi_document(checks)["components"]["schemas"][name])


class LocationsTest(AsyncHTTPTestCase):
    """A gateway with three locations; `consumers` sets the live consumers of every type's queue there."""

    def get_app(self) -> tornado.web.Application:
        self.checks = load_checks()
        self.client = StubClient()
        queues = {name: f"q-{check.queue}" for name, check in self.checks.items()}
        self.gateway = Gateway(
            client=self.client,  # type: ignore[arg-type]
            settings=Settings(),
            checks=self.checks,
            queues=queues,
            locations=Locations(SITES, queues),
        )
        self.consumers(**{site: 1 for site in SITES})
        return make_app(self.gateway)

    def consumers(self, **by_site: int) -> None:
        stats = {queue: {"messages": 0, "consumers": 1} for queue in self.gateway.queues.values()}
        for site, count in by_site.items():
            for queue in set(self.gateway.queues.values()):
                stats[location_queue(queue, site)] = {"messages": 0, "consumers": count}
        self.gateway.queue_stats = stats
        self.client.broker.stats = dict(stats)

    def answer_by_site(self, **outcomes: Any) -> None:
        """What a sync task answers in each site: a result dict (SUCCESS), None (no answer by the deadline)
        or an exception (raised by the publish there)."""

        def answer(check: CheckType, kwargs: dict[str, Any], timeout: float, queue: str | None) -> Any:
            outcome = outcomes[location_of(queue) or ""]
            if outcome is None or isinstance(outcome, BaseException):
                return outcome
            if isinstance(outcome, dict) and outcome.get("status") == "FAILURE":
                return {**outcome, "name": check.task_name, "queue": queue}
            return {"status": "SUCCESS", "result": outcome, "name": check.task_name, "queue": queue}

        self.client.answer_at = answer

    def json(self, path: str) -> tuple[int, Any, HTTPResponse]:
        response = self.fetch(path, raise_error=False)
        body = json.loads(response.body) if response.body and response.body[:1] == b"{" else response.body
        return response.code, body, response


class TestWhereAChecksRuns(LocationsTest):
    def test_one_location_routes_to_its_queue_and_answers_as_usual_saying_where(self) -> None:
        status, body, _ = self.json("/check/sleep?ms=1&location=us-east")
        assert (status, body["state"], body["location"]) == (200, "SUCCESS", "us-east")
        assert self.client.routed[body["id"]] == "q-sleep@us-east"
        status, body, _ = self.json("/check/sleep?ms=1")  # no location: the plain queue, as before
        assert status == 200 and "location" not in body and self.client.routed[body["id"]] is None
        status, body, response = self.json("/check/sleep?ms=1&location=eu-west&mode=async")
        assert (status, body["location"]) == (202, "eu-west")
        assert self.client.routed[body["id"]] == "q-sleep@eu-west"
        assert response.headers["Location"] == body["result_url"]

    def test_bad_location_and_require_are_400s_naming_the_field(self) -> None:
        for query, field, says in (
            ("location=mars", "location", "unknown location 'mars'; allowed: all, eu-west, us-east, ap-south"),
            ("location=", "location", "an empty location name"),
            ("location=eu-west,,us-east", "location", "an empty location name"),
            ("location=eu-west,eu-west", "location", "more than once"),
            ("location=all,eu-west", "location", "stands alone"),
            ("require=any", "require", "needs location=all"),
            ("location=eu-west&require=any", "require", "needs location=all"),
            ("location=all&require=some", "require", "must be all, any or a number"),
            ("location=all&require=0", "require", "must be all, any or a number"),
            ("location=all&require=%EF%BC%92", "require", "must be all, any or a number"),  # a fullwidth 2
            ("location=eu-west,us-east&require=3", "require", "asks 3 locations of the 2 named"),
            ("location=all&require=any&mode=async", "require", "needs mode=sync"),
        ):
            status, body, _ = self.json(f"/check/sleep?ms=1&{query}")
            assert (status, body["field"]) == (400, field), query
            assert says in body["error"], (query, body)
        assert self.client.published == []

    def test_location_without_configured_locations_is_a_400(self) -> None:
        self.gateway.locations = Locations((), self.gateway.queues)
        status, body, _ = self.json("/check/sleep?ms=1&location=eu-west")
        assert (status, body["field"]) == (400, "location")
        assert "CHECKGATE_LOCATIONS" in body["error"]

    def test_a_checks_own_parameter_cannot_be_called_location(self) -> None:
        status, body, _ = self.json("/check/sleep?ms=1&nope=1")
        assert status == 400
        assert "location" in body["error"] and "require" in body["error"]  # listed as the gateway's own


class TestNoLiveConsumer(LocationsTest):
    def test_a_location_without_consumer_is_an_immediate_503_naming_it(self) -> None:
        self.consumers(**{"eu-west": 1, "us-east": 0, "ap-south": 0})
        started = time.monotonic()
        status, body, response = self.json("/check/sleep?ms=1&location=us-east&timeout=30")
        assert time.monotonic() - started < 5  # not the 30 s deadline
        assert (status, body["locations"]) == (503, ["us-east"])
        assert "us-east" in body["error"] and response.headers["Retry-After"] == "2"
        status, body, _ = self.json("/check/sleep?ms=1&location=eu-west,us-east,ap-south")
        assert (status, body["locations"]) == (503, ["us-east", "ap-south"])
        assert self.client.published == []  # nothing published anywhere

    def test_all_fans_out_to_the_live_locations_and_names_those_skipped(self) -> None:
        self.consumers(**{"eu-west": 1, "us-east": 0, "ap-south": 2})
        status, body, _ = self.json("/check/sleep?ms=1&location=all")
        assert (status, body["ok"], set(body["locations"]), body["skipped"]) == (
            200,
            True,
            {"eu-west", "ap-south"},
            ["us-east"],
        )
        status, body, _ = self.json("/check/sleep?ms=1&location=all&require=3")
        assert (status, body["locations"]) == (503, ["us-east"])
        assert "require=3" in body["error"]
        self.consumers(**{site: 0 for site in SITES})
        status, body, _ = self.json("/check/sleep?ms=1&location=all")
        assert (status, body["locations"]) == (503, list(SITES))

    def test_unknown_stats_leave_the_publish_to_answer(self) -> None:
        # Before the first passive declare (or with the broker away) nothing says a location is dark.
        self.gateway.queue_stats = {}
        status, body, _ = self.json("/check/sleep?ms=1&location=us-east")
        assert (status, body["location"]) == (200, "us-east")
        self.client.answer = lambda check, kwargs, timeout: BrokerUnavailable("down")  # type: ignore[return-value,arg-type]
        status, body, _ = self.json("/check/sleep?ms=1&location=us-east")
        assert (status, body["error"]) == (503, "broker unavailable")


class TestVerdict(LocationsTest):
    def verdict(self, query: str, **outcomes: Any) -> tuple[int, dict[str, Any]]:
        self.answer_by_site(**outcomes)
        status, body, _ = self.json(f"/check/sleep?ms=1&timeout=0.5&{query}")
        jsonschema_rs.validate(openapi_schema("FanoutAnswer", self.checks), body)
        return status, body

    def test_every_branch_of_require(self) -> None:
        up, down = {"ok": True}, {"ok": False, "reason": "timeout"}
        raised = {"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["bad"]}}
        two = "location=eu-west,us-east"
        cases = [
            # (query, outcomes, status, ok, passed, failed, undecided)
            (two, {"eu-west": up, "us-east": up}, 200, True, 2, 0, 0),
            (two, {"eu-west": up, "us-east": down}, 200, False, 1, 1, 0),
            (two + "&require=any", {"eu-west": up, "us-east": down}, 200, True, 1, 1, 0),
            (two, {"eu-west": up, "us-east": None}, 504, None, 1, 0, 1),  # us-east may still pass
            (two + "&require=any", {"eu-west": up, "us-east": None}, 200, True, 1, 0, 1),
            (two, {"eu-west": down, "us-east": None}, 200, False, 0, 1, 1),  # cannot pass any more
            (two + "&require=any", {"eu-west": down, "us-east": None}, 504, None, 0, 1, 1),
            (two, {"eu-west": up, "us-east": raised}, 200, False, 1, 1, 0),  # could not run there: failed
            ("location=all&require=2", {"eu-west": up, "us-east": up, "ap-south": None}, 200, True, 2, 0, 1),
            ("location=all&require=2", {"eu-west": up, "us-east": down, "ap-south": None}, 504, None, 1, 1, 1),
            ("location=all&require=2", {"eu-west": None, "us-east": down, "ap-south": down}, 200, False, 0, 2, 1),
        ]
        for query, outcomes, status, ok, passes, fails, undecided in cases:
            got, body = self.verdict(query, **outcomes)
            assert (got, body["ok"], body["passed"], body["failed"], body["undecided"]) == (
                status,
                ok,
                passes,
                fails,
                undecided,
            ), (query, outcomes, body)
            assert body["state"] == ("SUCCESS" if ok is not None else "PENDING")
            assert set(body["locations"]) == set(outcomes)
            assert ("error" in body) == (ok is None)

    def test_each_location_keeps_its_usual_answer_and_its_own_id(self) -> None:
        status, body = self.verdict("location=eu-west,us-east", **{"eu-west": {"ok": True}, "us-east": None})
        assert (status, body["require"], body["needed"]) == (504, "all", 2)
        west, east = body["locations"]["eu-west"], body["locations"]["us-east"]
        assert (west["status"], west["state"], west["location"], west["result"]) == (
            200,
            "SUCCESS",
            "eu-west",
            {"ok": True},
        )
        assert (east["status"], east["state"], east["location"]) == (504, "PENDING", "us-east")
        assert east["result_url"] == f"/result/{east['id']}" and west["id"] != east["id"]
        assert self.client.routed[west["id"]] == "q-sleep@eu-west"
        assert self.client.routed[east["id"]] == "q-sleep@us-east"
        # /result/<id> of each works as for any check: the marker of the one that did not answer is pending,
        # the other's stored result says where it ran.
        status, result, _ = self.json(east["result_url"])
        assert (status, result["state"]) == (202, "PENDING")
        status, result, _ = self.json(f"/result/{west['id']}")
        assert (status, result["location"], result["result"]) == (200, "eu-west", {"ok": True})

    def test_a_location_whose_publish_failed_is_undecided_and_all_failing_is_a_503(self) -> None:
        status, body = self.verdict(
            "location=eu-west,us-east&require=any",
            **{"eu-west": {"ok": True}, "us-east": BrokerRefused("nack")},
        )
        assert (status, body["ok"], body["undecided"]) == (200, True, 1)
        assert body["locations"]["us-east"] == {
            "status": 503,
            "error": "broker refused the task (queue full?)",
            "retry_after": 2,
        }
        self.answer_by_site(**{"eu-west": BrokerUnavailable("down"), "us-east": BrokerUnavailable("down")})
        status, body, response = self.json("/check/sleep?ms=1&location=eu-west,us-east")
        assert (status, body["error"], body["locations"]) == (503, "broker unavailable", ["eu-west", "us-east"])
        assert response.headers["Retry-After"]

    def test_async_and_fire_fan_out_give_an_id_per_location(self) -> None:
        status, body, _ = self.json("/check/sleep?ms=1&location=eu-west,ap-south&mode=async")
        jsonschema_rs.validate(openapi_schema("FanoutAnswer", self.checks), body)
        assert (status, body["state"], set(body["locations"])) == (202, "PENDING", {"eu-west", "ap-south"})
        for site, part in body["locations"].items():
            assert (part["status"], part["state"]) == (202, "PENDING")
            assert self.client.routed[part["id"]] == f"q-sleep@{site}"
            assert self.json(part["result_url"])[0] == 202
        status, body, _ = self.json("/check/sleep?ms=1&location=all&mode=fire")
        assert (status, body["state"], len(body["locations"])) == (202, "SENT", 3)
        assert {part["state"] for part in body["locations"].values()} == {"SENT"}

    def test_prometheus_labels_every_series_with_its_location(self) -> None:
        self.answer_by_site(**{"eu-west": {"ok": True, "slept_ms": 1}, "us-east": {"ok": False}, "ap-south": None})
        response = self.fetch("/check/sleep?ms=1&timeout=0.5&location=all&require=any&format=prometheus")
        assert response.code == 200
        families = {f.name: f for f in text_string_to_metric_families(response.body.decode())}
        success = {s.labels["location"]: s.value for s in families["probe_success"].samples}
        assert success == {"eu-west": 1.0, "us-east": 0.0, "ap-south": 0.0}
        ran = {s.labels["location"]: s.value for s in families["checkgate_check_ran"].samples}
        assert ran == {"eu-west": 1.0, "us-east": 1.0, "ap-south": 0.0}
        assert [s.labels["location"] for s in families["checkgate_check_slept_ms"].samples] == ["eu-west"]
        (verdict,) = families["checkgate_check_verdict"].samples
        assert (verdict.labels, verdict.value) == ({"type": "sleep", "require": "any"}, 1.0)
        assert families["checkgate_check_verdict_decided"].samples[0].value == 1.0
        # One location: its usual series, each labelled with it.
        response = self.fetch("/check/sleep?ms=1&location=eu-west&format=prometheus")
        samples = [s for f in text_string_to_metric_families(response.body.decode()) for s in f.samples]
        assert samples and all(s.labels["location"] == "eu-west" for s in samples)

    def test_openapi_lists_location_and_require_when_there_are_locations(self) -> None:
        _, doc, _ = self.json("/openapi.json")
        params = {p["name"]: p for p in doc["paths"]["/check/sleep"]["get"]["parameters"]}
        locations = params["location"]["schema"]["enum"]
        assert {"all", "eu-west", "us-east,ap-south", "eu-west,us-east,ap-south"} <= set(locations)
        assert params["require"]["schema"]["enum"] == ["all", "any", "1", "2", "3"]
        assert "FanoutAnswer" in json.dumps(doc["paths"]["/check/sleep"]["get"]["responses"]["504"])
        bare = openapi_document(self.checks)
        assert "location" not in {p["name"] for p in bare["paths"]["/check/sleep"]["get"]["parameters"]}


class TestSharingKeepsLocationsApart(LocationsTest):
    def test_a_cached_result_is_never_answered_for_another_location(self) -> None:
        # tls keeps its results for 30 s: the same check from elsewhere must run there.
        def first(location: str) -> dict[str, Any]:
            return self.json(f"/check/tls?host=example.org&location={location}")[1]

        west = first("eu-west")
        east = first("us-east")
        plain = self.json("/check/tls?host=example.org")[1]
        assert not (west["shared"] or east["shared"] or plain["shared"])
        assert len({west["id"], east["id"], plain["id"]}) == 3
        again = first("eu-west")
        assert (again["shared"], again["id"], again["location"]) == (True, west["id"], "eu-west")
        both = self.json("/check/tls?host=example.org&location=eu-west,us-east")[1]
        assert {site: part["id"] for site, part in both["locations"].items()} == {
            "eu-west": west["id"],
            "us-east": east["id"],
        }


class TestListings(LocationsTest):
    def test_checks_lists_the_locations_and_their_consumers(self) -> None:
        self.consumers(**{"eu-west": 2, "us-east": 0, "ap-south": 1})
        status, body, _ = self.json("/checks")
        assert (status, body["locations"]) == (200, list(SITES))
        (sleep,) = (c for c in body["checks"] if c["name"] == "sleep")
        assert sleep["locations"] == {
            "eu-west": {"queue": "q-sleep@eu-west", "consumers": 2},
            "us-east": {"queue": "q-sleep@us-east", "consumers": 0},
            "ap-south": {"queue": "q-sleep@ap-south", "consumers": 1},
        }

    def test_health_lists_each_location_and_a_dark_one_degrades_it(self) -> None:
        status, body, _ = self.json("/health")
        assert (status, body["status"]) == (200, "ok")
        assert body["locations"]["eu-west"]["live"] and body["locations"]["eu-west"]["types"]["sleep"] == {
            "queue": "q-sleep@eu-west",
            "messages": 0,
            "consumers": 1,
        }
        # A location that serves some types only is fine; one with no consumer at all is not.
        stats = dict(self.client.broker.stats)
        stats["q-sleep@us-east"] = {"messages": 3, "consumers": 0}
        self.client.broker.stats = stats
        assert self.json("/health")[1]["status"] == "ok"
        self.consumers(**{"eu-west": 1, "us-east": 1, "ap-south": 0})
        status, body, _ = self.json("/health")
        assert (status, body["status"], body["locations"]["ap-south"]["live"]) == (200, "degraded", False)


def test_a_worker_consumes_its_own_location_and_never_another() -> None:
    declared = ["p_http", "p_tcp", "p_http@eu", "p_tcp@eu", "p_http@us", "p_tcp@us"]
    # No -Q: every declared queue is selected at first.
    assert worker_selection(declared, declared, "", False) == ["p_http", "p_tcp"]
    assert worker_selection(declared, declared, "eu", False) == ["p_http", "p_http@eu", "p_tcp", "p_tcp@eu"]
    assert worker_selection(declared, declared, "eu", True) == ["p_http@eu", "p_tcp@eu"]
    # -Q http: its location queue joins it; -Q naming another location's queue does not take it.
    assert worker_selection(["p_http"], declared, "us", False) == ["p_http", "p_http@us"]
    assert worker_selection(["p_http", "p_tcp@eu"], declared, "us", True) == ["p_http@us"]
    assert worker_selection(["p_http@eu"], declared, "eu", True) == ["p_http@eu"]
    # A plain queue without a location twin (Celery's default queue) stays plain.
    assert worker_selection(["p_celery"], declared, "eu", False) == ["p_celery"]


def test_the_worker_hook_applies_the_selection_or_stops_the_worker() -> None:
    app = configured_app(CHECKGATE_QUEUE_PREFIX="pre_", CHECKGATE_LOCATIONS="eu,us")
    queues = app.amqp.queues
    worker = SimpleNamespace(app=app)
    consume_location_queues(instance=worker, conf=SimpleNamespace(WORKER_LOCATION="eu", WORKER_LOCATION_ONLY=False))
    chosen = set(queues.consume_from)
    assert {"pre_http", "pre_http@eu"} <= chosen and not any(name.endswith("@us") for name in chosen)
    queues.select(["pre_http@us"])  # -Q naming only another location's queue: nothing left, the worker stops
    with pytest.raises(SystemExit) as stopped:
        consume_location_queues(instance=worker, conf=SimpleNamespace(WORKER_LOCATION="eu", WORKER_LOCATION_ONLY=True))
    assert stopped.value.code == 78
    assert list(queues.consume_from) == ["pre_http@us"]  # untouched: the worker never started consuming


def test_location_names_are_validated() -> None:
    assert parse_names(" eu-west, us-east ,", "X") == ("eu-west", "us-east")
    for bad, says in (("eu west", "must be"), ("all", "reserved"), ("a,a", "more than once"), ("a@b", "must be")):
        try:
            parse_names(bad, "CHECKGATE_LOCATIONS")
        except ValueError as exc:
            assert says in str(exc) and "CHECKGATE_LOCATIONS" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")


def configured_app(**env: str) -> Celery:
    """A Celery app configured by celeryconfig under the test's environment plus `env`."""
    import os

    with _environ({**os.environ, **env}):
        settings = runpy.run_path(str(ROOT / "celeryconfig.py"))
    app = Celery("locations-test", set_as_current=False)
    app.conf.update({k: v for k, v in settings.items() if k.islower() and not k.startswith("_") and k != "locations"})
    return app


def test_celeryconfig_declares_each_location_queue_like_its_plain_queue() -> None:
    app = configured_app(
        CHECKGATE_QUEUE_PREFIX="pre_", CHECKGATE_LOCATIONS="eu-west,us-east", CHECKGATE_QUEUE_TYPE="quorum"
    )
    queues = {q.name: q for q in app.conf.task_queues}
    plain = queues["pre_http"]
    for site in ("eu-west", "us-east"):
        twin = queues[f"pre_http@{site}"]
        assert (twin.exchange, twin.routing_key, twin.queue_arguments, twin.durable) == (
            plain.exchange,
            f"pre_http@{site}",
            plain.queue_arguments,
            True,
        )
    # A worker's own location is declared even when its environment lacks the list.
    alone = configured_app(CHECKGATE_QUEUE_PREFIX="pre_", CHECKGATE_LOCATION="ap-south")
    assert "pre_http@ap-south" in {q.name for q in alone.conf.task_queues}
    for bad in (
        {"CHECKGATE_LOCATIONS": "all"},
        {"CHECKGATE_LOCATION": "x y"},
        {"CHECKGATE_LOCATION_ONLY": "maybe"},
        {"CHECKGATE_LOCATION_ONLY": "1"},  # without CHECKGATE_LOCATION
    ):
        try:
            configured_app(**bad)
        except ValueError as exc:
            assert next(iter(bad)) in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_a_message_for_a_location_is_routed_to_its_queue_by_celerys_rule() -> None:
    app = configured_app(CHECKGATE_QUEUE_PREFIX="pre_", CHECKGATE_LOCATIONS="eu-west")
    there_route = route_of(app, "checkgate.http", {"queue": "pre_http@eu-west"})
    assert (there_route.exchange, there_route.routing_key) == ("", "pre_http@eu-west")
    here_route = route_of(app, "checkgate.http")
    assert (here_route.exchange, here_route.routing_key) == ("", "pre_http")
    factory = MessageFactory(app)
    there = factory.build("id-1", "checkgate.http", {"url": "http://a/"}, timeout=5, queue="pre_http@eu-west")
    here = factory.build("id-2", "checkgate.http", {"url": "http://a/"}, timeout=5)
    assert (there.exchange, there.routing_key, here.routing_key) == ("", "pre_http@eu-west", "pre_http")
    # Only the route differs: the same headers (but the id) and body.
    assert {k: v for k, v in there.headers.items() if k not in ("id", "root_id", "expires")} == {
        k: v for k, v in here.headers.items() if k not in ("id", "root_id", "expires")
    }
    assert there.body == here.body
