"""Per-token log-probs from logits: the one gather every scorer of completions uses (sampling's sequence log-probs,
hence the evaluator's KL and the pairs' reference log-probs; PPO's rollout and update; the dense LM head of TRL's
trainers; the unlikelihood loss), and the entropy of the next-token distribution.

Shapes: logits (..., V) scoring the token at the same index of `tokens` (...): the caller has already aligned them
(logits of position t-1 for token t, or the rows of the states that emit each token). The log-softmax is taken in
fp32 whatever the logits' dtype (bf16 under autocast), so log-probs of one sequence are comparable across calls."""
from __future__ import annotations

import torch


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None, *,
                    full: bool = False):
    """log softmax(logits)[token] at every position, float32, with gradient where the logits have it.

    logits (..., V); tokens (...) int64; mask (...) bool, True = a real token: where it is False the token id may be
    anything (-100, a pad id) and the result is 0. With full=True, also the whole log-distribution (..., V) (for
    statistics of it: `entropy`). The arithmetic is exactly log_softmax(logits.float(), -1) then a gather."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    if mask is not None:
        tokens = tokens.masked_fill(~mask, 0)
    logps = log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if mask is not None:
        logps = logps.masked_fill(~mask, 0.0)
    return (logps, log_p) if full else logps


def entropy(log_p: torch.Tensor) -> torch.Tensor:
    """-sum_v p_v log p_v over the last dimension. The product and the sum as one batched matrix product: on CPU
    2.6x faster than `(p * log_p).sum(-1)` for 2,368 x 2,048 log-probs (measured here, 1 thread)."""
    flat = log_p.float().reshape(-1, 1, log_p.shape[-1])
    with torch.autocast(log_p.device.type, enabled=False):  # bmm is on autocast's bf16 list: keep it fp32
        return -torch.bmm(flat.exp(), flat.transpose(1, 2)).reshape(log_p.shape[:-1])
