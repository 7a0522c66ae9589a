# Fresh-machine entry points. Both create .venv and install what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile constraints.txt | sha1sum | cut -c1-12)
TORCH_VERSION := 2.13.0
export RAY_AUTH_MODE := disabled
export PYTHONUNBUFFERED := 1

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel setuptools
	# torch first, pinned: any other version pulls several GB of CUDA wheels.
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	# DeepSpeed builds against that torch (no build isolation), with its CPU shared-memory
	# comm op prebuilt (else every fresh machine JIT-compiles it, ~45 s, at first run).
	$(BIN)/python -c "import deepspeed" 2>/dev/null || DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 \
		$(BIN)/pip install -q --no-build-isolation -c constraints.txt deepspeed==0.19.8
	# constraints.txt pins what the tests run with: fast, reproducible resolution
	$(BIN)/pip install -q -c constraints.txt -e ".[ingest,train,dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q --timeout=900 tests

lint: $(STAMP)
	$(BIN)/ruff check brainomni demo pipelines tests scripts
	$(BIN)/ruff format --check brainomni demo pipelines tests scripts

bench: $(STAMP)
	for b in tests/benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-out bench-out .pytest_cache
