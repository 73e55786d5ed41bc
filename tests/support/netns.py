"""Hosts as Linux network namespaces: a worker "machine" that can vanish silently, be cut off and heal.

```
root namespace: bridge cgt<id>br 10.231.N.1/24  ← RabbitMQ nodes and Redis listen here (and on 127.0.0.1)
   ├── veth cgt<id>v2 ══ eth0 10.231.N.2   namespace cgt<id>-<host a>
   └── veth cgt<id>v3 ══ eth0 10.231.N.3   namespace cgt<id>-<host b>
```
A host's only route is its /24: nothing it sends can leave the machine (no default route, and the root
namespace does not forward). `Host.cut()` sets the root end of its veth down: every packet either way is
dropped without a FIN or a RST, as when a machine loses power or its link; `Host.heal()` brings it back.
Needs root and iproute2 (`ip`); `missing()` says why it cannot work here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from tests.support.runs import TestRun

SUBNET = "10.231"


def ip(*args: str, check: bool = True) -> str:
    """Run `ip <args>`; return its stdout (raise `CalledProcessError` with stderr when `check`)."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, ["ip", *args], done.stdout, done.stderr)
    return done.stdout


def missing() -> str | None:
    """Why network namespaces cannot be made here (None when they can)."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed: run scripts/bootstrap.sh"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"cgtprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` fails here: {exc.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


def _free_subnet() -> int:
    """A third octet N with no 10.231.N.0/24 address or route on this machine."""
    used = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show", "table", "all")
    taken = {n for n in range(256) if f"{SUBNET}.{n}." in used}
    choices = [n for n in range(1, 255) if n not in taken]
    if not choices:
        raise RuntimeError(f"every {SUBNET}.N.0/24 is in use")
    return random.choice(choices)


@dataclass
class Host:
    """One namespace acting as a machine: its name, namespace, address and the root end of its link."""

    name: str
    namespace: str
    address: str
    link: str

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def cut(self) -> None:
        """Drop everything to and from this host, silently (no FIN, no RST): it vanished or is partitioned."""
        ip("link", "set", self.link, "down")

    def heal(self) -> None:
        """Reconnect a host that was cut."""
        ip("link", "set", self.link, "up")

    def pids(self) -> list[int]:
        """Processes running inside this host's namespace."""
        return [int(pid) for pid in ip("netns", "pids", self.namespace, check=False).split()]

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of this host (what a power cut does to them)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


class Network:
    """A bridge in the root namespace and hosts as namespaces on it; a context manager that removes them.

    `address` is the root namespace's address on the bridge: servers that hosts must reach listen there.
    """

    def __init__(self, run: TestRun) -> None:
        self.run = run
        self.bridge = f"{run.name_prefix}br"
        self.octet = _free_subnet()
        self.address = f"{SUBNET}.{self.octet}.1"
        self.hosts: dict[str, Host] = {}

    def start(self) -> Network:
        ip("link", "add", "name", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str) -> Host:
        """A new namespace `cgt<id>-<name>` linked to the bridge, with the next free address."""
        index = len(self.hosts) + 2
        prefix = self.run.name_prefix
        host = Host(name, f"{prefix}-{name}", f"{SUBNET}.{self.octet}.{index}", f"{prefix}v{index}")
        ip("netns", "add", host.namespace)
        self.hosts[name] = host
        ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
        ip("link", "set", host.link, "master", self.bridge)
        ip("link", "set", host.link, "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    def close(self) -> None:
        """Kill what runs in the hosts, delete their namespaces and links, then the bridge."""
        for host in self.hosts.values():
            host.kill_all()
            ip("netns", "del", host.namespace, check=False)
            ip("link", "del", host.link, check=False)
        self.hosts.clear()
        ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> Network:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# setns(2)'s flag for a network namespace.
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """The calling thread inside the named network namespace for the block (setns(2) moves only the calling
    thread; sockets it makes stay in the namespace they were made in)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)
        os.close(target)


class Loopback:
    """A network namespace with only its loopback, for a test that needs a kernel setting of its own
    (`sysctls`) without touching the machine's: its 127.0.0.1:<port> for each of `forwarded` reaches the
    same port on the root namespace's loopback (the shared RabbitMQ and Redis), through a forwarder thread
    of the test process. A context manager: leaving it kills what runs inside and deletes the namespace."""

    def __init__(self, run: TestRun, forwarded: Sequence[int], sysctls: Mapping[str, str]) -> None:
        self.namespace = f"{run.name_prefix}-lo"
        self.forwarded = tuple(forwarded)
        self.sysctls = dict(sysctls)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def __enter__(self) -> Loopback:
        ip("netns", "add", self.namespace)
        try:
            ip("-n", self.namespace, "link", "set", "lo", "up")
            for key, value in self.sysctls.items():
                subprocess.run(self.command(["sysctl", "-qw", f"{key}={value}"]), check=True)
            with entered(self.namespace):
                listeners = [socket.create_server(("127.0.0.1", port)) for port in self.forwarded]
            self._thread.start()
            for sock, port in zip(listeners, self.forwarded, strict=True):
                asyncio.run_coroutine_threadsafe(self._forward(sock, port), self._loop).result(10)
        except BaseException:
            self.__exit__()
            raise
        return self

    async def _forward(self, sock: socket.socket, port: int) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return

            async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

        await asyncio.start_server(serve, sock=sock)

    def __exit__(self, *exc: object) -> None:
        for pid in ip("netns", "pids", self.namespace, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        ip("netns", "del", self.namespace, check=False)
