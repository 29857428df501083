"""What the Trainer-based offline methods share (DPO family, Preferred-FT, Unlikelihood, RLOO): the preference
pairs as a dataset, training arguments, policy snapshots for the frontier, the final save."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from datasets import Dataset
from omegaconf import DictConfig
from transformers import TrainerCallback

from pipelines.infra.device import gradient_checkpointing, trainer_precision
from pipelines.infra.distributed import is_main, per_process, replicates_weights, save_trained
from pipelines.infra.io import UserError, read_jsonl
from pipelines.infra.tracking import finish_wandb, latest_checkpoint, trainer_report_to

log = logging.getLogger(__name__)


ID_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


# log pi_SFT of each pair's completions, stored by the pairs stage (pipelines/stages/pairs.py)
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


class SnapshotPolicy(TrainerCallback):
    """Save the policy weights (no optimizer) every `every` steps and at the end: the frontier's checkpoints.

    Where every process holds the whole model (one process, DDP) the main one saves it. Under a launch that shards
    the weights (FSDP, ZeRO-3) a process's model holds only its shard, so every process saves through the Trainer
    (`trainer`, set by train_and_save), which gathers the full weights and writes them from the main process."""

    def __init__(self, folder: Path, every: int, tokenizer):
        self.folder, self.every, self.tokenizer = Path(folder), every, tokenizer
        self.trainer = None

    def _save(self, model, state, step: int):
        target = self.folder / f"step{step:06d}"
        if (target / "model.safetensors").exists():  # a resumed run; seen alike by every process
            return
        if self.trainer is not None and not replicates_weights():
            save_trained(self.trainer, target)  # collective: every process calls it
        elif state.is_world_process_zero:
            model.save_pretrained(str(target), safe_serialization=True)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._save(model, state, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # The last step too, unless a periodic snapshot is only a few steps before it (a near-duplicate point).
        if state.global_step % self.every > self.every // 4:
            self._save(model, state, state.global_step)


def load_pairs(pairs_dir: Path, with_ref_logps: bool = False) -> Dataset:
    """The pairs as token ids; with_ref_logps adds the stored reference log-probs (when every pair has them)."""
    rows = read_jsonl(Path(pairs_dir) / "pairs.jsonl")
    if not rows:
        raise UserError(f"{pairs_dir}/pairs.jsonl has no pairs (all ties?); sample more prompts")
    columns = ID_COLUMNS + (REF_COLUMNS if with_ref_logps and all(c in r for r in rows for c in REF_COLUMNS) else ())
    return Dataset.from_dict({c: [r[c] for r in rows] for c in columns})


def training_args(cfg: DictConfig, out_dir: Path) -> dict:
    """Trainer arguments shared by the offline methods trained on the pairs (DPO family, Preferred-FT,
    Unlikelihood): the same optimiser, schedule, batch and snapshot cadence, so they differ only by their loss."""
    m = cfg.method
    return dict(
        output_dir=str(out_dir / "trainer"), learning_rate=m.learning_rate, optim=m.optimizer,
        lr_scheduler_type="constant_with_warmup", warmup_steps=m.warmup_steps,
        per_device_train_batch_size=per_process(m.batch_size),
        gradient_accumulation_steps=m.gradient_accumulation_steps,
        num_train_epochs=m.epochs, max_steps=m.max_steps, logging_steps=10, save_steps=m.save_steps,
        save_total_limit=1, **trainer_precision(cfg.model.precision),
        gradient_checkpointing=gradient_checkpointing(cfg.model),
        # Gradient-norm clip: TRL's and transformers' default 1.0 unless the preset sets it (the paper presets of
        # the DPO family: 10.0, the DPO reference code's).
        max_grad_norm=m.get("max_grad_norm", 1.0),
        report_to=trainer_report_to(cfg, out_dir, f"{m.tag}-seed{cfg.seed}"), seed=cfg.seed,
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available())


def train_and_save(trainer, tokenizer, out_dir: Path) -> dict:
    """Train (resuming from the newest checkpoint), save the final policy, close wandb; the stage's metrics."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, SnapshotPolicy):
            callback.trainer = trainer
    resume = latest_checkpoint(out_dir / "trainer")
    if resume:
        log.info("%s: resuming from %s", out_dir.name, resume)
    result = trainer.train(resume_from_checkpoint=resume)
    save_trained(trainer, out_dir / "policy")
    if is_main():
        tokenizer.save_pretrained(str(out_dir / "policy"))  # Unlikelihood's plain Trainer has no tokenizer to save
    finish_wandb()
    steps = result.global_step
    runtime = result.metrics.get("train_runtime", 0.0)
    return {"train_loss": round(result.training_loss, 4), "steps": steps,
            "seconds_per_step": round(runtime / max(1, steps), 4), "world_size": trainer.args.world_size}


def check_offline(m: DictConfig, need) -> None:
    """The Trainer schedule every offline method shares (DPO family, Preferred-FT, Unlikelihood)."""
    need(m.learning_rate > 0, f"method.learning_rate must be > 0, got {m.learning_rate}")
    need(m.batch_size >= 1, f"method.batch_size must be >= 1, got {m.batch_size}")
    need(m.eval_every >= 1, f"method.eval_every must be >= 1, got {m.eval_every}")
    need(m.epochs > 0 or m.max_steps > 0, "method needs epochs > 0 or max_steps > 0")
