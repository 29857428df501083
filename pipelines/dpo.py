"""DPO, IPO and cDPO (Rafailov et al. 2023, Eq. 7): TRL's DPOTrainer from the SFT policy, reference = the SFT policy.

TRL re-tokenises text pairs (appending EOS to completions that were cut at the length limit, and letting BPE
merge across the prompt/completion boundary), which would train on sequences that were never sampled. The pairs
stage keeps the sampled token ids, and `SampledTokenDPOTrainer` hands them to TRL's collator unchanged.
Reads sft/policy, pairs/. Writes snapshots/step*/ (policies for the frontier), policy/, metrics.jsonl."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from trl import DPOConfig, DPOTrainer

from pipelines.infra.tracking import JsonlMetrics
from pipelines.lm.lm_head import apply_to_trainer
from pipelines.lm.models import load_policy, load_tokenizer
from pipelines.lm.trainer import (
    ID_COLUMNS,
    REF_COLUMNS,
    SnapshotPolicy,
    check_offline,
    load_pairs,
    train_and_save,
    training_args,
)

log = logging.getLogger(__name__)


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


def check(cfg: DictConfig, need) -> None:
    """DPO, IPO (beta is tau) and cDPO (label_smoothing is the flip rate epsilon)."""
    m = cfg.method
    check_offline(m, need)
    need(m.beta > 0, f"method.beta must be > 0, got {m.beta}")
    if m.get("label_smoothing") is not None:
        need(0 <= m.label_smoothing < 0.5, f"method.label_smoothing must be in [0, 0.5), got {m.label_smoothing}")
