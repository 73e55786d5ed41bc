"""Thousands of sync requests open at once on slow checks: every one answered, gateway memory bounded."""

import asyncio
import time

from tests.faults.conftest import scale
from tests.faults.load import REPORT, FaultRow, RssPeak
from tests.support.stack import Stack, http_get


async def open_requests(base: str, count: int, path: str) -> list[int]:
    """`count` GETs, all connected before the first answer can arrive; their status codes (0: no answer)."""
    host, port = base.removeprefix("http://").split(":")

    async def one() -> int:
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readline(), 120)
            writer.close()
            return int(head.split()[1])
        except (TimeoutError, OSError, IndexError, ValueError):
            return 0

    return await asyncio.gather(*(one() for _ in range(count)))


def test_thousands_of_open_requests(new_stack: Stack) -> None:
    count = int(scale(1000, 5000))
    gateway = new_stack.start_gateway("gw")
    for n in range(2):
        new_stack.start_worker(f"sleep{n}", ["sleep"], concurrency=int(scale(250, 500)))
    started = time.monotonic()
    with RssPeak(new_stack.procs["gw"].pid) as rss:
        codes = asyncio.run(open_requests(gateway, count, "/check/sleep?ms=1000&timeout=110"))
    elapsed = time.monotonic() - started
    _, metrics, _ = http_get(gateway + "/metrics")
    assert codes.count(200) == count, {c: codes.count(c) for c in set(codes)}
    assert "checkgate_waiting_results 0" in metrics
    assert "checkgate_inflight_requests 0" in metrics
    assert rss.peak < rss.before + 0.1 * count  # well under 100 KB per open request
    REPORT.append(
        FaultRow(
            f"{count} sync requests open at once (1 s checks)",
            count,
            0,
            codes.count(200),
            0,
            count - codes.count(200),
            0,
            f"all answered in {elapsed:.1f}s; gateway RSS {rss.before:.0f} MB → peak {rss.peak:.0f} MB "
            f"→ {rss.after:.0f} MB",
        )
    )
