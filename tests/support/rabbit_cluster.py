"""A RabbitMQ cluster on one machine: `size` private nodes (tests/support/services.py) joined with
`rabbitmqctl join_cluster`.

Each node has its own name (`cgt<run id><letter>@localhost`), AMQP port, Erlang distribution port and
data directory under the test's temp folder; the machine's own RabbitMQ (5672, node `rabbit`) is never
contacted. The nodes use the invoking user's Erlang cookie as it is (~/.erlang.cookie, never changed).

```python
with TestRun() as run, RabbitCluster(tmp_path, run, host=net.address) as cluster:
    cluster.url            # kombu failover list: "amqp://guest:guest@h:p1//;amqp://…@h:p2//;…"
    cluster.kill(0)        # SIGKILL node a (a crash); its quorum queue replicas elsewhere take over
    cluster.restart(0)     # start it again with its data: it rejoins and catches up
```
"""

from __future__ import annotations

import json
import string
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.runs import TestRun
from tests.support.services import PrivateRabbit, Started


class RabbitCluster(Started):
    """`size` RabbitMQ nodes clustered together; a context manager that stops them all."""

    def __init__(self, workdir: Path, run: TestRun, size: int = 3, host: str = "127.0.0.1") -> None:
        self.nodes = [
            PrivateRabbit(workdir / f"rabbit-{x}", name=run.name_prefix + x, host=host, env=run.env)
            for x in string.ascii_lowercase[:size]
        ]

    @property
    def urls(self) -> list[str]:
        """One AMQP URL per node, in node order."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node as one kombu failover URL (`;`-separated), starting with the first."""
        return self.url_from(0)

    def url_from(self, first: int) -> str:
        """The failover URL starting at node `first` (so clients can be spread over the nodes)."""
        urls = self.urls
        return ";".join(urls[first:] + urls[:first])

    def start(self) -> RabbitCluster:
        """Boot every node at once, then join the others to the first; wait until all run as one cluster."""
        for node in self.nodes:
            node.start(wait=False)
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.wait_up(), self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
        self.wait_members(len(self.nodes))
        return self

    def running_nodes(self, via: int | None = None) -> set[str]:
        """Names of the cluster's running nodes, as node `via` (else the first live one) sees them."""
        node = self.nodes[via] if via is not None else next(n for n in self.nodes if n.running)
        status = json.loads(node.ctl("cluster_status", "--formatter", "json", capture=True))
        return set(status["running_nodes"])

    def wait_members(self, count: int, timeout: float = 90) -> None:
        """Wait until `count` nodes run in the cluster (as seen from a live node)."""
        deadline = time.monotonic() + timeout
        while (seen := len(self.running_nodes())) != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} of {count} RabbitMQ nodes running after {timeout} s")
            time.sleep(0.5)

    def index_of_port(self, port: int) -> int:
        """The node listening on AMQP `port`."""
        return next(i for i, node in enumerate(self.nodes) if node.port == port)

    def kill(self, index: int) -> None:
        """SIGKILL one node: a crash (clients get a RST; the peers see the node go down)."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Start a killed or stopped node again with its data, and wait until it is back in the cluster."""
        node = self.nodes[index]
        node.start()
        # A node killed mid-write repairs its files first; on a busy machine the CLI may time out meanwhile.
        for attempt in range(5):
            try:
                node.ctl("await_startup")
                break
            except subprocess.CalledProcessError:
                if attempt == 4:
                    raise
                time.sleep(3)
        self.wait_members(sum(n.running for n in self.nodes))

    def quorum_members(self, queue: str) -> list[str]:
        """The nodes holding a replica of quorum queue `queue`."""
        row = next(n for n in self.nodes if n.running).queues("type", "members")[queue]
        if row["type"] != "quorum":
            raise AssertionError(f"queue {queue} is {row['type']}, not quorum")
        return list(row["members"])

    def stop(self) -> None:
        """Stop every node (in parallel: a node waiting for its peers would otherwise slow the others)."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))
