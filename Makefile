# stepchain: the front door. Every target sets up what it needs; nothing is assumed installed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)
# The Lambda runtime is python3.12, so the project venv uses the same interpreter.
PY312 ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/3.12*/bin/python3.12) $(shell command -v python3.12 2>/dev/null))
VENV := .venv
PY := $(VENV)/bin/python
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: help venv lock test test-full test-fast check lint typecheck unit integration e2e demo bench bench-fusion-localstack clean asl template template-check wheel conformance

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# uv creates and fills every venv from a lock file (requirements/*.lock, infra/localstack/requirements.lock):
# seconds instead of minutes, the same versions everywhere. `uv` on PATH is used, else a pinned uv is
# bootstrapped into .venv-uv with pip (a few seconds); a `uv` that does not run (a pyenv shim) is skipped. uv reads only the package index (not pip.conf).
UV_VERSION := 0.13.9
UV ?= $(or $(shell uv --version >/dev/null 2>&1 && command -v uv),.venv-uv/bin/uv)
UV_DEP := $(if $(filter .venv-uv/bin/uv,$(UV)),.venv-uv/bin/uv)
export UV_PYTHON_DOWNLOADS := never
UV_LOCK := $(UV) pip compile -q --universal --custom-compile-command 'make lock'

.venv-uv/bin/uv:
	@test -n "$(PY312)" || { echo "error: Python 3.12 not found (looked in $(PYENV_ROOT)/versions and PATH)"; exit 1; }
	$(PY312) -m venv .venv-uv
	.venv-uv/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# Fragments: SAM CLI, LocalStack, deploy, bench peer (each defines its own venv and targets). Included after
