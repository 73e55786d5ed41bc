"""Hostile callers under load (issue #11): while legitimate callers keep a steady mix of checks going,
hostile callers try every kind of attack the issue found, all at once. Nothing is lost, every hostile
request gets its documented answer, no forged result can be read, no worker is left stuck and the
gateway's memory stays bounded; the latency of the legitimate checks before and during the attack is
reported, not asserted (beyond their own deadlines).

The kinds, and the documented answer each attempt must get:

- forge: the tcp, http, dns, tls and plugin (`banner`) checks aimed at the deployment's own Redis (SET
  of a forged result for made-up ids and for ids of real results, GET, SCAN), its broker (AMQP header,
  epmd, management API) and its own gateway, over 127.0.0.1, ::1 and localhost, and through redirects
  of a local target → 403, reason `target_refused`, a message that names no endpoint.
- ReDoS: `body_match`, `body_not_match`, `expect` and `answer_match` with catastrophic patterns against
  local targets sending 'a' * n + '!' → the check's ordinary answer (200, the pattern judged), inside
  its 3 s deadline; syntax only a backtracking engine has (backreference, lookaround) → 400 naming it.
- file path: `ca_bundle` of the http, tcp and tls checks naming /proc/self/fd/0 or /dev/stdin (400
  naming `ca_bundle`), or a FIFO, symlinks out and the other hostile files inside the CA directory
  (200, `bad_ca_bundle`, the same detail for all).
- big body: POSTs announcing and streaming 95 MB (405), GETs announcing 95 MB (413), a 300 KB header
  (431) and a 300 KB URI (414), over raw sockets.
- slow: slowloris heads, one byte at a time (408 at the head timeout), and bodies that stall after
  2 bytes (405 and 413 at once, from the head).
- overrun: `sleep` for 60 s with a 1 s timeout (504 at the deadline; the worker ends the task there, so
  /result/<id> says DeadlineExceeded, or REVOKED/EXPIRED when it expired before a worker took it), and a
  timeout below the minimum (400 naming `timeout`).
"""

from __future__ import annotations

import itertools
import random
import secrets
import shutil
import ssl
import statistics
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from tasks.checks._trust import REFUSAL
from tests.faults.conftest import scale
from tests.faults.load import REPORT, FaultRow, Outcome, RssPeak, latency_ms, run_load
from tests.support import pki
from tests.support.dns_server import dns_server
from tests.support.forge import escaped, forge_command, resp
from tests.support.hostile_paths import make_hostile
from tests.support.raw_http import RawServer, answer, exchange, is_json_refusal, raw_server, trickle
from tests.support.stack import Stack, http_get, poll_result

REFUSED = "target refused by policy"  # what every refused target reads (tasks/checks/_guard.py)
LEGIT_TIMEOUT = 10  # s: a legitimate check held up by a stuck worker answers 504 within it
REDOS_TIMEOUT = 3  # s, as in the reproduction
HEAD_TIMEOUT = scale(2, 10)  # s: the gateway's head timeout (the full run keeps the default, 10 s)
# Steps a backtracking engine takes on "a" * n + "!": 2**n for the first three, n**12 for the last.
CATASTROPHIC = ("(a+)+$", "(a|aa)+$", "(a|a)+$", "(.*a){12}$")
# Too big for RE2's DFA: its NFA costs text x pattern size in one C call (tasks/checks/_pattern.py).
NFA_BOUND = "(?s).*a.{999}c"
AB_BYTES = 1024 * 1024
SHORT, LONG = "a" * 30 + "!", "a" * 60_000 + "!"  # the text, and one near the 64 KiB body cap
_nonce = itertools.count()
# How an overrun ends (/result: status, state, error type): stopped by its worker at the deadline, or
# expired before a worker took it (by the worker: REVOKED; in the broker: no result, EXPIRED).
STOPPED = (504, "FAILURE", "DeadlineExceeded")
OVERRUN_ENDS = {("FAILURE", "DeadlineExceeded"), ("REVOKED", "TaskRevokedError")}
GATEWAY_504 = ("PENDING", "deadline of 1s passed")


@dataclass(frozen=True)
class Attack:
    """One hostile request: its kind, what it is, how it is sent (→ status or None, body or raw answer)
    and whether an answer is the documented one."""

    kind: str
    what: str
    send: Callable[[], tuple[int | None, Any]]
    documented: Callable[[int, Any], bool]


