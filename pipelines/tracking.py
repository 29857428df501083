"""Experiment tracking: wandb (offline by default) for every training stage, plus metrics.jsonl always."""
from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig
from transformers import TrainerCallback


def trainer_report_to(cfg: DictConfig, out_dir: Path, run_name: str) -> list[str]:
    """Point wandb at the stage folder and return Trainer's `report_to`. wandb.mode=online syncs to the server
    (needs WANDB_API_KEY in the environment; the key is never written to a config or file by this project)."""
    mode = cfg.wandb.mode
    if mode not in ("offline", "online", "disabled"):
        from pipelines.common import UserError
        raise UserError(f"wandb.mode: '{mode}' is not one of offline, online, disabled")
    if mode == "disabled":
        return []
    os.environ["WANDB_MODE"] = mode
    os.environ["WANDB_DIR"] = str(out_dir)
    os.environ["WANDB_PROJECT"] = cfg.wandb.project
    os.environ["WANDB_NAME"] = run_name
    os.environ["WANDB_RUN_GROUP"] = f"{cfg.task.name}/{cfg.preset}"
    os.environ.setdefault("WANDB_SILENT", "true")
    if cfg.wandb.entity:
        os.environ["WANDB_ENTITY"] = cfg.wandb.entity
    return ["wandb"]


class JsonlMetrics(TrainerCallback):
    """Append every Trainer log record to <out_dir>/metrics.jsonl (with the global step)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def latest_checkpoint(folder: Path) -> str | None:
    """The newest Trainer checkpoint-N folder under `folder`, for resume_from_checkpoint."""
    ckpts = sorted(Path(folder).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def finish_wandb() -> None:
    """Close the stage's wandb run so the next stage in the same process starts its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
