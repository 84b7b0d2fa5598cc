# Two commands do everything on a fresh machine with Python 3.11+:
#   make serve   set up and run the service on the embedded demo provider (127.0.0.1:8080)
#   make test    set up and run lint, type checks and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
# The suite runs in this many worker processes (pytest-xdist); 0 runs it in this one.
TEST_PROCESSES ?= 2

.PHONY: serve test test-tools audit mutation eval bench bench-relay bench-loadtest bench-adapters bench-guard bench-metrics bench-cache lock clean

# Every install comes from the hash-locked files in requirements/ (make lock writes them): a
# package whose content differs from what was locked stops the install. The project itself
# is installed on its own, editable, with the locked setuptools.
LOCKED := $(PIP) install --require-hashes -r requirements/build.txt
PROJECT := $(PIP) install --no-deps --no-build-isolation -e .

$(VENV)/.runtime: pyproject.toml requirements/build.txt requirements/runtime.txt
	$(PYTHON) -m venv $(VENV)
	$(LOCKED) -r requirements/runtime.txt
	$(PROJECT)
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements/test.txt
	$(LOCKED) -r requirements/test.txt
	$(PROJECT)
	touch $@

$(VENV)/.mutation: $(VENV)/.test requirements/mutation.txt
	$(LOCKED) -r requirements/mutation.txt
	touch $@

serve: $(VENV)/.runtime
	$(BIN)/hello-ship serve

# Tools the tests run for real (redis-server, nginx, promtool), installed when missing.
test-tools:
	./scripts/install-test-tools

test: $(VENV)/.test test-tools audit
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_PROCESSES)

# The locked dependencies against the vulnerabilities PyPI knows of: one with a fixed release
# fails (docs/operations.md#supply-chain). Where the index is reachable but PyPI's
# vulnerability data is not, the packages left unaudited are a warning; `make audit
# AUDIT_FLAGS=` makes them fail.
AUDIT_FLAGS ?= --allow-unaudited
audit: $(VENV)/.test
	$(BIN)/python scripts/audit-dependencies $(AUDIT_FLAGS) requirements/mutation.txt requirements/build.txt

# Mutation testing of streaming/, quota/ and guard/ with mutmut (docs/mutation-testing.md):
# not part of `make test`; about 20 minutes on 2 cores. It starts afresh (mutmut keeps the
# verdicts of mutants whose code did not change, however the tests did), prints the mutants
# not killed, and leaves everything in mutants/ for `mutmut show <name>` and `mutmut browse`.
mutation: $(VENV)/.mutation test-tools
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

# hello-ship beside the vendor it relays (docs/performance.md): a fake OpenAI-compatible vendor
# reached directly and through the service with the output guard on and off, in one run;
# about 3 minutes on 2 cores.
bench: $(VENV)/.runtime
	$(BIN)/python -m bench.gateway

# The relay alone, on the demo provider: token frames per second on one core, TTFT, memory
# per open stream.
bench-relay: $(VENV)/.runtime
	$(BIN)/python bench/relay.py

# How many token frames per second the load tester itself reads on one core.
bench-loadtest: $(VENV)/.runtime
	$(BIN)/python -m bench.loadtest_client

bench-adapters: $(VENV)/.test
	$(BIN)/python bench/adapters.py

# The smoke set on the demo model, in-process. Its own file: CI's artifact is
# reports/eval-smoke.json, written by the test suite from every route of the test chain.
eval: $(VENV)/.runtime
	$(BIN)/hello-ship eval eval/smoke.jsonl --report reports/eval-demo.json

bench-guard: $(VENV)/.runtime
	$(BIN)/python bench/guard_cost.py

bench-metrics: $(VENV)/.runtime
	$(BIN)/python bench/metrics_cost.py

# The answer cache (bench/cache_hits.py): TTFT of exact and near-duplicate hits with 10,000
# entries a tenant beside misses, and the CPU and memory that storing answers costs; about 2
# minutes on 2 cores.
bench-cache: $(VENV)/.runtime
	$(BIN)/python -m bench.cache_hits

# Resolve pyproject.toml into the hash-locked files in requirements/, for every platform.
# Versions already locked stay unless the ranges exclude them; `make lock UPGRADE=1` takes the
# newest each range allows.
UV_VERSION ?= 0.13.10
lock:
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'
	for lock in runtime:'' test:'--extra test' mutation:'--extra test --extra mutation'; do \
	  $(VENV)-lock/bin/uv pip compile pyproject.toml $${lock#*:} $(LOCK_FLAGS) \
	    -o requirements/$${lock%%:*}.txt || exit 1; \
	done
	$(VENV)-lock/bin/uv pip compile requirements/build.in $(LOCK_FLAGS) -o requirements/build.txt
	rm -rf $(VENV)-lock
LOCK_FLAGS = --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