@dataclass(frozen=True)
class Hit:
    """What one attack got back."""

    attack: Attack
    status: int | None
    body: Any
    documented: bool
    seconds: float


@dataclass
class Deployment:
    """The stack under attack, its loopback targets and what the attacks need to know of it."""

    stack: Stack
    gateway: str
    raw: RawServer
    raw_tls: RawServer
    dns_port: int
    ca_bundle: str
    hostile_bundles: dict[str, Path]
    redis_port: int
    redis_db: str


# --- the deployment and its targets ---------------------------------------------------------------


def tls_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for localhost/127.0.0.1 under a new CA, and the CA's bundle written in `directory`."""
    root = pki.authority("checkgate hostile-row CA", days=30)
    served = pki.leaf(root, days=30)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(
        pki.write_chain(directory / "served.pem", served), pki.write_key(directory / "served.key", served)
    )
    return ctx, pki.write_chain(directory / "ca.pem", root)


def ok_answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def redirect_answer(location: str) -> bytes:
    return f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()


@pytest.fixture
def deployment(new_stack: Stack, tmp_path: Path) -> Iterator[Deployment]:
    """A gateway on the deployment's own port over three workers (add, sleep, and the probes: http, tcp,
    dns, tls and the plugin `banner`), CA bundles confined to a directory holding one good bundle and
    every hostile kind, and loopback targets: scripted HTTP and HTTPS, and a DNS zone."""
    ca_dir, elsewhere = tmp_path / "ca", tmp_path / "elsewhere"
    ca_dir.mkdir()
    elsewhere.mkdir()
    ctx, ca = tls_context(elsewhere)
    shutil.copy(ca, ca_dir / "ca.pem")
    hostile = make_hostile(ca_dir, ca)
    new_stack.env["CHECKGATE_CA_DIRS"] = str(ca_dir)
    backend = urllib.parse.urlsplit(new_stack.backend_url)
    zone = {
        ("ok.test.", "A"): ["192.0.2.1"],
        ("short.redos.test.", "TXT"): [f'"{SHORT}"'],
        ("long.redos.test.", "TXT"): [" ".join(['"' + "a" * 250 + '"'] * 4 + ['"!"'])],
    }
    with raw_server() as raw, raw_server(tls=ctx) as raw_tls, dns_server(zone) as dns_port:
        for target in (raw, raw_tls):
            target.answer("/ok", ok_answer(b"ok\n"))
        raw.answer("/redos-short", ok_answer(SHORT.encode()))
        raw.answer("/redos-long", ok_answer(LONG.encode()))
        rng = random.Random(7)
        raw.answer("/redos-ab", ok_answer(bytes(rng.choice(b"ab") for _ in range(AB_BYTES))))
        gateway = new_stack.start_gateway("gw", port=new_stack.gateway_port, CHECKGATE_HEAD_TIMEOUT=str(HEAD_TIMEOUT))
        workers = [("add", ["add"], 4), ("sleep", ["sleep"], 10), ("probes", ["http", "tcp", "dns", "tls"], 10)]
        with ThreadPoolExecutor(len(workers)) as pool:  # started side by side: each takes seconds to import
            starting = [
                pool.submit(new_stack.start_worker, n, q, concurrency=int(scale(c, 2 * c))) for n, q, c in workers
            ]
            for worker in starting:
                worker.result()
        yield Deployment(
            new_stack,
            gateway,
            raw,
            raw_tls,
            dns_port,
            str(ca_dir / "ca.pem"),
            hostile,
            backend.port or 6379,
            backend.path.strip("/") or "0",
        )


def check(gateway: str, kind: str, **params: object) -> tuple[int | None, Any]:
    """GET /check/<kind>?<params>: (status, JSON body), or (None, the error) when nothing came back."""
    try:
        status, body, _ = http_get(f"{gateway}/check/{kind}?{urlencode(params)}", timeout=60)
    except OSError as exc:
        return None, repr(exc)
    return status, body


# --- the legitimate load --------------------------------------------------------------------------

LEGIT_TYPES = ("add", "sleep", "http", "tcp", "dns", "tls")


