# Two commands matter: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lock run try test test-fast lint fmt bench bench-profile bench-parts up down clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

# The exact, hash-checked versions of requirements-dev.txt (runtime + dev), then the project itself.
$(STAMP): pyproject.toml requirements.txt requirements-dev.txt $(BIN)/python
	@echo "Installing the locked dependencies into $(VENV) (once; a minute or two)"
	$(BIN)/python -m pip install --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# After editing the dependencies in pyproject.toml: re-resolve both lock files from PyPI.
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet "uv>=0.5"
	$(BIN)/python scripts/lock.py

run: install
	$(BIN)/python -m gateway

# No OpenAI key needed: the gateway in front of the tests' fake upstream; Ctrl-C stops both.
try: install
	$(BIN)/python scripts/try_gateway.py

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest tests/unit tests/http -m "not redis and not e2e" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check gateway tests scripts bench
	$(BIN)/ruff format --check gateway tests scripts bench
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format gateway tests scripts bench
	$(BIN)/ruff check --fix gateway tests scripts bench

# wrk load on loopback, under 5 minutes; BENCH_SECONDS and BENCH_ROUNDS change its length.
bench: install
	$(BIN)/python -m bench

# What the limiter and the access log each cost, the same gateway run with each turned off.
bench-parts: install
	$(BIN)/python -m bench.parts

# py-spy samples of the gateway under wrk load; py-spy is not a dev dependency: pip install it.
bench-profile: install
	$(BIN)/python -m bench.profile

up:
	docker compose up -d --build

down:
	docker compose down

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
