"""Shared fixtures: a small labelled review file the suite writes itself, Hydra composition, tiny models."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
torch.set_num_threads(2)

POSITIVE = "great wonderful superb moving funny charming brilliant delightful".split()
NEGATIVE = "awful boring dull terrible clumsy tedious bad weak".split()
FILLER = "the story of a man and his dog in the city with music and friends".split()


def review_rows(n: int = 120, seed: int = 0) -> list[dict]:
    """Synthetic reviews: neutral filler plus four words of the label's sentiment."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(12)] + [rng.choice(POSITIVE if label else NEGATIVE)
                                                          for _ in range(4)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + " .", "label": label})
    return rows


def write_reviews(path: Path, rows: list[dict] | None = None) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in (rows or review_rows())))
    return path


@pytest.fixture
def reviews_file(tmp_path) -> Path:
    return write_reviews(tmp_path / "reviews.jsonl")


def compose_cfg(overrides: list[str], hydra_node: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra_node)


@pytest.fixture
def smoke_cfg(tmp_path, reviews_file):
    """A composed smoke config whose outputs go to tmp_path, on the fixture reviews."""
    def make(*extra: str):
        return compose_cfg(["experiment=smoke", "task.data.source=local", f"task.data.local_files={reviews_file}",
                            f"paths.root={tmp_path / 'runs'}", *extra])
    return make