def legit_path(d: Deployment) -> Callable[[int, int], str]:
    """Client n's i-th request: each client goes round the check types (`LEGIT_TYPES`)."""
    raw, tls = d.raw, d.raw_tls

    def path(n: int, i: int) -> str:
        kind = LEGIT_TYPES[(n + i) % len(LEGIT_TYPES)]
        if kind == "add":
            params: dict[str, object] = {"x": n, "y": i}
        elif kind == "sleep":
            params = {"ms": 100}
        elif kind == "http":
            params = {"url": f"http://127.0.0.1:{raw.port}/ok", "body_match": "^ok"}
        elif kind == "tcp":
            params = {
                "host": "127.0.0.1",
                "port": raw.port,
                "send": r"GET /ok HTTP/1.0\r\n\r\n",
                "expect": "^HTTP/1.1 200",
            }
        elif kind == "dns":
            params = {"name": "ok.test", "server": "127.0.0.1", "port": d.dns_port, "answer_match": r"^192\.0\.2\.1$"}
        else:
            # warn_days (under the 30 days the certificate has left) makes each request its own: tls
            # results are otherwise shared for 30 s.
            params = {
                "host": "127.0.0.1",
                "port": tls.port,
                "server_name": "localhost",
                "ca_bundle": d.ca_bundle,
                "warn_days": next(_nonce) % 2_000 / 100,
            }
        return f"/check/{kind}?{urlencode({**params, 'timeout': LEGIT_TIMEOUT})}"

    return path


def legit_ok(outcome: Outcome) -> bool:
    """A legitimate request's answer is a 200 with the check's success."""
    if outcome.status != 200 or not isinstance(outcome.body, dict):
        return False
    result = outcome.body.get("result")
    if "/check/add?" in outcome.path:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(outcome.path).query)
        return result == int(query["x"][0]) + int(query["y"][0])
    return isinstance(result, dict) and result.get("ok") is True


# --- the attacks ----------------------------------------------------------------------------------


def _is(predicate: Callable[[int, Any], bool]) -> Callable[[int, Any], bool]:
    """`predicate`, false instead of raising on a body of another shape."""

    def safe(status: int, body: Any) -> bool:
        try:
            return bool(predicate(status, body))
        except (KeyError, TypeError, AttributeError, ValueError):
            return False

    return safe


ENDPOINT_WORDS = ("redis", "amqp", "rabbit", "broker", "backend", "flower", "supervisor", "gateway")


@_is
def refused_target(status: int, body: Any) -> bool:
    """403, reason target_refused, and a message that does not say which endpoint was hit."""
    error = body["error"]
    named = any(word in error.lower() for word in ENDPOINT_WORDS)
    return status == 403 and body["result"]["reason"] == "target_refused" and error == REFUSED and not named


def refused_param(field: str) -> Callable[[int, Any], bool]:
    return _is(lambda s, b: s == 400 and b["field"] == field)


def judged(reason: str | None) -> Callable[[int, Any], bool]:
    """The check ran and judged its pattern: ok, or not ok for `reason`."""
    expected = (True, None) if reason is None else (False, reason)
    return _is(lambda s, b: s == 200 and (b["result"]["ok"], b["result"].get("reason")) == expected)


bad_bundle = _is(lambda s, b: s == 200 and (b["result"]["reason"], b["result"]["detail"]) == ("bad_ca_bundle", REFUSAL))


def edge_refusal(status: int, field: str | None = None) -> Callable[[int, Any], bool]:
    return _is(lambda s, raw: is_json_refusal(raw, status, field))


def raw_status(send: Callable[[], bytes]) -> tuple[int | None, Any]:
    """(status, raw answer) of what `send` got back; (None, …) when no answer came."""
    try:
        raw = send()
    except OSError as exc:
        return None, repr(exc)
    return answer(raw)[0] or None, raw


def raw_send(gateway: str, data: bytes, body_after: int = 0) -> Callable[[], tuple[int | None, Any]]:
    return lambda: raw_status(lambda: exchange(gateway, data, timeout=30, body_after=body_after))


def get(gateway: str, kind: str, **params: object) -> Callable[[], tuple[int | None, Any]]:
    return lambda: check(gateway, kind, **params)


