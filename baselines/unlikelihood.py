"""Unlikelihood (paper baseline): maximise the chosen completion's likelihood and push the rejected one's down
(alpha weights the second term)."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import Trainer, TrainingArguments

from baselines.preferred_ft import _callbacks, completion_labels, offline_policy
from pipelines.lm.lm_head import use_dense_logits
from pipelines.lm.models import load_tokenizer
from pipelines.lm.sampling import right_pad
from pipelines.lm.trainer import check_offline, load_pairs, train_and_save, training_args
from pipelines.numerics.losses import IGNORE, unlikelihood_from_logps


class UnlikelihoodTrainer(Trainer):
    """transformers Trainer with the unlikelihood loss on batches of (prompt, chosen, rejected) token ids."""

    def __init__(self, *args, alpha: float, pad_id: int, **kwargs):
        super().__init__(*args, data_collator=self._collate, **kwargs)
        self.alpha, self.pad_id = alpha, pad_id
        self._logged: dict[str, list[float]] = {}
        # The loss needs the log-probs of the completion tokens only: the model's forward returns them (projected
        # and normalised at the scored positions alone, pipelines/lm/lm_head.py) instead of (B, T, V) logits. Patched
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


def run_unlikelihood(cfg: DictConfig, out_dir: Path) -> dict:
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)
    pairs = load_pairs(cfg.paths.pairs)
    args = TrainingArguments(remove_unused_columns=False, **training_args(cfg, out_dir))
    trainer = UnlikelihoodTrainer(model=offline_policy(sft_dir), args=args, train_dataset=pairs,
                                  alpha=float(cfg.method.alpha), pad_id=tokenizer.pad_token_id,
                                  callbacks=_callbacks(cfg, out_dir, tokenizer))
    return {**train_and_save(trainer, tokenizer, out_dir), "n_pairs": len(pairs)}


def check(cfg: DictConfig, need) -> None:
    check_offline(cfg.method, need)
    need(cfg.method.alpha >= 0, f"method.alpha must be >= 0, got {cfg.method.alpha}")
