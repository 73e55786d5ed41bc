"""RabbitMQ stops and comes back under load: fast 503s while it is down, then 100 % success by itself."""

import threading
import time

from tests.faults.conftest import scale
from tests.faults.load import REPORT, FaultRow, Outcome, run_load
from tests.support.env import BACKEND_URL
from tests.support.services import PrivateRabbit
from tests.support.stack import Stack, http_get


def test_broker_restart(private_rabbit: PrivateRabbit, tmp_path) -> None:
    stack = Stack(tmp_path, f"cgk{private_rabbit.port}_", private_rabbit.url, BACKEND_URL)
    try:
        gateway = stack.start_gateway("gw", CHECKGATE_PUBLISH_TIMEOUT="2")
        stack.start_worker("add", ["add"], concurrency=4)
        # Celery workers retry their broker connection with a growing back-off (2, 4, 6 … s), so they may
        # be back some seconds after the broker.
        up_after, settle = scale(3.0, 10.0), scale(5.0, 15.0)
        marks: dict[str, float] = {}
        done = threading.Event()
        result: list[list[Outcome]] = []

        def load() -> None:
            path = lambda n, i: f"/check/add?x={n}&y={i}&timeout=10"  # noqa: E731
            result.append(run_load(gateway, path, clients=10, duration=300, until=done))

        thread = threading.Thread(target=load)
        started = time.monotonic()
        thread.start()
        try:
            time.sleep(2)
            private_rabbit.stop_app()
            marks["down"] = time.monotonic()
            # A new request while it is down: a 503 within a second or so, never a wait to its deadline.
            # (The load's requests in flight may see nothing: an idempotent check whose publish was cut off
            # is sent again once the broker is back, and its result still comes.)
            probe_started = time.monotonic()
            probe = http_get(gateway + "/check/add?x=0&y=1&timeout=10")
            probes = [Outcome("/check/add?x=0&y=1", *probe, probe_started, time.monotonic())]
            time.sleep(max(0.0, up_after - (time.monotonic() - marks["down"])))
            private_rabbit.start_app()
            marks["up"] = time.monotonic()
            # Wait until a check runs end to end again (gateway and worker both reconnected by themselves),
            # then keep the load on for a while to see that everything succeeds from then on.
            deadline = marks["up"] + 90
            while http_get(gateway + "/check/add?x=0&y=0&timeout=5")[0] != 200:
                assert time.monotonic() < deadline, "no check succeeded within 90 s of the broker's return"
                time.sleep(0.5)
            marks["recovered"] = time.monotonic()
            time.sleep(settle)
        finally:
            done.set()
            thread.join()
        outcomes = result[0]
    finally:
        stack.stop()
        stack.cleanup()

    unanswered = [o for o in outcomes if o.status not in (200, 503, 504)]
    assert not unanswered, unanswered[:3]
    wrong = [
        o
        for o in outcomes
        if o.status == 200
        and o.body["result"] != int(o.path.split("x=")[1].split("&")[0]) + int(o.path.split("y=")[1].split("&")[0])
    ]
    assert not wrong
    refused = [o for o in outcomes + probes if o.status == 503]
    assert probes[0].status == 503, probes[0]
    assert all("Retry-After" in o.headers for o in refused)
    # While the broker is down, callers are refused quickly instead of hanging to their deadline.
    assert max(o.ended - o.started for o in refused) < 5
    # Back to 100 % success by itself: from some point after the broker returned every request is a 200,
    # and that point leaves at least 3 s of load.
    failed_after_up = [o.ended for o in outcomes if o.status != 200 and o.ended > marks["up"]]
    recovered = max(failed_after_up, default=marks["up"])
    after = [o for o in outcomes if o.started > recovered]
    assert after and all(o.status == 200 for o in after)
    assert max(o.ended for o in outcomes) - recovered >= 3, f"not recovered {recovered - marks['up']:.1f}s after"
    REPORT.append(
        FaultRow(
            "RabbitMQ stop_app/start_app under load",
            len(outcomes),
            1,
            sum(o.status == 200 for o in outcomes),
            len(refused) + sum(o.status == 504 for o in outcomes),
            len(unanswered),
            0,
            f"outage {marks['up'] - marks['down']:.1f}s from t={marks['down'] - started:.1f}s; 503s in "
            f"≤{max(o.ended - o.started for o in refused):.2f}s; 100 % from {recovered - marks['up']:.1f}s after "
            "the broker returned",
        )
    )
