# One-word targets for contributors; .ci/run runs `check`, `fuzz` and then the README's test command.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup check lint typecheck test fuzz mutations deep-modules

setup:
	python3 -m venv $(VENV) && $(BIN)/pip install -q -e ".[test]"

check: lint typecheck

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy -p runlytics

test:
	$(BIN)/python -m pytest -n auto

# the C history reader built with ASan + UBSan, fed mutated documents; any report fails
FUZZ_SECONDS ?= 30
fuzz:
	$(BIN)/python tests/fuzz_history.py --seconds $(FUZZ_SECONDS)

# each figure's rule changed on purpose must fail a test (docs/testing.md); about 5 minutes
mutations:
	$(BIN)/python tests/mutations.py

# the modules that run in deep runs only (tests/conftest.py, DEEP_MODULES): CI never runs them, so
# run them before a stop that changes their rules (docs/testing.md, "Session 30"); about 20 minutes
deep-modules:
	HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -n 2 $$($(BIN)/python tests/conftest.py)
