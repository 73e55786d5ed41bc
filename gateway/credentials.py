"""Credentials that `checkgate run` hands to supervisord: from the environment, else generated once.

Every service of the node asks for a password nobody can guess: the Supervisor console, Flower, the
stack's own Redis (results, beat's schedule), the stack's own vhost on the local RabbitMQ and the
gateway's operations console. A generated password is written to `var/<name>-credentials` (mode 0600,
`user:password`) and reused on the next start, so operators find it in one place and nothing ships with
a default password. An operator's `CHECKGATE_BROKER_URL` / `CHECKGATE_RESULT_BACKEND` /
`CHECKGATE_CONSOLE_CONFIG` are used as they are: nothing is generated for them.

Passwords reach the processes through supervisord's environment, never a command line (`ps` shows those
to every user of the machine).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

DEFAULT_USER = "checkgate"
# The stack's own Redis: beside the machine's usual 6379, which may be someone else's.
DEFAULT_REDIS_PORT = "6388"
# Results expire by themselves (result_expires); past this, Redis evicts the least recently used of them.
DEFAULT_REDIS_MAXMEMORY = "1gb"
DEFAULT_VHOST = "checkgate"
# The local broker `checkgate run` makes an account on (rabbitmqctl speaks to this machine's node).
LOCAL_BROKER = ("127.0.0.1", 5672)
RABBITMQCTL_TIMEOUT = 60.0

_REDIS_USER_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_VALID_MAXMEMORY_RE = re.compile(r"[0-9]+(?:[kmg]b?)?", re.IGNORECASE)


class SetupError(RuntimeError):
    """The node cannot be set up as configured; the message says why and what the operator can do."""


def _write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only from the first byte on."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def ensure_credentials(
    home: Path, env: dict[str, str], prefix: str, name: str, default_user: str = DEFAULT_USER
) -> tuple[dict[str, str], Path | None]:
    """Fill `<prefix>_USER` / `<prefix>_PASSWORD` in a copy of `env`; return it and the file used, if any.

    A password in `env` is used as it is (no file); else `var/<name>-credentials` gives it, made on first
    use. A user in `env` wins over the file's (which is rewritten with it); the default is `default_user`.
    Raises ValueError for a user with ':' (the file's separator).
    """
    env = dict(env)
    user_var, password_var = f"{prefix}_USER", f"{prefix}_PASSWORD"
    given_user = env.get(user_var)
    if given_user and ":" in given_user:
        raise ValueError(f"{user_var}: no ':'")
    env.setdefault(user_var, default_user)
    if env.get(password_var):
        return env, None
    secret = home / "var" / f"{name}-credentials"
    if not secret.exists():
        secret.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL + 0600 at creation: the password is never readable by others, even for an instant.
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            # token_urlsafe has no ':' or ',' (Flower splits FLOWER_BASIC_AUTH on both) and needs no
            # quoting in a URL.
            out.write(f"{env[user_var]}:{secrets.token_urlsafe(18)}\n")
    user, _, password = secret.read_text().strip().partition(":")
    if given_user and given_user != user:
        # A user named in the environment wins; the file follows it (same password) and stays the one
        # place to look.
        _write_private(secret, f"{given_user}:{password}\n")
        user = given_user
    env[user_var], env[password_var] = user, password
    return env, secret


def _where(secret: Path | None, prefix: str) -> str:
    return f"user:password in {secret}" if secret else f"user and password from {prefix}_USER/_PASSWORD"


def flower_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment the `[program:flower]` section needs: port, user and password."""
    env = dict(env)
    env.setdefault("CHECKGATE_FLOWER_PORT", "5555")
    env, secret = ensure_credentials(home, env, "CHECKGATE_FLOWER", "flower")
    user, password = env["CHECKGATE_FLOWER_USER"], env["CHECKGATE_FLOWER_PASSWORD"]
    # Flower splits FLOWER_BASIC_AUTH on ',' and compares "user:password"; supervisord quotes the value.
    if ":" in user or any(c in user + password for c in ',"'):
        raise ValueError("CHECKGATE_FLOWER_USER/_PASSWORD: no ',' or '\"' (and no ':' in the user)")
    print(f"flower: http://127.0.0.1:{env['CHECKGATE_FLOWER_PORT']}/ ({_where(secret, 'CHECKGATE_FLOWER')})")
    return env


# --- Redis -------------------------------------------------------------------------------------------


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def redis_config(home: Path, port: int, user: str, password: str, maxmemory: str) -> str:
    """The text of `var/redis.conf` for the stack's own Redis (the password only as its SHA-256)."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    data_dir = str(home / "var" / "redis").replace("\\", "\\\\").replace('"', '\\"')
    return "\n".join(
        [
            "# Written by `checkgate run` at every start (from CHECKGATE_REDIS_* and var/redis-credentials).",
            "bind 127.0.0.1",
            f"port {port}",
            "daemonize no",
            'logfile ""',
            f'dir "{data_dir}"',  # quoted: a checkout's path may hold spaces
            # Results live result_expires seconds and beat rebuilds its schedule from schedule.toml when it
            # starts: nothing here is worth a snapshot's fork or an append-only file's writes.
            'save ""',
            "appendonly no",
            # Every result carries a TTL; when memory runs out the least recently used of them go first,
            # never beat's schedule (no TTL) and rarely its lock (extended every few seconds).
            f"maxmemory {maxmemory}",
            "maxmemory-policy volatile-lru",
            # No anonymous access at all: an unauthenticated client gets NOAUTH for every command.
            "user default off",
            f"user {user} on #{digest} ~* &* +@all",
            "",
        ]
    )


def redis_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment the `[program:redis]` section and Redis's clients need.

    With `CHECKGATE_RESULT_BACKEND` given, it is used as it is and `CHECKGATE_REDIS_NUMPROCS` is 0 (the
    program does not exist). Otherwise: a user and password (`var/redis-credentials`), `var/redis.conf`
    (mode 0600) for 127.0.0.1:`CHECKGATE_REDIS_PORT`, and the backend URL that logs in with them. Raises
    SetupError when that port is taken, ValueError for a user name Redis's ACL cannot hold.
    """
    env = dict(env)
    if env.get("CHECKGATE_RESULT_BACKEND"):
        env["CHECKGATE_REDIS_NUMPROCS"] = "0"
        print("redis: CHECKGATE_RESULT_BACKEND as given (the stack's own Redis is not started)")
        return env
    env.setdefault("CHECKGATE_REDIS_PORT", DEFAULT_REDIS_PORT)
    env.setdefault("CHECKGATE_REDIS_MAXMEMORY", DEFAULT_REDIS_MAXMEMORY)
    if not _REDIS_USER_RE.fullmatch(env.get("CHECKGATE_REDIS_USER", DEFAULT_USER)):
        raise ValueError("CHECKGATE_REDIS_USER: 1 to 64 of A-Z a-z 0-9 . _ -")
    env, secret = ensure_credentials(home, env, "CHECKGATE_REDIS", "redis")
    user, password = env["CHECKGATE_REDIS_USER"], env["CHECKGATE_REDIS_PASSWORD"]
    maxmemory = env["CHECKGATE_REDIS_MAXMEMORY"]
    if not _VALID_MAXMEMORY_RE.fullmatch(maxmemory):
        raise ValueError(f"CHECKGATE_REDIS_MAXMEMORY: bytes or a size like 512mb, 2gb; got {maxmemory!r}")
    port = int(env["CHECKGATE_REDIS_PORT"]) if env["CHECKGATE_REDIS_PORT"].isdigit() else 0
    if not 0 < port < 65536:
        raise ValueError(f"CHECKGATE_REDIS_PORT: a port number, got {env['CHECKGATE_REDIS_PORT']!r}")
    if _port_in_use(port):
        raise SetupError(
            f"127.0.0.1:{port} is already in use (another checkgate node, or another Redis): the stack's own "
            "Redis needs it. Choose another port with CHECKGATE_REDIS_PORT, or give a Redis of your own "
            "with CHECKGATE_RESULT_BACKEND=redis://user:password@host:port/0."
        )
    (home / "var" / "redis").mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(home / "var" / "redis.conf", redis_config(home, port, user, password, maxmemory))
    env["CHECKGATE_RESULT_BACKEND"] = local_redis_url(user, password, port)
    env["CHECKGATE_REDIS_NUMPROCS"] = "1"
    print(f"redis: 127.0.0.1:{port}, the stack's own ({_where(secret, 'CHECKGATE_REDIS')})")
    return env


# --- RabbitMQ ----------------------------------------------------------------------------------------


class _CtlFailed(Exception):
    """rabbitmqctl is missing or failed (not root, no Erlang cookie, node down, …): the message says how."""


def _rabbitmqctl(ctl: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [ctl, "-q", *args], input=stdin, capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _CtlFailed(f"{ctl} {args[0]}: {exc}") from None


def _ctl_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return f"rabbitmqctl {result.args[2]} exited {result.returncode}: {' '.join(lines[-2:])[:300]}"


def _make_account(ctl: str, user: str, password: str, vhost: str) -> None:
    """add_vhost, add_user (or check the existing user's password), set_permissions on that vhost."""
    result = _rabbitmqctl(ctl, "add_vhost", vhost)  # succeeds when the vhost exists
    if result.returncode != 0:
        raise _CtlFailed(_ctl_error(result))
    result = _rabbitmqctl(ctl, "add_user", user, stdin=password + "\n")
    if result.returncode != 0:
        if "already exists" not in result.stderr + result.stdout:
            raise _CtlFailed(_ctl_error(result))
        result = _rabbitmqctl(ctl, "authenticate_user", user, stdin=password + "\n")
        if result.returncode != 0:
            raise SetupError(
                f"RabbitMQ user {user!r} already exists with another password (another deployment's?) and was "
                "left as it is: choose another user and vhost with CHECKGATE_RABBITMQ_USER and "
                "CHECKGATE_RABBITMQ_VHOST, give its password in CHECKGATE_RABBITMQ_PASSWORD, or set "
                "CHECKGATE_BROKER_URL. If it is this node's own from before var/ was cleared, set its new "
                f"password as root: `rabbitmqctl change_password {user}` (then type the password from "
                "var/rabbitmq-credentials)."
            )
    result = _rabbitmqctl(ctl, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    if result.returncode != 0:
        raise _CtlFailed(_ctl_error(result))


def _amqp_login(user: str, password: str, vhost: str) -> str | None:
    """Open and close an AMQP connection to the local broker; None when it worked, else the reason."""
    import amqp

    host, port = LOCAL_BROKER
    connection = amqp.Connection(
        host=f"{host}:{port}", userid=user, password=password, virtual_host=vhost, connect_timeout=5
    )
    try:
        connection.connect()
    except Exception as exc:  # refused, wrong password, no access to the vhost: each a reason to report
        connection.collect()
        return f"{type(exc).__name__}: {exc}"
    connection.close()
    return None


def ensure_broker_account(user: str, password: str, vhost: str, rabbitmqctl: str | None = None) -> None:
    """Make `vhost` and `user` (with `password` and every permission on that vhost only) on the local
    broker, idempotently, then log in with them over AMQP.

    Nothing else is touched: not `guest`, not other vhosts, not an existing user's password (a user that
    exists with another password is an error: it may be another deployment's). `rabbitmqctl` (default:
    the one on PATH or in /usr/sbin) must reach the local node, as root can; when it cannot, an account
    made by hand still passes the login. Passwords go to rabbitmqctl on stdin, never on its command line.
    Raises SetupError saying what the operator can do.
    """
    ctl = rabbitmqctl or shutil.which("rabbitmqctl", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    problem = None
    try:
        if ctl is None:
            raise _CtlFailed("rabbitmqctl not found")
        _make_account(ctl, user, password, vhost)
    except _CtlFailed as exc:
        problem = str(exc)
    failed = _amqp_login(user, password, vhost)
    if failed is None:
        return
    host, port = LOCAL_BROKER
    if problem is None:
        raise SetupError(f"RabbitMQ user {user!r} on vhost {vhost!r} was made, but logging in failed: {failed}")
    raise SetupError(
        f"cannot make the stack's RabbitMQ account (vhost {vhost!r}, user {user!r}) on {host}:{port}: "
        f"{problem}; logging in with it failed too ({failed}).\n"
        "  Run `make run` as root (rabbitmqctl needs the broker's Erlang cookie), or make the account once as "
        "root, with the password from var/rabbitmq-credentials (or CHECKGATE_RABBITMQ_PASSWORD):\n"
        f"    rabbitmqctl add_vhost {vhost}\n"
        f"    rabbitmqctl add_user {user}        # then type the password\n"
        f"    rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'\n"
        "  or give a broker account of your own: CHECKGATE_BROKER_URL=amqp://user:password@host:5672/vhost"
    )


def rabbitmq_env(home: Path, env: dict[str, str], rabbitmqctl: str | None = None) -> dict[str, str]:
    """The broker URL of the stack: `CHECKGATE_BROKER_URL` as given, else the stack's own account on the
    local broker (`CHECKGATE_RABBITMQ_VHOST`, `_USER`, `_PASSWORD`; generated into
    `var/rabbitmq-credentials`), made by `ensure_broker_account`. Raises SetupError when it cannot be."""
    env = dict(env)
    if env.get("CHECKGATE_BROKER_URL"):
        print("rabbitmq: CHECKGATE_BROKER_URL as given")
        return env
    env.setdefault("CHECKGATE_RABBITMQ_VHOST", DEFAULT_VHOST)
    env, secret = ensure_credentials(home, env, "CHECKGATE_RABBITMQ", "rabbitmq")
    user, password = env["CHECKGATE_RABBITMQ_USER"], env["CHECKGATE_RABBITMQ_PASSWORD"]
    vhost = env["CHECKGATE_RABBITMQ_VHOST"]
    ensure_broker_account(user, password, vhost, rabbitmqctl)
    env["CHECKGATE_BROKER_URL"] = local_broker_url(user, password, vhost)
    host, port = LOCAL_BROKER
    print(f"rabbitmq: vhost {vhost!r} on {host}:{port} ({_where(secret, 'CHECKGATE_RABBITMQ')})")
    return env


def local_broker_url(user: str, password: str, vhost: str) -> str:
    """The URL of the stack's account on the local RabbitMQ."""
    host, port = LOCAL_BROKER
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(vhost, safe='')}"


def local_redis_url(user: str, password: str, port: int | str) -> str:
    """The URL of the stack's own Redis (db 0)."""
    return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}/0"


def _saved_login(home: Path, env: Mapping[str, str], prefix: str, name: str) -> tuple[str, str]:
    """The user and password `ensure_credentials` gave `prefix`, without making any: from `env`, else from
    `var/<name>-credentials`. Raises SetupError when neither has one (the node never started)."""
    if env.get(f"{prefix}_PASSWORD"):
        return env.get(f"{prefix}_USER") or DEFAULT_USER, env[f"{prefix}_PASSWORD"]
    secret = home / "var" / f"{name}-credentials"
    try:
        user, _, password = secret.read_text().strip().partition(":")
    except OSError as exc:
        raise SetupError(f"cannot read {secret} ({exc.strerror}): start the node once with `checkgate run`") from None
    return env.get(f"{prefix}_USER") or user, password


def stack_urls(home: Path, env: Mapping[str, str]) -> dict[str, str]:
    """`CHECKGATE_BROKER_URL` and `CHECKGATE_RESULT_BACKEND` as `checkgate run` gives them to the node whose
    home is `home` (the environment's when given, else the stack's own account and Redis from `var/`), for
    a program or an extra worker to join it. Makes nothing; raises SetupError when a password is missing."""
    urls = {}
    if env.get("CHECKGATE_BROKER_URL"):
        urls["CHECKGATE_BROKER_URL"] = env["CHECKGATE_BROKER_URL"]
    else:
        user, password = _saved_login(home, env, "CHECKGATE_RABBITMQ", "rabbitmq")
        urls["CHECKGATE_BROKER_URL"] = local_broker_url(
            user, password, env.get("CHECKGATE_RABBITMQ_VHOST") or DEFAULT_VHOST
        )
    if env.get("CHECKGATE_RESULT_BACKEND"):
        urls["CHECKGATE_RESULT_BACKEND"] = env["CHECKGATE_RESULT_BACKEND"]
    else:
        user, password = _saved_login(home, env, "CHECKGATE_REDIS", "redis")
        urls["CHECKGATE_RESULT_BACKEND"] = local_redis_url(
            user, password, env.get("CHECKGATE_REDIS_PORT") or DEFAULT_REDIS_PORT
        )
    return urls


# --- the operations console ------------------------------------------------------------------------

DEFAULT_CONSOLE_USER = "admin"


def gateway_loopback_url(env: dict[str, str]) -> str | None:
    """`http://host:port` of the gateway as reached over this machine's loopback (from `CHECKGATE_BIND`
    and `CHECKGATE_PORT`), or None when it listens on no loopback address (a non-loopback address, or a
    host name whose addresses are not known here)."""
    bind = (env.get("CHECKGATE_BIND") or "127.0.0.1").strip("[]")
    port = env.get("CHECKGATE_PORT") or "8888"
    if bind == "localhost":
        return f"http://127.0.0.1:{port}"
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        return None
    if not (address.is_loopback or address.is_unspecified):
        return None
    if address.version == 4:
        return f"http://{'127.0.0.1' if address.is_unspecified else address}:{port}"
    # Tornado binds "::" as IPv6 only (IPV6_V6ONLY): reached as [::1], not 127.0.0.1.
    return f"http://[{'::1' if address.is_unspecified else address}]:{port}"


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string (same escapes) but for DEL, which TOML wants escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def console_config(home: Path, node: str, user: str, password_hash: str, health_url: str, secret: str) -> str:
    """The text of `var/console.toml`: this node's console (see `console_env`)."""
    q = _toml_string
    return "\n".join(
        [
            "# Written by `checkgate run` at every start (from CHECKGATE_CONSOLE_* and var/console-credentials):",
            "# the console of this node alone. For more nodes, groups or users, copy it out of var/, edit it and",
            "# point CHECKGATE_CONSOLE_CONFIG at the copy (gateway/console/console.example.toml explains every key).",
            f"secret = {q(secret)}",
            "loopback_only = true   # answers this machine only: plain HTTP, so no password crosses a network",
            f"audit_db = {q(str(home / 'var' / 'console-audit.sqlite3'))}",
            "",
            "[[nodes]]",
            f"name = {q(node)}",
            "# This node's supervisord over its unix socket: owner-only (chmod 0700), so no password to keep.",
            f"url = {q('unix://' + str(home / 'var' / 'supervisor.sock'))}",
            f"health_url = {q(health_url)}",
            "",
            "[[users]]",
            f"name = {q(user)}",
            f"password_hash = {q(password_hash)}",
            'role = "admin"',
            "",
        ]
    )


def console_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment the gateway's operations console needs under `checkgate run`.

    With `CHECKGATE_CONSOLE_CONFIG` given, that file is the console (the operator's nodes, users and
    secret): its path is made absolute (the programs run in the home, not in the caller's directory) and
    the file is checked now; nothing is generated. Otherwise this node's own console, at /console/ on the
    gateway, answering connections from this machine only (`loopback_only`):

    - its admin `CHECKGATE_CONSOLE_USER` (default `admin`) with `CHECKGATE_CONSOLE_PASSWORD`, else a
      password generated once into `var/console-credentials` (mode 0600, `user:password`);
    - `var/console.toml` (mode 0600, written at every start, so it follows the password): the local
      supervisord over its unix socket, the gateway's /health, the user with the scrypt hash of the
      password, and a new cookie secret (sessions end when the node restarts; `CHECKGATE_CONSOLE_SECRET`
      wins when given); `CHECKGATE_CONSOLE_CONFIG` names it. The password itself leaves the environment:
      no program of the node receives it.

    When the gateway listens on no loopback address (`CHECKGATE_BIND` a non-loopback address or a host
    name), such a console could never answer: it stays off, and the line printed says why.
    Raises SetupError for a config file the console would refuse, ValueError for a bad user name.
    """
    from gateway.console.auth import hash_password
    from gateway.console.config import load_settings
    from gateway.nodes import NAME_RE, ConfigError

    env = dict(env)
    given = env.get("CHECKGATE_CONSOLE_CONFIG")
    if given:
        env.pop("CHECKGATE_CONSOLE_PASSWORD", None)
        env["CHECKGATE_CONSOLE_CONFIG"] = str(Path(given).expanduser().resolve())
        try:
            settings = load_settings(env["CHECKGATE_CONSOLE_CONFIG"], env)
        except ConfigError as exc:
            raise SetupError(f"CHECKGATE_CONSOLE_CONFIG: {exc}") from None
        print(f"console: {settings.base_path}/ on the gateway, from {env['CHECKGATE_CONSOLE_CONFIG']}")
        return env
    base = gateway_loopback_url(env)
    if base is None:
        env.pop("CHECKGATE_CONSOLE_PASSWORD", None)
        print(
            f"console: off (the gateway listens on {env.get('CHECKGATE_BIND')}, not on loopback, and the generated "
            "console answers this machine only; CHECKGATE_CONSOLE_CONFIG serves one configured for that)"
        )
        return env
    bad_user = ValueError("CHECKGATE_CONSOLE_USER: 1 to 64 of A-Z a-z 0-9 . _ - (starting alphanumeric)")
    if env.get("CHECKGATE_CONSOLE_USER") and not NAME_RE.fullmatch(env["CHECKGATE_CONSOLE_USER"]):
        raise bad_user
    env, secret = ensure_credentials(home, env, "CHECKGATE_CONSOLE", "console", DEFAULT_CONSOLE_USER)
    user = env["CHECKGATE_CONSOLE_USER"]
    password = env.pop("CHECKGATE_CONSOLE_PASSWORD")
    if not NAME_RE.fullmatch(user):  # a hand-edited var/console-credentials
        raise bad_user
    node = env.get("CHECKGATE_NODE") or socket.gethostname()
    text = console_config(
        home,
        node if NAME_RE.fullmatch(node) else "local",
        user,
        hash_password(password),
        f"{base}/health",
        secrets.token_urlsafe(32),
    )
    path = home / "var" / "console.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, text)
    env["CHECKGATE_CONSOLE_CONFIG"] = str(path)
    try:
        load_settings(path, env)  # what the gateway will read: a given CHECKGATE_CONSOLE_SECRET too
    except ConfigError as exc:
        raise SetupError(str(exc)) from None
    print(f"console: {base}/console/ ({_where(secret, 'CHECKGATE_CONSOLE')}; this machine only)")
    return env
