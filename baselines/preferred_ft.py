"""Preferred-FT, and what it shares with Unlikelihood (baselines/unlikelihood.py): the paper's two likelihood
baselines, trained on the same preference pairs as DPO, from the SFT policy, with the
same optimiser, schedule, batch and snapshots (pipelines.lm.trainer.training_args), so only the loss differs.

- Preferred-FT: supervised fine-tuning on the chosen completion y_w of every pair (TRL's SFTTrainer, loss on the
  completion tokens only). A prefix's best sample is chosen in 3 of its 6 pairs, the second best in 2: the pairs
  weight completions by rank, as the pair dataset does for DPO.
- Unlikelihood (Welleck et al. 2019, sequence-level form): raise log p(y_w | x) and push down the probability of
  every token of y_l with the unlikelihood term -log(1 - p(y_l,t | x, y_l,<t)), weighted by alpha:
      loss = mean over y_w tokens of -log p  +  alpha * mean over y_l tokens of -log(1 - p).
  The term -alpha * log p(y_l) instead would be unbounded below (the loss falls without limit by sending
  p(y_l) -> 0), so the bounded form of the unlikelihood literature is used. TRL has no unlikelihood trainer.
Both train without dropout, as the DPO family (TRL's DPOConfig.disable_dropout), RLOO and PPO do: `offline_policy`
zeroes every dropout probability of the policy they train (the SFT stage, which trains from scratch, keeps it).
Reads sft/policy, pairs/. Writes snapshots/step*/, policy/, metrics.jsonl."""
from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from omegaconf import DictConfig
from trl import SFTConfig, SFTTrainer
from trl.trainer.utils import disable_dropout_in_model

from pipelines.infra.tracking import JsonlMetrics
from pipelines.lm.lm_head import apply_to_trainer
from pipelines.lm.models import load_policy, load_tokenizer
from pipelines.lm.trainer import SnapshotPolicy, check_offline, load_pairs, train_and_save, training_args
from pipelines.numerics.losses import IGNORE


def completion_labels(prompt: list[int], completion: list[int]) -> list[int]:
    """Causal-LM labels that train on the completion only (prompt positions ignored)."""
    return [IGNORE] * len(prompt) + list(completion)


def offline_policy(sft_dir: Path):
    """The SFT policy that Preferred-FT and Unlikelihood train, dropout off: the Trainer switches the model to train
    mode, where GPT-2's dropout (0.1) would be on, while DPOTrainer zeroes it (DPOConfig.disable_dropout, on by
    default), with the same TRL function, so all offline methods train the same network."""
    policy = load_policy(sft_dir)
    disable_dropout_in_model(policy)
    return policy


def _callbacks(cfg: DictConfig, out_dir: Path, tokenizer) -> list:
    return [JsonlMetrics(out_dir / "metrics.jsonl"), SnapshotPolicy(out_dir / "snapshots", cfg.method.eval_every,
                                                                     tokenizer)]


def run_preferred_ft(cfg: DictConfig, out_dir: Path) -> dict:
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)  # left padding, saved with the policy for sampling; TRL's collator pads right
    pairs = load_pairs(cfg.paths.pairs)
    # Token ids as sampled, labels on the completion: TRL uses a tokenized dataset with a labels column as is.
    data = Dataset.from_dict({
        "input_ids": [p + c for p, c in zip(pairs["prompt_ids"], pairs["chosen_ids"])],
        "labels": [completion_labels(p, c) for p, c in zip(pairs["prompt_ids"], pairs["chosen_ids"])]})
    args = SFTConfig(max_length=None, packing=False, **training_args(cfg, out_dir))
    trainer = SFTTrainer(model=offline_policy(sft_dir), args=args, train_dataset=data, processing_class=tokenizer,
                         callbacks=_callbacks(cfg, out_dir, tokenizer))
    apply_to_trainer(trainer, cfg.model.dense_logits)
    return {**train_and_save(trainer, tokenizer, out_dir), "n_examples": len(data)}


def check(cfg: DictConfig, need) -> None:
    check_offline(cfg.method, need)
