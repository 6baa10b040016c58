# prediction-cache: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Every target runs the project's own tools first on PATH.
export PATH := $(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install dev run test test-unit test-integration test-faults requests rollout rollback celery pairs forget lock bench bench-quick wrk nginx varnish rabbitmq faketime lint format typecheck clean

help: ## Show this help
	@grep -hE '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-18s %s\n", $$1, $$2}'

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "prediction-cache needs Python 3.11+, got " + sys.version.split()[0] + ": set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)

# Installs are reproducible: exact versions with hashes from requirements/*.lock (made
# from pyproject.toml's ranges by `make lock`), then the project itself, without deps.
SERVICE_LOCK := requirements/service.lock
DEV_LOCK := requirements/dev.lock
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check

$(VENV)/.installed: pyproject.toml $(SERVICE_LOCK) | $(VENV)/bin/python
	$(PIP_INSTALL) --require-hashes --no-deps -r $(SERVICE_LOCK)
	$(PIP_INSTALL) --no-deps -e .
	@touch $@

# The dev lock holds the dev and bench extras (CI runs both the tests and bench-quick).
$(VENV)/.dev-installed: pyproject.toml $(DEV_LOCK) $(VENV)/.installed
	$(PIP_INSTALL) --require-hashes --no-deps -r $(DEV_LOCK)
	@touch $@

$(VENV)/.bench-installed: $(VENV)/.dev-installed
	@touch $@

install: $(VENV)/.installed ## Create .venv and install the service (what the Dockerfile runs)

dev: $(VENV)/.dev-installed ## Install the service plus test, lint and `make run` tools

# Where `make run` keeps its Redis data and, while it runs, its Redis's URL.
RUN_DIR ?= $(CURDIR)/.run
export RUN_DIR

run: dev ## Start Redis (embedded unless REDIS_URL is set), worker, beat and the API on :8000 (PRECOMPUTE=0: API only)
	$(BIN)/python -m scripts.run || [ $$? -eq 130 ]  # 130: stopped by Ctrl-C, as intended

# The suite runs in two passes. First most tests side by side, in TEST_WORKERS processes
# (pytest-xdist): each starts its own servers on ports of its own, and they mostly wait
# on those real processes, so more processes than this 2-core machine's cores pay.
# Then, alone, the tests marked `serial`, which assert latency bounds (or take the
# whole machine): a neighbour's load would skew them. Both passes always run; the
# target fails if either did. PYTEST_ARGS go to both (e.g. PYTEST_ARGS="-x -k edge").
TEST_WORKERS ?= 4
# $(call two_passes,paths,marker expression): the paths' tests, or only the marked ones.
define two_passes
	@status=0; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "$(if $(2),($(2)) and )not serial" $(1) $(PYTEST_ARGS) || status=$$?; \
	echo "--- the tests marked serial, alone:"; \
	$(BIN)/python -m pytest -m "$(if $(2),($(2)) and )serial" $(1) $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] || status=$$rc; }; \
	exit $$status
endef

test: dev ## Run the whole suite: unit and integration tests (real Redis, Celery, gunicorn)
	$(call two_passes,,)

# The fast tests: no network, no servers (tests/scripts and tests/deployment too).
FAST_TESTS := tests/unit tests/scripts tests/deployment

test-unit: dev ## Run the fast tests only: tests/unit, tests/scripts, tests/deployment
	$(BIN)/python -m pytest $(FAST_TESTS)

test-integration: dev ## Run the integration tests only
	$(call two_passes,tests/integration,)

test-faults: dev ## Run only the fault-injection tests (Redis killed or frozen, workers killed, ...)
	$(call two_passes,,faults)

requests: dev ## Time requests against the running API (URL= PAIR= N= INTERVAL= HISTOGRAM=1)
	$(BIN)/python scripts/time_requests.py \
		$(if $(URL),--url $(URL)) $(if $(PAIR),--pair $(PAIR)) \
		$(if $(N),--count $(N)) $(if $(INTERVAL),--interval $(INTERVAL)) \
		$(if $(HISTOGRAM),--histogram) \
		|| [ $$? -eq 130 ]  # 130: stopped by Ctrl-C after printing its summary

# `make run` writes its embedded Redis's URL here while it runs; REDIS_URL, if set, wins.
RUN_REDIS_URL = $(or $(REDIS_URL),$(shell cat $(RUN_DIR)/redis-url 2>/dev/null))
# Stops a tool target with one clear line when there is no system to talk to.
NEED_SYSTEM = @test -n "$(RUN_REDIS_URL)" || { echo "no \`make run\` is running in this checkout ($(RUN_DIR)/redis-url is absent) and REDIS_URL is not set: start \`make run\` in another terminal" >&2; exit 1; }

