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
# A subset: make reproduce-sentiment METHODS="dpo ppo". Listed longest first: make starts parallel jobs in this order.
METHODS ?= ppo ppo_gt dpo unlikelihood ipo rloo rloo_gt cdpo bon preferred_ft
# Seeds of reproduce-sentiment. Each is a full-pipeline seed: SFT, pairs and r_phi are trained per seed (data, the
# tokenizer and r* are fixed by data_seed). reproduce-sentiment-seeds is the resumable multi-seed target.
SEEDS ?= 0
comma := ,
SEED_LIST = $(subst $(eval) ,$(comma),$(strip $(SEEDS)))
# Method sweeps run as JOBS parallel jobs (make's own job server), JOB_THREADS torch threads each; the shared stages
# run first, alone, on every core. Two 1-thread jobs do ~30 % more work than one 2-thread job on 2 cores.
# reproduce-sentiment-paper runs PAPER_JOBS jobs (one GPU: 1).
NPROC := $(shell nproc 2>/dev/null || echo 2)
JOBS ?= 2
PAPER_JOBS ?= 1
JOB_THREADS ?= $(shell n=$$(( $(NPROC) / $(JOBS) )); echo $$(( n > 0 ? n : 1 )))
SHARED_PIPELINE := [data,tokenizer,sft,reward,evaluate_sft,pairs]
# The prompt-response tasks (summarization, dialogue): no frontier stage; pairs come from the data. Their methods:
# the SFT policy itself and Preferred-FT as baselines, DPO, PPO and Best-of-N on the learned reward model. PPO's job
# trains r_phi first, so the second job to start is one that does not wait for it (DPO).
TEXT_SHARED_PIPELINE := [data,tokenizer,sft,reward,pairs]
SUMMARIZATION_METHODS ?= ppo dpo bon preferred_ft sft
# Dialogue: the SFT stage is Preferred-FT on the chosen answers (the paper's reference), so no second Preferred-FT.
DIALOGUE_METHODS ?= ppo dpo bon sft
# Paper scale: no reward stage (an LLM judges); the base model prompted zero-shot (TL;DR) / 2-shot (HH). PPO is left
# out: our single-process PPO needs ~40 GB per billion policy parameters (conf/method_preset/summarization_paper/
# ppo.yaml), 240 GB at GPT-J 6B; add it with a model that fits: SUMMARIZATION_PAPER_METHODS="... ppo".
PAPER_TEXT_SHARED_PIPELINE := [data,tokenizer,sft,pairs]
SUMMARIZATION_PAPER_METHODS ?= bon dpo preferred_ft sft base
DIALOGUE_PAPER_METHODS ?= bon dpo sft base
# Methods that read the learned reward model r_phi (PPO, RLOO, Best-of-N): their job trains it first when it is not
# there yet (a file lock keeps it to one training; later readers find it done), so r_phi runs as part of a parallel
# job beside the methods that do not need it. (A make prerequisite would not do: make's job server would start the
# reader only after every other method had started, leaving the longest sweep for the end.)
RPHI_METHODS := ppo rloo bon
# Multi-GPU training of each run: ACCELERATE=ddp, fsdp or deepspeed_zero3 (conf/accelerate/<name>.yaml) launches every
# pipeline command under `accelerate launch`; empty: one process.
ACCELERATE ?=
# Arguments of `make bench`, e.g. another model shape: BENCH_ARGS="--arch n_layer=36 n_embd=1280 n_head=20 --vocab 50257"
BENCH_ARGS ?=
RUN = $(if $(ACCELERATE),$(VENV)/bin/accelerate launch --config_file conf/accelerate/$(ACCELERATE).yaml -m pipelines.run,$(PY) -m pipelines.run)
# Where the parallel jobs write their logs (one file per method).
LOGS = $${RVD_RUNS:-runs}/logs/$(EXPERIMENT)

.PHONY: help venv reproduce-sentiment reproduce-sentiment-seeds reproduce-sentiment-paper reproduce-summarization \
	reproduce-dialogue reproduce-summarization-paper reproduce-dialogue-paper sweep analyze-sentiment test test-all bench bench-e2e bench-e2e-seeds clean-runs

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-26s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,judge-local]'
	@touch $@

venv: $(VENV)/.installed ## create the virtual environment (done by every target that needs it)

