"""gateway.aiocelery as a library: a Celery app that is not checkgate's (tests/support/foreign_tasks.py:
JSON, Celery's default queue under this run's prefix, a priority queue), stock `celery worker`
subprocesses, the real RabbitMQ and Redis (db 13), and the client in plain asyncio, Tornado, FastAPI and
aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from celery import Celery
from celery.exceptions import TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from kombu import Connection

from gateway.aiocelery import (
    AsyncTask,
    CeleryClient,
    ClientClosed,
    ResultTimeout,
    TaskResult,
    UnsupportedBackend,
)
from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.foreign_tasks import DEFAULT_QUEUE, PREFIX, PRIORITY_QUEUE, QuotaExceeded, app
from tests.support.stack import ROOT, stop_processes

T = TypeVar("T")


def run(factory: Callable[[CeleryClient], Awaitable[T]], **options: Any) -> T:
    """Run `factory(client)` on a fresh loop with a fresh client of the foreign app, closed afterwards."""

    async def main() -> T:
        async with CeleryClient(app, id_prefix=f"{PREFIX}c-", **options) as client:
            return await factory(client)

    return asyncio.run(main())


def _spawn(name: str, queues: str, pool: str, concurrency: int, logdir: Path) -> subprocess.Popen[bytes]:
    log = logdir / f"{name}.log"
    argv = [sys.executable, "-m", "celery", "-A", "tests.support.foreign_tasks", "worker", "-Q", queues]
    argv += ["-P", pool, "-c", str(concurrency), "-n", f"{PREFIX}{name}@%h", "--without-gossip", "--without-mingle"]
    env = {**os.environ, "FOREIGN_PREFIX": PREFIX, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        proc = subprocess.Popen([*argv, "-l", "info"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while b" ready." not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"worker {name} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    return proc


def _cleanup() -> None:
    with Connection(BROKER_URL.replace("amqp://", "pyamqp://", 1)) as conn:
        channel = conn.default_channel
        for queue in (DEFAULT_QUEUE, PRIORITY_QUEUE):
            channel.queue_delete(queue)
        for exchange in (DEFAULT_QUEUE, PRIORITY_QUEUE, f"{PREFIX}celery.pidbox", f"{PREFIX}celeryev"):
            channel.exchange_delete(exchange)
        channel.exchange_delete(f"reply.{PREFIX}celery.pidbox")
    client = redis.Redis.from_url(BACKEND_URL)
    keys = list(client.scan_iter(match=f"*{PREFIX}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stock workers of the foreign app: threads on its default queue, solo on its priority queue."""
    logdir = tmp_path_factory.mktemp("foreign")
    procs = []
    try:
        procs.append(_spawn("main", DEFAULT_QUEUE, "threads", 20, logdir))
        procs.append(_spawn("prio", PRIORITY_QUEUE, "solo", 1, logdir))
        yield
    finally:
        stop_processes(procs)
        _cleanup()


# --- construction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["rpc://", "db+sqlite:///results.db", "cache+memory://", "mongodb://localhost/", None, "disabled"]
)
def test_a_backend_that_cannot_be_awaited_is_refused_at_construction(backend: str | None) -> None:
    other = Celery("other", broker=BROKER_URL, backend=backend, set_as_current=False)
    with pytest.raises(UnsupportedBackend, match="cannot be awaited without blocking"):
        CeleryClient(other)


def test_redis_backends_are_accepted_without_connecting() -> None:
    for url in ("redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0?ssl_cert_reqs=required"):
        CeleryClient(Celery("other", broker=BROKER_URL, backend=url, set_as_current=False))


# --- the calls against a stock worker ----------------------------------------------------------------


def test_made_before_the_loop_runs_connects_on_first_use_and_stays_on_its_loop(workers: None) -> None:
    client = CeleryClient(app, id_prefix=f"{PREFIX}early-")  # no loop running yet

    async def first() -> int:
        return await client.apply("foreign.add", (2, 3), timeout=20)

    async def elsewhere() -> None:
        await client.apply("foreign.add", (1, 1), timeout=20)

    try:
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(first()) == 5
        other = asyncio.new_event_loop()
        with pytest.raises(RuntimeError, match="another event loop"):
            other.run_until_complete(elsewhere())
        other.close()
    finally:
        loop.run_until_complete(client.close())
        loop.close()


