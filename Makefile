# Two commands for a newcomer: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format install

# requirements.txt is `-e .[dev]`: the apps from this checkout with the dev extra of pyproject.toml.
$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

# The real pipeline (worker, beat, receiver) on the embedded defaults: SQLite, filesystem broker.
demo: install
	$(BIN)/python manage.py webhooks_demo

# The suite, on PostgreSQL and Redis (DATABASE_URL / CELERY_BROKER_URL, default 127.0.0.1).
test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
