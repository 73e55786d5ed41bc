"""Redis with Sentinel on one machine: a master, a replica and three sentinels, each a private
redis-server (tests/support/services.py) on its own port and directory.

```python
with TestRun() as run, RedisSentinel(tmp_path, run, host=net.address) as group:
    group.url                      # Celery's form: "sentinel://h:p1;sentinel://h:p2;sentinel://h:p3"
    group.master_name              # the name the sentinels know the master by
    old = group.kill_master()      # SIGKILL the current master (what it has not replicated is lost)
    group.wait_failover(old)       # until every sentinel names the promoted replica and it says "master"
    group.restart(old)             # back as a replica of the new master
```
Sentinels declare a master down after `down_after_ms` without an answer (1 s here, 30 s by default), so
a failover takes a few seconds; `failover-timeout` is short so that a second failover can follow soon.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from tests.support.runs import TestRun
from tests.support.services import PrivateRedis, Started

QUORUM = 2


class RedisSentinel(Started):
    """A master, a replica and `sentinels` sentinels monitoring them; a context manager that stops them."""

    def __init__(
        self, workdir: Path, run: TestRun, host: str = "127.0.0.1", sentinels: int = 3, down_after_ms: int = 1000
    ) -> None:
        self.host = host
        self.master_name = f"{run.name_prefix}master"
        self.down_after_ms = down_after_ms
        master = PrivateRedis(workdir / "redis-0", host=host, env=run.env)
        replica = PrivateRedis(
            workdir / "redis-1", host=host, env=run.env, args=["--replicaof", host, str(master.port)]
        )
        self.servers = [master, replica]
        self.sentinels = []
        for i in range(sentinels):
            directory = workdir / f"sentinel-{i}"
            self.sentinels.append(
                PrivateRedis(directory, host=host, env=run.env, config=directory / "sentinel.conf", args=["--sentinel"])
            )

    @property
    def url(self) -> str:
        """The sentinels as Celery's `sentinel://` result backend URL (db 0)."""
        return ";".join(f"sentinel://{self.host}:{s.port}/0" for s in self.sentinels)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The sentinels' (host, port), as redis-py's `Sentinel` takes them."""
        return [(self.host, s.port) for s in self.sentinels]

    def start(self) -> RedisSentinel:
        for server in self.servers:
            server.start()
        master = self.servers[0]
        for sentinel in self.sentinels:
            assert sentinel.config is not None
            sentinel.config.write_text(
                f"sentinel monitor {self.master_name} {self.host} {master.port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} {max(3000, 3 * self.down_after_ms)}\n"
                f"sentinel parallel-syncs {self.master_name} 1\n"
            )
            sentinel.start()
        self.wait_ready()
        return self

    def _client(self, server: PrivateRedis) -> redis.Redis:
        return redis.Redis(self.host, server.port, socket_timeout=2, decode_responses=True)

    def _named_master(self, sentinel: PrivateRedis) -> tuple[str, int]:
        with self._client(sentinel) as client:
            host, port = client.sentinel_get_master_addr_by_name(self.master_name)
        return host, int(port)

    def master_address(self) -> tuple[str, int]:
        """The master's address, as the first live sentinel reports it."""
        return self._named_master(next(s for s in self.sentinels if s.running))

    def master(self) -> PrivateRedis:
        """The server that is master now."""
        _, port = self.master_address()
        return next(s for s in self.servers if s.port == port)

    def _replication(self, server: PrivateRedis) -> dict[str, object]:
        with self._client(server) as client:
            return client.info("replication")

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until every sentinel knows the others and the replica, and the replica has synced."""
        deadline = time.monotonic() + timeout
        live = [s for s in self.sentinels if s.running]
        while True:
            infos = []
            for sentinel in live:
                with self._client(sentinel) as client:
                    infos.append(client.sentinel_master(self.master_name))
            replicas_ok = all(i["num-slaves"] >= len(self.servers) - 1 for i in infos)
            others_ok = all(i["num-other-sentinels"] >= len(live) - 1 for i in infos)
            master = self.master()
            synced = all(self._replica_synced(s) for s in self.servers if s is not master and s.running)
            if replicas_ok and others_ok and synced:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"sentinels not ready: {infos}")
            time.sleep(0.2)

    def _replica_synced(self, server: PrivateRedis) -> bool:
        info = self._replication(server)
        return info["role"] == "slave" and info.get("master_link_status") == "up"

    def kill_master(self) -> PrivateRedis:
        """SIGKILL the current master; return it (for `wait_failover` and `restart`)."""
        master = self.master()
        master.kill()
        return master

    def wait_failover(self, old: PrivateRedis, timeout: float = 60) -> PrivateRedis:
        """Wait until every live sentinel names another server as master and that server says it is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            named = {self._named_master(s)[1] for s in self.sentinels if s.running}
            if len(named) == 1 and old.port not in named:
                new = next(s for s in self.servers if s.port in named)
                if self._replication(new)["role"] == "master":
                    return new
            time.sleep(0.1)
        raise TimeoutError(f"no failover away from port {old.port} within {timeout} s")

    def restart(self, server: PrivateRedis) -> None:
        """Start a killed server again; wait until the sentinels made it a synced replica of the master."""
        server.start()
        self.wait_ready()

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.stop()
