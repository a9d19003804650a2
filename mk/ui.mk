# The live view's browser test (tests/ui/test_ui_browser.py) drives the distribution's Chromium with
# Playwright's Python package (in the dev extra). Never `playwright install`: it downloads its own browser.
# CI runs as root on Debian: the browser is installed here when it is missing.
UI_BROWSER ?= /usr/bin/chromium

.PHONY: ui-browser
ui-browser: ## install Chromium for the live page's browser test (apt-get; as root)
	@command -v chromium >/dev/null 2>&1 || test -x $(UI_BROWSER) || { \
	  echo "installing chromium (apt-get) for tests/ui"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# `make test` needs the browser, and under it a missing browser fails the test instead of skipping it.
test: ui-browser
test: export STEPCHAIN_REQUIRE_BROWSER := 1
test: export STEPCHAIN_UI_BROWSER := $(UI_BROWSER)
