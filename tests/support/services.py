"""Private RabbitMQ and Redis servers for tests that stop them or need TLS: own ports, own data, so
nobody else using the machine's services is disturbed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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


class PrivateRabbit:
    """A RabbitMQ node of the test's own (own ports, own data dir); with `certs`, an AMQPS listener too."""

    def __init__(self, workdir: Path, certs: tuple[Path, Path, Path] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.tls_port = free_port() if certs else None
        self.node = f"cgt{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        (workdir / "plugins").write_text("[].")
        conf = [f"listeners.tcp.local = 127.0.0.1:{self.port}"]
        if certs:
            ca, cert, key = certs
            conf += [
                f"listeners.ssl.local = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {ca}",
                f"ssl_options.certfile = {cert}",
                f"ssl_options.keyfile = {key}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        (workdir / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        self.env = {
            **os.environ,
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "plugins"),
            "RABBITMQ_PID_FILE": str(workdir / "pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def tls_url(self) -> str:
        return f"amqps://guest:guest@localhost:{self.tls_port}//"

    def start(self) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen([RABBITMQ_SERVER], env=self.env, stdout=log, stderr=log, start_new_session=True)
        wait_port(self.port, up=True, timeout=90, what=f"RabbitMQ {self.node} (see {self.workdir}/server.log)")
        if self.tls_port:
            wait_port(self.tls_port, up=True, timeout=30, what=f"RabbitMQ {self.node} TLS")

    def ctl(self, *args: str) -> None:
        subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node, *args], env=self.env, check=True)

    def stop_app(self) -> None:
        self.ctl("stop_app")
        wait_port(self.port, up=False, timeout=30, what=f"RabbitMQ {self.node}")

    def start_app(self) -> None:
        self.ctl("start_app")
        wait_port(self.port, up=True, timeout=60, what=f"RabbitMQ {self.node}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class PrivateRedis:
    """A redis-server of the test's own on a free port; with `certs` it speaks TLS only, with `password` AUTH.
    It also listens on a Unix socket, `socket_path`."""

    def __init__(
        self, workdir: Path, certs: tuple[Path, Path, Path] | None = None, password: str | None = None
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        # Short, whatever the test's directory: a Unix socket path has room for ~100 bytes.
        self.socket_path = Path(tempfile.gettempdir()) / f"cg-redis-{self.port}.sock"
        self.certs = certs
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.certs:
            return f"rediss://{auth}localhost:{self.port}/0?ssl_cert_reqs=required"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [REDIS, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        argv += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.certs:
            ca, cert, key = self.certs
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert)]
            argv += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(self.port)]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        wait_port(self.port, up=True, timeout=10, what="private redis")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