# One seed's results go under the run folder, not over the committed multi-seed results of reproduce-sentiment-seeds.
ONE_SEED_RESULTS = $${RVD_RUNS:-runs}/results
reproduce-sentiment: $(VENV)/.installed ## embedded default, one full-pipeline seed: SFT, r*, pairs, reward model, every method's sweep (SEEDS, METHODS, JOBS), frontier in runs/results/
	@$(MAKE) --no-print-directory sweep EXPERIMENT=sentiment_embedded
	$(PY) -m analysis.frontier --task sentiment --preset embedded --runs $${RVD_RUNS:-runs} --out $(ONE_SEED_RESULTS) \
	  --command "make reproduce-sentiment SEEDS=\"$(SEEDS)\" METHODS=\"$(METHODS)\""

# The committed verdict: full-pipeline seeds (each seed re-trains SFT, pairs and r_phi), the headline methods at
# HEADLINE_SEEDS, every other method at OTHER_SEEDS. Seed by seed, resumable: pipelines/sweep.py skips what is done in
# runs/ or in the committed ledger (results/sentiment/embedded/ledger/), so an interrupted run goes on where it stopped.
HEADLINE_METHODS ?= dpo ppo ppo_gt
HEADLINE_SEEDS ?= 0-9
OTHER_METHODS ?= ipo cdpo rloo rloo_gt bon preferred_ft unlikelihood
OTHER_SEEDS ?= 0-2
reproduce-sentiment-seeds: $(VENV)/.installed ## the committed multi-seed frontier and verdict (DPO, PPO, PPO-GT at 10 full-pipeline seeds, the rest at 3); resumable
	$(PY) -m pipelines.sweep --experiment sentiment_embedded --seeds $(HEADLINE_SEEDS) --methods $(HEADLINE_METHODS) \
	  --jobs $(JOBS) --threads $(NPROC) $(ARGS)
	$(if $(strip $(OTHER_METHODS)),$(PY) -m pipelines.sweep --experiment sentiment_embedded --seeds $(OTHER_SEEDS) \
	  --methods $(OTHER_METHODS) --jobs $(JOBS) --threads $(NPROC) $(ARGS))
	$(PY) -m analysis.frontier --task sentiment --preset embedded --runs $${RVD_RUNS:-runs} \
	  --command "make reproduce-sentiment-seeds"

reproduce-sentiment-paper: $(VENV)/.installed ## paper scale (gpt2-large, IMDb, siebert; GPUs and Hub access needed)
	@$(MAKE) --no-print-directory sweep EXPERIMENT=sentiment_paper JOBS=$(PAPER_JOBS)
	$(PY) -m analysis.frontier --task sentiment --preset paper --command "make reproduce-sentiment-paper"

reproduce-summarization: $(VENV)/.installed ## offline smoke run of the TL;DR pipeline (Debian package descriptions): SFT, DPO, PPO, Best-of-N, win rates vs temperature
	@$(MAKE) --no-print-directory sweep EXPERIMENT=summarization_embedded SHARED='$(TEXT_SHARED_PIPELINE)' \
	  METHODS="$(SUMMARIZATION_METHODS)"
	$(PY) -m analysis.winrate --task summarization --preset embedded --command "make reproduce-summarization SEEDS=\"$(SEEDS)\""

reproduce-dialogue: $(VENV)/.installed ## offline smoke run of the HH pipeline (chitchat-dataset): Preferred-FT reference, DPO, PPO, Best-of-N, win rates
	@$(MAKE) --no-print-directory sweep EXPERIMENT=dialogue_embedded SHARED='$(TEXT_SHARED_PIPELINE)' \
	  METHODS="$(DIALOGUE_METHODS)"
	$(PY) -m analysis.winrate --task dialogue --preset embedded --command "make reproduce-dialogue SEEDS=\"$(SEEDS)\""

reproduce-summarization-paper: $(VENV)/.installed ## paper scale TL;DR, Fig. 2 + CNN/DM (GPT-J 6B; GPUs, the Hub, a judge endpoint)
	@$(MAKE) --no-print-directory sweep EXPERIMENT=summarization_paper SHARED='$(PAPER_TEXT_SHARED_PIPELINE)' \
	  METHODS="$(SUMMARIZATION_PAPER_METHODS)" JOBS=$(PAPER_JOBS)
	$(PY) -m analysis.winrate --task summarization --preset paper --command "make reproduce-summarization-paper"

