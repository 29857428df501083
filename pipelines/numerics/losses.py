"""Pure losses of the offline baselines (golden-tested)."""
from __future__ import annotations

import torch

from pipelines.numerics.logprobs import gather_logprobs

# Label of a position that carries no loss (the prompt, padding): the Trainer convention.
IGNORE = -100


def unlikelihood_loss(logits: torch.Tensor, labels: torch.Tensor, negative: torch.Tensor, alpha: float
                      ) -> tuple[torch.Tensor, dict]:
    """Likelihood on positive sequences plus alpha times unlikelihood on negative ones.

    logits (B, T, V); labels (B, T) with IGNORE where no loss applies; negative (B,) bool: row is a y_l. Each term is
    a mean over its own tokens. Returns (loss, {"nll_chosen", "ul_rejected", "p_rejected"}) for logging."""
    target = labels[:, 1:]
    mask = target != IGNORE
    token_logp = gather_logprobs(logits[:, :-1], target, mask)
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
