"""The one entry point: `python -m pipelines.run [overrides]`, `-m` for a sweep.

Runs cfg.pipeline in order; each stage is skipped when its done-marker carries the same config hash, so a
beta sweep trains the shared stages (data, tokenizer, SFT, r*, pairs) once.

  python -m pipelines.run                                  # one DPO run of the embedded default
  python -m pipelines.run -m                               # the preset's DPO beta sweep
  python -m pipelines.run -m method=ppo                    # the preset's PPO sweep (KL targets)
  python -m pipelines.run -m method.beta=0.05,0.1,1,5      # your own sweep
  python -m pipelines.run experiment=sentiment_paper       # paper scale (GPUs, Hub)
The reward model of PPO is trained on the first PPO run (it is an upstream stage of method=ppo's train stage).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # weight-loading bars; training and sampling keep theirs

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from baselines import ppo, reward_model, rloo  # noqa: E402
from pipelines import (best_of_n, data, distributed, dpo, evaluate, likelihood, pairs, reward, sft,  # noqa: E402
                       tokenizer, vllm_sampling, winrate)
from pipelines.common import UserError  # noqa: E402
from pipelines.models import set_attn_implementation  # noqa: E402
from pipelines.stages import Stage, run_stage  # noqa: E402
from pipelines.text_task import is_text_task  # noqa: E402
from pipelines.validate import validate  # noqa: E402

log = logging.getLogger("pipelines")

OFFLINE_INPUTS = ("sft", "pairs")


def _sft_baseline(cfg: DictConfig, out_dir: Path) -> dict:
    """method=sft: the SFT policy itself as a baseline of the win-rate tables (nothing is trained)."""
    return {"policy": str(Path(cfg.paths.sft) / "policy")}


def _base_baseline(cfg: DictConfig, out_dir: Path) -> dict:
    """method=base: the pretrained model as is, prompted with method.shots examples (nothing is trained)."""
    return {"policy": str(cfg.model.pretrained), "shots": int(cfg.method.shots)}


@dataclass(frozen=True)
class Method:
    """How a method trains: its trainer, the upstream stages it reads besides its config, whether it samples
    prompts and completions itself (then the prompt and generation settings are part of its stage hash), and whether
    its training is a Trainer that a multi-process launch spreads over every process (else the main process alone)."""
    train: Callable[[DictConfig, Path], dict]
    inputs: tuple[str, ...]
    on_policy: bool = False
    # True, False, or a function of nothing (the launch) deciding it
    distributed: bool | Callable[[], bool] = False

    def in_all_processes(self) -> bool:
        return self.distributed() if callable(self.distributed) else self.distributed


# Offline methods read the pairs; PPO, RLOO and Best-of-N the learned reward model r_phi (trained on those pairs);
# the -GT variants the ground-truth reward r*.
METHODS = {
    "dpo": Method(dpo.run, OFFLINE_INPUTS, distributed=True),
    "ipo": Method(dpo.run, OFFLINE_INPUTS, distributed=True),
    "cdpo": Method(dpo.run, OFFLINE_INPUTS, distributed=True),
    "preferred_ft": Method(likelihood.run_preferred_ft, OFFLINE_INPUTS, distributed=True),
    "unlikelihood": Method(likelihood.run_unlikelihood, OFFLINE_INPUTS, distributed=True),
    "bon": Method(best_of_n.run, ("data", "sft", "reward_model"), on_policy=True),
    # Our own PPO loop trains data-parallel (torch DDP) when the launch keeps whole weights in every process; under
    # an FSDP or DeepSpeed launch it runs in the main process alone (its sampling needs every weight).
    "ppo": Method(ppo.run, ("data", "sft", "reward_model"), on_policy=True, distributed=distributed.replicates_weights),
    "ppo_gt": Method(ppo.run, ("data", "sft", "reward"), on_policy=True, distributed=distributed.replicates_weights),
    "rloo": Method(rloo.run, ("data", "sft", "reward_model"), on_policy=True, distributed=True),
    "rloo_gt": Method(rloo.run, ("data", "sft", "reward"), on_policy=True, distributed=True),
    # The SFT policy as a baseline (prompt-response tasks; in dialogue it is the Preferred-FT reference).
    "sft": Method(_sft_baseline, ("sft",)),
    # The pretrained base model, zero- or few-shot prompted (prompt-response tasks with model.pretrained).
    "base": Method(_base_baseline, ("data", "tokenizer")),
}
OFFLINE_KEYS = ("method", "seed")
WINRATE_KEYS = ("judge.backend", "judge.name", "judge.model", "judge.template", "task.winrate", "task.generation",
                "seed")
ON_POLICY_KEYS = ("method", "seed", "task.prompt", "task.generation")


def _local_file_checksums(cfg: DictConfig) -> dict:
    """Local data files enter the data stage's hash by content, so an edited file is never silently reused."""
    import hashlib

    d = cfg.task.data
    files: list = []
    if d.source == "local":
        # sentiment: task.data.local_files; prompt-response tasks: one entry (a path or a list) per role
        entries = [d.local_files] if "local_files" in d else list((d.get("local") or {}).values())
        for entry in entries:
            files += [entry] if isinstance(entry, str) else list(entry or [])
    return {str(f): hashlib.sha256(Path(f).read_bytes()).hexdigest() if Path(f).is_file() else "missing"
            for f in files}