rollout: dev ## Precompute every pair with a model, then make the API serve it (MODEL=package.module:obj)
	@test -n "$(MODEL)" || { echo "usage: make rollout MODEL=package.module:Model" >&2; exit 2; }
	$(NEED_SYSTEM)
	@REDIS_URL="$(RUN_REDIS_URL)" $(BIN)/python -m predictions.rollout "$(MODEL)"

rollback: dev ## Go back to the model version served before the last rollout
	$(NEED_SYSTEM)
	@REDIS_URL="$(RUN_REDIS_URL)" $(BIN)/python -m predictions.rollout --rollback

celery: dev ## Any celery command against `make run`'s system, e.g. ARGS="inspect ping"
	@test -n "$(ARGS)" || { echo 'usage: make celery ARGS="inspect ping" (any `celery -A worker` command)' >&2; exit 2; }
	$(NEED_SYSTEM)
	@REDIS_URL="$(RUN_REDIS_URL)" $(BIN)/celery -A worker $(ARGS)

pairs: dev ## The known pairs of `make run`'s system, e.g. ARGS="add SOL-EUR" (add|remove|list|load)
	@test -n "$(ARGS)" || { echo 'usage: make pairs ARGS="list" (add PAIR, remove PAIR, list, load FILE)' >&2; exit 2; }
	$(NEED_SYSTEM)
	@REDIS_URL="$(RUN_REDIS_URL)" $(BIN)/python -m predictions.pairs $(ARGS)

forget: dev ## Delete a pair's prediction from `make run`'s Redis: its next request misses (PAIR=ETH-EUR)
	@test -n "$(PAIR)" || { echo "usage: make forget PAIR=ETH-EUR" >&2; exit 2; }
	$(NEED_SYSTEM)
	@REDIS_URL="$(RUN_REDIS_URL)" $(BIN)/python -m scripts.forget "$(PAIR)"

wrk: ## Install wrk, the benchmark's load generator (Debian package; apt-get as root)
	@command -v wrk >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	else \
		echo "make bench needs wrk: run 'sudo apt-get install wrk' (Debian/Ubuntu) or build it from its source" >&2; \
		exit 1; \
	fi

nginx: ## Install nginx, for the edge-cache test (Debian's nginx-light or nginx; apt-get as root)
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null \
			|| DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }; \
	else \
		echo "tests/integration/test_edge.py needs nginx: run 'sudo apt-get install nginx-light' (Debian/Ubuntu; 'nginx' where there is no nginx-light) or install nginx otherwise" >&2; \
		exit 1; \
	fi

varnish: ## Install Varnish, for the HTTP-cache tests (Debian's varnish; apt-get as root)
	@command -v varnishd >/dev/null || [ -x /usr/sbin/varnishd ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq varnish >/dev/null; \
	else \
		echo "tests/integration/test_http_caches.py needs Varnish: run 'sudo apt-get install varnish' (Debian/Ubuntu) or install Varnish 7 otherwise" >&2; \
		exit 1; \
	fi

rabbitmq: ## Install RabbitMQ, for the broker test (Debian's rabbitmq-server; apt-get as root)
	@command -v rabbitmq-server >/dev/null || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null; \
	else \
		echo "tests/integration/test_brokers.py needs RabbitMQ: run 'sudo apt-get install rabbitmq-server' (Debian/Ubuntu) or install it otherwise" >&2; \
		exit 1; \
	fi

faketime: ## Install libfaketime, for the clock-skew test (Debian's faketime; apt-get as root)
	@ls /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/local/lib/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; \
	else \
		echo "tests/integration/test_clock_skew.py needs libfaketime: run 'sudo apt-get install faketime' (Debian/Ubuntu) or install it otherwise" >&2; \
		exit 1; \
	fi

bench: $(VENV)/.bench-installed wrk ## Full benchmark against the baselines (~27 min); writes docs/performance.md
	$(BIN)/python -m scripts.bench.run

bench-quick: $(VENV)/.bench-installed wrk ## Short benchmark (about 3 min, CI): prints the tables, writes .run/bench/ only
	$(BIN)/python -m scripts.bench.run --quick

lock: dev ## Refresh requirements/*.lock from pyproject.toml's ranges (uv pip compile, with hashes; needs PyPI)
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --universal --generate-hashes --upgrade --no-header -q -o $(SERVICE_LOCK)
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --extra dev --extra bench --universal --generate-hashes --upgrade --no-header -q -o $(DEV_LOCK)

lint: dev typecheck ## ruff check, ruff format --check, mypy and the import contracts (what CI runs)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: dev ## mypy, strict, on the packages, examples, scripts and tests (pyproject.toml)
	$(BIN)/mypy

format: dev ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove .venv, .run and caches
	rm -rf $(VENV) .run .pytest_cache .ruff_cache .mypy_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
