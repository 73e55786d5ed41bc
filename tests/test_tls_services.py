"""TLS to RabbitMQ (amqps, mutual TLS too) and to Redis (rediss + password), verified against a locally
generated CA."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import pki
from tests.support.env import BACKEND_URL
from tests.support.services import PrivateRabbit, PrivateRedis, make_certs
from tests.support.stack import Stack, http_get

# Where the client certificate and key the broker requires (mutual TLS) are: set for every stack here.
CLIENT_ENV: dict[str, str] = {}


@pytest.fixture(scope="module")
def tls_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateRabbit, PrivateRedis, Path]]:
    """A RabbitMQ that requires a client certificate (mutual TLS) and a TLS Redis with a password."""
    base = tmp_path_factory.mktemp("tls")
    certs = make_certs(base / "certs")
    ca_file, cert, key = certs
    # make_certs keeps no CA key: clients get theirs from a second CA, which the broker trusts too.
    client_ca = pki.authority("checkgate client CA", days=2)
    client = pki.leaf(client_ca, days=2, names=["checkgate-gateway"], common_name="checkgate-gateway", client=True)
    bundle = base / "certs" / "both-cas.pem"
    bundle.write_bytes(ca_file.read_bytes() + client_ca.pem())
    CLIENT_ENV.update(
        CHECKGATE_BROKER_CERT=str(pki.write_chain(base / "client.pem", client)),
        CHECKGATE_BROKER_KEY=str(pki.write_key(base / "client.key", client)),
    )
    (base / "rabbit").mkdir()
    (base / "redis").mkdir()
    rabbit = PrivateRabbit(base / "rabbit", (bundle, cert, key), client_certs=True)
    redis_server = PrivateRedis(base / "redis", certs, password="s3cret-test")
    rabbit.start()
    redis_server.start()
    try:
        yield rabbit, redis_server, ca_file
    finally:
        redis_server.stop()
        rabbit.stop()


def tls_stack(tmp_path: Path, rabbit: PrivateRabbit, redis_url: str) -> Stack:
    return Stack(tmp_path, f"cgt{rabbit.tls_port}_", rabbit.tls_url, redis_url, dict(CLIENT_ENV))


def test_checks_run_over_tls_end_to_end(tls_services, tmp_path: Path) -> None:
    rabbit, redis_server, ca = tls_services
    stack = tls_stack(tmp_path, rabbit, redis_server.url)
    stack.env.update(CHECKGATE_BROKER_CA=str(ca), CHECKGATE_BACKEND_CA=str(ca))
    try:
        stack.start_worker("add", ["add"], concurrency=2)
        gateway = stack.start_gateway("gw")
        status, body, _ = http_get(gateway + "/check/add?x=20&y=22")
        assert (status, body["result"]) == (200, 42)
        status, health, _ = http_get(gateway + "/health")
        assert health["broker"]["ok"] and health["backend"]["ok"]
    finally:
        stack.stop()


def test_an_untrusted_broker_certificate_is_refused(tls_services, tmp_path: Path) -> None:
    rabbit, redis_server, ca = tls_services
    other_ca = make_certs(tmp_path / "other")[0]
    stack = tls_stack(tmp_path, rabbit, redis_server.url)
    stack.env.update(CHECKGATE_BROKER_CA=str(other_ca), CHECKGATE_BACKEND_CA=str(ca))
    try:
        gateway = stack.start_gateway("gw", wait_up=False)
        status, body, _ = http_get(gateway + "/check/add?x=1&y=2")
        assert (status, body["error"]) == (503, "broker unavailable")
        assert "CERTIFICATE_VERIFY_FAILED" in stack.logs["gw"].read_text()
    finally:
        stack.stop()


def test_a_wrong_redis_password_is_refused(tls_services, tmp_path: Path) -> None:
    rabbit, redis_server, ca = tls_services
    stack = tls_stack(tmp_path, rabbit, redis_server.url.replace("s3cret-test", "wrong"))
    stack.env.update(CHECKGATE_BROKER_CA=str(ca), CHECKGATE_BACKEND_CA=str(ca))
    try:
        gateway = stack.start_gateway("gw", wait_up=False)
        status, body, _ = http_get(gateway + "/check/add?x=1&y=2")
        assert (status, body["error"]) == (503, "result backend unavailable")
    finally:
        stack.stop()


def test_a_broker_that_requires_client_certificates(tls_services, tmp_path: Path) -> None:
    """Mutual TLS: workers and the gateway present the certificate of CHECKGATE_BROKER_CERT/_KEY
    (celeryconfig's broker_use_ssl certfile/keyfile, honoured by py-amqp and by the gateway alike)."""
    rabbit, _, ca = tls_services
    env = {**CLIENT_ENV, "CHECKGATE_BROKER_CA": str(ca)}
    stack = Stack(tmp_path, f"cgm{rabbit.tls_port}_", rabbit.tls_url, BACKEND_URL, env)
    try:
        stack.start_worker("add", ["add"], concurrency=2)
        gateway = stack.start_gateway("gw")
        status, body, _ = http_get(gateway + "/check/add?x=20&y=22")
        assert (status, body["result"]) == (200, 42)
        # Without a client certificate the broker refuses the TLS handshake: a 503, and the log says why.
        bare = stack.start_gateway("bare", wait_up=False, CHECKGATE_BROKER_CERT="", CHECKGATE_BROKER_KEY="")
        status, body, _ = http_get(bare + "/check/add?x=1&y=2")
        assert (status, body["error"]) == (503, "broker unavailable")
        log = stack.logs["bare"].read_text()
        assert "not reachable" in log and ("certificate" in log.lower() or "Connection reset" in log), log[-1500:]
    finally:
        stack.stop()
        # The queues die with the private node; the results are on the shared Redis (db of the tests).
        results = redis.Redis.from_url(BACKEND_URL)
        for key in results.scan_iter(match=f"*{stack.prefix}*"):
            results.delete(key)
