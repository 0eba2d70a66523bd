VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.voxseg-installed

.PHONY: install demo test test-slow lint format bench clean

$(STAMP): pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV)
	touch $(STAMP)

install: $(STAMP)

## Run voxseg end to end on a generated phantom dataset.
demo: $(STAMP)
	$(BIN)/voxseg demo

## The default test suite (CPU, minutes).
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 2 -q

## Long tests (end-to-end training runs).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
