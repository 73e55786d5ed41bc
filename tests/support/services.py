"""Private RabbitMQ and Redis servers for tests that stop them or need TLS: own ports, own data, so
nobody else using the machine's services is disturbed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from tests.support import pki
from tests.support.stack import free_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def wait_port(port: int, up: bool, timeout: float, what: str) -> None:
    """Wait until 127.0.0.1:`port` accepts connections (or stops accepting them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if (sock.connect_ex(("127.0.0.1", port)) == 0) == up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not {'up' if up else 'down'} on port {port}")


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A local CA and a server certificate for localhost/127.0.0.1 it signed: (ca, cert, key) PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = pki.authority("checkgate test CA", days=2)
    server = pki.leaf(ca, days=2)
    key = pki.write_key(directory / "server.key", server)
    key.chmod(0o644)  # RabbitMQ may run as another user elsewhere; these are throwaway test keys
    return pki.write_chain(directory / "ca.pem", ca), pki.write_chain(directory / "server.pem", server), key


class Started:
    """Processes a test starts as a context manager: `start()` on the way in (it returns the object),
    `stop()` on the way out, and also when `start` fails half way, so no process outlives the test."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrivateRabbit:
    """A RabbitMQ node of the test's own (own ports, own data dir); with `certs`, an AMQPS listener too
    (with `client_certs`, one that requires a client certificate signed by the same CA).

    `name` sets the node name (`<name>@localhost`, else `cgt<port>`); `host` adds a listener on that
    address (a bridge address network-namespace hosts reach) and lets `guest` log in over it; `env` is
    added to the node's environment (a run marker, say). The node can be killed (`kill`, SIGKILL: a crash)
    and started again (`start`) with the same ports and data, so a cluster member rejoins by itself.
    """

    def __init__(
        self,
        workdir: Path,
        certs: tuple[Path, Path, Path] | None = None,
        *,
        name: str | None = None,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        client_certs: bool = False,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dist_port = free_port()
        self.tls_port = free_port() if certs else None
        self.host = host
        self.node = f"{name or f'cgt{self.port}'}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        (workdir / "plugins").write_text("[].")
        conf = [f"listeners.tcp.local = 127.0.0.1:{self.port}"]
        if host != "127.0.0.1":
            # guest may log in from the hosts' addresses too: a throwaway node on a private bridge.
            conf += [f"listeners.tcp.bridge = {host}:{self.port}", "loopback_users = none"]
        if certs:
            ca, cert, key = certs
            conf += [
                f"listeners.ssl.local = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {ca}",
                f"ssl_options.certfile = {cert}",
                f"ssl_options.keyfile = {key}",
                # client_certs: mutual TLS, a client without a certificate its CA signed is refused.
                f"ssl_options.verify = {'verify_peer' if client_certs else 'verify_none'}",
                f"ssl_options.fail_if_no_peer_cert = {'true' if client_certs else 'false'}",
            ]
        (workdir / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        self.env = {
            **os.environ,
            **(env or {}),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            # Erlang distribution (clustering, CLI) on loopback only, never on the hosts' bridge.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "plugins"),
            "RABBITMQ_PID_FILE": str(workdir / "pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}//"

    @property
    def tls_url(self) -> str:
        return f"amqps://guest:guest@localhost:{self.tls_port}//"

    @property
    def log_path(self) -> Path:
        """The node's own log (connections opened and closed, with the reason, time-stamped in UTC)."""
        return self.workdir / "log" / f"{self.node}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True) -> None:
        """Start the node (again, after `stop` or `kill`); with `wait`, until it accepts AMQP connections."""
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen([RABBITMQ_SERVER], env=self.env, stdout=log, stderr=log, start_new_session=True)
        if wait:
            self.wait_up()

    def wait_up(self, timeout: float = 90) -> None:
        """Wait until the node accepts AMQP connections (raise `RuntimeError` if it exited)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"RabbitMQ {self.node} exited (see {self.workdir}/server.log)")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"RabbitMQ {self.node} not up on port {self.port} (see {self.workdir}/server.log)")
        if self.tls_port:
            wait_port(self.tls_port, up=True, timeout=30, what=f"RabbitMQ {self.node} TLS")

    def ctl(self, *args: str, capture: bool = False) -> str:
        """Run `rabbitmqctl -n <node> <args>` (as this user, with this user's Erlang cookie); its stdout."""
        done = subprocess.run(
            ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node, *args],
            env=self.env,
            check=True,
            stdout=subprocess.PIPE if capture else None,
            text=True,
        )
        return done.stdout or ""

    def queues(self, *columns: str) -> dict[str, dict[str, Any]]:
        """`rabbitmqctl list_queues name <columns>` as name → row (e.g. "type", "arguments", "messages",
        "members" for quorum queues)."""
        rows = json.loads(self.ctl("list_queues", "name", *columns, "--formatter", "json", capture=True))
        return {row["name"]: row for row in rows}

    def stop_app(self) -> None:
        self.ctl("stop_app")
        wait_port(self.port, up=False, timeout=30, what=f"RabbitMQ {self.node}")

    def start_app(self) -> None:
        self.ctl("start_app")
        wait_port(self.port, up=True, timeout=60, what=f"RabbitMQ {self.node}")

    def kill(self) -> None:
        """SIGKILL the node and everything it started: a crash, no goodbye to clients or peers."""
        if self.running:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._wait_gone()

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self._wait_gone()

    def _wait_gone(self, timeout: float = 30) -> None:
        # The script is reaped before the Erlang VM it ran has exited: until the VM is gone its port and
        # node name are taken, and a new start would fail on them.
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.killpg(self.proc.pid, signal.SIGKILL)


class PrivateRedis:
    """A redis-server of the test's own on a free port; with `certs` it speaks TLS only, with `password` AUTH.
    It also listens on a Unix socket, `socket_path`.

    `host` adds a listening address (a bridge address network-namespace hosts reach); `args` are extra
    `redis-server` options (`["--replicaof", host, port]`, say); `config` a configuration file read first
    (a sentinel's, which it rewrites); `env` is added to its environment. A stopped server starts again on
    the same port (`start`)."""

    def __init__(
        self,
        workdir: Path,
        certs: tuple[Path, Path, Path] | None = None,
        password: str | None = None,
        *,
        host: str = "127.0.0.1",
        args: list[str] | None = None,
        config: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # Short, whatever the test's directory: a Unix socket path has room for ~100 bytes.
        self.socket_path = Path(tempfile.gettempdir()) / f"cg-redis-{self.port}.sock"
        self.certs = certs
        self.password = password
        self.host = host
        self.args = list(args or [])
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.certs:
            return f"rediss://{auth}localhost:{self.port}/0?ssl_cert_reqs=required"
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        binds = ["127.0.0.1"] if self.host == "127.0.0.1" else ["127.0.0.1", self.host]
        # On a private bridge only the test's own namespaces can connect: let them in without a password.
        protected = ["--protected-mode", "no"] if self.host != "127.0.0.1" else []
        argv = [REDIS, *([str(self.config)] if self.config else []), "--bind", *binds, "--dir", str(self.workdir)]
        argv += ["--save", "", "--appendonly", "no", *protected]
        argv += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.certs:
            ca, cert, key = self.certs
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert)]
            argv += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(self.port)]
        if self.password:
            argv += ["--requirepass", self.password]
        argv += self.args
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=self.env)
        wait_port(self.port, up=True, timeout=10, what="private redis")

    def stop(self) -> None:
        """SIGKILL the server (a crash: what it has not replicated is gone)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            # A killed server leaves its socket file behind; a restart binds it again.
            self.socket_path.unlink(missing_ok=True)

    kill = stop