def forge_attacks(d: Deployment, forged_ids: list[str]) -> list[Attack]:
    gw, redis_port, raw = d.gateway, d.redis_port, d.raw
    gw_port = d.stack.gateway_port
    attacks = []
    for task_id in forged_ids:
        payload = escaped(forge_command(task_id, d.redis_db))
        for host in ("127.0.0.1", "::1", "localhost"):
            send = get(gw, "tcp", host=host, port=redis_port, send=payload, expect=r"\+OK")
            attacks.append(Attack("forge", f"tcp SET {task_id} via {host}", send, refused_target))
    reads = {
        "tcp SCAN": ("tcp", {"send": escaped(resp(b"SCAN", b"0", b"MATCH", b"celery-task-meta-*")), "expect": "meta"}),
        "tcp GET": ("tcp", {"send": f"GET celery-task-meta-{forged_ids[-1]}\\r\\n", "expect": "SUCCESS"}),
        "dns over tcp": ("dns", {"name": "ok.test", "protocol": "tcp"}),
        "plugin banner": ("banner", {}),
    }
    for what, (kind, params) in reads.items():
        host_key = "server" if kind == "dns" else "host"
        send = get(gw, kind, **{host_key: "127.0.0.1", "port": redis_port, **params})
        attacks.append(Attack("forge", f"{what} to Redis", send, refused_target))

    def tls() -> tuple[int | None, Any]:  # a fresh warn_days each time: not the gateway's cached answer
        return check(gw, "tls", host="127.0.0.1", port=redis_port, warn_days=next(_nonce) % 2_000 / 100)

    attacks.append(Attack("forge", "tls to Redis", tls, refused_target))
    broker = [
        ("tcp AMQP header", "tcp", {"host": "::1", "port": 5672, "send": r"AMQP\x00\x00\x09\x01", "expect": "AMQP"}),
        ("tcp epmd", "tcp", {"host": "localhost", "port": 4369, "send": r"\x00\x01n", "expect": "name"}),
        ("http management", "http", {"url": "http://127.0.0.1:15672/api/exchanges/%2F/amq.default/publish"}),
        ("http gateway", "http", {"url": f"http://127.0.0.1:{gw_port}/check/add?x=1&y=1"}),
        ("http gateway /result", "http", {"url": f"http://localhost:{gw_port}/result/{forged_ids[0]}"}),
    ]
    for what, kind, params in broker:
        attacks.append(Attack("forge", what, get(gw, kind, **params), refused_target))
    for what, location in {
        "redirect to Redis": f"http://127.0.0.1:{redis_port}/",
        "redirect to the broker over ::1": "http://[::1]:5672/",
        "redirect to the management API": "http://localhost:15672/api/overview",
        "redirect to the gateway": f"http://127.0.0.1:{gw_port}/health",
    }.items():
        url = raw.answer(f"/to-{len(attacks)}", redirect_answer(location))
        attacks.append(Attack("forge", what, get(gw, "http", url=url), refused_target))
    return attacks


def redos_attacks(d: Deployment) -> list[Attack]:
    gw, raw, t = d.gateway, d.raw, REDOS_TIMEOUT
    attacks = []
    for pattern in CATASTROPHIC:
        for size in ("short", "long"):
            url = f"http://127.0.0.1:{raw.port}/redos-{size}"
            tcp = {"host": "127.0.0.1", "port": raw.port, "send": f"GET /redos-{size} HTTP/1.0\\r\\n\\r\\n"}
            dns = {"name": f"{size}.redos.test", "record_type": "TXT", "server": "127.0.0.1", "port": d.dns_port}
            attacks += [
                Attack(
                    "ReDoS",
                    f"body_match {pattern} ({size})",
                    get(gw, "http", url=url, body_match=pattern, timeout=t),
                    judged("body_match"),
                ),
                Attack(
                    "ReDoS",
                    f"body_not_match {pattern} ({size})",
                    get(gw, "http", url=url, body_not_match=pattern, timeout=t),
                    judged(None),
                ),
                Attack(
                    "ReDoS",
                    f"expect {pattern} ({size})",
                    get(gw, "tcp", **tcp, expect=pattern, timeout=t),
                    judged("expect"),
                ),
                Attack(
                    "ReDoS",
                    f"answer_match {pattern} ({size})",
                    get(gw, "dns", **dns, answer_match=pattern, timeout=t),
                    judged("answer_match"),
                ),
            ]
    url = f"http://127.0.0.1:{raw.port}/redos-ab"
    attacks.append(
        Attack(
            "ReDoS",
            f"body_match {NFA_BOUND} over 1 MiB",
            get(gw, "http", url=url, body_match=NFA_BOUND, max_body_bytes=AB_BYTES, timeout=t),
            judged("timeout"),
        )
    )
    url = f"http://127.0.0.1:{raw.port}/redos-short"
    for pattern in (r"(a+)\1$", "(?=a+)+!", "(?<!b)a+$"):
        attacks.append(
            Attack(
                "ReDoS",
                f"body_match {pattern}",
                get(gw, "http", url=url, body_match=pattern),
                refused_param("body_match"),
            )
        )
    return attacks


