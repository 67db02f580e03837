# Tally's one-word entry points. Only Python 3.11+ is needed on a fresh machine:
# the first target to run makes .venv and installs the project into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test pytest lint install clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

## run: migrate the database (SQLite by default), print an API key, serve on :8000
run: $(INSTALLED)
	$(BIN)/tally migrate
	$(BIN)/python -m tally.devkey
	$(BIN)/tally serve --no-migrate

## test: lint, type-check, then every test (PostgreSQL tests need a reachable server)
test: lint pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: $(INSTALLED)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
