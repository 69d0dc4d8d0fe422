# One-word targets for contributors; .ci/run runs `check` and then the README's test command.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup check lint typecheck test mutations

setup:
	python3 -m venv $(VENV) && $(BIN)/pip install -q -e ".[test]"

check: lint typecheck

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy -p runlytics

test:
	$(BIN)/python -m pytest
