# rlhf-vs-dpo: every entry point of the project is a target here; `make help` lists them. What an experiment sweeps
# (methods, seeds, jobs) is in conf/experiment/<name>.yaml (sweep:); pipelines/sweep.py runs its jobs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
# Variables (`make help` prints the #: lines; make <target> NAME=value, environment variables as NAME=value make):
#: SEEDS           full-pipeline seeds of a reproduce target, e.g. "0 1 2" (default 0)
#: METHODS         methods to sweep, e.g. "dpo ppo" (default: the experiment's sweep.methods)
#: JOBS            method jobs side by side (default: the experiment's sweep.jobs, else 2)
#: ACCELERATE      launch every job with conf/accelerate/NAME.yaml: ddp, fsdp, deepspeed_zero3, ... (default none)
#: ARGS            extra Hydra overrides for every job, e.g. ARGS="task.eval.n_prompts=200" (default none)
#: HEADLINE_SEEDS  reproduce-sentiment-seeds: seeds of DPO, PPO, PPO-GT (default 0-9); also HEADLINE_METHODS
#: OTHER_SEEDS     reproduce-sentiment-seeds: seeds of the other methods (default 0-2); also OTHER_METHODS
#: TUNING_METHODS  reproduce-sentiment-seeds: the learning-rate trials on validation (default dpo ppo; empty: none)
#: EXPERIMENT      make sweep: the conf/experiment/<name>.yaml to run
#: BENCH_ARGS      make bench: e.g. "--arch n_layer=36 n_embd=1280 n_head=20 --vocab 50257"
#: GPU_SMOKE_ARGS  make gpu-smoke: e.g. "--only generation ppo" or "--gptj-layers 8" ("--dry": tiny shapes on CPU)
#: RVD_RUNS        environment: where training outputs go (default runs/); the analysis and clean-runs read it too
#: RVD_CACHE       environment: where downloaded data is cached (default .cache/rlhf-vs-dpo)
#: VENV            the virtual environment (default .venv)
#: TORCH_SPEC      the torch to install: torch (CUDA build) where an NVIDIA driver answers, else torch==2.13.0
#: TORCH_INDEX     extra index for torch: PyTorch's CPU index without a driver where it answers (PyPI's Linux wheel
#:                 is the CUDA build, ~2.5 GB with its libraries; +cpu ~200 MB), else none (PyPI only, as on CI)
TORCH_SPEC ?= $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then echo torch; else echo torch==2.13.0; fi)
TORCH_CPU_INDEX = https://download.pytorch.org/whl/cpu
TORCH_INDEX ?= $(shell if ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1) && command -v curl >/dev/null 2>&1 && curl -sfI -m 5 -o /dev/null $(TORCH_CPU_INDEX)/torch/; then echo $(TORCH_CPU_INDEX); fi)
RUNS = $${RVD_RUNS:-runs}
SWEEP = $(strip $(PY) -m pipelines.sweep $(if $(JOBS),--jobs $(JOBS)) $(if $(ACCELERATE),--accelerate $(ACCELERATE)))
# One seed's run trains what the run folder lacks and never reads or writes the committed ledger.
ONE_SEED = $(if $(SEEDS),--seeds "$(SEEDS)") $(if $(METHODS),--methods "$(METHODS)") --no-ledger
GROUPS = $(foreach v,HEADLINE_METHODS HEADLINE_SEEDS TUNING_METHODS OTHER_METHODS OTHER_SEEDS,$(if $(filter-out undefined,$(origin $(v))),--group "$(v)=$($(v))"))
MADE_BY = $(strip make $@ $(foreach v,SEEDS METHODS,$(if $($(v)),$(v)=\"$($(v))\")))

.PHONY: help venv reproduce-sentiment reproduce-sentiment-seeds reproduce-sentiment-paper reproduce-summarization \
	reproduce-dialogue reproduce-summarization-paper reproduce-dialogue-paper sweep analyze-sentiment test test-fast \
	test-all bench bench-e2e bench-e2e-seeds gpu-smoke pin-hub clean-runs

help: ## list the targets and the variables they read
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-26s %s\n", $$1, $$2}'
	@printf '\nVariables (make <target> NAME=value; environment variables as NAME=value make ...):\n'
	@sed -n 's/^#: /  /p' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,judge-local]'
	@touch $@
venv: $(VENV)/.installed ## create the virtual environment (done by every target that needs it)

reproduce-sentiment: $(VENV)/.installed ## embedded default, one full-pipeline seed: SFT, r*, pairs, reward model, every method's sweep (SEEDS, METHODS, JOBS), frontier in runs/results/
	$(SWEEP) --experiment sentiment_embedded $(ONE_SEED) -- $(ARGS)
	$(PY) -m analysis.frontier --task sentiment --preset embedded --runs $(RUNS) --out $(RUNS)/results --command "$(MADE_BY)"
reproduce-sentiment-seeds: $(VENV)/.installed ## the committed multi-seed frontier and verdict (DPO, PPO, PPO-GT at 10 full-pipeline seeds, the rest at 3); resumable
	$(SWEEP) --experiment sentiment_embedded --groups $(GROUPS) -- $(ARGS)
	$(PY) -m analysis.frontier --task sentiment --preset embedded --runs $(RUNS) --command "make reproduce-sentiment-seeds"
reproduce-sentiment-paper: $(VENV)/.installed ## paper scale (gpt2-large, IMDb, siebert; GPUs and Hub access needed)
	$(SWEEP) --experiment sentiment_paper $(ONE_SEED) -- $(ARGS)
	$(PY) -m analysis.frontier --task sentiment --preset paper --command "$(MADE_BY)"
reproduce-summarization: $(VENV)/.installed ## offline smoke run of the TL;DR pipeline (Debian package descriptions): SFT, DPO, PPO, Best-of-N, win rates vs temperature
	$(SWEEP) --experiment summarization_embedded $(ONE_SEED) -- $(ARGS)
	$(PY) -m analysis.winrate --task summarization --preset embedded --command "$(MADE_BY)"
reproduce-dialogue: $(VENV)/.installed ## offline smoke run of the HH pipeline (chitchat-dataset): Preferred-FT reference, DPO, PPO, Best-of-N, win rates
	$(SWEEP) --experiment dialogue_embedded $(ONE_SEED) -- $(ARGS)
	$(PY) -m analysis.winrate --task dialogue --preset embedded --command "$(MADE_BY)"
reproduce-summarization-paper: $(VENV)/.installed ## paper scale TL;DR, Fig. 2 + CNN/DM (GPT-J 6B; GPUs, the Hub, a judge endpoint)
	$(SWEEP) --experiment summarization_paper $(ONE_SEED) -- $(ARGS)
	$(PY) -m analysis.winrate --task summarization --preset paper --command "$(MADE_BY)"
reproduce-dialogue-paper: $(VENV)/.installed ## paper scale HH single-turn, Fig. 3 (Pythia-2.8B; GPUs, the Hub, a judge endpoint)
	$(SWEEP) --experiment dialogue_paper $(ONE_SEED) -- $(ARGS)
	$(PY) -m analysis.winrate --task dialogue --preset paper --command "$(MADE_BY)"
sweep: $(VENV)/.installed ## any experiment's jobs, no analysis: make sweep EXPERIMENT=<conf/experiment name> (SEEDS, METHODS, ...)
	$(SWEEP) --experiment $(or $(EXPERIMENT),$(error sweep needs EXPERIMENT=<conf/experiment name>)) $(ONE_SEED) -- $(ARGS)
analyze-sentiment: $(VENV)/.installed ## rebuild the committed frontier.csv/png and summary.md from finished runs (and the ledger)
	$(SWEEP) --experiment sentiment_embedded --groups $(GROUPS) --list > /dev/null
	$(PY) -m analysis.frontier --task sentiment --preset embedded --runs $(RUNS) --command "make reproduce-sentiment-seeds"
test: $(VENV)/.installed ## offline test suite, slow ones left out (about 8-10 min on an idle 2-core machine)
	$(PY) -m pytest -q
test-fast: $(VENV)/.installed ## the unit tests, under a minute on an idle 2-core machine
	$(PY) -m pytest -q tests/unit -m 'not slow and not gpu and not network and not heavy'
test-all: $(VENV)/.installed ## every test, slow ones included
	$(PY) -m pytest -q -m ''
bench: $(VENV)/.installed ## time sampling, log-probs, SFT, DPO and PPO steps, evaluation (idle machine); writes results/bench/
	$(PY) -m pipelines.bench $(BENCH_ARGS)
bench-e2e: $(VENV)/.installed ## time make reproduce-sentiment from an empty runs/ (idle machine); writes results/bench/e2e-*
	$(PY) -m pipelines.bench --e2e --make-args "$(BENCH_MAKE_ARGS)"
bench-e2e-seeds: $(VENV)/.installed ## after bench-e2e: time adding full-pipeline seeds 1 and 2 of every method (make reproduce-sentiment SEEDS="0 1 2", no ledger); adds it to results/bench/e2e-*
	$(PY) -m pipelines.bench --seeds --make-args "$(BENCH_MAKE_ARGS)"
gpu-smoke: $(VENV)/.installed ## one GPU, random weights at the paper shapes (no Hub), <10 min: PPO (plain and sharded), DPO, generation fp32 vs bf16, reward scoring; record in results/bench/
	$(PY) -m pipelines.gpu_smoke $(GPU_SMOKE_ARGS)
pin-hub: $(VENV)/.installed ## pin every Hub model and dataset of the paper presets to its current commit (needs Hub access); writes conf/hub_revisions.yaml
	$(PY) -m pipelines.hub_pin
clean-runs: ## delete training outputs under runs/ or $RVD_RUNS (results/ is kept)
	rm -rf -- "$(RUNS)"
