"""Data stage: read the task's corpus, split it, write data/ (the task's `run_data`, pipelines/tasks/registry.py).
Sentiment: labelled documents in train / validation / test (pipelines/tasks/sentiment.py). Summarization, dialogue:
prompts and answers (SFT data), preference pairs and held-out prompts with references, all from the data
(pipelines/tasks/prompt_response.py)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipelines.tasks.registry import task_of


def run(cfg: DictConfig, out_dir: Path) -> dict:
    return task_of(cfg).run_data(cfg, out_dir)