# UV/UV_DEP: a rule's prerequisites expand when it is read, so an earlier include saw an empty $(UV_DEP).
-include mk/*.mk

$(VENV)/.installed: pyproject.toml requirements/dev.lock | $(UV_DEP)
	@test -n "$(PY312)" || { echo "error: Python 3.12 not found (looked in $(PYENV_ROOT)/versions and PATH)"; exit 1; }
	$(UV) venv -q --allow-existing --python $(PY312) $(VENV)
	$(UV) pip sync -q --python $(PY) requirements/dev.lock
	touch $@

venv: $(VENV)/.installed ## create the project virtualenv (from requirements/dev.lock)

# Regenerate the lock files after changing a dependency (pyproject.toml, the SAM CLI or LocalStack pins).
lock: | $(UV_DEP) ## re-pin requirements/*.lock and infra/localstack/requirements.lock from their inputs
	$(UV_LOCK) --python-version 3.12 requirements/dev.in -o requirements/dev.lock
	$(UV_LOCK) --python-version 3.12 requirements/sam.in -o requirements/sam.lock
	$(UV_LOCK) --python-version 3.12 requirements/checkov.in -o requirements/checkov.lock
	cp requirements/sam.lock src/stepchain/deploy/project_template/requirements-sam.lock  # a scaffold's .venv-sam
	$(UV) pip compile -q --custom-compile-command 'make lock' --python-version 3.13 \
		$(LS_DIR)/requirements.in -c $(LS_DIR)/constraints.txt -o $(LS_DIR)/requirements.lock

lint: venv ## ruff
	$(VENV)/bin/ruff check src tests functions tools demo bench
	$(VENV)/bin/ruff format --check src

typecheck: venv ## mypy --strict on the framework
	$(VENV)/bin/mypy

# The deployed app: the research agent, the tool agent and its delegate (functions/app.py serves all three).
APP_WORKFLOWS := research_agent.workflow:wf tool_agent.workflow:wf tool_agent.workflow:lookup
APP_PATH := --pythonpath functions/research_agent --pythonpath functions/tool_agent

asl: venv ## regenerate statemachine/*.asl.json from the workflow definitions
	for wf in $(APP_WORKFLOWS); do $(VENV)/bin/stepchain asl $$wf $(APP_PATH) --out statemachine || exit 1; done

# template.yaml is generated from the workflow definitions (stepchain.deploy.samgen); template.overrides.yaml holds
# the hand-written part. tests/template/test_template_generated.py fails when template.yaml is stale.
TEMPLATE_ARGS := $(APP_WORKFLOWS) $(APP_PATH) --code-uri functions/
template: asl ## regenerate template.yaml (and the ASL) from the workflow definitions + template.overrides.yaml
	$(VENV)/bin/stepchain template $(TEMPLATE_ARGS) --out template.yaml

template-check: venv ## fail (exit 1, with a diff summary) if template.yaml or the ASL is stale
	for wf in $(APP_WORKFLOWS); do $(VENV)/bin/stepchain asl $$wf $(APP_PATH) --out statemachine --check || exit 1; done
	$(VENV)/bin/stepchain template $(TEMPLATE_ARGS) --out template.yaml --check

# What `pip install stepchain-<v>.whl` installs (README "Deploy your own workflow"; `stepchain new` vendors it).
wheel: venv ## build stepchain's wheel into dist/
	rm -f dist/stepchain-*.whl
	$(PY) -m pip wheel -q --no-deps --disable-pip-version-check -w dist .
	@ls dist/stepchain-*.whl

check: lint typecheck ## lint + type-check (fast)

unit: venv ## unit + functional tests (no network, no emulator processes)
	$(PY) -m pytest -q tests/unit tests/functional

integration: venv ## whole chains in process: in-process, SQS and Step Functions transports on moto
	$(PY) -m pytest -q tests/integration

# Test runs. pytest-xdist spreads tests over XDIST_WORKERS processes (XDIST_WORKERS=0: all in this process).
# tests/e2e runs in a pytest process of its own, beside them (it waits on LocalStack most of the time):
# one LocalStack for all e2e tests; its output follows the rest (.localstack/e2e.log).
XDIST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -p no:cacheprovider
XDIST := $(if $(filter-out 0,$(XDIST_WORKERS)),-n $(XDIST_WORKERS))
E2E_LOG := .localstack/e2e.log
# make test-fast: what runs in process on the in-memory store, no moto transports, no real-time tests.
FAST_SELECT := -m "not slow" -k "not sqs and not sfn and not moto and not stepfunctions and not step_functions and not local and not inprocess"
define run_all_tiers
	mkdir -p $(dir $(E2E_LOG))
	$(PYTEST) --durations=10 $(1) tests/e2e > $(E2E_LOG) 2>&1 & e2e=$$!; \
	$(PYTEST) $(XDIST) --durations=15 $(1) --ignore=tests/e2e tests; rest=$$?; \
	wait $$e2e; e2e_rc=$$?; echo "--- tests/e2e:"; cat $(E2E_LOG); \
	test $$rest -eq 0 -a $$e2e_rc -eq 0
endef

# The gate: lint, types, then every test tier. The SAM and LocalStack venvs are installed first
# (their targets are prerequisites), so a fresh clone needs nothing else. The crash matrices on the slow
# transports run a covering sample here (tests/matrix.py); make test-full runs every case.
test: venv $(LS_VENV)/.installed ## the gate: ruff, mypy, and all tests (unit .. e2e on LocalStack), 2 workers + e2e
	$(MAKE) --no-print-directory check
	$(call run_all_tiers,)

test-full: venv $(LS_VENV)/.installed ## make test with every crash-matrix case on every transport (--exhaustive)
	$(MAKE) --no-print-directory check
	$(call run_all_tiers,--exhaustive)

test-fast: venv ## the edit loop: ruff + unit tests + in-memory integration tests (no moto transports, no e2e)
	$(VENV)/bin/ruff check src tests functions tools demo bench
	$(PYTEST) $(XDIST) tests/unit tests/integration $(FAST_SELECT)

# The normal run (make test) holds the in-memory matrix and an all-pairs sample of the others (tests/conformance).
conformance: venv ## the whole conformance matrix (issue 15): every kind x position x boundary x duplicate, on every transport
	$(PY) -m pytest -q -p no:cacheprovider -m conformance tests/conformance $(CONFORMANCE_ARGS)

e2e: venv $(LS_VENV)/.installed ## end-to-end tests on a LocalStack the fixture starts and stops
	$(PY) -m pytest -q tests/e2e

# MODE=localstack: the same story through API Gateway on a Docker-free LocalStack (demo/localstack_demo.py).
demo: venv ## the main job: the research agent survives a killed worker (embedded AWS, no Docker; MODE=localstack)
	$(if $(filter localstack,$(MODE)),$(MAKE) --no-print-directory $(LS_VENV)/.installed $(SAM_VENV)/.installed build)
	$(if $(filter localstack,$(MODE)),$(PY) demo/localstack_demo.py $(DEMO_ARGS),$(PY) demo/run_demo.py)

bench: venv $(BENCH_PEER_VENV)/.installed ## benchmarks (minutes; not part of make test): writes bench/RESULTS.md
	$(PY) bench/run_bench.py $(BENCH_ARGS)
	$(PY) bench/kill_resume.py
	$(PY) bench/fusion_bench.py
	$(PY) bench/limits_bench.py

# Its own target (a LocalStack, a sam build and two deployments: a few minutes); make bench does not run it.
bench-fusion-localstack: venv localstack-venv sam ## step fusion on LocalStack: p50 step gap, fused vs unfused, one stack
	$(PY) bench/fusion_localstack.py $(FUSION_LS_ARGS)

clean: ## remove build outputs and local state (keeps the venvs)
	rm -rf .aws-sam .demo .localstack build dist

