# Two commands do all the set-up on a fresh machine (Python 3.11+):
#   make demo   - installs edgeml in .venv and runs the zero-setup demo
#   make test   - installs the dev tools in .venv and runs lint, types and the tests
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.demo
	$(BIN)/edgeml demo

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
	  { echo "the tests need mosquitto: sudo apt-get install mosquitto"; exit 1; }
	$(BIN)/python -m pytest

bench: $(VENV)/.dev
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache state
