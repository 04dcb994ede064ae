# Everyday entry points. `make test` is what CI runs (.ci/run).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVICES_ENV := .modelruns/test-services.env
# The URLs `tests.services ensure` chose (containers, when nothing is installed locally).
WITH_SERVICES := set -a && . ./$(SERVICES_ENV) && set +a &&

# Targets run in the order written: services before the database, the database before the demo.
.NOTPARALLEL:
.PHONY: venv services db test lint format demo up bench bench-tools clean distclean

venv: $(STAMP)

# Reinstalled only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

services: venv
	$(BIN)/python -m tests.services ensure

db: venv
	$(BIN)/modelruns db upgrade

test: venv services
	@test -x "$${CHROMIUM_PATH:-/usr/bin/chromium}" || echo "make test: the browser tests (tests/browser) need Chromium and fail without it: apt-get install chromium (.ci/run installs it)" >&2
	$(BIN)/ruff check .
	$(BIN)/mypy gateway orchestrator worker shared examples tests modelruns_client bench
	$(WITH_SERVICES) $(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gateway orchestrator worker shared examples tests modelruns_client bench

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: venv services db
	$(BIN)/modelruns demo

up: venv services db
	$(BIN)/modelruns up

# The load generator for HTTP (Debian's wrk) and pgbench come from the distribution; the peers
# install themselves into .bench/venvs/ on first use.
bench-tools:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	@command -v pgbench >/dev/null || (apt-get update -qq && apt-get install -y -qq postgresql-client)

bench: venv services bench-tools
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist test-artifacts .modelruns
	# The editable install's metadata goes too, so the next target reinstalls.
	rm -rf *.egg-info $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
