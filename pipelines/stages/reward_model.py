"""Learned reward model r_phi for the RLHF baseline: TRL's RewardTrainer (Bradley-Terry loss) on the same
preference pairs DPO trains on, initialised from the SFT policy's trunk with a fresh scalar head.

It trains on exactly DPO's pairs; the checkpoint with the best accuracy on pairs sampled for validation prefixes is
kept (paper: gpt2-large, 3 epochs, best validation checkpoint, > 90 %) and its accuracy is reported, with a
prompt-bootstrap interval, on pairs of test prefixes (held-out prefixes: generalisation to new prefixes, not to
re-ordered pairs of seen samples).
Reads sft/policy, pairs/. Writes model/ (safetensors + tokenizer), metrics.jsonl."""
from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import torch
from datasets import Dataset
from omegaconf import DictConfig
from transformers import AutoModelForSequenceClassification, set_seed
from trl import RewardConfig, RewardTrainer

from pipelines.infra.cost_meter import meter
from pipelines.infra.device import gradient_checkpointing, pick_device, trainer_precision
from pipelines.infra.distributed import is_main, per_process, save_trained
from pipelines.infra.io import UserError, read_jsonl
from pipelines.infra.tracking import JsonlMetrics, finish_wandb, latest_checkpoint, trainer_report_to
from pipelines.lm.models import attn_kwargs, load_tokenizer
from pipelines.lm.scorers import RewardModelScorer

log = logging.getLogger(__name__)


