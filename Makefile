# Two commands matter: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint fmt bench bench-profile up down clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

$(STAMP): pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . --group dev
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m gateway

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not redis and not e2e" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format gateway tests bench
	$(BIN)/ruff check --fix gateway tests bench

# wrk load on loopback, under 5 minutes; BENCH_SECONDS and BENCH_ROUNDS change its length.
bench: install
	$(BIN)/python -m bench

# py-spy samples of the gateway under wrk load; py-spy is not a dev dependency: pip install it.
bench-profile: install
	$(BIN)/python -m bench.profile

up:
	docker compose up -d --build

down:
	docker compose down

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
