"""PPO's networks and what they compute on a rollout batch: the value model, the packed batch, per-token log-probs
and values of the completion tokens (baselines/ppo.py runs the algorithm on them)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForSequenceClassification

from pipelines.infra.cost_meter import meter
from pipelines.infra.io import UserError
from pipelines.lm.models import attn_kwargs
from pipelines.lm.sampling import right_pad
from pipelines.numerics.logprobs import entropy, gather_logprobs


class ValueModel(torch.nn.Module):
    """V(s_t) for every position: a transformer trunk + a linear head. From the SFT policy (`load`): the head is
    zero-init, so the first value estimates are 0 and the first advantages are the returns themselves. From the
    reward model (`from_reward_model`, N+): r_phi's trunk and scalar head, so V(s_t) starts as r_phi read at t."""

    def __init__(self, trunk: torch.nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = torch.nn.Linear(trunk.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    @classmethod
    def load(cls, folder: str | Path) -> "ValueModel":
        """From a causal-LM folder (the SFT policy: fresh head) or a folder saved by `save` (head restored)."""
        trunk = AutoModel.from_pretrained(str(folder), use_safetensors=True, trust_remote_code=False, **attn_kwargs())
        model = cls(trunk)
        head = Path(folder) / "value_head.safetensors"
        if head.exists():
            model.head.load_state_dict(load_file(str(head)))
        return meter(model.eval())

    @classmethod
    def from_reward_model(cls, folder: str | Path) -> "ValueModel":
        """From a saved sequence classifier with one label (r_phi): its trunk and its scalar head (`score`, no bias
        in GPT-2: the head's bias starts at 0). The trunk's token embedding may have rows the policy never emits
        (r_phi's added pad token); they are kept and never read."""
        clf = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True,
                                                                 trust_remote_code=False, **attn_kwargs())
        score = getattr(clf, "score", None)
        if not isinstance(score, torch.nn.Linear) or score.out_features != 1:
            raise UserError(f"value_init=reward_model: {folder} has no scalar `score` head (Linear(hidden, 1))")
        model = cls(clf.base_model)
        with torch.no_grad():
            model.head.weight.copy_(score.weight)
            if score.bias is not None:
                model.head.bias.copy_(score.bias)
        return meter(model.eval())

    @torch.no_grad()
    def normalise_head(self, mean: float, std: float) -> None:
        """head <- (head - mean) / std: an r_phi head then predicts the normalised score PPO's returns are made of."""
        self.head.weight.div_(std)
        self.head.bias.sub_(mean).div_(std)

    def save(self, folder: Path, state: dict | None = None) -> None:
        """Trunk (a transformers folder) and head; from `state`, the whole model's state dict, when given (gathered
        from the shards of a sharded run), else from the weights held here."""
        state = self.state_dict() if state is None else state

        def part(prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        self.trunk.save_pretrained(str(folder), safe_serialization=True, state_dict=part("trunk."))
        save_file({k: v.contiguous() for k, v in part("head.").items()}, str(folder / "value_head.safetensors"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        with torch.autocast(hidden.device.type, enabled=False):  # the scalar head in fp32 under mixed precision
            # A copy, not a view: FSDP2 hooks the backward of a sharded model's output, and warns on a view.
            return self.head(hidden.float()).squeeze(-1).clone()


def load_value_model(m: DictConfig, cfg: DictConfig, start_dir: Path | None, sft_dir: Path) -> ValueModel:
    """A resumed run's value model, else a fresh one as value_init says (SFT trunk + zero head, or r_phi)."""
    if start_dir:
        return ValueModel.load(start_dir / "value")
    if m.value_init == "reward_model":
        return ValueModel.from_reward_model(Path(cfg.paths.reward_model) / "model")
    return ValueModel.load(sft_dir)


@dataclass
class Batch:
    """A rollout batch, right-padded. ids/attn (B, W): prompt + completion; positions (B, T): index of the state
    that emits completion token t (the previous position); mask (B, T): True = real completion token."""
    ids: torch.Tensor
    attn: torch.Tensor
    positions: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor

    def rows(self, index: torch.Tensor) -> "Batch":
        return Batch(*(t[index] for t in (self.ids, self.attn, self.positions, self.tokens, self.mask)))


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int, device) -> Batch:
    ids, attn = right_pad([p + c for p, c in zip(prompts, completions)], pad_id, device)
    T = max(1, max(len(c) for c in completions))
    positions = torch.zeros((len(prompts), T), dtype=torch.long)
    tokens = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        positions[i, :len(c)] = torch.arange(len(p) - 1, len(p) - 1 + len(c))
        tokens[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, :len(c)] = True
    return Batch(ids, attn, positions.to(device), tokens.to(device), mask.to(device))


def token_logprobs(model, b: Batch, with_entropy: bool = False):
    """log pi(a_t | s_t) of the completion tokens, (B, T) float32, 0 on padding; optionally the per-token entropy
    too. Only the T states that emit a completion token are normalised (not the prompt's), then the one gather of
    pipelines/numerics/logprobs.py."""
    logits = model(input_ids=b.ids, attention_mask=b.attn).logits
    logits = logits.gather(1, b.positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    logps, log_p = gather_logprobs(logits, b.tokens, b.mask, full=True)
    return (logps, entropy(log_p)) if with_entropy else logps


def token_values(value_model: ValueModel, b: Batch) -> torch.Tensor:
    return value_model(b.ids, b.attn).gather(1, b.positions)
