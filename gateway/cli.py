"""`checkgate`: run the stack, the gateway alone, or one check from the command line.

checkgate run                       the whole node under supervisord, in the foreground
checkgate gateway                   the HTTP gateway alone (what supervisord starts)
checkgate status                    every process of every node, like supervisorctl status
checkgate restart-gateway           restart the gateway processes one at a time, serving throughout
checkgate check add x=1 y=2         run one check through a running gateway, print the JSON
checkgate new-key billing           an API key and its entry for CHECKGATE_API_KEYS_FILE
checkgate urls [--export]           the broker and Redis URLs of the node, to join it with more code

`run` and `status` work on the node's home (`CHECKGATE_HOME`, else the checkout, else the current
directory: gateway/home.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from gateway import restart
from gateway import status as node_status  # aliased: cmd_check has a local named `status`
from gateway.config import Settings
from gateway.credentials import (
    SetupError,
    console_env,
    ensure_credentials,
    flower_env,
    rabbitmq_env,
    redis_env,
    stack_urls,
)
from gateway.home import BIN_ENV, HOME_ENV, bin_dir, node_home, supervisord_conf


def supervisor_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment supervisord.conf needs; a random console password is made once and kept."""
    env = dict(env)
    env.setdefault("CHECKGATE_QUEUE_PREFIX", "")
    env.setdefault("CHECKGATE_SUPERVISOR_PORT", "9001")
    env, secret = ensure_credentials(home, env, "CHECKGATE_SUPERVISOR", "supervisor")
    if secret is not None:
        print(f"supervisor console: http://127.0.0.1:{env['CHECKGATE_SUPERVISOR_PORT']}/ (user:password in {secret})")
    return env


def node_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """Everything supervisord.conf needs for the node whose home is `home`: its paths (`CHECKGATE_HOME`,
    `CHECKGATE_BIN`), the Supervisor console's, Flower's, the stack's own Redis and its RabbitMQ account,
    and the gateway's operations console (each from the environment when given, else generated once
    under `home/var/`). Raises SetupError or ValueError with a message for the operator."""
    if not env.get("CHECKGATE_RESULT_BACKEND") and shutil.which("redis-server", path=env.get("PATH")) is None:
        raise SetupError("redis-server not found: run scripts/bootstrap.sh, or set CHECKGATE_RESULT_BACKEND")
    env = {**env, HOME_ENV: str(home)}
    env.setdefault(BIN_ENV, str(bin_dir()))
    env = gateway_processes_env(home, env)
    env = flower_env(home, supervisor_env(home, env))
    return console_env(home, rabbitmq_env(home, redis_env(home, env)))


