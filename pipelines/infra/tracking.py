"""Experiment tracking: wandb (offline by default) for every training stage, plus metrics.jsonl always."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig
from transformers import TrainerCallback

log = logging.getLogger(__name__)


def trainer_report_to(cfg: DictConfig, out_dir: Path, run_name: str) -> list[str]:
    """Start the stage's wandb run in its own folder and return Trainer's `report_to`.

    The run is started here (not by Trainer's callback, which would reuse the folder of the process's first
    run) with the resolved config of the experiment. wandb.mode=online syncs live and needs WANDB_API_KEY in the
    environment; the key is never written anywhere by this project."""
    mode = cfg.wandb.mode
    if mode not in ("offline", "online", "disabled"):
        from pipelines.infra.io import UserError
        raise UserError(f"wandb.mode: '{mode}' is not one of offline, online, disabled")
    from pipelines.infra.distributed import is_main

    if mode == "disabled" or not is_main():  # one wandb run per stage, from the main process
        return []
    import wandb
    from omegaconf import OmegaConf

    finish_wandb()
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_LOG_MODEL"] = "false"  # weights stay on disk, never uploaded
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    wandb.init(dir=str(out_dir), mode=mode, project=cfg.wandb.project, entity=cfg.wandb.entity or None,
               name=run_name, group=f"{cfg.task.name}/{cfg.preset}", job_type=out_dir.name, config=config,
               settings=wandb.Settings(silent=True))
    return ["wandb"]


class JsonlMetrics(TrainerCallback):
    """Append every Trainer log record to <out_dir>/metrics.jsonl (with the global step)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


# Written last by transformers' Trainer._save_checkpoint (after weights, optimizer, scheduler and RNG state): a
# checkpoint folder without it was cut off mid-write (a kill while saving) and cannot be resumed from.
TRAINER_STATE = "trainer_state.json"


def latest_checkpoint(folder: Path) -> str | None:
    """The newest complete Trainer checkpoint-N folder under `folder`, for resume_from_checkpoint. A folder the
    Trainer did not finish writing (no trainer_state.json) is skipped with a warning: the run resumes from the one
    before it (or from the start), and the Trainer writes that step's checkpoint again when it gets there."""
    ckpts = sorted((p for p in Path(folder).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    complete = [p for p in ckpts if (p / TRAINER_STATE).is_file()]
    newest = complete[-1] if complete else None
    for torn in ckpts[ckpts.index(newest) + 1:] if newest else ckpts:
        log.warning("%s was cut off while being written (no %s): resuming from %s", torn, TRAINER_STATE,
                    newest.name if newest else "the start")
    return str(newest) if newest else None


def finish_wandb() -> None:
    """Close the stage's wandb run so the next stage in the same process starts its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def log_metrics(path: Path, step: int, metrics: dict, wandb_on: bool) -> None:
    """One record of a hand-written training loop (PPO): metrics.jsonl always, wandb when the stage started a run."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
    if wandb_on:
        import wandb

        wandb.log(metrics, step=step)
