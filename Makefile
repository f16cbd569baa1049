# Developer entry points. `make test` is what CI runs (see .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv test lint unit supervise bench clean

$(BIN)/hermes: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $(BIN)/hermes

venv: $(BIN)/hermes

lint: venv
	$(BIN)/ruff check hermes_container tests bench
	$(BIN)/ruff format --check hermes_container tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q --durations=25 tests

unit: venv
	$(BIN)/pytest -q tests/unit

bench: venv
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts

# Host mode: the same supervision tree without Docker (needs s6 and execline).
supervise: venv
	$(BIN)/hermes supervise --dashboard
