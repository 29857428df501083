# rlhf-vs-dpo: every entry point of the project is a target here. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
# Which torch to install: the CUDA build where an NVIDIA driver answers, else the CPU build
# (torch==2.13.0 has a small CPU wheel on this project's CI machines). Override with TORCH_SPEC=...
TORCH_SPEC ?= $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then echo torch; else echo torch==2.13.0; fi)
# Extra Hydra overrides for the reproduce targets, e.g. ARGS="wandb.mode=online"
ARGS ?=
# Methods the reproduce targets sweep, each over its preset grid (conf/method_preset/<experiment>/<method>.yaml).
# A subset: make reproduce-sentiment METHODS="dpo ppo"
METHODS ?= dpo ipo cdpo ppo ppo_gt rloo rloo_gt bon preferred_ft unlikelihood
# Seeds of the method stages (SFT, r*, pairs and the reward model are shared by all seeds).
SEEDS ?= 0
comma := ,
SEED_LIST = $(subst $(eval) ,$(comma),$(strip $(SEEDS)))

.PHONY: help venv reproduce-sentiment reproduce-sentiment-seeds reproduce-sentiment-paper analyze-sentiment test test-all bench clean-runs

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-26s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,judge-local]'
	@touch $@

venv: $(VENV)/.installed ## create the virtual environment (done by every target that needs it)

reproduce-sentiment: $(VENV)/.installed ## embedded default: SFT, r*, pairs, reward model, every method's sweep (SEEDS, METHODS), frontier
	@for m in $(METHODS); do $(PY) -m pipelines.run --multirun experiment=sentiment_embedded method=$$m seed=$(SEED_LIST) $(ARGS) || exit 1; done
	$(PY) -m analysis.frontier --task sentiment --preset embedded --command "make reproduce-sentiment SEEDS=\"$(SEEDS)\" METHODS=\"$(METHODS)\""

reproduce-sentiment-seeds: ## the multi-seed frontier of every method: reproduce-sentiment with SEEDS="0 1 2"
	$(MAKE) reproduce-sentiment SEEDS="0 1 2"

reproduce-sentiment-paper: $(VENV)/.installed ## paper scale (gpt2-large, IMDb, siebert; GPUs and Hub access needed)
	@for m in $(METHODS); do $(PY) -m pipelines.run --multirun experiment=sentiment_paper method=$$m seed=$(SEED_LIST) $(ARGS) || exit 1; done
	$(PY) -m analysis.frontier --task sentiment --preset paper --command "make reproduce-sentiment-paper"

analyze-sentiment: $(VENV)/.installed ## rebuild frontier.csv/png and summary.md from finished runs
	$(PY) -m analysis.frontier --task sentiment --preset embedded --command "make reproduce-sentiment"

test: $(VENV)/.installed ## offline test suite (default: fast tests only, a few minutes)
	$(PY) -m pytest -q

test-all: $(VENV)/.installed ## every test, slow ones included
	$(PY) -m pytest -q -m ''

bench: $(VENV)/.installed ## time sampling, log-probs, SFT and DPO steps (idle machine); writes results/bench/
	$(PY) -m pipelines.bench

clean-runs: ## delete training outputs under runs/ (results/ is kept)
	rm -rf runs