def test_send_task_get_fetch(workers: None) -> None:
    async def scenario(client: CeleryClient) -> tuple[AsyncTask, Any, TaskResult, TaskResult]:
        task = await client.send_task("foreign.add", (2,), {"y": 40})
        value = await task.get(timeout=20)
        return task, value, await client.fetch(task.id), await client.fetch(f"{PREFIX}never-sent")

    task, value, stored, unknown = run(scenario)
    assert value == 42
    assert task.id.startswith(f"{PREFIX}c-") and task.name == "foreign.add" and task.ready()
    assert (stored.state, stored.result, stored.successful, stored.ready) == ("SUCCESS", 42, True, True)
    assert stored.date_done is not None and stored.date_done.tzinfo is not None
    assert (unknown.state, unknown.result, unknown.ready) == ("PENDING", None, False)


def test_a_task_that_raises_raises_its_exception_type_and_message(workers: None) -> None:
    async def scenario(client: CeleryClient) -> tuple[BaseException, BaseException, Any, TaskResult]:
        with pytest.raises(ValueError) as builtin:
            await client.apply("foreign.fail", ("bad input",), timeout=20)
        with pytest.raises(QuotaExceeded) as own:
            await client.apply("foreign.over_quota", ("bob",), timeout=20)
        task = await client.send_task("foreign.fail", ("quiet",), {"code": 7})
        returned = await task.get(timeout=20, propagate=False)
        return builtin.value, own.value, returned, await task.wait()

    builtin, own, returned, result = run(scenario)
    assert type(builtin) is ValueError and builtin.args == ("bad input", 42)
    assert type(own) is QuotaExceeded and str(own) == "bob is over quota"
    assert isinstance(returned, ValueError) and returned.args == ("quiet", 7)
    assert result.failed and "ValueError: ('quiet', 7)" in (result.traceback or "")
    with pytest.raises(ValueError):
        result.value()


def test_a_revoked_task_raises_task_revoked_error(workers: None) -> None:
    async def scenario(client: CeleryClient) -> tuple[BaseException, TaskResult]:
        task = await client.send_task("foreign.add", (1, 2), countdown=30)
        await asyncio.to_thread(app.control.revoke, task.id)
        with pytest.raises(TaskRevokedError) as raised:
            await task.get(timeout=20)
        return raised.value, await client.fetch(task.id)

    raised, stored = run(scenario)
    assert stored.state == "REVOKED" and isinstance(stored.result, TaskRevokedError)
    assert "revoked" in str(raised)


def test_a_task_received_after_its_expiry_is_revoked_as_expired(workers: None) -> None:
    async def scenario(client: CeleryClient) -> BaseException:
        task = await client.send_task("foreign.add", (1, 2), countdown=2, expires=1)
        with pytest.raises(TaskRevokedError) as raised:
            await task.get(timeout=20)
        return raised.value

    assert "expired" in str(run(scenario))


def test_countdown_eta_expires_and_headers_reach_the_worker(workers: None) -> None:
    eta = datetime.now(UTC) + timedelta(seconds=1.5)

    async def scenario(client: CeleryClient) -> tuple[float, dict, dict]:
        sent = time.time()
        delayed = await client.send_task("foreign.request", countdown=1.5, expires=120, headers={"x-tenant": "acme"})
        at_eta = await client.send_task("foreign.request", eta=eta)
        return sent, await delayed.get(timeout=30), await at_eta.get(timeout=30)

    sent, delayed, at_eta = run(scenario)
    assert delayed["ran_at"] >= sent + 1.4
    assert datetime.fromisoformat(delayed["eta"]) >= datetime.fromtimestamp(sent, UTC) + timedelta(seconds=1.4)
    expires_in = datetime.fromisoformat(delayed["expires"]).timestamp() - sent
    assert 110 < expires_in <= 121
    assert delayed["tenant"] == "acme"
    assert datetime.fromisoformat(at_eta["eta"]) == eta
    assert at_eta["ran_at"] >= eta.timestamp() - 0.05


