# Two commands do everything on a fresh machine with Python 3.11+:
#   make serve   set up and run the service on the embedded demo provider (127.0.0.1:8080)
#   make test    set up and run lint, type checks and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
# The suite runs in this many worker processes (pytest-xdist); 0 runs it in this one.
TEST_PROCESSES ?= 2

.PHONY: serve test test-tools mutation eval bench bench-loadtest bench-adapters bench-guard bench-metrics lock clean

$(VENV)/.runtime: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PIP) install -c constraints.txt -e '.[test]'
	touch $@

$(VENV)/.mutation: $(VENV)/.test
	$(PIP) install -c constraints.txt -e '.[test,mutation]'
	touch $@

serve: $(VENV)/.runtime
	$(BIN)/hello-ship serve

# Tools the tests run for real (redis-server, nginx, promtool), installed when missing.
test-tools:
	./scripts/install-test-tools

test: $(VENV)/.test test-tools
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_PROCESSES)

# Mutation testing of streaming/, quota/ and guard/ with mutmut (docs/mutation-testing.md):
# not part of `make test`; about 20 minutes on 2 cores. It starts afresh (mutmut keeps the
# verdicts of mutants whose code did not change, however the tests did), prints the mutants
# not killed, and leaves everything in mutants/ for `mutmut show <name>` and `mutmut browse`.
mutation: $(VENV)/.mutation test-tools
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

bench: $(VENV)/.runtime
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

# Re-resolve the dependency ranges in pyproject.toml and record what resolved.
lock:
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet '.[test,mutation]'
	{ echo "# Exact versions the test suite passed with; installs use them as constraints (make lock regenerates)."; \
	  $(VENV)-lock/bin/python -m pip freeze --exclude hello-ship; } > constraints.txt
	rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
