# recon — make help lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# set TORCH_INDEX=https://download.pytorch.org/whl/cpu where the default index would pull a CUDA build
TORCH_INDEX ?=
STAMP := $(VENV)/.recon-installed
PYTEST_ARGS ?=
export WANDB_MODE ?= offline

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv: torch $(TORCH_VERSION) (CPU wheel) first, then recon with its dev extra

test: $(STAMP) ## run the whole test suite (slow end-to-end tests included)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the tests not marked slow
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check
	$(PY) -m ruff check recon datamodules callbacks tests bench

bench: $(STAMP) ## run the benchmarks; writes bench/results.json and prints tables
	$(PY) -m bench

clean: ## remove caches (keeps .venv and data)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
