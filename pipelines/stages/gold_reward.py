"""Stage `reward`: train (or load) the ground-truth reward r* of the task and write reward/, recording its held-out
accuracy (the task's `run_reward`, pipelines/tasks/registry.py). Sentiment: a classifier of the documents
(pipelines/tasks/gold_reward.py); summarization, dialogue: a relevance score of (prompt, answer) for the oracle judge
(pipelines/tasks/relevance.py)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipelines.tasks.registry import task_of


def run(cfg: DictConfig, out_dir: Path) -> dict:
    return task_of(cfg).run_reward(cfg, out_dir)
