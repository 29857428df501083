"""The learned reward model r_phi as a scorer on token ids (read by PPO, RLOO and Best-of-N)."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoModelForSequenceClassification

from pipelines.infra.cost_meter import meter
from pipelines.infra.device import inference_autocast, pick_device
from pipelines.lm.models import attn_kwargs
from pipelines.lm.sampling import right_pad


class RewardModelScorer:
    """r_phi(x, y) on token ids: the scalar head at the last non-pad token, exactly as RewardTrainer trained it."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 64):
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), use_safetensors=True, trust_remote_code=False, **attn_kwargs()).to(device).eval()
        meter(self.model)
        self.pad_id = self.model.config.pad_token_id
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, prompts: list[list[int]], completions: list[list[int]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            # Right padding with the pad id, as the RewardTrainer collator pads.
            ids, mask = right_pad([p + c for p, c in zip(prompts[start:start + self.batch_size],
                                                         completions[start:start + self.batch_size])],
                                  self.pad_id, self.device)
            with inference_autocast(torch.device(self.device)):
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            out += logits[:, 0].float().tolist()
        return out


def load_scorer(cfg: DictConfig, device=None) -> RewardModelScorer:
    return RewardModelScorer(Path(cfg.paths.reward_model) / "model", device or pick_device(cfg.device),
                             cfg.task.generation.batch_size)
