"""What the gateway's Prometheus expositions cost: a `format=prometheus` answer and a `/metrics` scrape.

    .venv/bin/python -m bench.metrics_cost [--types 200] [--scheduled 500] [-n 2000]

- answer: µs the metrics add to each answered check on the hot path (its response counted, its own
  time observed), best of 5 runs of 200,000.
- render: µs to render one `format=prometheus` answer (`gateway.prometheus.render_check`) for three
  results — an `http` check's (phases, TLS), a `tls` check's (chain, leaf), and a plugin's with 50
  numeric fields — best of 5 runs of `n` renders each. Not on the benchmark's hot path (that asks for
  JSON), but what a Prometheus scraping `/check/…?format=prometheus` pays per target.
- scrape: ms per `GET /metrics` on the real application (in process, on a socket, the Celery client
  replaced by tests/support/stub_client.py) after `--types` extra check types each answered once
  (so each has its request counter and its own-time histogram) and with `--scheduled` scheduled
  checks' latest runs in the (stub) result store; the median of 50 scrapes, minus the median of 50
  requests for an unknown path (the HTTP round trip itself), and the size of the answer.

Times are CPU time of this process (`time.process_time`: client and server of the scrape are both in
it), so other load on the machine disturbs them less than it would wall-clock figures.

Drives the code only through `render_check` and HTTP, so the same file runs against another revision
(`git archive <rev> | tar -x -C DIR`, then `PYTHONPATH=DIR .venv/bin/python DIR/bench/metrics_cost.py`
with this file copied there) for a before/after in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

RESULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "http": (
        "http",
        {
            "ok": True,
            "duration_ms": 41.2,
            "status_code": 200,
            "redirects": 1,
            "content_length": 1234,
            "body_bytes": 4321,
            "body_wire_bytes": 1234,
            "http_version": "HTTP/1.1",
            "cert_expiry": 1_900_000_000,
            "tls_version": "TLSv1.3",
            "phases_ms": {"dns": 1.1, "connect": 2.2, "tls": 9.9, "first_byte": 20.0, "transfer": 8.0, "total": 41.2},
        },
    ),
    "tls": (
        "tls",
        {
            "ok": True,
            "duration_ms": 12.5,
            "days_left": 80.5,
            "leaf_days_left": 80.5,
            "last_chain_expiry": 1_900_000_000,
            "earliest_expiry": 1_890_000_000,
            "chain": [{"not_after": 1_890_000_000 + i} for i in range(3)],
            "fingerprint_sha256": "ab" * 32,
            "subject": "CN=example.org",
            "issuer": 'CN=R11,O=Let\'s Encrypt,OU="x"',
            "sans": ["DNS:example.org", "DNS:www.example.org"],
            "serial": "00deadbeef",
            "protocol": "TLSv1.3",
            "verified": True,
        },
    ),
    "plugin, 50 fields": ("plugin", {"ok": True, "duration_ms": 3.0, **{f"field_{i}": i * 1.5 for i in range(50)}}),
}


def per_answer(n: int = 200_000) -> None:
    try:
        from gateway.metrics import GatewayMetrics
    except ImportError:  # a revision before gateway/metrics.py: a Counter of tuples and gateway/histogram.py
        from collections import Counter, defaultdict

        from gateway.histogram import Histogram

        responses: Counter[tuple[str, int]] = Counter()
        overhead: defaultdict[str, Histogram] = defaultdict(Histogram)

        def answer(seconds: float) -> None:
            responses[("sleep", 200)] += 1
            overhead["sleep"].observe(seconds)

    else:
        metrics = GatewayMetrics()

        def answer(seconds: float) -> None:
            metrics.count_response("sleep", 200)
            metrics.observe_overhead("sleep", seconds)

    best = float("inf")
    for _ in range(5):
        began = time.process_time()
        for i in range(n):
            answer(0.0001 * (i % 50))
        best = min(best, (time.process_time() - began) / n)
    print(f"answer: {best * 1e6:.2f} µs per answered check (response counted, own time observed)")


def render(n: int) -> None:
    from gateway.prometheus import render_check

    for label, (type_name, result) in RESULTS.items():
        best = float("inf")
        for _ in range(5):
            began = time.process_time()
            for _ in range(n):
                render_check(type_name, "SUCCESS", result, 5.0)
            best = min(best, (time.process_time() - began) / n)
        size = len(render_check(type_name, "SUCCESS", result, 5.0))
        print(f"render {label}: {best * 1e6:.1f} µs per answer ({size} bytes)")


def scrape(types: int, scheduled: int) -> None:
    import tornado.httpclient
    import tornado.httpserver
    import tornado.netutil

    from gateway.config import Settings
    from gateway.http_api import make_app
    from gateway.state import Gateway
    from tasks.registry import Param, check, load_checks
    from tests.support.stub_client import StubClient

    for i in range(types):
        check(f"bench_type_{i}", params=(Param("x", int, default=0),), queue="bench")(lambda x: {"ok": True})
    checks = load_checks()
    client = StubClient()
    for i in range(scheduled):
        client.results.runs[f"entry_{i}"] = {
            "status": "SUCCESS",
            "result": {"ok": i % 7 != 0},
            "name": f"checkgate.bench_type_{i % max(types, 1)}",
            "task_id": f"t{i}",
            "date_done": "2026-12-01T10:00:00.123456+00:00",
        }
    gateway = Gateway(client=client, settings=Settings(), checks=checks, queues={n: n for n in checks})  # type: ignore[arg-type]

    async def run() -> None:
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(make_app(gateway))
        server.add_sockets(sockets)
        base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        http = tornado.httpclient.AsyncHTTPClient()

        async def timed(path: str) -> tuple[float, int]:
            began = time.process_time()
            response = await http.fetch(base + path, raise_error=False)
            return time.process_time() - began, len(response.body)

        for i in range(types):
            await http.fetch(f"{base}/check/bench_type_{i}?x=1", raise_error=False)
            await http.fetch(f"{base}/check/bench_type_{i}?x=a", raise_error=False)
        for _ in range(5):
            await timed("/metrics")
        metrics = [await timed("/metrics") for _ in range(50)]
        baseline = [await timed("/nope") for _ in range(50)]
        server.stop()
        took = statistics.median(t for t, _ in metrics) - statistics.median(t for t, _ in baseline)
        print(
            f"scrape with {len(checks)} check types answered, {scheduled} scheduled runs: "
            f"{took * 1000:.2f} ms per /metrics (round trip {statistics.median(t for t, _ in baseline) * 1000:.2f} ms "
            f"subtracted), {metrics[-1][1]} bytes"
        )

    asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=int, default=200, help="extra check types, each answered once")
    parser.add_argument("--scheduled", type=int, default=500, help="scheduled checks with a latest run")
    parser.add_argument("-n", type=int, default=2000, help="renders per run of the render measurement")
    args = parser.parse_args(argv)
    per_answer()
    render(args.n)
    scrape(args.types, args.scheduled)


if __name__ == "__main__":
    main()
