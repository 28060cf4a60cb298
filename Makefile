PY ?= python3
# Test files run on JOBS worker processes, each file whole on one worker (its module fixtures built once).
JOBS ?= 2
XDIST = -n $(JOBS) --dist loadfile
# Hundreds of tests start `python -m dlrun` in a fresh interpreter. Compiled once here, dlrun is read as bytecode
# by each of them, as an installed dlrun is; with PYTHONDONTWRITEBYTECODE=1 (set on this project's machines)
# every one would otherwise compile its ~21k lines from source again.
BYTECODE = $(PY) -m compileall -q dlrun >/dev/null

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
	$(BYTECODE)
	$(PY) -m pytest -m "not slow" -q $(XDIST) --durations=25

test-all:
	$(BYTECODE)
	$(PY) -m pytest -q $(XDIST) --durations=40

bench:
	$(PY) benchmarks/run_all.py

catalog:
	$(PY) -m dlrun.graph.catalog --write

docs:
	$(PY) -m dlrun.docs --write
