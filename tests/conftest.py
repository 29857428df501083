"""Shared fixtures (the environment every test runs in, a small labelled review file, a smoke config).
Helpers the tests import live in tests/helpers.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import compose_cfg, write_reviews

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
torch.set_num_threads(2)


@pytest.fixture
def reviews_file(tmp_path) -> Path:
    return write_reviews(tmp_path / "reviews.jsonl")


@pytest.fixture
def smoke_cfg(tmp_path, reviews_file):
    """A composed smoke config whose outputs go to tmp_path, on the fixture reviews."""
    def make(*extra: str):
        return compose_cfg(["experiment=smoke", "task.data.source=local", f"task.data.local_files={reviews_file}",
                            f"paths.root={tmp_path / 'runs'}", *extra])
    return make
