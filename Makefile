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

.PHONY: help venv test lint typecheck unit demo bench clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -n "$(PY312)" || { echo "error: Python 3.12 not found (looked in $(PYENV_ROOT)/versions and PATH)"; exit 1; }
	$(PY312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create the project virtualenv

lint: venv ## ruff
	$(VENV)/bin/ruff check src tests functions bench tools
	$(VENV)/bin/ruff format --check src

typecheck: venv ## mypy --strict on the framework
	$(VENV)/bin/mypy

-include mk/*.mk
