"""The paper's two likelihood baselines, trained on the same preference pairs as DPO, from the SFT policy, with the
same optimiser, schedule, batch and snapshots (pipelines.dpo.training_args), so only the loss differs.

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

import torch
from datasets import Dataset
from omegaconf import DictConfig
from transformers import Trainer, TrainingArguments
from trl import SFTConfig, SFTTrainer
from trl.trainer.utils import disable_dropout_in_model

from pipelines.dpo import SnapshotPolicy, load_pairs, train_and_save, training_args
from pipelines.lm_head import apply_to_trainer, use_dense_logits
from pipelines.models import load_policy, load_tokenizer
from pipelines.sampling import right_pad
from pipelines.tracking import JsonlMetrics

IGNORE = -100


def completion_labels(prompt: list[int], completion: list[int]) -> list[int]:
    """Causal-LM labels that train on the completion only (prompt positions ignored)."""
    return [IGNORE] * len(prompt) + list(completion)


def unlikelihood_loss(logits: torch.Tensor, labels: torch.Tensor, negative: torch.Tensor, alpha: float
                      ) -> tuple[torch.Tensor, dict]:
    """Likelihood on positive sequences plus alpha times unlikelihood on negative ones.

    logits (B, T, V); labels (B, T) with IGNORE where no loss applies; negative (B,) bool: row is a y_l. Each term is
    a mean over its own tokens. Returns (loss, {"nll_chosen", "ul_rejected", "p_rejected"}) for logging."""
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = labels[:, 1:]
    mask = target != IGNORE
    token_logp = logps.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return unlikelihood_from_logps(token_logp, mask, negative, alpha)


def unlikelihood_from_logps(token_logp: torch.Tensor, mask: torch.Tensor, negative: torch.Tensor, alpha: float
                            ) -> tuple[torch.Tensor, dict]:
    """`unlikelihood_loss` from the per-token log-probs of the labels (B, T-1) and their mask (True = scored)."""
    pos = mask & ~negative[:, None]
    neg = mask & negative[:, None]
    nll = -(token_logp * pos).sum() / pos.sum().clamp(min=1)
    # log(1 - p) from log p, kept finite when p -> 1
    log_not_p = torch.log1p(-token_logp.exp().clamp(max=1 - 1e-6))
    ul = -(log_not_p * neg).sum() / neg.sum().clamp(min=1)
    stats = {"nll_chosen": nll.detach(), "ul_rejected": ul.detach(),
             "p_rejected": (token_logp.exp() * neg).sum().detach() / neg.sum().clamp(min=1)}
    return nll + alpha * ul, stats


class UnlikelihoodTrainer(Trainer):
    """transformers Trainer with the unlikelihood loss on batches of (prompt, chosen, rejected) token ids."""

    def __init__(self, *args, alpha: float, pad_id: int, **kwargs):
        super().__init__(*args, data_collator=self._collate, **kwargs)
        self.alpha, self.pad_id = alpha, pad_id
        self._logged: dict[str, list[float]] = {}
        # The loss needs the log-probs of the completion tokens only: the model's forward returns them (projected
        # and normalised at the scored positions alone, pipelines/lm_head.py) instead of (B, T, V) logits. Patched
        # on the model itself, so a DDP wrapper's forward still goes through it.
        use_dense_logits(self.model, 1.0, ("log_probs",))

    def _collate(self, rows: list[dict]) -> dict:
        seqs = [r["prompt_ids"] + r["chosen_ids"] for r in rows] + [r["prompt_ids"] + r["rejected_ids"] for r in rows]
        labels = [completion_labels(r["prompt_ids"], r["chosen_ids"]) for r in rows] + \
                 [completion_labels(r["prompt_ids"], r["rejected_ids"]) for r in rows]
        ids, mask = right_pad(seqs, self.pad_id)
        padded = torch.full_like(ids, IGNORE)
        for i, lab in enumerate(labels):
            padded[i, :len(lab)] = torch.tensor(lab)
        negative = torch.arange(len(seqs)) >= len(rows)
        return {"input_ids": ids, "attention_mask": mask, "labels": padded, "negative": negative}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=inputs["labels"],
                    fused_lm_head=True)
        loss, stats = unlikelihood_from_logps(out.log_probs, out.label_mask, inputs["negative"], self.alpha)
        for k, v in stats.items():
            self._logged.setdefault(k, []).append(float(v))
        return (loss, out.log_probs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        # Averages of the loss terms since the last log record, next to Trainer's loss.
        logs.update({k: sum(v) / len(v) for k, v in self._logged.items() if v})
        self._logged = {}
        super().log(logs, *args, **kwargs)


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


def run_unlikelihood(cfg: DictConfig, out_dir: Path) -> dict:
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)
    pairs = load_pairs(cfg.paths.pairs)
    args = TrainingArguments(remove_unused_columns=False, **training_args(cfg, out_dir))
    trainer = UnlikelihoodTrainer(model=offline_policy(sft_dir), args=args, train_dataset=pairs,
                                  alpha=float(cfg.method.alpha), pad_id=tokenizer.pad_token_id,
                                  callbacks=_callbacks(cfg, out_dir, tokenizer))
    return {**train_and_save(trainer, tokenizer, out_dir), "n_pairs": len(pairs)}