def gateway_processes_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` with how many gateway processes supervisord starts (CHECKGATE_PROCESSES, checked: a
    `ConfigError` naming the variable) and, for more than one, the directory they share their metrics
    through (PROMETHEUS_MULTIPROC_DIR, default `home/var/metrics/`), emptied of the last run's files: no
    gateway process of this node runs yet (gateway/metrics.py)."""
    settings = Settings.from_env(env)
    env = {**env, "CHECKGATE_PROCESSES": str(settings.processes)}
    env.pop("CHECKGATE_PROCESS_NUM", None)  # supervisord gives each process its own
    if settings.processes == 1:
        return env
    metrics_dir = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or home / "var" / "metrics")
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def cmd_run(args: argparse.Namespace) -> int:
    """Exec supervisord in the foreground with the node's programs."""
    try:
        home = node_home(config=args.config)
        conf = supervisord_conf(home, args.config)
        (home / "var" / "log").mkdir(parents=True, exist_ok=True)
        env = node_env(home, dict(os.environ))
    except (SetupError, ValueError, OSError) as exc:
        print(f"\ncheckgate run: {exc}", file=sys.stderr)
        return 1
    supervisord = str(bin_dir() / "supervisord")
    print(f"home: {home} (var/, supervisord.d/, schedule.toml)")
    processes = env["CHECKGATE_PROCESSES"]
    port = env.get("CHECKGATE_PORT", "8888")
    print(f"starting supervisord -n -c {conf}; gateway on http://127.0.0.1:{port}/ ({processes} processes)")
    sys.stdout.flush()
    os.execve(supervisord, [supervisord, "-n", "-c", str(conf)], env)
    return 0  # not reached


def cmd_gateway(args: argparse.Namespace) -> int:
    """Run the HTTP gateway in this process."""
    from gateway.server import main

    main()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """GET /check/<type> on a running gateway; exit 0 when it answered 200."""
    params = []
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"checkgate: expected key=value, got {item!r}", file=sys.stderr)
            return 2
        params.append((key, value))
    url = f"{args.url.rstrip('/')}/check/{urllib.parse.quote(args.type)}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url)
    key = args.key or os.environ.get("CHECKGATE_API_KEY")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=args.wait) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError as exc:
        print(f"checkgate: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(json.loads(body), indent=2))
    except ValueError:
        print(body.decode(errors="replace"))
    return 0 if status == 200 else 1


def cmd_status(args: argparse.Namespace) -> int:
    """Print every process of every node; exit 3 if one is not RUNNING, 4 if a node cannot be asked."""
    return node_status.run(args, node_home())


def cmd_restart_gateway(args: argparse.Namespace) -> int:
    """Restart the node's gateway processes one at a time (gateway/restart.py)."""
    return restart.run(node_home(), args.ready_timeout)


def cmd_new_key(args: argparse.Namespace) -> int:
    """Print a fresh API key (give it to the client) and its entry for the keys file (keep it)."""
    from gateway.auth import new_key

    key, hexdigest = new_key()
    print(f"key (give to the client, shown once): {key}")
    print(f'\n[[keys]]\nname = "{args.name}"\nsha256 = "{hexdigest}"')
    return 0


def cmd_urls(args: argparse.Namespace) -> int:
    """Print CHECKGATE_BROKER_URL and CHECKGATE_RESULT_BACKEND of the node (passwords included: the files
    they come from are the caller's to read); exit 2 when the node never started here."""
    try:
        urls = stack_urls(node_home(), os.environ)
    except SetupError as exc:
        print(f"checkgate urls: {exc}", file=sys.stderr)
        return 2
    for name, url in urls.items():
        print(f"export {name}={shlex.quote(url)}" if args.export else f"{name}={url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the sub-command."""
    parser = argparse.ArgumentParser(prog="checkgate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole node under supervisord (foreground)")
    run.add_argument(
        "-c", "--config", help="supervisord.conf to use (default: the home's own, else the one shipped with checkgate)"
    )
    run.set_defaults(func=cmd_run)
    sub.add_parser("gateway", help="run the HTTP gateway").set_defaults(func=cmd_gateway)
    check = sub.add_parser("check", help="run one check through a running gateway")
    check.add_argument("type", help="check type, e.g. add, sleep, http")
    check.add_argument("params", nargs="*", help="key=value parameters")
    default_url = f"http://127.0.0.1:{os.environ.get('CHECKGATE_PORT', '8888')}"
    check.add_argument("--url", default=default_url, help=f"gateway base URL (default {default_url})")
    check.add_argument("--wait", type=float, default=330.0, help="seconds to wait for the answer")
    check.add_argument("--key", help="API key (default: $CHECKGATE_API_KEY)")
    check.set_defaults(func=cmd_check)
    state = sub.add_parser("status", help="every process of every node (exit 3: not all RUNNING, 4: unreachable)")
    node_status.add_arguments(state)
    state.set_defaults(func=cmd_status)
    rolling = sub.add_parser(
        "restart-gateway", help="restart the gateway processes one at a time, serving throughout (exit 1: failed)"
    )
    rolling.add_argument(
        "--ready-timeout", type=float, default=60.0, help="seconds a restarted process has to answer (default 60)"
    )
    rolling.set_defaults(func=cmd_restart_gateway)
    key = sub.add_parser("new-key", help="make an API key and its entry for CHECKGATE_API_KEYS_FILE")
    key.add_argument("name", help="who the key is for (shown in the keys file)")
    key.set_defaults(func=cmd_new_key)
    urls = sub.add_parser("urls", help="the node's broker and Redis URLs (for programs and extra workers)")
    urls.add_argument("--export", action="store_true", help="as shell export lines, for eval")
    urls.set_defaults(func=cmd_urls)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
