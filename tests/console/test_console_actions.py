"""Actions through the console on real supervisords: batch, rolling, partial failure, roles, CSRF, audit."""

from __future__ import annotations

import pytest
import requests

from tests.console.cluster import PASSWORDS, Browser, Cluster, wait_for


@pytest.fixture
def operator(cluster: Cluster) -> Browser:
    browser = Browser(cluster.base)
    assert browser.login("op", PASSWORDS["op"]).status_code == 302
    wait_for(lambda: all(browser.state()[n]["status"] == "ok" for n in ("node-a", "node-b")), 15, "nodes up")
    return browser


def test_batch_restart_across_both_nodes_reports_per_node(cluster: Cluster, operator: Browser) -> None:
    before = {n.name: n.info("app:sleeper")["pid"] for n in (cluster.a, cluster.b)}
    response = operator.act(action="restart", scope="group", group="cfg:sleepers", confirm="yes")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "ok"
    assert [n["node"] for n in body["nodes"]] == ["node-a", "node-b"]
    for node in body["nodes"]:
        assert node["ok"] and node["processes"] == [
            {"process": "app:sleeper", "ok": True, "message": "restarted, RUNNING"}
        ]
    for node in (cluster.a, cluster.b):
        info = node.info("app:sleeper")
        assert info["statename"] == "RUNNING" and info["pid"] != before[node.name]


def test_a_batch_with_a_dead_node_is_a_partial_failure(cluster: Cluster, operator: Browser) -> None:
    targets = ["node-a/app:printer", "node-b/app:printer", "dead/app:printer"]
    body = operator.act(action="restart", scope="selection", target=targets, confirm="yes").json()
    assert body["result"] == "partial"
    by_node = {n["node"]: n for n in body["nodes"]}
    assert by_node["node-a"]["ok"] and by_node["node-b"]["ok"]
    assert not by_node["dead"]["ok"]
    assert by_node["dead"]["processes"][0]["message"] == "connection refused"


def test_starting_a_fatal_process_reports_why_it_failed(cluster: Cluster, operator: Browser) -> None:
    wait_for(lambda: cluster.b.info("broken")["statename"] == "FATAL", 15, "broken FATAL")
    body = operator.act(action="start", scope="process", node="node-b", process="broken").json()
    assert body["result"] == "failed"
    message = body["nodes"][0]["processes"][0]["message"]
    assert message.startswith(("ABNORMAL_TERMINATION", "SPAWN_ERROR")), message


def test_rolling_restart_goes_node_by_node(cluster: Cluster, operator: Browser) -> None:
    response = operator.act(action="rolling", scope="group", group="cfg:sleepers", confirm="yes")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "ok", body
    a, b = body["nodes"]
    assert (a["node"], b["node"]) == ("node-a", "node-b")
    assert a["health"].startswith("HTTP 200")  # node-a names the gateway's /health: it was waited for
    assert b["health"] == ""  # node-b has no health_url
    # node-b's sleeper was started only after node-a's had reached RUNNING (startsecs=1).
    started_a, started_b = cluster.a.info("app:sleeper")["start"], cluster.b.info("app:sleeper")["start"]
    assert started_b >= started_a + 1


def test_rolling_restart_stops_at_the_first_failing_node(cluster: Cluster, operator: Browser) -> None:
    # Nodes go in config order: node-a first, and it fails (no such process), so node-b is left alone.
    targets = ["node-b/app:sleeper", "node-a/no-such-program"]
    before = cluster.b.info("app:sleeper")["pid"]
    body = operator.act(action="rolling", scope="selection", target=targets, confirm="yes").json()
    assert body["result"] == "failed"
    a, b = body["nodes"]
    assert a["node"] == "node-a" and a["processes"][0]["message"] == "BAD_NAME: no-such-program"
    assert b["node"] == "node-b" and b["skipped"] and "node-a failed" in b["error"]
    assert cluster.b.info("app:sleeper")["pid"] == before


def test_destructive_actions_need_confirmation(cluster: Cluster, operator: Browser) -> None:
    response = operator.act(action="stop", scope="process", node="node-a", process="app:sleeper")
    assert response.status_code == 400 and "confirm" in response.json()["error"]
    assert cluster.a.info("app:sleeper")["statename"] == "RUNNING"


