"""Preference-pair stage: the pairs every pair-reading method (DPO and its family, Preferred-FT, Unlikelihood) and
the learned reward model train on, as token ids with log pi_SFT of both answers computed once here (so no DPO run
needs a reference forward pass). The task's `run_pairs` (pipelines/tasks/registry.py):
  sentiment    k SFT samples per train prefix, every pair of them ordered by r*, and the same on validation and test
               prefixes for the reward model's selection and accuracy (pipelines/tasks/sentiment.py)
  summarization, dialogue   the data's own (human) comparisons (pipelines/tasks/prompt_response.py)
Resumable by chunk. Writes chunks*/, pairs.jsonl (sentiment also pairs_validation.jsonl, pairs_test.jsonl)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipelines.tasks.registry import task_of


def run(cfg: DictConfig, out_dir: Path) -> dict:
    return task_of(cfg).run_pairs(cfg, out_dir)