reproduce-dialogue-paper: $(VENV)/.installed ## paper scale HH single-turn, Fig. 3 (Pythia-2.8B; GPUs, the Hub, a judge endpoint)
	@$(MAKE) --no-print-directory sweep EXPERIMENT=dialogue_paper SHARED='$(PAPER_TEXT_SHARED_PIPELINE)' \
	  METHODS="$(DIALOGUE_PAPER_METHODS)" JOBS=$(PAPER_JOBS)
	$(PY) -m analysis.winrate --task dialogue --preset paper --command "make reproduce-dialogue-paper"

# The shared stages once (all cores), then one multirun per method, JOBS at a time, then the time it all took.
# SHARED: the shared stages of the experiment's task.
SHARED ?= $(SHARED_PIPELINE)
sweep:
	@test -n "$(EXPERIMENT)" || { echo "sweep needs EXPERIMENT=<conf/experiment name>"; exit 2; }
	@mkdir -p $(LOGS) && date +%s > $(LOGS)/.sweep_start
	@test -z "$(ACCELERATE)" -o -f conf/accelerate/$(ACCELERATE).yaml || { echo "ACCELERATE=$(ACCELERATE): no conf/accelerate/$(ACCELERATE).yaml (ddp, fsdp, deepspeed_zero3)"; exit 2; }
	$(RUN) experiment=$(EXPERIMENT) 'pipeline=$(SHARED)' threads=$(NPROC) $(ARGS)
	@$(MAKE) --no-print-directory -j$(JOBS) $(addprefix method-,$(METHODS))
	@echo "$(EXPERIMENT): shared stages and $(words $(METHODS)) method sweep(s), seeds $(SEEDS), took" \
	  "$$(( ($$(date +%s) - $$(cat $(LOGS)/.sweep_start)) / 60 )) min with $(JOBS) job(s) x $(JOB_THREADS) thread(s)"

# One parallel job: $(1) its name, $(2) its commands. With JOBS > 1 their output goes to $(LOGS)/$(1).log.
define job
	@if [ "$(JOBS)" = 1 ]; then \
	  $(2); \
	else \
	  log=$(LOGS)/$(1).log; mkdir -p $(LOGS); start=$$(date +%s); echo "[$(1)] started (log: $$log)"; \
	  if { $(2); } > $$log 2>&1; then \
	    echo "[$(1)] done in $$(( ($$(date +%s) - start) / 60 )) min"; \
	  else echo "[$(1)] FAILED; the end of $$log:"; tail -n 40 $$log; exit 1; fi; \
	fi
endef

# One method's sweep over its preset grid (after the learned reward model, for the methods that read it).
method-%:
	$(call job,$*,$(if $(filter $*,$(RPHI_METHODS)),$(RUN) experiment=$(EXPERIMENT) 'pipeline=[reward_model]' threads=$(JOB_THREADS) $(ARGS) && )$(RUN) --multirun experiment=$(EXPERIMENT) method=$* seed=$(SEED_LIST) threads=$(JOB_THREADS) $(ARGS))

analyze-sentiment: $(VENV)/.installed ## rebuild the committed frontier.csv/png and summary.md from finished runs (and the ledger)
	$(PY) -m pipelines.sweep --experiment sentiment_embedded --seeds $(HEADLINE_SEEDS) --methods $(HEADLINE_METHODS) \
	  $(OTHER_METHODS) --list > /dev/null
	$(PY) -m analysis.frontier --task sentiment --preset embedded --runs $${RVD_RUNS:-runs} \
	  --command "make reproduce-sentiment-seeds"

test: $(VENV)/.installed ## offline test suite (default: fast tests only, a few minutes)
	$(PY) -m pytest -q

test-all: $(VENV)/.installed ## every test, slow ones included
	$(PY) -m pytest -q -m ''

bench: $(VENV)/.installed ## time sampling, log-probs, SFT, DPO and PPO steps, evaluation (idle machine); writes results/bench/
	$(PY) -m pipelines.bench $(BENCH_ARGS)

bench-e2e: $(VENV)/.installed ## time make reproduce-sentiment from an empty runs/ (idle machine); writes results/bench/e2e-*
	$(PY) -m pipelines.bench --e2e --make-args "$(BENCH_MAKE_ARGS)"

bench-e2e-seeds: $(VENV)/.installed ## after bench-e2e: time adding seeds 1 and 2 (make reproduce-sentiment-seeds); adds it to results/bench/e2e-*
	$(PY) -m pipelines.bench --seeds --make-args "$(BENCH_MAKE_ARGS)"

clean-runs: ## delete training outputs under runs/ (results/ is kept)
	rm -rf runs
