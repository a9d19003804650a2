# checkov (static IaC checks) on template.yaml, in its own venv: checkov 3.x pins boto3 1.35, networkx 2.x
# and packaging 23, which conflict with the project's dev venv (boto3 1.44, networkx 3, packaging 26).
# Exact versions: requirements/checkov.lock (`make lock`).
# tests/template/test_checkov.py runs it with the justified skip list tests/template/checkov-skips.yaml.
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
CHECKOV_VERSION := 3.3.30

.PHONY: checkov checkov-venv-outdated

# The stamp holds the installed version: changing CHECKOV_VERSION reinstalls.
ifneq ($(shell cat $(CHECKOV_VENV)/.installed 2>/dev/null),$(CHECKOV_VERSION))
$(CHECKOV_VENV)/.installed: checkov-venv-outdated
endif
checkov-venv-outdated: ;

$(CHECKOV_VENV)/.installed: requirements/checkov.lock | $(UV_DEP)
	@test -n "$(PY312)" || { echo "error: Python 3.12 not found (looked in $(PYENV_ROOT)/versions and PATH)"; exit 1; }
	rm -rf $(CHECKOV_VENV)
	$(UV) venv -q --python $(PY312) $(CHECKOV_VENV)
	$(UV) pip sync -q --python $(CHECKOV_VENV)/bin/python requirements/checkov.lock
	echo $(CHECKOV_VERSION) > $@

# tests/template/test_checkov.py runs checkov: make its venv part of `make test`.
test test-full: $(CHECKOV_VENV)/.installed

checkov: $(CHECKOV_VENV)/.installed ## checkov on template.yaml (skips: tests/template/checkov-skips.yaml)
	$(VENV)/bin/python -m pytest -q tests/template/test_checkov.py
