# FedCoin: two commands do all the set-up on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamps reinstall when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,flower]"
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/python main.py simulate $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(VENV)/.installed-test
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/network.py
	$(BIN)/python bench/shapley.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