def test_protocol_headers_and_bad_options_are_refused_before_publishing(workers: None) -> None:
    async def scenario(client: CeleryClient) -> None:
        with pytest.raises(ValueError, match="'task' is a header of the task protocol"):
            await client.send_task("foreign.add", (1, 2), headers={"task": "foreign.fail"})
        with pytest.raises(ValueError, match="priority"):
            await client.send_task("foreign.add", (1, 2), priority=256)
        with pytest.raises(TypeError, match="args must be a list or tuple"):
            await client.send_task("foreign.add", "12")
        with pytest.raises(ValueError, match="expires"):
            await client.send_task("foreign.add", (1, 2), expires="tomorrow")

    run(scenario)


def test_far_deadlines_and_header_values_amqp_cannot_carry_never_reach_the_broker(workers: None) -> None:
    """A TTL beyond RabbitMQ's 2^32-1 ms closed the shared channel (406), an infinite header value the whole
    connection (541), and 1e300 s raised OverflowError: now a ValueError/TypeError naming the option, or a
    TTL the broker takes, and the connection serves on."""

    async def scenario(client: CeleryClient) -> tuple[Any, Any]:
        for option in ({"expires": 1e300}, {"expires": -1e300}, {"countdown": 1e300}):
            with pytest.raises(ValueError, match=next(iter(option))):
                await client.send_task("foreign.add", (1, 2), **option)
        for value in (float("inf"), float("nan"), 2**64):
            with pytest.raises(TypeError, match="AMQP field table"):
                await client.send_task("foreign.add", (1, 2), headers={"x-n": value})
        far = await client.send_task("foreign.add", (1, 2), expires=1e10)
        after = await client.send_task("foreign.add", (2, 2), expires=30)
        return await far.get(timeout=20), await after.get(timeout=20)

    assert run(scenario) == (3, 4)


def test_priority_orders_a_busy_queue(workers: None) -> None:
    """The solo worker of the priority queue is held busy; meanwhile 4 low- then 4 high-priority tasks
    queue up: it runs every high one before any low one."""
    key = f"order-{time.monotonic_ns()}"
    backend = redis.Redis.from_url(BACKEND_URL)

    async def scenario(client: CeleryClient) -> list[bytes]:
        blocker = await client.send_task("foreign.record", (key, "blocker"), {"hold": 1.5}, queue=PRIORITY_QUEUE)
        deadline = time.monotonic() + 20
        while not backend.lrange(PREFIX + key, 0, -1):  # the worker took the blocker: the rest must queue
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        tasks = [
            await client.send_task("foreign.record", (key, f"{kind}{i}"), queue=PRIORITY_QUEUE, priority=priority)
            for kind, priority in (("low", 1), ("high", 9))
            for i in range(4)
        ]
        await asyncio.gather(blocker.get(timeout=30), *(t.get(timeout=30) for t in tasks))
        return backend.lrange(PREFIX + key, 0, -1)

    try:
        order = [v.decode() for v in run(scenario)]
    finally:
        backend.close()
    assert order[0] == "blocker"
    assert [v[:3] for v in order[1:]] == ["hig"] * 4 + ["low"] * 4, order


def test_fire_and_forget_runs_and_stores_no_result(workers: None) -> None:
    key = f"fired-{time.monotonic_ns()}"
    backend = redis.Redis.from_url(BACKEND_URL)

    async def scenario(client: CeleryClient) -> tuple[AsyncTask, Any]:
        task = await client.send_task("foreign.record", (key, "ran"), ignore_result=True)
        deadline = time.monotonic() + 20
        while not backend.lrange(PREFIX + key, 0, -1):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        return task, await task.get(timeout=1)

    try:
        task, value = run(scenario)
        time.sleep(0.3)  # the worker's result write, had it made one, follows its task's return
        assert backend.get(f"celery-task-meta-{task.id}") is None
    finally:
        backend.close()
    assert task.ignored and value is None


def test_read_by_id_here_and_from_another_process(workers: None) -> None:
    """An earlier result by id: from the client that sent it (after its handle is gone), and from another
    client whose prefix the id does not carry (read by GET, polled)."""

    async def scenario(client: CeleryClient) -> tuple[int, int, int, int]:
        done = await client.send_task("foreign.add", (20, 1))
        await done.get(timeout=20)
        later = await client.send_task("foreign.sleep", (0.5,))
        done_id, later_id = done.id, later.id
        del done, later  # their watches end; reading by id starts afresh
        here = await client.result(done_id, timeout=5)
        async with CeleryClient(app, id_prefix=f"{PREFIX}other-") as other:
            there, waited = await asyncio.gather(other.result(done_id, timeout=5), other.result(later_id, timeout=20))
            by_handle = await other.task(done_id).get(timeout=5)
        return here, there, waited, by_handle

    assert run(scenario) == (21, 21, 0.5, 21)


