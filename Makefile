# One entry point for people and CI. Stack targets delegate to `python -m deploy.stack`, which picks the runtime:
# RUNTIME=docker (Docker Compose) or local (supervisord on 127.0.0.1); auto = docker when Docker Engine >= 25
# and Compose >= 2.24.4 answer, else local (it says why). The Docker runtime needs no venv and no host packages.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
RUNTIME ?= auto
REPLICAS ?= 3
PYTEST_ARGS ?=
LOCKS := requirements/dev.lock requirements/api.lock requirements/stub.lock
# The venv's python once it exists, else the system's (deploy/ runs the Docker path on the standard library).
# Recursive (=): expanded when a recipe runs, after its prerequisites may have created the venv.
HOST_PY = $(if $(wildcard $(PY)),$(PY),python3)
REDIS_TOPOLOGY ?= standalone
STACK = $(HOST_PY) -m deploy.stack --runtime $(RUNTIME) --redis-topology $(REDIS_TOPOLOGY)

.PHONY: help setup stack-deps lock system-deps test unit integration lint typecheck check up up-scaled down clean ps logs \
        redis-stop redis-kill redis-start replica-kill loadtest loadtest-ui chaos bench warm

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

system-deps: ## redis-server, redis-sentinel, nginx and prometheus (promtool: the monitoring tests), when missing
	@bash scripts/system-deps.sh redis-server redis-sentinel nginx prometheus

# Exact versions with hashes (requirements/dev.lock, see README "Dependencies"); the project itself without deps.
$(VENV)/.installed: pyproject.toml requirements/dev.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements/dev.lock
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

setup: system-deps $(VENV)/.installed ## everything the tests and the local stack need

# What `up` needs on this host: the local runtime needs setup; the Docker runtime needs nothing here.
stack-deps:
	@if [ "$$(python3 -m deploy.stack --runtime $(RUNTIME) which 2>/dev/null)" != docker ]; then \
		$(MAKE) --no-print-directory setup; fi

lock: ## re-resolve requirements/*.lock from pyproject.toml (needs PyPI; uv in the venv)
	$(VENV)/bin/pip install --quiet uv
	bash scripts/lock.sh $(VENV)/bin/uv

test: setup ## the whole suite: lint, types, unit, contract and integration tests
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

unit: $(VENV)/.installed ## unit tests only (fakeredis, no network)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

integration: setup ## integration tests only (real redis-server, nginx, API processes)
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

check: setup ## lint, format check and types
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

up: stack-deps ## one API instance, Redis and the upstream stub; API at http://127.0.0.1:8001
	$(STACK) up --replicas 1

up-scaled: stack-deps ## REPLICAS API replicas behind nginx at http://127.0.0.1:8080 (MONITORING=1: + Prometheus, Grafana)
	$(STACK) up --scaled --replicas $(REPLICAS)

down: ## stop and remove everything up/up-scaled started
	@$(STACK) down

clean: down ## also remove the local runtime's data and the reports
	rm -rf .run reports

ps: ## status of the running stack
	@$(STACK) ps

logs: ## logs of the running stack
	@$(STACK) logs

redis-stop: ## stop Redis gracefully
	@$(STACK) redis-stop

redis-kill: ## kill Redis (the current primary with REDIS_TOPOLOGY=sentinel|cluster) with SIGKILL
	@$(STACK) redis-kill

redis-start: ## start Redis again
	@$(STACK) redis-start

replica-kill: ## SIGKILL one API replica (the runtime restarts it)
	@$(STACK) replica-kill

loadtest: $(VENV)/.installed ## Locust, headless, against the running scaled stack; writes reports/
	$(PY) -m loadtest.run sharing

loadtest-ui: $(VENV)/.installed ## Locust's web UI against the running scaled stack
	PYTHONPATH=. $(VENV)/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8080

chaos: $(VENV)/.installed ## Locust load while the model fails, Redis is killed and restarted, a replica killed
	$(PY) -m loadtest.run chaos

bench: setup ## the benchmark suite; prints figures, writes reports/bench-*.json
	@bash scripts/system-deps.sh wrk
	$(PY) -m bench.run

warm: $(VENV)/.installed ## FILE=inputs.jsonl SCHOOL=N: fill a school's cache from a JSONL file (resumable)
	@if [ -z "$(FILE)" ] || [ -z "$(SCHOOL)" ]; then echo "usage: make warm FILE=inputs.jsonl SCHOOL=123 [WARM_ARGS=...]" >&2; exit 2; fi
	$(PY) -m rag_api.warm "$(FILE)" --school "$(SCHOOL)" $(WARM_ARGS)
