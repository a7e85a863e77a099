# Everything a newcomer needs: `make demo` and `make test` create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000

.PHONY: install demo serve test test-fast lint typecheck imports check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install  ## seed (first time) and serve the demo network on http://127.0.0.1:$(PORT)
	$(BIN)/nearfab demo --port $(PORT)

serve: install
	$(BIN)/nearfab serve --port $(PORT)

test: install  ## the whole suite (PostgreSQL and browser tests skip with a reason when absent)
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not postgres and not browser"

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
