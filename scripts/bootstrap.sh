#!/usr/bin/env bash
# Bootstrap a checkout on a fresh machine (Debian 12, Python 3.11):
#   .venv with checkgate and its dev extras installed (editable);
#   rabbitmq-server and redis-server installed (apt-get, when missing and root) and running on 127.0.0.1.
# Idempotent and quick when everything is already there. Brokers named by CHECKGATE_BROKER_URL /
# CHECKGATE_RESULT_BACKEND on another host are left alone.
# The machine's RabbitMQ and Redis on 5672/6379 serve the tests and the benchmark (and may be shared with
# others). `make run` does not use them as they are: `checkgate run` makes the stack's own account (vhost
# and user) on this RabbitMQ and runs the stack's own Redis under supervisord, with passwords generated
# into var/ (gateway/credentials.py), so nothing here creates or changes an account.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }

# --- Python environment -------------------------------------------------------------------------
python=${PYTHON:-}
if [ -z "$python" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            python=$candidate
            break
        fi
    done
fi
[ -n "$python" ] || die "Python >= 3.11 is required (set PYTHON=/path/to/python3.11)"
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $python"
    "$python" -m venv .venv
fi
stamp=.venv/.checkgate-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    say "installing checkgate[dev] into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
    touch "$stamp"
fi
# The C AMQP client for the workers (issue #17: the [librabbitmq] extra, tasks/transport.py), where a wheel
# exists (glibc Linux x86_64, CPython: the extra's markers say so). Best effort: a platform without the
# wheel, or an index without it, leaves the workers on py-amqp, never a failed bootstrap.
if ! .venv/bin/python -c 'import librabbitmq' 2>/dev/null; then
    if .venv/bin/python -c 'import platform, sys; sys.exit(not (platform.system() == "Linux" and platform.machine() == "x86_64" and platform.python_implementation() == "CPython"))'; then
        if .venv/bin/pip install --quiet --disable-pip-version-check --only-binary librabbitmq-fork -e '.[librabbitmq]' 2>/dev/null; then
            say "installed librabbitmq-fork (workers may use the librabbitmq transport: README, Worker transports)"
        else
            say "librabbitmq-fork could not be installed: workers use py-amqp"
        fi
    fi
fi

# --- RabbitMQ and Redis -------------------------------------------------------------------------
is_local() { case "${1:-127.0.0.1}" in *127.0.0.1*|*localhost*|*'[::1]'*) return 0 ;; *) return 1 ;; esac; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # name port seconds
    for _ in $(seq 1 "$(( $3 * 5 ))"); do port_open "$2" && return 0; sleep 0.2; done
    die "$1 did not start listening on 127.0.0.1:$2 within $3 s"
}

export PATH="$PATH:/usr/sbin:/sbin"
missing=()
if is_local "${CHECKGATE_BROKER_URL:-}"; then
    command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
fi
if is_local "${CHECKGATE_RESULT_BACKEND:-}"; then
    command -v redis-server >/dev/null || missing+=(redis-server)
fi
# The load generator of the benchmark and its smoke test.
command -v wrk >/dev/null || missing+=(wrk)
# The HA tests' worker hosts are network namespaces (`ip netns`, veth, bridge).
command -v ip >/dev/null || missing+=(iproute2)
# The console's browser test drives Debian's chromium through chromedriver (skipped without them).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ]; then missing+=(chromium chromium-driver); else say "no chromium: the browser test will be skipped"; fi
fi
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "please install ${missing[*]} (sudo apt-get install ${missing[*]}) and run again"
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if is_local "${CHECKGATE_BROKER_URL:-}" && ! port_open 5672; then
    say "starting rabbitmq-server"
    rabbitmq-server -detached >/dev/null 2>&1 || die "rabbitmq-server -detached failed"
    wait_port RabbitMQ 5672 120
    rabbitmqctl -q await_startup >/dev/null 2>&1 || true
fi
if is_local "${CHECKGATE_RESULT_BACKEND:-}" && ! port_open 6379; then
    say "starting redis-server"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no --dir /tmp >/dev/null
    wait_port Redis 6379 30
fi
say "ready: .venv, RabbitMQ on 127.0.0.1:5672, Redis on 127.0.0.1:6379 (for the tests; make run starts its own)"
