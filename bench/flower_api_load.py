"""Load on a Flower-style task API: C clients in a closed loop, each calling `POST /api/task/apply/<task>`.

    python -m bench.flower_api_load BASE_URL [--task checkgate.add] [--body '{"kwargs": {"x": 1, "y": 2}}']
        [-c 60] [-n 3000] [--warmup 100] [--basic user:password | --bearer KEY] [--unique-kwarg x] [--json]

Points at Flower (`celery -A tasks flower`) or at checkgate with `CHECKGATE_TASK_API` set: both serve the
same endpoint with the same JSON, so the same script measures both. Each client keeps one HTTP/1.1
keep-alive connection (127.0.0.1 only) and sends its next request when the last answer came. Prints
(or, with --json, one JSON line): requests, req/s over the measured requests, p50/p90/p99/max latency
in ms, and errors (transport errors, non-200 statuses, and 200s whose `state` is not SUCCESS).
`--unique-kwarg x` gives each request its own value of kwarg `x` (no two requests alike).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Connection:
    """One keep-alive HTTP/1.1 connection: POST a body, read the answer (Content-Length framed)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port, self.headers = host, port, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Drive the load; the measured figures."""
    url = urlsplit(args.base_url)
    if url.hostname not in LOCAL_HOSTS:
        raise SystemExit(f"{args.base_url}: the bench only runs against 127.0.0.1")
    headers = {"Content-Type": "application/json"}
    if args.basic:
        headers["Authorization"] = "Basic " + base64.b64encode(args.basic.encode()).decode()
    elif args.bearer:
        headers["Authorization"] = f"Bearer {args.bearer}"
    path = url.path.rstrip("/") + f"/api/task/apply/{args.task}"
    template = json.loads(args.body)
    counter = iter(range(10**12))
    total = args.warmup + args.requests
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sent = 0
    measured_from: float | None = None

    def body() -> bytes:
        if args.unique_kwarg:
            template.setdefault("kwargs", {})[args.unique_kwarg] = next(counter)
        return json.dumps(template).encode()

    async def client() -> None:
        nonlocal sent, measured_from
        conn = Connection(url.hostname or "127.0.0.1", url.port or 80, headers)
        try:
            while sent < total:
                sent += 1
                measured = sent > args.warmup
                if measured and measured_from is None:
                    measured_from = time.perf_counter()
                began = time.perf_counter()
                try:
                    status, data = await asyncio.wait_for(conn.post(path, body()), args.timeout)
                except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                    conn.close()
                    if measured:
                        errors[type(exc).__name__] += 1
                    continue
                if not measured:
                    continue
                latencies.append(time.perf_counter() - began)
                if status != 200:
                    errors[f"http {status}"] += 1
                else:
                    state = json.loads(data).get("state")
                    if state != "SUCCESS":
                        errors[f"state {state}"] += 1
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - (measured_from or time.perf_counter())
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1) if ordered else None

    return {
        "base_url": args.base_url,
        "task": args.task,
        "concurrency": args.concurrency,
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else None,
        "p50_ms": round(statistics.median(ordered) * 1000, 1) if ordered else None,
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
        "errors": sum(errors.values()),
        "error_detail": dict(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("--task", default="checkgate.add")
    parser.add_argument("--body", default='{"kwargs": {"x": 1, "y": 2}}')
    parser.add_argument("-c", "--concurrency", type=int, default=60)
    parser.add_argument("-n", "--requests", type=int, default=3000, help="measured requests (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request before it counts as an error")
    parser.add_argument("--unique-kwarg", default="")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--basic", default="", help="user:password (Flower's --basic-auth)")
    auth.add_argument("--bearer", default="", help="an API key (checkgate's CHECKGATE_API_KEYS_FILE)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"{figures['base_url']} {figures['task']} c={figures['concurrency']}: {figures['requests']} requests, "
            f"{figures['rps']} req/s, p50 {figures['p50_ms']} ms, p90 {figures['p90_ms']} ms, "
            f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms, "
            f"errors {figures['errors']} {figures['error_detail']}"
        )


if __name__ == "__main__":
    main()