def file_attacks(d: Deployment) -> list[Attack]:
    gw, port = d.gateway, d.raw_tls.port

    def targets(bundle: str) -> list[tuple[str, Callable[[], tuple[int | None, Any]]]]:
        tls = {"host": "127.0.0.1", "port": port, "server_name": "localhost", "ca_bundle": bundle, "timeout": 5}
        return [
            # a fresh warn_days each time: a tls result shared from the cache would not reach the worker
            ("tls", lambda: check(gw, "tls", **tls, warn_days=next(_nonce) % 2_000 / 100)),
            ("http", get(gw, "http", url=f"https://127.0.0.1:{port}/ok", ca_bundle=bundle, timeout=5)),
            ("tcp", get(gw, "tcp", host="127.0.0.1", port=port, tls="true", ca_bundle=bundle, timeout=5)),
        ]

    attacks = []
    for path in ("/proc/self/fd/0", "/dev/stdin", "/etc/shadow"):
        attacks += [
            Attack("file path", f"{kind} {path}", send, refused_param("ca_bundle")) for kind, send in targets(path)
        ]
    for what, path in d.hostile_bundles.items():
        attacks += [Attack("file path", f"{kind} {what}", send, bad_bundle) for kind, send in targets(str(path))]
    return attacks


def big_body_attacks(gateway: str) -> list[Attack]:
    post = b"POST /check/add?x=1&y=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 95000000\r\n\r\n"
    get_ = b"GET /check/add?x=1&y=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 95000000\r\n\r\n"
    header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 300_000 + b"\r\n\r\n"
    uri = b"GET /check/add?x=1&y=1&pad=" + b"a" * 300_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    return [
        Attack(
            "big body", "POST of 95 MB", raw_send(gateway, post, body_after=95_000_000), edge_refusal(405, "method")
        ),
        Attack("big body", "GET with 95 MB", raw_send(gateway, get_, body_after=95_000_000), edge_refusal(413, "body")),
        Attack("big body", "300 KB header", raw_send(gateway, header), edge_refusal(431, "headers")),
        Attack("big body", "300 KB URI", raw_send(gateway, uri), edge_refusal(414, "uri")),
    ]


def slow_attacks(gateway: str) -> list[Attack]:
    def slowloris() -> tuple[int | None, Any]:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\n"
        return raw_status(lambda: trickle(gateway, head, every=0.5, timeout=HEAD_TIMEOUT + 20))

    stalled_post = b"POST /check/add?x=1&y=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab"
    stalled_get = b"GET /check/add?x=1&y=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab"
    return [
        Attack("slow", "slowloris head", slowloris, edge_refusal(408)),
        Attack("slow", "POST body stalled after 2 bytes", raw_send(gateway, stalled_post), edge_refusal(405, "method")),
        Attack("slow", "GET body stalled after 2 bytes", raw_send(gateway, stalled_get), edge_refusal(413, "body")),
    ]


def overrun_attacks(gateway: str) -> list[Attack]:
    @_is
    def passed(status: int, body: Any) -> bool:
        # 504 with the id: the gateway's deadline passed first (PENDING), or what the worker stored at that
        # deadline came back first: the task ended there (FAILURE DeadlineExceeded), or it had expired
        # before a worker took it (REVOKED, "expired").
        error = body["error"]
        why = error["type"] if isinstance(error, dict) else error
        return status == 504 and bool(body["id"]) and (body["state"], why) in OVERRUN_ENDS | {GATEWAY_504}

    return [
        Attack("overrun", "sleep 60 s, timeout 1 s", get(gateway, "sleep", ms=60_000, timeout=1), passed),
        Attack(
            "overrun", "add, timeout 0.0001 s", get(gateway, "add", x=1, y=1, timeout=0.0001), refused_param("timeout")
        ),
    ]


