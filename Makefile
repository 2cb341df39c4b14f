# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(VENV)/.installed $@

var/journal.key: | $(VENV)/.installed
	$(BIN)/kamen-router keygen -o $@

demo: $(VENV)/.installed var/journal.key
	$(BIN)/python -m kamen_router.demo -c router.yaml

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

# every benchmark (bench/*.py; results in bench/out/) and one summary table;
# 4-6 minutes on two cores, two more on the first run (it builds journals)
bench: $(VENV)/.installed
	$(BIN)/python bench/common.py all

lint: $(VENV)/.installed-test
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/ruff check kamen_router tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) run var