def test_a_timeout_names_the_task_and_a_later_read_gets_its_result(workers: None) -> None:
    async def scenario(client: CeleryClient) -> tuple[BaseException, Any]:
        task = await client.send_task("foreign.sleep", (1.0,))
        with pytest.raises(ResultTimeout) as raised:
            await task.get(timeout=0.2)
        return raised.value, await client.result(raised.value.task_id, timeout=20)

    raised, value = run(scenario)
    assert isinstance(raised, CeleryTimeoutError) and isinstance(raised, TimeoutError)
    assert value == 1.0


def test_reading_an_id_the_gateways_call_waits_for_leaves_that_call_its_result(workers: None) -> None:
    """The gateway's `call` and a library read of the same id at once (Flower's /api/task/result on an id a
    /check request waits for): both get the result (the listener keeps one waiter per id)."""

    async def scenario(client: CeleryClient) -> tuple[tuple[str, dict | None, float], float]:
        await client.start(wait=10)  # call() is the gateway's path: it publishes on a started client only
        task_id = client.new_id()
        calling = asyncio.ensure_future(client.call("foreign.sleep", {"seconds": 0.5}, timeout=20, task_id=task_id))
        await asyncio.sleep(0.1)
        return await asyncio.gather(calling, client.result(task_id, timeout=20))

    (_, meta, _), read = run(scenario)
    assert meta is not None and meta["status"] == "SUCCESS" and meta["result"] == 0.5
    assert read == 0.5


def test_a_thousand_concurrent_awaits_in_one_process(workers: None) -> None:
    async def scenario(client: CeleryClient) -> list[int]:
        return await asyncio.gather(*(client.apply("foreign.add", (i, i), timeout=120) for i in range(1000)))

    assert run(scenario) == [2 * i for i in range(1000)]


def test_close_ends_open_waits(workers: None) -> None:
    async def scenario(client: CeleryClient) -> BaseException:
        task = await client.send_task("foreign.sleep", (2.0,))
        waiting = asyncio.ensure_future(task.get(timeout=30))
        await asyncio.sleep(0.1)
        await client.close()
        with pytest.raises(ClientClosed):
            await waiting
        with pytest.raises(ClientClosed) as raised:
            await client.send_task("foreign.add", (1, 2))
        return raised.value

    assert "closed" in str(run(scenario))


# --- results decode as Celery's AsyncResult would ---------------------------------------------------


@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
def test_results_decode_as_celerys_async_result(serializer: str) -> None:
    """Results stored by Celery's own backend in each serializer (no worker needed) read the same
    through the client as through `AsyncResult.get`."""
    other = Celery("ser", broker=BROKER_URL, backend=BACKEND_URL, set_as_current=False)
    other.conf.update(result_serializer=serializer, result_accept_content=[serializer], result_expires=60)
    ids = {kind: f"{PREFIX}{serializer}-{kind}-{time.monotonic_ns()}" for kind in ("ok", "bad", "own")}
    value = {"n": 1, "items": [1, 2.5, "x", None], "nested": {"ok": True}}
    other.backend.mark_as_done(ids["ok"], value)
    other.backend.mark_as_failure(ids["bad"], KeyError("missing", 3))
    other.backend.mark_as_failure(ids["own"], QuotaExceeded("alice is over quota"))

    async def scenario(client: CeleryClient) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": await client.result(ids["ok"], timeout=5)}
        for kind in ("bad", "own"):
            out[kind] = await client.result(ids[kind], timeout=5, propagate=False)
        return out

    async def main() -> dict[str, Any]:
        async with CeleryClient(other, id_prefix=f"{PREFIX}ser-") as client:
            return await scenario(client)

    ours = asyncio.run(main())
    theirs = {kind: AsyncResult(task_id, app=other).get(timeout=5, propagate=False) for kind, task_id in ids.items()}
    for kind in ids:
        AsyncResult(ids[kind], app=other).forget()
    assert ours["ok"] == theirs["ok"] == value
    for kind in ("bad", "own"):
        assert type(ours[kind]) is type(theirs[kind]) and ours[kind].args == theirs[kind].args


