"""What the libraries we chose not to use would cost, measured beside our own code.

    python -m bench.library_cost [--rounds 5] [--peer-python PATH]

PATH is an interpreter with `pydantic-settings` and `limits` installed (a scratch venv: neither is a
dependency of checkgate); by default this one. Each round runs, interleaved, every measurement in a
fresh process, and prints one line:

- start-up: `import gateway.server` (everything the gateway process imports) with this interpreter,
  against `import pydantic_settings` plus a `BaseSettings` of the gateway's thirteen settings with
  PATH (gateway/config.py);
- rate check: µs per request of `gateway.auth.ApiKey.take` (the token bucket), against `limits.aio`'s
  in-memory storage with its sliding-window-counter and moving-window strategies (gateway/auth.py).

The medians over the rounds follow. Other load on the machine moves every figure: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GATEWAY_IMPORT = """
import json, time
began = time.perf_counter()
import gateway.server
print(json.dumps({"gateway_import_ms": (time.perf_counter() - began) * 1000}))
"""

PYDANTIC_SETTINGS = """
import json, time
began = time.perf_counter()
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHECKGATE_", frozen=True)
    port: int = Field(8888, ge=1, le=65535)
    bind: str = "127.0.0.1"
    publish_timeout: float = Field(15.0, gt=0)
    max_inflight: int = Field(20000, ge=1)
    max_inflight_per_type: int = Field(10000, ge=1)
    max_queue_depth: int = Field(10000, ge=1)
    retry_after: int = Field(2, ge=1, le=3600)
    id_prefix: str = Field("", pattern=r"^[A-Za-z0-9._:-]{0,40}$")
    api_keys_file: str = ""
    idle_timeout: float = Field(75.0, gt=0)
    head_timeout: float = Field(10.0, gt=0)
    body_timeout: float = Field(10.0, gt=0)
    debug: bool = False

Settings()
print(json.dumps({"pydantic_settings_ms": (time.perf_counter() - began) * 1000}))
"""

OUR_BUCKET = """
import json, time
from gateway.auth import ApiKey
key = ApiKey("k", b"x" * 32, rate=1e9, burst=1e9)  # never empty: every call is an admitted request
n = 20000
began = time.perf_counter()
for _ in range(n):
    key.take()
print(json.dumps({"bucket_us": (time.perf_counter() - began) / n * 1e6}))
"""

LIMITS = """
import asyncio, json, time
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

async def per_hit(strategy):
    limiter = strategy(MemoryStorage())
    item = RateLimitItemPerSecond(10**9)
    n = 20000
    began = time.perf_counter()
    for _ in range(n):
        await limiter.hit(item, "k")
    return (time.perf_counter() - began) / n * 1e6

print(json.dumps({
    "limits_sliding_us": asyncio.run(per_hit(SlidingWindowCounterRateLimiter)),
    "limits_moving_us": asyncio.run(per_hit(MovingWindowRateLimiter)),
}))
"""


def run(python: str, code: str) -> dict[str, float]:
    out = subprocess.run([python, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--peer-python", default=sys.executable, help="an interpreter with pydantic-settings and limits"
    )
    args = parser.parse_args()
    rounds: list[dict[str, float]] = []
    for number in range(1, args.rounds + 1):
        row = {**run(sys.executable, GATEWAY_IMPORT), **run(args.peer_python, PYDANTIC_SETTINGS)}
        row |= run(sys.executable, OUR_BUCKET) | run(args.peer_python, LIMITS)
        rounds.append(row)
        print(f"round {number}: " + ", ".join(f"{name} {value:.1f}" for name, value in row.items()), flush=True)
    medians = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    print("medians: " + ", ".join(f"{name} {value:.1f}" for name, value in medians.items()))
    print(
        f"pydantic-settings adds {medians['pydantic_settings_ms'] / medians['gateway_import_ms']:.0%} to the "
        f"gateway's imports; limits costs {medians['limits_sliding_us'] / medians['bucket_us']:.0f}x (sliding "
        f"window counter) and {medians['limits_moving_us'] / medians['bucket_us']:.0f}x (moving window) our bucket"
    )


if __name__ == "__main__":
    main()
