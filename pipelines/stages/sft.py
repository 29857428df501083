"""SFT stage: the reference policy pi_ref. TRL's SFTTrainer, from scratch (embedded) or from a pretrained model
(paper: gpt2-large one epoch on IMDb train; GPT-J on the TL;DR SFT data; Pythia-2.8B on HH's chosen answers, the
paper's Preferred-FT reference). Sentiment trains on the documents joined with EOS and cut into blocks; the
prompt-response tasks on (prompt, completion + EOS) examples, the loss on the completion only unless
task.sft.completion_only_loss is off: the task's `sft_data` (pipelines/tasks/registry.py).
Reads data/, tokenizer/. Writes policy/ (safetensors + tokenizer), metrics.jsonl, held-out perplexity."""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from pipelines.infra.device import gradient_checkpointing, trainer_precision
from pipelines.infra.distributed import is_main, per_process, save_trained
from pipelines.infra.tracking import JsonlMetrics, finish_wandb, latest_checkpoint, trainer_report_to
from pipelines.lm.lm_head import apply_to_trainer
from pipelines.lm.models import build_policy, load_tokenizer
from pipelines.tasks.registry import task_of

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    s = cfg.model.sft
    tokenizer = load_tokenizer(cfg.paths.tokenizer)
    tokenizer.padding_side = "right"
    # Seed before the weights are initialised: Trainer seeds only later, and torch's default seed is random per
    # process, which made from-scratch SFT differ from run to run.
    set_seed(cfg.shared_seed)
    model = build_policy(cfg.model, tokenizer)
    train, test, extra, max_length = task_of(cfg).sft_data(cfg, tokenizer, model)
    log.info("sft: %d train / %d test examples, %.2fM parameters", len(train), len(test),
             sum(p.numel() for p in model.parameters()) / 1e6)
    # Optional recipe keys (conf/model/pythia_2_8b.yaml sets them; absent: the Trainer's AdamW, no accumulation,
    # clip 1.0, exactly as before they existed).
    accumulation = s.get("gradient_accumulation_steps", 1)
    optimizer = {"optim": s.optimizer} if s.get("optimizer") else {}
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"), num_train_epochs=s.epochs, learning_rate=s.learning_rate,
        per_device_train_batch_size=max(1, per_process(s.batch_size) // accumulation),
        gradient_accumulation_steps=accumulation, per_device_eval_batch_size=s.batch_size,
        **optimizer, max_grad_norm=s.get("max_grad_norm", 1.0),
        warmup_steps=s.warmup_ratio, weight_decay=s.weight_decay, lr_scheduler_type=s.lr_scheduler,
        max_length=max_length, packing=False, logging_steps=10, save_steps=s.save_steps, save_total_limit=1,
        # TRL defaults both on; neither is wanted on CPU or for small models.
        **trainer_precision(cfg.model.precision), gradient_checkpointing=gradient_checkpointing(cfg.model),
        report_to=trainer_report_to(cfg, out_dir, f"sft-{cfg.model.name}"), seed=cfg.shared_seed,
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available())
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=test,
                         processing_class=tokenizer, callbacks=[JsonlMetrics(out_dir / "metrics.jsonl")])
    apply_to_trainer(trainer, cfg.model.dense_logits)
    resume = latest_checkpoint(out_dir / "checkpoints")
    if resume:
        log.info("sft: resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    eval_loss = trainer.evaluate()["eval_loss"]
    tokenizer.padding_side = "left"
    save_trained(trainer, out_dir / "policy")
    if is_main():
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # optimizer state is not needed once done
    finish_wandb()
    return {"train_loss": round(result.training_loss, 4), "eval_loss": round(eval_loss, 4),
            "eval_perplexity": round(math.exp(eval_loss), 3), "steps": result.global_step,
            "n_params": sum(p.numel() for p in trainer.model.parameters()), **extra,
            "torch_threads": torch.get_num_threads(), "world_size": trainer.args.world_size}
