"""The result backend's Redis, as the Celery app's configuration names it: one server, or a master found
through Sentinel and followed across failovers.

`BackendRedis.for_app` reads what Celery itself parsed (no I/O): a `redis://`, `rediss://` or `unix://`
result backend becomes a redis-py client for that URL; a `sentinel://h1:26379/0;sentinel://…` list (with
`result_backend_transport_options = {"master_name": …}`) becomes redis-py's asyncio `Sentinel` over the
same hosts, db, credentials and TLS options as Celery's `SentinelBackend` (`app.backend.connparams`), and
`client` is its `master_for(master_name)`: every new connection asks the sentinels where the master is.

The raw PSUBSCRIBE (`resp.PatternSubscription`) cannot ask by itself, so `master()` gives it the
master's address before every (re)connect, and `watch(address)` returns once the master is elsewhere.
A killed master breaks the subscription anyway; a demoted or partitioned old master keeps it open and
silent, so `watch` listens to the sentinels' `+switch-master` channel (on one sentinel at a time) and,
because Sentinel's pub/sub is at-most-once too, asks `SENTINEL get-master-addr-by-name` every
`SENTINEL_POLL_S` seconds. Subscribing to the master only (PUBLISH reaches replicas too, but every
subscriber would then decode N copies of each result and still miss what was published during a
switch): the catch-up MGET after every switch covers the gap, as after any reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError

from gateway.aiocelery.resp import PatternSubscription, RedisAddress, SubscriptionError

log = logging.getLogger("checkgate.gateway")

# Seconds: connect and command timeouts of the gateway's Redis connections (sentinels included). A
# vanished host drops packets silently; these bound how long a command can hang on it.
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 5.0
# Seconds between asking the sentinels where the master is (besides listening for +switch-master).
SENTINEL_POLL_S = 2.0
# Celery's connection parameters that describe its own (blocking) pool, not where or how to connect.
_CELERY_POOL_KEYS = frozenset(
    {"hosts", "max_connections", "socket_timeout", "socket_connect_timeout", "retry_on_timeout", "client_name"}
)
_CELERY_POOL_KEYS |= {"driver_info", "connection_class", "socket_keepalive", "socket_keepalive_options"}


class BackendRedis:
    """Where the result backend's Redis is: `client` for commands (redis-py), `master()` and `watch()`
    for the raw subscription. Use `for_app`."""

    def __init__(self, client: aioredis.Redis, sentinel: Sentinel | None = None, master_name: str = "") -> None:
        self.client = client
        self._sentinel = sentinel
        self._master_name = master_name
        # Credentials and TLS of the master's connections; host and port come from the sentinels.
        self._template = RedisAddress.of(client)

    @classmethod
    def for_app(cls, app: Celery) -> BackendRedis:
        """The backend of `app` (its `result_backend`, parsed by Celery). Raises `ValueError` for a
        backend that is not Redis, or a Sentinel list without `master_name`."""
        conf = app.conf
        url = conf.result_backend or ""
        if url.startswith("sentinel://"):
            return cls._sentinel_for(app)
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"the gateway reads results from Redis only, not from {url.split('://')[0]!r}")
        ssl_options = conf.redis_backend_use_ssl if url.startswith("rediss://") else None
        client = aioredis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S,
            health_check_interval=10,
            **(ssl_options or {}),
        )
        return cls(client)

    @classmethod
    def _sentinel_for(cls, app: Celery) -> BackendRedis:
        options = dict(app.conf.result_backend_transport_options or {})
        master_name = options.get("master_name")
        if not master_name:
            raise ValueError("a sentinel:// result backend needs result_backend_transport_options['master_name']")
        params: dict[str, Any] = dict(app.backend.connparams)
        hosts = [(h["host"], int(h["port"])) for h in params["hosts"]]
        # Celery names a blocking SSL connection class for rediss/redis_backend_use_ssl; the asyncio pool
        # picks its own from `ssl=True`.
        connection_class = getattr(params.get("connection_class"), "__name__", "")
        tls = any(k.startswith("ssl_") for k in params) or "SSL" in connection_class
        master_kwargs = {k: v for k, v in params.items() if k not in _CELERY_POOL_KEYS and v is not None}
        if tls:
            master_kwargs["ssl"] = True
        timeouts = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": COMMAND_TIMEOUT_S}
        sentinel = Sentinel(
            hosts,
            min_other_sentinels=int(options.get("min_other_sentinels", 0)),
            sentinel_kwargs={**timeouts, **(options.get("sentinel_kwargs") or {})},
            **master_kwargs,
            **timeouts,
        )
        client = sentinel.master_for(master_name, health_check_interval=10)
        return cls(client, sentinel, master_name)

    @property
    def sentinel(self) -> Sentinel | None:
        """redis-py's Sentinel client (None for a single server)."""
        return self._sentinel

    async def master(self) -> RedisAddress:
        """The address to subscribe at: the server, or the master the sentinels name now.

        Raises `redis.exceptions.ConnectionError` (`MasterNotFoundError`) when no sentinel names one."""
        if self._sentinel is None:
            return self._template
        host, port = await self._sentinel.discover_master(self._master_name)
        return dataclasses.replace(self._template, host=host, port=int(port))

    async def watch(self, current: RedisAddress) -> RedisAddress:
        """Return the new master's address once it is no longer `current` (never, for a single server).

        Listens to `+switch-master` on a sentinel and asks every `SENTINEL_POLL_S` seconds; when it
        returns, the command client's idle connections to the old master are dropped too (a demoted
        master would still answer reads, with what it had before the switch)."""
        if self._sentinel is None:
            await asyncio.get_running_loop().create_future()  # a single server never moves
        switched = asyncio.Event()
        listener = asyncio.create_task(self._listen_for_switch(switched), name="checkgate-sentinel-switch")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(switched.wait(), SENTINEL_POLL_S)
                switched.clear()
                try:
                    address = await self.master()
                except (RedisError, OSError) as exc:
                    log.warning("no sentinel names a master for %s: %r", self._master_name, exc)
                    continue
                if (address.host, address.port) != (current.host, current.port):
                    pool = self.client.connection_pool
                    if isinstance(pool, SentinelConnectionPool):
                        with contextlib.suppress(RedisError, OSError):
                            await pool.get_master_address()  # drops idle connections to the old master
                    return address
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen_for_switch(self, switched: asyncio.Event) -> None:
        """Subscribe to `+switch-master` on the sentinels, one at a time, moving on when one is lost."""
        assert self._sentinel is not None
        name = self._master_name.encode()

        def on_message(_channel: bytes, data: bytes) -> None:
            if data.split(b" ", 1)[0] == name:
                switched.set()

        index = 0
        while True:
            client = self._sentinel.sentinels[index % len(self._sentinel.sentinels)]
            index += 1
            address = RedisAddress.of(client)  # its credentials and TLS as `sentinel_kwargs` say
            try:
                subscription = await PatternSubscription.open(
                    address, "+switch-master", on_message, timeout=CONNECT_TIMEOUT_S, health_interval=SENTINEL_POLL_S
                )
            except (TimeoutError, SubscriptionError, OSError):
                await asyncio.sleep(SENTINEL_POLL_S)
                continue
            try:
                with contextlib.suppress(SubscriptionError):
                    await subscription.closed
            finally:
                subscription.close()

    async def aclose(self) -> None:
        """Close every connection (the command pool's; the sentinels' too)."""
        await self.client.aclose()
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()