def test_a_viewer_cannot_act(cluster: Cluster) -> None:
    viewer = Browser(cluster.base)
    viewer.login("view", PASSWORDS["view"])
    before = cluster.a.info("app:sleeper")["pid"]
    response = viewer.act(action="restart", scope="process", node="node-a", process="app:sleeper", confirm="yes")
    assert response.status_code == 403
    assert cluster.a.info("app:sleeper")["pid"] == before
    # ... nor read the audit log, nor act on everything; an operator cannot act on everything either.
    assert viewer.get("/audit").status_code == 403
    op = Browser(cluster.base)
    op.login("op", PASSWORDS["op"])
    assert op.act(action="stop", scope="all", confirm="yes").status_code == 403


def test_post_without_csrf_token_fails(cluster: Cluster, operator: Browser) -> None:
    before = cluster.a.info("app:sleeper")["pid"]
    form = {"action": "stop", "scope": "process", "node": "node-a", "process": "app:sleeper", "confirm": "yes"}
    assert operator.act(with_xsrf=False, **form).status_code == 403
    assert operator.act(with_xsrf=False, _xsrf="2|00|forged|1", **form).status_code == 403
    # A cross-site form would carry the victim's cookies but a foreign Origin.
    response = operator.http.post(
        f"{cluster.base}/action", data={"_xsrf": operator.xsrf, **form}, headers={"Origin": "http://evil.example"}
    )
    assert response.status_code == 403
    # Nor is a POST that names no source: browsers send Origin (and Referer) with every POST.
    bare = requests.post(
        f"{cluster.base}/action", data={"_xsrf": operator.xsrf, **form}, cookies=operator.http.cookies, timeout=10
    )
    assert bare.status_code == 403 and "Origin" in bare.json()["error"]
    referred = requests.post(
        f"{cluster.base}/action",
        data={"_xsrf": operator.xsrf, **form, "confirm": "no"},
        cookies=operator.http.cookies,
        headers={"Referer": f"{cluster.base}/"},
        timeout=10,
    )
    assert referred.status_code == 400  # past the source check: only the missing confirmation stops it
    assert cluster.a.info("app:sleeper")["pid"] == before
    # GET never changes anything: the action endpoint has no GET.
    assert operator.get("/action").status_code == 405


def test_anonymous_requests_are_refused(cluster: Cluster) -> None:
    anonymous = Browser(cluster.base)
    assert anonymous.get("/api/state").status_code == 401
    page = anonymous.get("/", headers={"Accept": "text/html"}, allow_redirects=False)
    assert page.status_code == 302 and "/console/login" in page.headers["Location"]
    anonymous.get("/login")
    assert anonymous.act(action="start", scope="process", node="node-a", process="app:sleeper").status_code == 401


def test_wrong_passwords_are_refused_then_throttled(cluster: Cluster) -> None:
    browser = Browser(cluster.base)
    statuses = [browser.login("mallory", "guess").status_code for _ in range(6)]
    assert statuses == [403] * 5 + [429]
    assert browser.get("/api/state").status_code == 401
    # Throttling is per address *and* name: a colleague behind the same address still gets in.
    assert browser.login("op", PASSWORDS["op"]).status_code == 302


def test_the_audit_log_records_actions_and_is_searchable(cluster: Cluster, operator: Browser) -> None:
    operator.act(action="restart", scope="process", node="node-b", process="app:printer", confirm="yes")
    viewer = Browser(cluster.base)
    viewer.login("view", PASSWORDS["view"])
    viewer.act(action="stop", scope="process", node="node-b", process="app:printer", confirm="yes")

    def search(**query: str) -> list[dict]:
        response = operator.get("/audit", params={**query, "format": "json"})
        assert response.status_code == 200
        return response.json()["entries"]

    entries = search(q="node-b/app:printer")
    restart = next(e for e in entries if e["action"] == "restart")
    assert (restart["user"], restart["role"], restart["result"]) == ("op", "operator", "ok")
    assert restart["target"] == "node-b/app:printer" and restart["ts"] > 0 and restart["client"] == "127.0.0.1"
    assert '"ok":true' in restart["detail"]
    denied = search(user="view", result="denied")
    assert denied and denied[0]["action"] == "stop"
    assert all(e["user"] == "op" for e in search(user="op"))
    assert search(q="no-such-thing-anywhere") == []
    assert any(e["result"] == "failed" for e in search(action="login"))
    page = operator.get("/audit", params={"q": "printer"}, headers={"Accept": "text/html"})
    assert page.status_code == 200 and "node-b/app:printer" in page.text
