"""Server-Sent Events: the live log tail and the board's change notifications."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import requests

from tests.console.cluster import PASSWORDS, Browser, Cluster


def events(response: requests.Response) -> Iterator[tuple[str, dict, str]]:
    """(event, data, id) for each event of an open text/event-stream response."""
    name, data, event_id = "", "", ""
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line == "" and name:
            yield name, json.loads(data), event_id
            name, data, event_id = "", "", ""


def tail(browser: Browser, cluster: Cluster, stream: str, **headers: str) -> requests.Response:
    params = {"node": "node-a", "process": "app:printer", "stream": stream}
    response = browser.http.get(f"{cluster.base}/tail/stream", params=params, stream=True, timeout=10, headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response


def test_sse_tail_delivers_what_the_program_printed(cluster: Cluster) -> None:
    browser = Browser(cluster.base)
    browser.login("view", PASSWORDS["view"])  # reading logs needs no more than the viewer role
    with tail(browser, cluster, "stdout") as response:
        stream = events(response)
        name, first, offset = next(stream)
        assert name == "log" and "tick " in first["text"] and int(offset) > 0
        last_tick = max(int(n) for n in re.findall(r"tick (\d+)", first["text"]))
        # The program keeps printing: later events carry only the new lines, in order.
        name, later, _ = next(stream)
        ticks = [int(n) for n in re.findall(r"tick (\d+)", later["text"])]
        assert name == "log" and ticks and ticks[0] == last_tick + 1
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))


def test_sse_tail_of_stderr_and_resume_from_last_event_id(cluster: Cluster) -> None:
    browser = Browser(cluster.base)
    browser.login("view", PASSWORDS["view"])
    with tail(browser, cluster, "stderr") as response:
        _, first, offset = next(events(response))
    assert "err " in first["text"] and "tick" not in first["text"]
    last = max(int(n) for n in re.findall(r"err (\d+)", first["text"]))
    # A browser reconnecting with Last-Event-ID continues after what it had, without repeats.
    with tail(browser, cluster, "stderr", **{"Last-Event-ID": offset}) as response:
        _, resumed, _ = next(events(response))
    assert int(re.search(r"err (\d+)", resumed["text"]).group(1)) == last + 1


def test_sse_tail_reports_an_unknown_process_and_ends(cluster: Cluster) -> None:
    browser = Browser(cluster.base)
    browser.login("view", PASSWORDS["view"])
    params = {"node": "node-a", "process": "nope", "stream": "stdout"}
    with browser.http.get(f"{cluster.base}/tail/stream", params=params, stream=True, timeout=10) as response:
        name, data, _ = next(events(response))
    assert name == "problem" and data["final"] and data["message"].startswith("BAD_NAME")


def test_state_stream_announces_changes(cluster: Cluster) -> None:
    browser = Browser(cluster.base)
    browser.login("op", PASSWORDS["op"])
    with browser.http.get(f"{cluster.base}/events", stream=True, timeout=10) as response:
        stream = events(response)
        name, first, _ = next(stream)
        assert name == "state"
        browser.act(action="restart", scope="process", node="node-b", process="app:sleeper", confirm="yes")
        name, later, _ = next(stream)
        assert name == "state" and later["version"] > first["version"]
    board = browser.get("/board", params={"view": "group"})
    assert board.status_code == 200 and "<html" not in board.text and "app:sleeper" in board.text
