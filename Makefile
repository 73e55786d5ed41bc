# checkgate: `make run` brings the whole node up in the foreground; `make test` runs the full suite.
# Both bootstrap first (.venv, RabbitMQ, Redis), so they work on a fresh machine.

VENV := .venv
BIN := $(VENV)/bin

.PHONY: bootstrap run test lint format clean bench bench-smoke bench-jmeter faults cluster

bootstrap:
	@bash scripts/bootstrap.sh

run: bootstrap
	$(BIN)/checkgate run

test: bootstrap lint
	$(BIN)/python -m pytest -q

# The fault suite at full scale (a smoke of it runs in `make test`); prints the reliability table,
# also written to var/faults/report.json, and the measured HA figures (var/ha/measured.json).
faults: bootstrap
	CHECKGATE_FAULTS=full $(BIN)/python -m pytest -q -p no:cacheprovider tests/faults tests/ha

# A 3-node RabbitMQ cluster, Redis with Sentinel and (as root) worker hosts as network namespaces, as
# the HA tests build them; prints how to point workers and the gateway at it. Ctrl-C tears it down.
cluster: bootstrap
	$(BIN)/python -m tests.support.topology

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: bootstrap
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# checkgate (1 and N processes) against Flask+gunicorn, Flower, FastAPI+uvicorn, a bare Tornado handler,
# Celery's own client and the workers alone (each scenario's bound), side by side on the same workers,
# on py-amqp and on librabbitmq workers (skipped where librabbitmq does not import); results in
# bench/results/ (latest.json, latest.md, latest.png). make bench BENCH_ARGS="--rounds 5"
BENCH_ARGS ?=
bench: bootstrap
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# A short run of the harness itself (checkgate and the drain, 2 s windows): not figures.
bench-smoke: bootstrap
	$(BIN)/python -m bench --smoke

# JMeter's plans against a running gateway (`make run` in another shell); knobs as make variables.
PLAN ?= sleep
THREADS ?= 60
DURATION ?= 30
PORT ?= 8888
bench-jmeter: bootstrap
	@command -v jmeter >/dev/null && command -v javac >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jmeter default-jdk-headless >/dev/null)
	$(BIN)/python -m bench.jmeter_run --plan $(PLAN) --threads $(THREADS) --duration $(DURATION) --port $(PORT)

# Keeps var/*-credentials: the RabbitMQ user made with that password would refuse a new one.
clean:
	[ ! -d var ] || find var -mindepth 1 -maxdepth 1 ! -name '*-credentials' -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache *.egg-info
