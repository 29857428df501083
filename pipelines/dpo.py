"""DPO stage (Rafailov et al. 2023, Eq. 7): TRL's DPOTrainer from the SFT policy, reference = the SFT policy.

TRL re-tokenises text pairs (appending EOS to completions that were cut at the length limit, and letting BPE
merge across the prompt/completion boundary), which would train on sequences that were never sampled. The pairs
stage keeps the sampled token ids, and `SampledTokenDPOTrainer` hands them to TRL's collator unchanged.
Reads sft/policy, pairs/. Writes snapshots/step*/ (policies for the frontier), policy/, metrics.jsonl."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from datasets import Dataset
from omegaconf import DictConfig
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from pipelines.common import UserError, read_jsonl, trainer_precision
from pipelines.distributed import is_main, per_process, replicates_weights, save_trained
from pipelines.lm_head import apply_to_trainer
from pipelines.models import load_policy, load_tokenizer
from pipelines.tracking import JsonlMetrics, finish_wandb, latest_checkpoint, trainer_report_to

log = logging.getLogger(__name__)
ID_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
# log pi_SFT of each pair's completions, stored by the pairs stage (pipelines/pairs.py)
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


class SampledTokenDPOTrainer(DPOTrainer):
    """DPOTrainer that trains on token ids as given (no text, no re-tokenisation, no appended EOS)."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        missing = [c for c in ID_COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(f"{dataset_name} dataset needs token-id columns {ID_COLUMNS}; missing {missing}")
        return dataset

    def _precompute_ref_logps(self, dataset, name, batch_size):
        # The pairs stage stored the reference log-probs (computed once per preset, shared by every run); TRL's
        # collator and loss read these columns as they read its own precomputed ones.
        if set(REF_COLUMNS) <= set(dataset.column_names):
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)


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


def loss_options(m: DictConfig) -> dict:
    """TRL DPOConfig loss settings of the DPO family (method dpo, ipo, cdpo).

    dpo: the sigmoid loss of the paper. ipo: TRL's loss_type=ipo (Azar et al. 2023), where beta is IPO's tau and
    TRL averages the log-ratios over completion tokens. cdpo: conservative DPO (label smoothing eps, Mitchell 2023),
        -(1 - eps) log sigma(beta d) - eps log sigma(-beta d),
    which TRL >= 1.0 no longer offers as such (its sigmoid loss ignores label_smoothing). It is an exact
    combination of two TRL losses at the same eps: 2(1 - eps) * sigmoid - (1 - 2 eps) * robust, where
    robust = [-(1 - eps) log sigma(beta d) + eps log sigma(-beta d)] / (1 - 2 eps) (Chowdhury et al. 2024)."""
    if m.name == "cdpo":
        eps = float(m.label_smoothing)
        return {"loss_type": ["sigmoid", "robust"], "loss_weights": [2 * (1 - eps), -(1 - 2 * eps)],
                "label_smoothing": eps}
    return {"loss_type": [m.loss_type]}


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
        save_total_limit=1, **trainer_precision(cfg.model.precision), gradient_checkpointing=False,
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


def run(cfg: DictConfig, out_dir: Path) -> dict:
    m = cfg.method
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)
    pairs = load_pairs(cfg.paths.pairs, with_ref_logps=True)
    stored = set(REF_COLUMNS) <= set(pairs.column_names)
    policy = load_policy(sft_dir)
    # With the stored reference log-probs no reference model is needed; pairs made before they were stored fall back
    # to a reference forward pass per step.
    ref = None if stored else load_policy(sft_dir)
    args = DPOConfig(beta=m.beta, max_length=None, precompute_ref_log_probs=stored, **loss_options(m),
                     **training_args(cfg, out_dir))
    trainer = SampledTokenDPOTrainer(
        model=policy, ref_model=ref, args=args, train_dataset=pairs, processing_class=tokenizer,
        callbacks=[JsonlMetrics(out_dir / "metrics.jsonl"), SnapshotPolicy(out_dir / "snapshots", m.eval_every,
                                                                             tokenizer)])
    apply_to_trainer(trainer, cfg.model.dense_logits)
    return {**train_and_save(trainer, tokenizer, out_dir), "n_pairs": len(pairs), "stored_ref_logps": stored}
