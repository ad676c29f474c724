# One entry point for people and CI. Stack targets delegate to deploy/stack.py, which picks the runtime:
# RUNTIME=docker (Docker Compose) or local (supervisord on 127.0.0.1); auto = docker when an engine answers.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
RUNTIME ?= auto
REPLICAS ?= 3
PYTEST_ARGS ?=
REDIS_TOPOLOGY ?= standalone
STACK := $(PY) deploy/stack.py --runtime $(RUNTIME) --redis-topology $(REDIS_TOPOLOGY)

.PHONY: help setup system-deps test unit integration lint typecheck check up up-scaled down clean ps logs \
        redis-stop redis-kill redis-start replica-kill loadtest loadtest-ui chaos bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

system-deps: ## redis-server, nginx and wrk from the system's packages, when missing
	@bash scripts/system-deps.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,ops]'
	touch $@

setup: system-deps $(VENV)/.installed ## everything the tests and the stack need

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

up: setup ## one API instance, Redis and the upstream stub; API at http://127.0.0.1:8001
	$(STACK) up --replicas 1

up-scaled: setup ## REPLICAS API replicas behind nginx at http://127.0.0.1:8080
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
	$(PY) loadtest/run.py sharing

loadtest-ui: $(VENV)/.installed ## Locust's web UI against the running scaled stack
	$(VENV)/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8080

chaos: $(VENV)/.installed ## Locust load while the model fails, Redis is killed and restarted, a replica killed
	$(PY) loadtest/run.py chaos

bench: setup ## the benchmark suite; prints figures, writes reports/bench-*.json
	$(PY) bench/run.py
