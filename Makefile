# qianbao: `make run` serves the sandbox; `make test` runs everything CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-dev run test lint typecheck unit integration bench clean errors-docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

run: $(STAMP)
	$(BIN)/qianbao serve

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench docs/examples
	$(BIN)/ruff format --check src tests bench docs/examples

typecheck: $(DEV_STAMP)
	$(BIN)/mypy src

unit: $(DEV_STAMP)
	$(BIN)/pytest tests/unit -q

integration: $(DEV_STAMP)
	$(BIN)/pytest tests/integration -q

# Lint, type-check, then the whole suite: unit, integration and API tests on SQLite and PostgreSQL, in
# one worker process per core (at most 4): every test has its own databases, so they run side by side.
test: lint typecheck
	$(BIN)/pytest -q --numprocesses auto --maxprocesses 4

# After adding an error code to src/qianbao/error_codes.py: new msgids into the .po catalogs (translate the
# empty msgstr lines), then docs/errors.md regenerated. The catalogs are read as .po at run time: no compile.
errors-docs: $(STAMP)
	$(BIN)/qianbao errors sync-catalogs
	$(BIN)/qianbao errors docs --output docs/errors.md

bench: $(STAMP)
	bash bench/run.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
