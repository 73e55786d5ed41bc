"""The many-machines topology in one piece, for a person to try: `make cluster`.

Brings up what the HA tests use — a 3-node RabbitMQ cluster, Redis master + replica + 3 sentinels and,
as root, worker hosts as network namespaces on a private bridge — prints how to point workers and the
gateway at it and how to break it, then waits; Ctrl-C (or SIGTERM) tears everything down.

    python -m tests.support.topology [--hosts 2] [--nodes 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path

from tests.support import netns
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.runs import TestRun
from tests.support.sentinel import RedisSentinel
from tests.support.stack import ROOT


def instructions(cluster: RabbitCluster, group: RedisSentinel, hosts: list[netns.Host]) -> str:
    """What to export and run to use the topology, and how to break it."""
    python = shlex.quote(sys.executable)
    master_host, master_port = group.master_address()
    lines = [
        "checkgate cluster is up. For workers (any shell, any host below):",
        f"  export CHECKGATE_BROKER_URL={shlex.quote(cluster.url)}",
        "  export CHECKGATE_QUEUE_TYPE=quorum",
        f"  export CHECKGATE_RESULT_BACKEND={shlex.quote(group.url)}",
        f"  export CHECKGATE_SENTINEL_MASTER_NAME={group.master_name}",
        f"  cd {ROOT}",
    ]
    worker = f"{python} -m celery -A tasks worker -Q add,sleep,http -P threads -c 20"
    if hosts:
        for host in hosts:
            lines.append(f"  ip netns exec {host.namespace} {worker} -n {host.name}@%h    # host {host.address}")
    else:
        lines.append(f"  {worker}")
    gateway = f"{python} -m gateway    # the same exports: it follows the cluster and the sentinels too"
    lines += ["The gateway (on any host below too; CHECKGATE_BIND=<its address> to listen there):", f"  {gateway}"]
    lines += [f"(the Redis master is now {master_host}:{master_port})", "Break it:"]
    for node in cluster.nodes:
        assert node.proc is not None
        lines.append(f"  kill -9 -- -{node.proc.pid}    # crash RabbitMQ node {node.node} (AMQP port {node.port})")
    master = group.master()
    assert master.proc is not None
    lines.append(f"  kill -9 {master.proc.pid}    # crash the Redis master (port {master.port}); the sentinels promote")
    for host in hosts:
        lines.append(f"  ip link set {host.link} down    # host {host.name} vanishes (no FIN); `up` heals it")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=2, help="worker hosts (network namespaces; needs root)")
    parser.add_argument("--nodes", type=int, default=3, help="RabbitMQ nodes")
    parser.add_argument("--dir", type=Path, help="data directory (default: a new temp directory)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="checkgate-cluster-"))
    with TestRun() as run, contextlib.ExitStack() as resources:
        hosts: list[netns.Host] = []
        address = "127.0.0.1"
        if args.hosts and (why := netns.missing()) is None:
            network = resources.enter_context(netns.Network(run))
            address = network.address
            hosts = [network.add_host(f"h{i + 1}") for i in range(args.hosts)]
        elif args.hosts:
            print(f"no worker hosts: {why}; everything listens on 127.0.0.1", file=sys.stderr)
        print(f"starting {args.nodes} RabbitMQ nodes and Redis with Sentinel in {workdir} …", flush=True)
        cluster = resources.enter_context(RabbitCluster(workdir / "rabbit", run, size=args.nodes, host=address))
        group = resources.enter_context(RedisSentinel(workdir / "redis", run, host=address))
        print(instructions(cluster, group, hosts), flush=True)
        stop.wait()
        print("stopping …", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
