"""Every stage hash of the embedded presets of the three tasks, computed without running anything.

`python -m tests.config.stage_hashes --write` pins them in tests/fixtures/stage_hashes.json; test_stage_hashes.py
fails when a change of code or config moves one (finished runs and the committed results would no longer be
reused). Only a deliberate change of what a stage computes should re-pin them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.infra.bookkeeping import plan_hash
from pipelines.run import STAGES
from pipelines.sweep import compose_cfg, grid

PINNED = Path(__file__).resolve().parents[1] / "fixtures" / "stage_hashes.json"
# The methods each embedded preset sweeps (Makefile), at two seeds: 0 (pipeline in shared/) and 1 (pipeline1/).
EXPERIMENTS = {
    "sentiment_embedded": ["dpo", "ipo", "cdpo", "ppo", "ppo_gt", "rloo", "rloo_gt", "bon", "preferred_ft",
                           "unlikelihood"],
    "summarization_embedded": ["ppo", "dpo", "bon", "preferred_ft", "sft"],
    "dialogue_embedded": ["ppo", "dpo", "bon", "sft"],
}
SEEDS = (0, 1)


def stage_hashes() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for experiment, methods in EXPERIMENTS.items():
        for method in methods:
            for setting in grid(experiment, method, []):
                for seed in SEEDS:
                    overrides = [f"experiment={experiment}", f"method={method}", f"seed={seed}", *setting]
                    cfg = compose_cfg(overrides)
                    memo: dict[str, str] = {}
                    for name in list(cfg.pipeline) + (["reward_model"] if "reward_model" in STAGES else []):
                        plan_hash(cfg, STAGES, name, memo)
                    out[" ".join(overrides)] = dict(sorted(memo.items()))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help=f"pin the hashes in {PINNED}")
    args = ap.parse_args()
    hashes = stage_hashes()
    if args.write:
        PINNED.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
        print(f"{len(hashes)} configurations pinned in {PINNED}")
    else:
        print(json.dumps(hashes, indent=1, sort_keys=True))