def test_a_forged_failure_is_celerys_security_error_not_a_crash() -> None:
    """A stored FAILURE naming something that is not an exception class (anyone who can write to Redis can
    store one): Celery refuses to call it (SecurityError); so does the client, as the task's error."""
    task_id = f"{PREFIX}forged-{time.monotonic_ns()}"
    forged = {"status": "FAILURE", "result": {"exc_type": "system", "exc_module": "os", "exc_message": ["id"]}}
    backend = redis.Redis.from_url(BACKEND_URL)
    backend.set(f"celery-task-meta-{task_id}", json.dumps({**forged, "traceback": None, "task_id": task_id}), ex=60)
    backend.close()

    async def scenario(client: CeleryClient) -> tuple[Any, TaskResult]:
        return await client.result(task_id, timeout=5, propagate=False), await client.fetch(task_id)

    returned, fetched = run(scenario)
    assert type(returned).__name__ == "SecurityError" and "os.system" in str(returned)
    assert fetched.failed and type(fetched.result).__name__ == "SecurityError"


# --- in other frameworks -----------------------------------------------------------------------------


def test_in_a_tornado_handler(workers: None) -> None:
    """The tornado-celery example (`/add`) on the library."""
    from tornado import httpclient, web

    client = CeleryClient(app, id_prefix=f"{PREFIX}tornado-")

    class AddHandler(web.RequestHandler):
        async def get(self) -> None:
            x, y = int(self.get_argument("x")), int(self.get_argument("y"))
            self.write({"result": await client.apply("foreign.add", (x, y), timeout=10)})

    async def main() -> list[bytes]:
        server = web.Application([(r"/add", AddHandler)]).listen(0, "127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        http = httpclient.AsyncHTTPClient()
        try:
            answers = await asyncio.gather(*(http.fetch(f"http://127.0.0.1:{port}/add?x={i}&y=2") for i in range(20)))
        finally:
            server.stop()
            await client.close()
        return [a.body for a in answers]

    assert asyncio.run(main()) == [f'{{"result": {i + 2}}}'.encode() for i in range(20)]


def test_in_fastapi(workers: None) -> None:
    fastapi = pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from contextlib import asynccontextmanager

    client = CeleryClient(app, id_prefix=f"{PREFIX}fastapi-")

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        await client.close()

    api = fastapi.FastAPI(lifespan=lifespan)

    @api.get("/add")
    async def add(x: int, y: int) -> dict[str, int]:
        return {"result": await client.apply("foreign.add", (x, y), timeout=10)}

    async def main() -> list[dict]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            answers = await asyncio.gather(*(http.get("/add", params={"x": i, "y": 3}) for i in range(20)))
        await client.close()
        return [a.json() for a in answers]

    assert asyncio.run(main()) == [{"result": i + 3} for i in range(20)]


def test_in_aiohttp(workers: None) -> None:
    aiohttp_web = pytest.importorskip("aiohttp.web")
    aiohttp = pytest.importorskip("aiohttp")
    celery_key = aiohttp_web.AppKey("celery", CeleryClient)

    async def add(request: Any) -> Any:
        client = request.app[celery_key]
        x, y = int(request.query["x"]), int(request.query["y"])
        return aiohttp_web.json_response({"result": await client.apply("foreign.add", (x, y), timeout=10)})

    async def main() -> list[dict]:
        web_app = aiohttp_web.Application()
        web_app[celery_key] = CeleryClient(app, id_prefix=f"{PREFIX}aiohttp-")
        web_app.router.add_get("/add", add)

        async def close(application: Any) -> None:
            await application[celery_key].close()

        web_app.on_cleanup.append(close)
        runner = aiohttp_web.AppRunner(web_app)
        await runner.setup()
        site = aiohttp_web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as http:
                out = []
                for i in range(10):
                    async with http.get(f"http://127.0.0.1:{port}/add", params={"x": i, "y": 4}) as answer:
                        out.append(await answer.json())
                return out
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == [{"result": i + 4} for i in range(10)]
