# apiguard: every target creates .venv and installs what it needs by itself.
# Only Python 3.11+ and make are needed on the machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: demo test lint typecheck docs docs-serve bench bench-quick bench-server bench-compare check clean

# The virtual environment, re-made when pyproject.toml changes.
$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "apiguard needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	@touch $@

$(VENV)/.bench: $(VENV)/.dev
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	@touch $@

demo: $(VENV)/.dev ## serve the orders API on http://127.0.0.1:8000
	$(BIN)/python -m uvicorn examples.orders:app --host $(HOST) --port $(PORT) --lifespan on

test: $(VENV)/.dev ## the whole test suite, with a real redis-server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/python -m mypy --strict src

docs: $(VENV)/.dev
	$(BIN)/python -m mkdocs build --strict --site-dir site

docs-serve: $(VENV)/.dev
	$(BIN)/python -m mkdocs serve

# Where `make bench` keeps its run: BENCH_OUT.json (every sample, the machine,
# the verdicts) and BENCH_OUT.md (the printed report).
BENCH_OUT ?= benchmarks/results/latest

bench: $(VENV)/.bench ## the published figures (about 40 min on 2 cores), charts and tables into the docs; BENCH_ARGS=--quick: a smoke test
	@mkdir -p $(dir $(BENCH_OUT))
	$(BIN)/python -m benchmarks --json $(BENCH_OUT).json --markdown $(BENCH_OUT).md $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.charts $(BENCH_OUT).json

bench-quick: $(VENV)/.bench ## every benchmark case once, its answer checked; no timing (CI runs it)
	@mkdir -p benchmarks/results
	$(BIN)/python -m benchmarks --quick --json benchmarks/results/quick.json $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.charts --dry-run benchmarks/results/quick.json

bench-server: $(VENV)/.bench ## the stack and the peers under uvicorn and wrk, alone
	$(BIN)/python -m benchmarks.server $(BENCH_ARGS)

bench-compare: $(VENV)/.bench ## what moved between two saved runs: A=old.json B=new.json
	$(BIN)/python -m benchmarks.compare $(A) $(B)

check: test lint typecheck docs

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis
