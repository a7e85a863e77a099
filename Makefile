# Everything a newcomer needs: `make demo` and `make test` create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000

# one BLAS thread per process: xdist runs a worker per core already (docs/testing.md)
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

# bytecode caches kept: a shell with PYTHONDONTWRITEBYTECODE set makes every test worker and
# every node process the tests start compile nearfab again and redo pytest's assertion
# rewriting of every test module (docs/testing.md)
unexport PYTHONDONTWRITEBYTECODE

# pytest-xdist workers for `make test` (auto: one per CPU); WORKERS=0 runs in one process
WORKERS ?= auto

.PHONY: install demo serve test test-fast lint typecheck imports check bench clean constraints

# Versions come from constraints.txt (every package pinned, so two installs are the same);
# `make constraints` refreshes it from a working .venv (docs/testing.md).
# pip is not quiet: a first install takes minutes, and its lines show what it is doing
$(STAMP): pyproject.toml constraints.txt
	@echo "==> 1/3 creating the Python environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> 2/3 updating pip"
	$(BIN)/python -m pip install --progress-bar off -c constraints.txt --upgrade pip
	@echo "==> 3/3 installing nearfab and its pinned dependencies (constraints.txt); a few minutes the first time"
	$(BIN)/python -m pip install --progress-bar off -c constraints.txt -e '.[dev]'
	touch $(STAMP)
	@echo "==> installed; next: make demo (serves the demo network) or make test"

install: $(STAMP)

demo: install  ## seed (first time) and serve the demo network on http://127.0.0.1:$(PORT)
	$(BIN)/nearfab demo --port $(PORT)

serve: install
	$(BIN)/nearfab serve --port $(PORT)

test: install  ## the whole suite, in parallel (PostgreSQL and browser tests skip with a reason when absent)
	$(BIN)/pytest -n $(WORKERS) --dist worksteal

test-fast: install
	$(BIN)/pytest -n $(WORKERS) --dist worksteal -m "not postgres and not browser"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

imports: install
	$(BIN)/lint-imports

check: lint typecheck imports test

bench: install
	$(BIN)/python benchmarks/flow_throughput.py

constraints: install  ## re-pin constraints.txt to what .venv has now (after a deliberate upgrade)
	{ echo "# Every installed package, pinned: make install uses it (pip install -c constraints.txt)."; \
	  echo "# Regenerate with 'make constraints' after upgrading .venv on purpose; see docs/testing.md."; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -v -E '^(setuptools|wheel)=='; \
	} > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