def attack(attacks: list[Attack], callers: int, until: threading.Event, hits: list[Hit]) -> None:
    """`callers` threads sending `attacks` in turn, round and round, until `until` is set and each attack
    has been sent at least once."""
    turns = itertools.count()  # shared: next() on it is atomic under the GIL

    def caller() -> None:
        while (turn := next(turns)) < len(attacks) or not until.is_set():
            a = attacks[turn % len(attacks)]
            started = time.monotonic()
            status, body = a.send()
            documented = status is not None and a.documented(status, body)
            hits.append(Hit(a, status, body, documented, time.monotonic() - started))

    with ThreadPoolExecutor(callers) as pool:
        for future in [pool.submit(caller) for _ in range(callers)]:
            future.result()


# --- the figures ---------------------------------------------------------------------------------

WORKERS = {"add": ("add",), "sleep": ("sleep",), "probes": ("http", "tcp", "dns", "tls")}


def legit_latency(alone: list[Outcome], during: list[Outcome]) -> str:
    """p50/p99 of the legitimate checks by worker, alone and under attack."""

    def figures(outcomes: list[Outcome], types: tuple[str, ...]) -> str:
        mine = [o for o in outcomes if o.path.split("?")[0].rsplit("/", 1)[1] in types]
        return f"{latency_ms(mine, 0.5):.0f}/{latency_ms(mine, 0.99):.0f}"

    return ", ".join(f"{w} {figures(alone, t)} → {figures(during, t)} ms" for w, t in WORKERS.items())


def hostile_answers(hits: list[Hit], notes: dict[str, str]) -> str:
    """What each kind of attack got back: how many of each status, then the kind's note if any."""
    parts = []
    for kind in ("forge", "ReDoS", "file path", "big body", "slow", "overrun"):
        mine = [h for h in hits if h.attack.kind == kind]
        statuses = Counter(h.status for h in mine)
        counts = ", ".join(f"{n}×{status}" for status, n in sorted(statuses.items(), key=lambda i: str(i[0])))
        parts.append(f"{kind} {len(mine)}: {counts}" + (f" ({notes[kind]})" if kind in notes else ""))
    return "; ".join(parts)


# --- the test -------------------------------------------------------------------------------------


