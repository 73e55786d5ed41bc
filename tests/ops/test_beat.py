"""Two beats on one RedBeat lock with a real worker: each interval fires once, and a killed leader is replaced."""

from __future__ import annotations

import itertools
import signal
import sys
import time

import msgpack
import redis

from tasks.schedule import latest_key
from tests.ops.conftest import Deployment
from tests.ops.helpers import Procs, wait_for
from tests.ops.probes import BEAT_KEY
from tests.support.env import BACKEND_URL

LOCK_TIMEOUT = 3  # seconds; the test app's redbeat_lock_timeout (CHECKGATE_TEST_BEAT_LOCK)
EXPIRES = 1.0  # every = "1s": a run's expires is min(interval, timeout) = 1 s


def publish_times(client: redis.Redis, tag: str) -> list[float]:
    """When beat sent each run: the deadline the probe saw, less the fixed expires."""
    return sorted(float(v) - EXPIRES for v in client.lrange(BEAT_KEY + tag, 0, -1))


def assert_one_run_per_interval(times: list[float]) -> None:
    """Consecutive runs at least one interval apart (a second beat firing would make a short gap)."""
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.95 for gap in gaps), f"two runs within one interval: gaps {gaps}"


def test_two_beats_fire_each_interval_once_and_fail_over(deployment: Deployment) -> None:
    tag = f"{deployment.prefix}probe"
    schedule = deployment.workdir / "schedule.toml"
    schedule.write_text(f'[checks.probe]\ntype = "beat_probe"\nevery = "1s"\nparams = {{ tag = "{tag}" }}\n')
    env = {**deployment.env, "CHECKGATE_SCHEDULE": str(schedule), "CHECKGATE_TEST_BEAT_LOCK": str(LOCK_TIMEOUT)}
    client = redis.Redis.from_url(BACKEND_URL)
    procs = Procs(deployment.workdir)
    celery = [sys.executable, "-m", "celery", "-A", "tests.ops.beatapp"]
    try:
        worker = [*celery, "worker", "-Q", f"{deployment.prefix}beatprobe", "-P", "threads", "-c", "4"]
        worker += ["-n", f"{deployment.prefix}probe@%h", "--without-gossip", "--without-mingle", "-l", "info"]
        procs.spawn("worker", worker, env)
        # Both beats start together with the worker (runs sent before it is ready expire unrecorded).
        beats = {name: procs.spawn(name, [*celery, "beat", "-l", "info"], env) for name in ("beat-a", "beat-b")}

        wait_for(lambda: client.llen(BEAT_KEY + tag) >= 1, 60, lambda: "a first run: " + procs.log("worker")[-1500:])
        time.sleep(5)
        first = publish_times(client, tag)
        # ~5 runs in ~5 s from two beats: one fires (the other would double the count).
        assert 4 <= len(first) <= 7, first
        assert_one_run_per_interval(first)
        leaders = [name for name in beats if "beat: Acquired lock" in procs.log(name)]
        assert len(leaders) == 1, {name: procs.log(name)[-1500:] for name in beats}
        leader = leaders[0]
        standby = next(name for name in beats if name != leader)
        assert "Sending due task probe" not in procs.log(standby)

        # The leader dies without releasing the lock: the standby takes over once the lock expires.
        killed_at = time.time()
        beats[leader].send_signal(signal.SIGKILL)
        beats[leader].wait()
        wait_for(lambda: "Sending due task probe" in procs.log(standby), LOCK_TIMEOUT + 10, "the standby to fire")
        time.sleep(1.5)
        times = publish_times(client, tag)
        after = [t for t in times if t > killed_at]
        assert len(after) >= 2, times
        assert after[0] - killed_at <= LOCK_TIMEOUT + 2.5, f"takeover took {after[0] - killed_at:.1f}s"
        assert_one_run_per_interval(times)

        # The latest finished run of the entry is found through its pointer key; it is a fresh id per run.
        task_id = wait_for(lambda: client.get(latest_key("probe", deployment.prefix)), 10, "the latest-run key")
        meta = msgpack.unpackb(client.get(b"celery-task-meta-" + task_id))
        assert meta["status"] == "SUCCESS" and meta["kwargs"] == {"tag": tag}
        assert meta["result"]["deadline"] - EXPIRES >= times[-3]
        time.sleep(1.2)
        assert client.get(latest_key("probe", deployment.prefix)) != task_id
    finally:
        procs.stop()
        client.close()
