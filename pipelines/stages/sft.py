"""SFT stage: the reference policy pi_ref. TRL's SFTTrainer, from scratch (embedded) or from a pretrained model
(paper: gpt2-large one epoch on IMDb train; GPT-J on the TL;DR SFT data; Pythia-2.8B on HH's chosen answers, the
paper's Preferred-FT reference). Sentiment trains on the documents joined with EOS and cut into blocks; the
prompt-response tasks on (prompt, completion + EOS) examples, the loss on the completion only unless
task.sft.completion_only_loss is off (pipelines/text_task.py).
Reads data/, tokenizer/. Writes policy/ (safetensors + tokenizer), metrics.jsonl, held-out perplexity."""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import torch
from datasets import Dataset
from omegaconf import DictConfig
from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from pipelines.infra.device import trainer_precision
from pipelines.infra.distributed import is_main, per_process, save_trained
from pipelines.infra.io import UserError
from pipelines.infra.tracking import JsonlMetrics, finish_wandb, latest_checkpoint, trainer_report_to
from pipelines.lm.lm_head import apply_to_trainer
from pipelines.lm.models import build_policy, context_length, load_tokenizer
from pipelines.tasks.data import load_split
from pipelines.tasks.prompt_response import is_text_task, sft_examples

log = logging.getLogger(__name__)


def token_blocks(texts: list[str], tokenizer, block_size: int) -> Dataset:
    """Documents joined with EOS (so the model learns to end a review) and cut into equal blocks."""
    stream: list[int] = []
    for ids in tokenizer(texts)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    n = len(stream) // block_size
    if n == 0:
        raise UserError(f"the text is shorter than one block of {block_size} tokens; lower model.sft.block_size")
    return Dataset.from_dict({"input_ids": [stream[i * block_size:(i + 1) * block_size] for i in range(n)]})


def run(cfg: DictConfig, out_dir: Path) -> dict:
    s = cfg.model.sft
    tokenizer = load_tokenizer(cfg.paths.tokenizer)
    tokenizer.padding_side = "right"
    # Seed before the weights are initialised: Trainer seeds only later, and torch's default seed is random per
    # process, which made from-scratch SFT differ from run to run.
    set_seed(cfg.shared_seed)
    model = build_policy(cfg.model, tokenizer)
    if is_text_task(cfg):
        (train, too_long), (test, _) = (sft_examples(cfg, tokenizer, split) for split in ("train", "test"))
        longest = max(len(x["input_ids"]) for x in train + test)
        if longest > context_length(model):
            raise UserError(f"sft: an example of {longest} tokens exceeds the model's context "
                            f"{context_length(model)}; lower task.prompt.max_tokens or max_new_tokens")
        train, test = Dataset.from_list(train), Dataset.from_list(test)
        extra = {"n_prompt_too_long": too_long, "train_examples": len(train)}
        max_length = None
    else:
        if s.block_size > context_length(model):
            raise UserError(f"model.sft.block_size={s.block_size} exceeds the model's context "
                            f"{context_length(model)}")
        train = token_blocks([d["text"] for d in load_split(cfg.paths.data, "train")], tokenizer, s.block_size)
        test = token_blocks([d["text"] for d in load_split(cfg.paths.data, "test")], tokenizer, s.block_size)
        extra = {"train_blocks": len(train)}
        max_length = s.block_size
    log.info("sft: %d train / %d test examples, %.2fM parameters", len(train), len(test),
             sum(p.numel() for p in model.parameters()) / 1e6)
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"), num_train_epochs=s.epochs, learning_rate=s.learning_rate,
        per_device_train_batch_size=per_process(s.batch_size), per_device_eval_batch_size=s.batch_size,
        warmup_steps=s.warmup_ratio, weight_decay=s.weight_decay, lr_scheduler_type=s.lr_scheduler,
        max_length=max_length, packing=False, logging_steps=10, save_steps=s.save_steps, save_total_limit=1,
        # TRL defaults both on; neither is wanted on CPU or for small models.
        **trainer_precision(cfg.model.precision), gradient_checkpointing=False,
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
