# SAM application shell: validate, build and invoke template.yaml (included by the top-level Makefile).
# AWS SAM CLI lives in its own venv: it pins boto3/cfn-lint/aws-sam-translator versions of its own.
# Its exact versions are in requirements/sam.lock (from requirements/sam.in: `make lock`).
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
SAM_CLI_VERSION := 1.170.0
SAM_TEMPLATE ?= template.yaml
SAM_BUILD_DIR ?= .aws-sam/build
# `sam build` without a container checks that an interpreter matching Runtime (python3.12) is on PATH.
SAM_PATH = $(patsubst %/,%,$(dir $(PY312))):$(PATH)

.PHONY: sam validate build invoke sam-venv-outdated

# The stamp holds the installed version: changing SAM_CLI_VERSION reinstalls, editing this file does not.
ifneq ($(shell cat $(SAM_VENV)/.installed 2>/dev/null),$(SAM_CLI_VERSION))
$(SAM_VENV)/.installed: sam-venv-outdated
endif
sam-venv-outdated: ;

$(SAM_VENV)/.installed: requirements/sam.lock | $(UV_DEP)
	@test -n "$(PY312)" || { echo "error: Python 3.12 not found (looked in $(PYENV_ROOT)/versions and PATH)"; exit 1; }
	rm -rf $(SAM_VENV)
	$(UV) venv -q --python $(PY312) $(SAM_VENV)
	$(UV) pip sync -q --python $(SAM_VENV)/bin/python requirements/sam.lock
	echo $(SAM_CLI_VERSION) > $@

sam: $(SAM_VENV)/.installed ## install AWS SAM CLI into .venv-sam

# tests/template runs `sam validate` and `sam build`: make the SAM venv part of `make test`.
test test-full: $(SAM_VENV)/.installed

validate: $(SAM_VENV)/.installed $(VENV)/.installed ## sam validate --lint + cfn-lint on template.yaml
	$(SAM) validate --lint --region us-east-1 --template-file $(SAM_TEMPLATE)
	$(VENV)/bin/cfn-lint $(SAM_TEMPLATE)

build: $(SAM_VENV)/.installed ## sam build (no container) into .aws-sam/build
	@test -n "$(PY312)" || { echo "error: Python 3.12 not found; sam build needs it on PATH"; exit 1; }
	PATH="$(SAM_PATH)" $(SAM) build --template-file $(SAM_TEMPLATE) --build-dir $(SAM_BUILD_DIR)

# make invoke FN=PlanFunction EVENT=events/plan.json [ENV_VARS=env.json] [PARAMS="Transport=sqs"]
# Without Docker, ON_STACK=<a deploy-local stack> [ENDPOINT=] runs it against that stack; RUN_ID= fills RUN_ID.
invoke: $(VENV)/.installed ## run one function: FN=<LogicalId> EVENT=events/<file>.json (Docker, else local)
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=<LogicalId> EVENT=events/<file>.json [ENV_VARS=f.json] [PARAMS='K=V ...']" >&2; exit 2; }
	@if docker info >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory build && \
		$(SAM) local invoke $(FN) --template-file $(SAM_BUILD_DIR)/template.yaml --event $(EVENT) \
			$(if $(ENV_VARS),--env-vars $(ENV_VARS)) $(if $(PARAMS),--parameter-overrides $(PARAMS)); \
	else \
		echo "invoke: no Docker engine, running $(FN) with tools/local_invoke.py" >&2; \
		$(PY) tools/local_invoke.py $(FN) $(EVENT) --template $(SAM_TEMPLATE) --build-dir $(SAM_BUILD_DIR) \
			$(if $(ENV_VARS),--env-vars $(ENV_VARS)) $(if $(PARAMS),--parameter-overrides $(PARAMS)) \
			$(if $(ON_STACK),--stack '$(ON_STACK)' $(if $(ENDPOINT),--endpoint '$(ENDPOINT)')) $(if $(RUN_ID),--run-id '$(RUN_ID)'); \
	fi