def test_hostile_callers_under_load(deployment: Deployment) -> None:
    d = deployment
    gw, stack = d.gateway, d.stack
    clients = int(scale(6, 12))
    path = legit_path(d)
    # Results of real checks, whose ids the forgers try to overwrite.
    real: dict[str, int] = {}
    for x in range(3):
        status, body = check(gw, "add", x=x, y=100)
        assert status == 200, body
        real[body["id"]] = x + 100
    made_up = [f"{stack.prefix}gw-forged{n}-{secrets.token_hex(4)}" for n in range(3)]

    alone = run_load(gw, path, clients=clients, duration=scale(4, 15), timeout=60)

    kinds = [
        (forge_attacks(d, [*made_up, *real]), 2),
        (redos_attacks(d), 2),
        (file_attacks(d), 2),
        (big_body_attacks(gw), int(scale(2, 6))),
        (slow_attacks(gw), int(scale(10, 100))),
        (overrun_attacks(gw), int(scale(3, 8))),
    ]
    hits: list[Hit] = []
    attack_over, legit_over = threading.Event(), threading.Event()
    timer = threading.Timer(scale(8, 45), attack_over.set)
    during: list[Outcome] = []

    failed: list[BaseException] = []

    def attackers() -> None:
        try:
            with ThreadPoolExecutor(len(kinds)) as pool:
                for future in [pool.submit(attack, attacks, callers, attack_over, hits) for attacks, callers in kinds]:
                    future.result()
        except BaseException as exc:  # re-raised in the test's thread
            failed.append(exc)
        finally:
            legit_over.set()  # the legitimate load goes on until the last attack has its answer

    with RssPeak(stack.procs["gw"].pid) as rss:
        thread = threading.Thread(target=attackers)
        timer.start()
        thread.start()
        try:
            during = run_load(gw, path, clients=clients, duration=600, timeout=60, until=legit_over)
        finally:
            attack_over.set()
            timer.cancel()
            thread.join()
    if failed:
        raise failed[0]

    # Every legitimate request answered, with the check's success, before and during the attack.
    wrong = [(o.path, o.status, str(o.body)[:300]) for o in alone + during if not legit_ok(o)]
    assert not wrong, wrong[:5]
    # Every attack answered, as documented.
    by_kind = Counter(h.attack.kind for h in hits)
    undocumented = [(h.attack.kind, h.attack.what, h.status, str(h.body)[:300]) for h in hits if not h.documented]
    assert not undocumented, Counter((k, w, s) for k, w, s, _ in undocumented).most_common(12)
    sent = {(h.attack.kind, h.attack.what) for h in hits}
    assert sent == {(a.kind, a.what) for attacks, _ in kinds for a in attacks}, by_kind

    # No forged result readable: made-up ids are unknown, real ones keep their real result.
    backend = redis.Redis.from_url(stack.backend_url)
    for task_id in made_up:
        assert backend.exists(f"celery-task-meta-{task_id}") == 0
        status, body, _ = http_get(f"{gw}/result/{task_id}")
        assert status == 404, body
    for task_id, value in real.items():
        status, body, _ = http_get(f"{gw}/result/{task_id}")
        assert (status, body["result"]) == (200, value), body
        assert body["worker"].startswith(f"{stack.prefix}add@"), body
    backend.close()
    # Each overrun task was ended at its deadline by its worker, or never started: none is left sleeping.
    overruns: Counter[bool] = Counter()
    for task_id in (h.body["id"] for h in hits if h.attack.what.startswith("sleep")):
        status, body = poll_result(gw, task_id, 10.0, 0.1)
        error = body.get("error")
        end = (status, body.get("state"), error.get("type") if isinstance(error, dict) else None)
        assert end in {(504, *e) for e in OVERRUN_ENDS} | {(410, "EXPIRED", None)}, body
        overruns[end == STOPPED] += 1

    # No worker stuck: a fresh check of every type answers, and nothing is left in flight.
    for i in range(len(LEGIT_TYPES)):
        fresh = path(0, i)
        status, body, _ = http_get(gw + fresh, timeout=60)
        assert legit_ok(Outcome(fresh, status, body, {}, 0, 0)), (fresh, body)
    status, body = check(gw, "banner", host="127.0.0.1", port=d.raw.port, timeout=LEGIT_TIMEOUT)
    assert (status, body["result"]["ok"]) == (200, True), body
    assert all(proc.poll() is None for proc in stack.procs.values())
    _, metrics, _ = http_get(gw + "/metrics")
    assert "checkgate_inflight_requests 0" in metrics

    # Gateway memory: well under one buffered 95 MB body (the bodies are refused from their heads).
    assert rss.peak - rss.before < 64, (rss.before, rss.peak, rss.after)
    # A sanity bound only (the machine is shared): the legitimate checks went on answering at their pace.
    assert latency_ms(during, 0.5) < 2000, (latency_ms(alone, 0.5), latency_ms(during, 0.5))

    redos_ms = [h.seconds * 1000 for h in hits if h.attack.kind == "ReDoS" and h.status == 200]
    slowloris_s = [h.seconds for h in hits if h.attack.kind == "slow" and h.status == 408]
    notes = {
        "forge": f"target_refused; /result: {len(made_up)} made-up ids 404, {len(real)} real ids their own result",
        "ReDoS": f"200: judged in median {statistics.median(redos_ms):.0f} ms, max {max(redos_ms):.0f} ms",
        "file path": "200: bad_ca_bundle",
        "slow": f"408: slowloris, after {min(slowloris_s):.1f}-{max(slowloris_s):.1f} s",
        "overrun": f"504: {overruns[True]} stopped by the worker at the deadline, {overruns[False]} expired "
        "before a worker took them",
    }
    REPORT.append(
        FaultRow(
            "hostile callers under load (forge, ReDoS, file path, big and slow bodies, overrun)",
            len(during) + len(hits),
            len(hits),
            sum(o.status == 200 for o in during),
            sum(h.documented for h in hits),
            sum(o.status is None for o in during) + sum(h.status is None for h in hits),
            0,
            f"{hostile_answers(hits, notes)}; legit p50/p99 alone → under attack: {legit_latency(alone, during)}; "
            f"gateway RSS {rss.before:.0f} MB → peak {rss.peak:.0f} MB → {rss.after:.0f} MB",
        )
    )
