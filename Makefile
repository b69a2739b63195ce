# qianbao: `make run` serves the sandbox; `make test` runs everything CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
SPECTRAL_DIR := tools/spectral
SPECTRAL_STAMP := $(SPECTRAL_DIR)/node_modules/.installed

.PHONY: install install-dev run test lint typecheck unit integration bench clean errors-docs spectral

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

# Spectral, the OpenAPI linter (its version and every dependency pinned in tools/spectral/package-lock.json),
# for tests/api/test_openapi_lint.py. Without npm that test is skipped, except with CI=true, where it fails.
$(SPECTRAL_STAMP): $(SPECTRAL_DIR)/package.json $(SPECTRAL_DIR)/package-lock.json
	cd $(SPECTRAL_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

spectral:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(SPECTRAL_STAMP); \
	else echo "npm not found: Spectral is not installed (tests/api/test_openapi_lint.py will skip it)"; fi

unit: $(DEV_STAMP)
	$(BIN)/pytest tests/unit -q

integration: $(DEV_STAMP)
	$(BIN)/pytest tests/integration -q

# Lint, type-check, install Spectral, then the whole suite: unit, integration and API tests on SQLite and
# PostgreSQL, in one worker process per core (at most 4): every test has its own databases, so they run
# side by side.
test: lint typecheck spectral
	$(BIN)/pytest -q --numprocesses auto --maxprocesses 4

# After adding an error code to src/qianbao/error_codes.py: new msgids into the .po catalogs (translate the
# empty msgstr lines), then docs/errors.md regenerated. The catalogs are read as .po at run time: no compile.
errors-docs: $(STAMP)
	$(BIN)/qianbao errors sync-catalogs
	$(BIN)/qianbao errors docs --output docs/errors.md

bench: $(STAMP)
	bash bench/run.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis $(SPECTRAL_DIR)/node_modules
