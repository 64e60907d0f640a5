# cablecar: two commands on a fresh machine.
#   make demo   set up and run the chat demo (embedded in-memory pub/sub) at http://127.0.0.1:8080/
#   make test   set up everything the tests need and run them all
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: demo test test-fast lint types bench docs setup sysdeps npmdeps clean

# The demo needs cablecar and its two dependencies only (orjson, uvloop): its own small
# environment, not the test suite's.
DEMO_VENV := .venv-demo
demo: $(DEMO_VENV)/.stamp
	$(DEMO_VENV)/bin/cablecar demo --host 127.0.0.1 --port $(PORT)

$(DEMO_VENV)/.stamp: pyproject.toml
	@echo "make demo: installing cablecar (orjson, uvloop) in $(DEMO_VENV)/"
	test -x $(DEMO_VENV)/bin/python || $(PY) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install --disable-pip-version-check --progress-bar off -q -e .
	@echo "make demo: ready ($$(du -sm $(DEMO_VENV) | cut -f1) MB)"
	touch $@

# ruff (format and lint), mypy --strict on the package, then every test (Python 3.11), the
# new benchmarks' own correctness tests (bursts, workers balance, ASGI split: every delivery
# counted, in order; no timing),
# then the unit, protocol, server and adapter tests on Python 3.12 and 3.13.
test: setup lint types
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)
	$(BIN)/python -m pytest -p no:cacheprovider -q benchmarks/test_benchmarks.py \
	  -k "(bursts_count_every_delivery_in_order and cablecar) or burst_order_check or workers_balance or asgi_split"
	scripts/test_matrix.sh

# Without the browser, Node and service-backed tests.
test-fast: $(VENV)/.stamp
	$(BIN)/python -m pytest -m "not services and not browser and not node" $(PYTEST_ARGS)

setup: sysdeps $(VENV)/.stamp npmdeps

lint: $(VENV)/.stamp
	$(BIN)/ruff format --check src tests examples benchmarks scripts
	$(BIN)/ruff check src tests examples benchmarks scripts

types: $(VENV)/.stamp
	$(BIN)/mypy

# The docs site (MkDocs, Material) into site/; make test builds it with --strict.
docs: $(VENV)/.stamp
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: setup
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bursts.py
	$(BIN)/python benchmarks/presence.py
	$(BIN)/python benchmarks/http_transports.py
	$(BIN)/python benchmarks/soak.py --duration 1800 --clients 2000 --history --progress 60
	$(BIN)/python benchmarks/fuzz.py
	$(BIN)/python benchmarks/workers_balance.py
	$(BIN)/python benchmarks/asgi_split.py

# The Python environment: rebuilt when pyproject.toml changes.
$(VENV)/.stamp: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $@

# Debian packages the tests drive: Chromium (demo page), redis-server, PostgreSQL, nats-server
# (throwaway instances on free ports), Ruby's Action Cable (the Rails reference server).
SYSDEPS_BINS := chromium redis-server nats-server puma
sysdeps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing="$$missing nats-server"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v puma >/dev/null || missing="$$missing puma"; \
	ruby -e 'require "action_cable"' 2>/dev/null || missing="$$missing ruby ruby-actioncable ruby-redis"; \
	command -v node >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

npmdeps: tests/js/node_modules/.stamp
tests/js/node_modules/.stamp: tests/js/package.json tests/js/package-lock.json
	cd tests/js && (npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error)
	touch $@

clean:
	rm -rf $(VENV) tests/js/node_modules .pytest_cache .mypy_cache .ruff_cache
