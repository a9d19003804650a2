# Benchmark peer: AWS Lambda durable functions' local runner, in its own venv (see bench/peer_durable.py).
BENCH_PEER_VENV := .venv-bench-peer
BENCH_PEER_PY := $(BENCH_PEER_VENV)/bin/python

BENCH_PEER_ARGS ?= --sizes 10,100,1000,10000 --repeats 3 --json bench/.peer.json

.PHONY: bench-peer

$(BENCH_PEER_VENV)/.installed: bench/requirements-peer.txt | $(UV_DEP)
	@test -n "$(PY312)" || { echo "error: Python 3.12 not found (looked in $(PYENV_ROOT)/versions and PATH)"; exit 1; }
	rm -rf $(BENCH_PEER_VENV)
	$(UV) venv -q --python $(PY312) $(BENCH_PEER_VENV)
	$(UV) pip install -q --python $(BENCH_PEER_PY) -r bench/requirements-peer.txt
	touch $@

bench-peer: $(BENCH_PEER_VENV)/.installed ## time AWS durable functions' local runner on N sequential steps (peer)
	$(BENCH_PEER_PY) bench/peer_durable.py $(BENCH_PEER_ARGS)