def held_out(prompt_ids: list[int], fraction: float) -> bool:
    """Deterministic prompt-level split: the same prefix always falls on the same side."""
    digest = hashlib.sha256(",".join(map(str, prompt_ids)).encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < fraction


def _to_dataset(rows: list[dict]) -> Dataset:
    return Dataset.from_dict({"chosen_ids": [r["prompt_ids"] + r["chosen_ids"] for r in rows],
                              "rejected_ids": [r["prompt_ids"] + r["rejected_ids"] for r in rows]})


def pair_datasets(pairs_dir: Path, eval_fraction: float) -> tuple[Dataset, Dataset, Dataset, list[list[int]]]:
    """(train, validation, test, the test pairs' prompts) of full sequences prompt + completion, as token ids (the
    sampled ones, unchanged). Where the pairs stage sampled held-out pairs (pairs_validation.jsonl, pairs_test.jsonl:
    sentiment) r_phi trains on exactly the pairs DPO trains on (all of pairs.jsonl), picks its checkpoint on the
    validation pairs and reports its accuracy on the test pairs. Otherwise (prompt-response tasks, whose pairs come
    from the data) a prompt-level share `eval_fraction` of the pairs is held out and serves both."""
    pairs_dir = Path(pairs_dir)
    rows = read_jsonl(pairs_dir / "pairs.jsonl")
    if (pairs_dir / "pairs_validation.jsonl").exists() and (pairs_dir / "pairs_test.jsonl").exists():
        validation, test = (read_jsonl(pairs_dir / f"pairs_{s}.jsonl") for s in ("validation", "test"))
        train = rows
    else:
        train = [r for r in rows if not held_out(r["prompt_ids"], eval_fraction)]
        validation = test = [r for r in rows if held_out(r["prompt_ids"], eval_fraction)]
    if not train or not validation or not test:
        raise UserError(f"reward model: {len(rows)} pairs leave an empty train, validation or test split "
                        "(eval_fraction too small or too few prompts in task.pairs)")
    return _to_dataset(train), _to_dataset(validation), _to_dataset(test), [r["prompt_ids"] for r in test]


def accuracy_interval(correct: list[bool], prompts: list[list[int]], n_boot: int = 2000, seed: int = 0
                      ) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the pairwise accuracy, resampling prompts (the pairs of one prefix share
    their samples, so they are not independent)."""
    import numpy as np

    groups: dict[tuple, list[bool]] = {}
    for c, p in zip(correct, prompts):
        groups.setdefault(tuple(p), []).append(bool(c))
    hits = np.array([sum(g) for g in groups.values()], dtype=float)
    sizes = np.array([len(g) for g in groups.values()], dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(hits), size=(n_boot, len(hits)))
    acc = hits[idx].sum(1) / sizes[idx].sum(1)
    return float(np.quantile(acc, 0.025)), float(np.quantile(acc, 0.975))


def run(cfg: DictConfig, out_dir: Path) -> dict:
    r = cfg.reward_model
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)
    train, held, test, test_prompts = pair_datasets(cfg.paths.pairs, r.eval_fraction)
    set_seed(cfg.shared_seed)  # the new scalar head is initialised from the global RNG
    model = AutoModelForSequenceClassification.from_pretrained(
        str(sft_dir), num_labels=1, use_safetensors=True, trust_remote_code=False, **attn_kwargs())
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        # The classifier pools at the last token that is not padding. With pad == EOS (GPT-2 style tokenizers)
        # that is the token before EOS: r_phi could never tell a completion that ended from one cut at the length
        # limit. A pad token of its own (one new embedding row, never sampled by the policy) fixes the pooling.
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    meter(model)
    steps_per_epoch = -(-len(train) // r.batch_size)
    args = RewardConfig(
        output_dir=str(out_dir / "checkpoints"), num_train_epochs=r.epochs, learning_rate=r.learning_rate,
        per_device_train_batch_size=per_process(r.batch_size), per_device_eval_batch_size=r.batch_size,
        lr_scheduler_type="linear", warmup_steps=r.warmup_ratio, weight_decay=0.0, logging_steps=10,
        # Evaluate and checkpoint together, so the best held-out checkpoint can be restored at the end.
        eval_strategy="steps", eval_steps=r.eval_every, save_strategy="steps", save_steps=r.eval_every,
        save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="eval_accuracy",
        greater_is_better=True, max_length=None, **trainer_precision(cfg.model.precision),
        gradient_checkpointing=gradient_checkpointing(cfg.model),
        report_to=trainer_report_to(cfg, out_dir, f"reward_model-{cfg.model.name}"), seed=cfg.shared_seed,
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available())
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, eval_dataset=held,
                            processing_class=tokenizer, callbacks=[JsonlMetrics(out_dir / "metrics.jsonl")])
    resume = latest_checkpoint(out_dir / "checkpoints")
    if resume:
        log.info("reward model: resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    save_trained(trainer, out_dir / "model")  # with its tokenizer (the added pad token)
    if not is_main():  # under a multi-process launch every process trained; the main one measures
        return {}
    # Accuracy and margin of the restored best checkpoint (chosen on the validation pairs) on the test pairs,
    # pair-exact (the trainer's are means of per-batch means), with the scorer PPO will use.
    scorer = RewardModelScorer(out_dir / "model", pick_device(cfg.device), r.batch_size)
    prompts = [[] for _ in range(len(test))]
    chosen, rejected = scorer(prompts, test["chosen_ids"]), scorer(prompts, test["rejected_ids"])
    correct = [c > j for c, j in zip(chosen, rejected)]
    accuracy = sum(correct) / len(test)
    low, high = accuracy_interval(correct, test_prompts, seed=cfg.shared_seed)
    margin = sum(c - j for c, j in zip(chosen, rejected)) / len(test)
    best_step = int(Path(trainer.state.best_model_checkpoint).name.split("-")[-1]) \
        if trainer.state.best_model_checkpoint else result.global_step
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    finish_wandb()
    log.info("reward model: test accuracy %.4f [%.4f, %.4f] (checkpoint of step %d, chosen on validation pairs)",
             accuracy, low, high, best_step)
    return {"eval_accuracy": round(accuracy, 4), "eval_accuracy_ci95": [round(low, 4), round(high, 4)],
            "eval_margin": round(margin, 4), "best_validation_accuracy": trainer.state.best_metric,
            "best_step": best_step, "steps": result.global_step, "steps_per_epoch": steps_per_epoch,
            "n_train_pairs": len(train), "n_validation_pairs": len(held), "n_eval_pairs": len(test),
            "train_loss": round(result.training_loss, 4), "world_size": trainer.args.world_size}


