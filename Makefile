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
# test workers (pytest-xdist): one per core, at most 4; TEST_WORKERS=0 runs the suite in one process
TEST_WORKERS ?= auto
XDIST = -n $(TEST_WORKERS) $(if $(filter 0,$(TEST_WORKERS)),,--maxprocesses 4 --dist worksteal)
PROFILE ?= quick
DATA ?=
ARGS ?=
RUN ?= runs/default
TABLE_OUT ?= results
TABLE_RUNS ?= runs/table
export WANDB_MODE ?= offline

.DEFAULT_GOAL := help
.PHONY: help setup data train reproduce-table sweep test test-fast lint bench gpu-check clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv: the CPU torch wheel first, then recon with its dev extra

data: $(STAMP) ## generate the synthetic dataset data/synthetic.h5 if it is missing
	test -f data/synthetic.h5 || $(VENV)/bin/recon-data synth data/synthetic.h5

train: $(STAMP) ## the main job: synthetic data if missing, train the baseline on CPU (~8 min), test, print the IoU table; RESUME=1 continues an interrupted run
	$(VENV)/bin/recon fit -c configs/default.yaml --trainer.default_root_dir $(RUN) $(if $(RESUME),--ckpt_path last) $(ARGS) \
	  || { status=$$?; [ $$status -lt 128 ] || echo "make train RESUME=1 continues this run from $(RUN)/checkpoints/last.ckpt" >&2; exit $$status; }
	$(VENV)/bin/recon test -c configs/default.yaml --trainer.default_root_dir $(RUN) --ckpt_path $(RUN)/checkpoints/best.ckpt $(ARGS)

reproduce-table: $(STAMP) ## train+test the encoders (+ colour): PROFILE=quick|paper|smoke [DATA=file.h5] [ENCODERS="baseline resnet"] [REDO=1] → results/table.md
	$(PY) -m recon.reproduce --profile $(PROFILE) --out $(TABLE_OUT) --runs $(TABLE_RUNS) $(if $(DATA),--data $(DATA)) $(if $(ENCODERS),--encoders $(ENCODERS)) $(if $(REDO),--redo) $(if $(ARGS),-- $(ARGS))

sweep: $(STAMP) ## quick hyperparameter search on CPU (8 trials × 200 steps of lr, λ_lap, λ_flat, σ; 16 min on 2 cores, 2026-12-03) → runs/sweeps/quick/summary.md
	$(VENV)/bin/recon sweep -c configs/default.yaml -c configs/sweep/quick.yaml $(ARGS)

test: $(STAMP) ## run the whole test suite (slow end-to-end tests included)
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the tests not marked slow
	$(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check
	$(PY) -m ruff check recon datamodules callbacks tests bench

bench: $(STAMP) ## run the benchmarks; writes bench/results.json and prints tables
	$(PY) -m bench

gpu-check: ## on a CUDA machine: the gpu-marked tests and the GPU benchmarks → gpu-check/ [PY=python3 for a system torch]
	PY=$(PY) bench/gpu_check.sh gpu-check

clean: ## remove caches (keeps .venv and data)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
