"""Hydra-configured stages of the rlhf-vs-dpo benchmark. Entry point: `python -m pipelines.run`."""
from omegaconf import OmegaConf

from pipelines.infra import schema


def _seed_dir(seed, shared_seed) -> str:
    """Folder of a method run: seed<k> on its own pipeline seed (full-pipeline seeds), seed<k>_sft<j> on another."""
    return f"seed{seed}" if str(seed) == str(shared_seed) else f"seed{seed}_sft{shared_seed}"


def _pipeline_dir(shared_seed) -> str:
    """Folder of one pipeline seed's SFT, pairs and r_phi: shared/ for seed 0 (beside data, tokenizer, r*),
    pipeline<k>/ for seed k."""
    return "shared" if str(shared_seed) == "0" else f"pipeline{shared_seed}"


# Used by conf/paths/default.yaml; registered wherever any pipelines module is imported (every entry point).
OmegaConf.register_new_resolver("rvd_seed_dir", _seed_dir, replace=True)
OmegaConf.register_new_resolver("rvd_pipeline_dir", _pipeline_dir, replace=True)
# The typed top of conf/config.yaml (its defaults list names it first).
schema.register()
