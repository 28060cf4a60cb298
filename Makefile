PY ?= python3
# Test files run on JOBS worker processes, each file whole on one worker (its module fixtures built once).
JOBS ?= 2
XDIST = -n $(JOBS) --dist loadfile

.PHONY: install lint format test test-all bench catalog docs

install:
	$(PY) -m pip install -e '.[dev]'

lint:
	ruff check dlrun tests benchmarks
	ruff format --check dlrun tests benchmarks
	lint-imports --no-cache

format:
	ruff check --fix dlrun tests benchmarks
	ruff format dlrun tests benchmarks

test:
	$(PY) -m pytest -m "not slow" -q $(XDIST) --durations=25

test-all:
	$(PY) -m pytest -q $(XDIST) --durations=40

bench:
	$(PY) benchmarks/run_all.py

catalog:
	$(PY) -m dlrun.graph.catalog --write

docs:
	$(PY) -m dlrun.docs --write
