"""What `stopasgroup` does to a prefork worker's running task (Celery 5.7, billiard), under a real supervisord.

supervisord's stop sends stopsignal (TERM) to the program's pid, or with stopasgroup=true to its whole
process group, which holds the prefork pool's children too. Measured here with a task running:
- TERM to the parent only (stopasgroup=false): warm shutdown, the task finishes and its result is stored;
- TERM to the group (stopasgroup=true): the pool child dies at once (`WorkerLostError: signal 15`), the
  task is cut short, no result is stored and its message goes back to the queue (acks_late +
  reject_on_worker_lost) to run again elsewhere — or is lost for a check declared idempotent=False.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import msgpack
import pytest
import redis
from kombu import Connection

from tests.ops.conftest import QUEUES, Deployment
from tests.ops.helpers import Supervisord, cleanup_deployment, wait_for
from tests.ops.probes import HOLD_KEY
from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.stack import ROOT

# As the shipped worker programs run, with -c 1 and info logging.
COMMAND = (
    "%(here)s/.venv/bin/celery -A tasks worker -Q {prefix}hold -O fair -P prefork -c 1 -n hold-{variant}@%%h"
    " --without-gossip --without-mingle -l info"
)
WORKER = (
    """
[program:hold-{variant}]
command="""
    + COMMAND
    + """
directory=%(here)s
autostart=true
startsecs=2
stopsignal=TERM
stopwaitsecs=30
stopasgroup={stopasgroup}
killasgroup=true
environment=PYTHONUNBUFFERED="1",CHECKGATE_QUEUE_PREFIX="{prefix}"
stdout_logfile=%(here)s/var/log/hold-{variant}.log
redirect_stderr=true
"""
)

SEND = """
import json, sys
from tasks.celery import app
print(app.send_task("checkgate.hold", kwargs=json.loads(sys.argv[1])).id)
"""


def variant_prefix(deployment: Deployment, variant: str) -> str:
    """Each worker program is its own deployment (prefix), so a task goes to the worker meant for it."""
    return f"{deployment.prefix}{variant}_"


@pytest.fixture
def node(deployment: Deployment) -> Iterator[Supervisord]:
    sections = "".join(
        WORKER.format(variant=v, stopasgroup=flag, prefix=variant_prefix(deployment, v))
        for v, flag in (("group", "true"), ("parent", "false"))
    )
    sup = Supervisord(sections, deployment.env).start()
    try:
        yield sup
    finally:
        sup.shutdown()
        for variant in ("group", "parent"):
            cleanup_deployment(variant_prefix(deployment, variant), BROKER_URL, BACKEND_URL, QUEUES)


def send_hold(deployment: Deployment, variant: str, ms: int) -> subprocess.Popen[str]:
    """Publish a `hold` task to one variant's worker (as a client of that deployment would); prints its id."""
    prefix = variant_prefix(deployment, variant)
    env = {**deployment.env, "CHECKGATE_QUEUE_PREFIX": prefix}
    argv = [sys.executable, "-c", SEND, json.dumps({"tag": prefix, "ms": ms})]
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def queue_depth(name: str) -> int:
    with Connection(BROKER_URL.replace("amqp://", "pyamqp://", 1)) as conn:
        return conn.default_channel.queue_declare(name, passive=True).message_count


def test_term_to_the_group_kills_a_running_prefork_task(node: Supervisord, deployment: Deployment) -> None:
    client = redis.Redis.from_url(BACKEND_URL)
    senders = {variant: send_hold(deployment, variant, 4000) for variant in ("group", "parent")}
    ids = {variant: proc.communicate(timeout=60)[0].strip() for variant, proc in senders.items()}
    keys = {variant: HOLD_KEY + variant_prefix(deployment, variant) for variant in ids}

    # Stop each worker (TERM, as supervisorctl stop does) as soon as its task has started.
    stopped: dict[str, list[bytes]] = {}

    def stop_started() -> bool:
        for variant, key in keys.items():
            if variant not in stopped and (runs := client.lrange(key, 0, -1)):
                node.rpc.stopProcess(f"hold-{variant}", False)  # don't wait: the other one may be starting
                stopped[variant] = runs
        return len(stopped) == 2

    wait_for(stop_started, 60, lambda: f"both tasks to start: {[node.log(f'hold-{v}.log')[-1500:] for v in keys]}")
    assert stopped == {"group": [b"start"], "parent": [b"start"]}  # both were running when stopped
    for variant in keys:
        node.wait_state(f"hold-{variant}", "STOPPED")

    # Parent only: warm shutdown let the task finish; its result is there and its message is gone.
    assert client.lrange(keys["parent"], 0, -1) == [b"start", b"done"]
    assert msgpack.unpackb(client.get(f"celery-task-meta-{ids['parent']}"))["status"] == "SUCCESS"
    assert queue_depth(variant_prefix(deployment, "parent") + "hold") == 0

    # Whole group: the pool child was killed by the TERM mid-task.
    assert client.lrange(keys["group"], 0, -1) == [b"start"]
    assert client.get(f"celery-task-meta-{ids['group']}") is None
    assert queue_depth(variant_prefix(deployment, "group") + "hold") == 1  # requeued: it will run a second time
    assert "WorkerLostError: Worker exited prematurely: signal 15 (SIGTERM)" in node.log("hold-group.log")
    client.close()
