# LocalStack without Docker: host mode + stepchain's plugins (infra/localstack/README.md).
# Included by the top-level Makefile (SHELL, PYENV_ROOT, AWS_DEFAULT_REGION come from there).

LS_VENV := .venv-localstack
LS_PY := $(LS_VENV)/bin/python
LS_DIR := infra/localstack
LS_STATE := .localstack
LS_PORT ?= 4566
LS_PY313 ?= $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/3.13*/bin/python3.13)))
# Runtimes whose Lambda functions get a boto3 of their own (the AWS runtimes ship one).
LS_LAMBDA_PYTHONS ?= 3.12

.PHONY: localstack-venv localstack-up localstack-down localstack-status localstack-smoke

# Exact versions: $(LS_DIR)/requirements.lock (from requirements.in + constraints.txt: `make lock`).
$(LS_VENV)/.installed: $(LS_DIR)/requirements.lock $(LS_DIR)/pyproject.toml | $(UV_DEP)
	@test -n "$(LS_PY313)" || { echo "error: Python 3.13 not found as $(PYENV_ROOT)/versions/3.13*/bin/python3.13 (LocalStack 2026.3.0 needs it; install with: pyenv install 3.13)"; exit 1; }
	$(UV) venv -q --allow-existing --python $(LS_PY313) $(LS_VENV)
	$(UV) pip sync -q --python $(LS_PY) $(LS_DIR)/requirements.lock
	$(UV) pip install -q --python $(LS_PY) --no-deps -e $(LS_DIR)
	for v in $(LS_LAMBDA_PYTHONS); do \
	  $(UV) pip install -q --target $(LS_VENV)/lambda-site/python$$v --python-version $$v \
	    --python-platform x86_64-manylinux_2_28 --only-binary :all: --no-compile \
	    -c $(LS_DIR)/constraints.txt boto3 || exit 1; \
	done
	touch $@

localstack-venv: $(LS_VENV)/.installed ## LocalStack 2026.3.0 venv (Python 3.13) with stepchain's plugins

localstack-up: $(LS_VENV)/.installed ## start LocalStack (no Docker) on 127.0.0.1:4566 (LS_PORT=...), idempotent
	@$(LS_PY) $(LS_DIR)/localstack_ctl.py up --state-dir $(LS_STATE) --port $(LS_PORT)

localstack-down: ## stop LocalStack and its Lambda runtime processes (by PID)
	@python3 $(LS_DIR)/localstack_ctl.py down --state-dir $(LS_STATE)

localstack-status: ## is LocalStack running?
	@python3 $(LS_DIR)/localstack_ctl.py status --state-dir $(LS_STATE)

localstack-smoke: venv $(LS_VENV)/.installed ## smoke tests of the LocalStack platform (own instance, free port)
	$(VENV)/bin/pytest tests/e2e/test_localstack_platform.py -q
