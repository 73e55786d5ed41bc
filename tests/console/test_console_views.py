"""The console shows real nodes: both supervisords, their processes, dead nodes, restart loops, health."""

from __future__ import annotations

import time

from tests.console.cluster import PASSWORDS, Browser, Cluster, Node, wait_for


def viewer(cluster: Cluster) -> Browser:
    browser = Browser(cluster.base)
    assert browser.login("view", PASSWORDS["view"]).status_code == 302
    return browser


def test_lists_both_nodes_and_their_processes(cluster: Cluster) -> None:
    browser = viewer(cluster)
    state = wait_for(
        lambda: (s := browser.state())["node-a"]["status"] == "ok" and s["node-b"]["status"] == "ok" and s,
        15,
        "both nodes polled",
    )
    for name in ("node-a", "node-b"):
        procs = {p["name"]: p for p in state[name]["processes"]}
        assert {"app:sleeper", "app:printer", "crasher", "broken"} <= set(procs)
        assert procs["app:sleeper"]["pid"] > 0
        assert "password" not in str(state[name]) and "node-pass" not in str(state[name])
    page = browser.get("/?view=machine", headers={"Accept": "text/html"})
    assert page.status_code == 200
    for text in ("node-a", "node-b", "app:sleeper", "app:printer", "crasher"):
        assert text in page.text
    assert "node-pass-for-tests" not in page.text
    groups = browser.get("/?view=group", headers={"Accept": "text/html"}).text
    assert "sleepers" in groups and "logical group" in groups and "supervisor group" in groups


def test_fatal_process_is_shown_with_a_start_action(cluster: Cluster) -> None:
    browser = Browser(cluster.base)
    browser.login("op", PASSWORDS["op"])
    wait_for(lambda: _proc(browser.state(), "node-b", "broken")["state"] == "FATAL", 15, "broken FATAL")
    page = browser.get("/", headers={"Accept": "text/html"}).text
    row = page[page.index('data-key="node-b/broken"') :]
    row = row[: row.index("</tr>")]
    assert "FATAL" in row and 'data-action="start"' in row and 'data-action="stop"' not in row


def test_restart_loop_is_flagged(cluster: Cluster) -> None:
    browser = viewer(cluster)
    crasher = wait_for(lambda: (p := _proc(browser.state(), "node-a", "crasher"))["restart_loop"] and p, 20, "loop")
    assert crasher["recent_starts"] >= 3
    assert "restart loop" in browser.get("/", headers={"Accept": "text/html"}).text
    assert not _proc(browser.state(), "node-a", "app:sleeper")["restart_loop"]


def test_dead_nodes_show_an_error_and_the_page_stays_fast(cluster: Cluster) -> None:
    browser = viewer(cluster)
    state = wait_for(
        lambda: (s := browser.state())["dead"]["status"] == "error" and s["silent"]["status"] == "error" and s,
        10,
        "dead nodes in error",
    )
    assert state["dead"]["error"] == "connection refused"
    assert state["silent"]["error"] == "no answer within 1 s"
    assert state["node-a"]["status"] == "ok"
    for _ in range(5):
        started = time.monotonic()
        page = browser.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and time.monotonic() - started < 0.5
    assert "Node unreachable" in page.text and "connection refused" in page.text


def test_application_health_is_shown(cluster: Cluster) -> None:
    browser = viewer(cluster)
    health = wait_for(lambda: browser.state()["node-a"]["health"], 30, "health polled")
    health = wait_for(lambda: (h := browser.state()["node-a"]["health"])["ok"] and h, 30, "gateway healthy")
    assert health["status"] in ("ok", "degraded")
    assert health["queues"] and all({"messages", "consumers"} <= set(q) for q in health["queues"].values())
    assert "Application health" in browser.get("/", headers={"Accept": "text/html"}).text


def test_a_node_reconnects_by_itself(cluster: Cluster) -> None:
    browser = viewer(cluster)
    wait_for(lambda: browser.state()["late"]["status"] == "error", 10, "late node in error")
    late = Node(cluster.tmp / "late", "late", port=cluster.late_port).start()
    try:
        state = wait_for(lambda: (s := browser.state())["late"]["status"] == "ok" and s, 10, "late node back")
        assert {p["name"] for p in state["late"]["processes"]} == {"app:sleeper", "app:printer"}
    finally:
        late.stop()


def _proc(state: dict, node: str, name: str) -> dict:
    return next(p for p in state[node]["processes"] if p["name"] == name)
