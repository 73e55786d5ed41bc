"""What a check's name lookup costs through `tasks.checks._resolver` (c-ares) against `socket.getaddrinfo`.

    python -m bench.resolver_cost [-n 2000] [--rounds 5]

Per lookup, in one thread, median of the rounds (wall time; lookups answered without the network):
- ``localhost``: the resolver's path for it (the system's getaddrinfo, from /etc/hosts) against the former
  path (getaddrinfo through a 32-thread pool, waited on with a timeout);
- a name of /etc/hosts other than localhost (``--hosts-name``, default: this host's name when /etc/hosts
  lists it): c-ares, the system's getaddrinfo called directly, and through the former pool;
- ``answered.test`` from a DNS server on 127.0.0.1 (the test suite's): c-ares, a whole DNS round trip;
- making a channel (once per thread per `_resolver.CHANNEL_MAX_AGE`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import statistics
import time
from collections.abc import Callable

from tasks.checks import _resolver


def _per_call(fn: Callable[[], object], n: int) -> float:
    began = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - began) / n * 1e6


def _hosts_name() -> str | None:
    name = socket.gethostname()
    try:
        with open("/etc/hosts", encoding="utf-8") as hosts:
            listed = {word for line in hosts for word in line.split("#")[0].split()[1:]}
    except OSError:
        return None
    return name if name in listed else next((w for w in sorted(listed) if w != "localhost"), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hosts-name", default=_hosts_name())
    args = parser.parse_args()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=32)

    def pooled(host: str) -> Callable[[], object]:
        return lambda: pool.submit(socket.getaddrinfo, host, 80, 0, socket.SOCK_STREAM).result(timeout=5)

    cases: dict[str, Callable[[], object]] = {
        "localhost: _resolver (system getaddrinfo)": lambda: _resolver.getaddrinfo("localhost", 80, 0, 5),
        "localhost: getaddrinfo via the former pool": pooled("localhost"),
    }
    if args.hosts_name:
        name = args.hosts_name
        cases[f"{name} (/etc/hosts): c-ares"] = lambda: _resolver.getaddrinfo(name, 80, 0, 5)
        cases[f"{name} (/etc/hosts): getaddrinfo, calling thread"] = lambda: socket.getaddrinfo(
            name, 80, 0, socket.SOCK_STREAM
        )
        cases[f"{name} (/etc/hosts): getaddrinfo via the former pool"] = pooled(name)
    from tests.support.dns_server import dns_server

    with dns_server({("answered.test.", "A"): ["127.0.0.2"]}) as port:
        os.environ[_resolver.SERVERS_ENV] = f"127.0.0.1:{port}"
        cases["answered.test (DNS on 127.0.0.1): c-ares"] = lambda: _resolver.getaddrinfo(
            "answered.test", 80, socket.AF_INET, 5
        )
        cases["making a channel"] = lambda: _resolver._Channel("").close()
        samples: dict[str, list[float]] = {case: [] for case in cases}
        for _ in range(args.rounds):
            for case, fn in cases.items():  # interleaved, so load on the machine spreads over all
                fn()
                samples[case].append(_per_call(fn, args.n if "DNS" not in case else args.n // 4))
    for case, values in samples.items():
        print(f"{case:55s} median {statistics.median(values):8.1f} us  (rounds {min(values):.1f}-{max(values):.1f})")
    pool.shutdown()


if __name__ == "__main__":
    main()
