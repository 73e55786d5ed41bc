# checkgate: `make run` brings the whole node up in the foreground; `make test` runs the full suite.
# Both bootstrap first (.venv, RabbitMQ, Redis), so they work on a fresh machine.

VENV := .venv
BIN := $(VENV)/bin

.PHONY: bootstrap run test lint format clean

bootstrap:
	@bash scripts/bootstrap.sh

run: bootstrap
	$(BIN)/checkgate run

test: bootstrap lint
	$(BIN)/python -m pytest -q

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: bootstrap
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var .pytest_cache .ruff_cache *.egg-info