def _train(cfg: DictConfig, out_dir: Path) -> dict:
    return METHODS[cfg.method.name].train(cfg, out_dir)


def _evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    if cfg.method.name == "bon":  # no policy to sample from: the selections of the train stage are the points
        return best_of_n.evaluate(cfg, out_dir)
    return evaluate.run(cfg, out_dir)


STAGES = {s.name: s for s in [
    Stage("data", data.run, ("task.data", "data_seed"), (), lambda c: Path(c.paths.data),
          fingerprint=_local_file_checksums),
    Stage("tokenizer", tokenizer.run, ("model.pretrained", "model.tokenizer"), ("data",),
          lambda c: Path(c.paths.tokenizer)),
    # Prompt-response tasks: which examples fit and where answers are cut, and the loss mask, shape the SFT data too.
    Stage("sft", sft.run, lambda c: ("model", "shared_seed") + (
        ("task.sft", "task.prompt", "task.generation.max_new_tokens") if is_text_task(c) else ()),
          ("data", "tokenizer"), lambda c: Path(c.paths.sft), distributed=True),
    Stage("reward", reward.run, ("task.reward", "data_seed"), ("data",), lambda c: Path(c.paths.reward)),
    Stage("evaluate_sft", evaluate.run_sft, ("task.eval", "task.prompt", "task.generation", "data_seed",
                                             "shared_seed"),
          ("data", "sft", "reward"), lambda c: Path(c.paths.sft) / "eval"),
    # Prompt-response tasks take their pairs from the data: no r*.
    Stage("pairs", pairs.run, ("task.pairs", "task.prompt", "task.generation", "data_seed", "shared_seed"),
          lambda c: ("data", "sft") if is_text_task(c) else ("data", "sft", "reward"), lambda c: Path(c.paths.pairs)),
    Stage("reward_model", reward_model.run, ("reward_model", "shared_seed"), ("sft", "pairs"),
          lambda c: Path(c.paths.reward_model), distributed=True),
    # Best-of-N of a prompt-response task samples at each win-rate temperature, for the win-rate prompts.
    # Sentiment's Best-of-N samples for every evaluation prefix (task.eval's test and validation counts).
    Stage("train", _train, lambda c: (ON_POLICY_KEYS + ((("task.winrate",) if is_text_task(c) else ("task.eval",))
                                                        if c.method.name == "bon" else ()))
          if METHODS[c.method.name].on_policy else OFFLINE_KEYS,
          lambda c: METHODS[c.method.name].inputs, lambda c: Path(c.paths.method),
          distributed=lambda c: METHODS[c.method.name].in_all_processes()),
    Stage("evaluate", _evaluate, ("task.eval", "task.prompt", "task.generation", "seed", "data_seed"),
          ("train", "evaluate_sft"), lambda c: Path(c.paths.method) / "eval"),
    # Keyed by the judge's identity (not its concurrency or retry settings), so a rerun with other limits resumes.
    # Prompt-response tasks judge against the data's answers (no evaluation stage); their prompt cap picks the prompts.
    Stage("winrate", winrate.run,
          lambda c: WINRATE_KEYS + (("task.prompt",) if is_text_task(c) else ()),
          lambda c: (("train", "data") + (("reward",) if c.judge.backend == "oracle" else ())) if is_text_task(c)
          else ("evaluate", "evaluate_sft"),
          lambda c: Path(c.paths.method) / "winrate" / c.judge.name),
]}


def run_pipeline(cfg: DictConfig) -> dict[str, str]:
    """Validate, then run every stage of cfg.pipeline. Returns the stage hashes."""
    validate(cfg)
    unknown = [s for s in cfg.pipeline if s not in STAGES]
    if unknown:
        raise UserError(f"pipeline: unknown stage(s) {unknown}; stages are {list(STAGES)}")
    if cfg.method.name not in METHODS:
        raise UserError(f"method '{cfg.method.name}' has no trainer (available: {sorted(METHODS)})")
    torch.set_num_threads(cfg.threads)
    set_attn_implementation(cfg.model.get("attn_implementation"))
    vllm_sampling.configure(cfg)  # resolves task.generation.backend=auto before any stage hash is taken
    distributed.group()  # under a multi-process launch: open the process group before any Trainer does
    hashes: dict[str, str] = {}
    for name in cfg.pipeline:
        run_stage(cfg, STAGES, name, hashes)
    return hashes


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_pipeline(cfg)
    except UserError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
