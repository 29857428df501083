"""The numerics of PPO for language models, as pure functions (no models, no state besides the KL controllers).

Shapes: B = rollouts in the batch, T = completion tokens (right-padded). `mask` is (B, T) with True = a real
completion token (the sampled EOS included), False = padding after the end. Token t of a completion is action a_t
taken in state s_t = (prompt, y_<t); per-token log-probs and values are indexed the same way.

References: Ziegler et al. 2019 (KL-shaped reward, adaptive KL controller); Schulman et al. 2016 (GAE) and 2017
(clipped surrogate); Huang et al. 2024, "The N+ implementation details of RLHF with PPO" (score on the last
token, whitening, value clipping); Xu et al. 2024 (EMA reference).
"""
from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the positions where mask is True (over all of them, or along `dim`)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of the masked entries of x (0 when fewer than two)."""
    n = mask.sum()
    if n < 2:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    centred = (x - masked_mean(x, mask)) * mask.to(x.dtype)
    return (centred ** 2).sum() / (n - 1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
           all_sum=None) -> torch.Tensor:
    """(x - mean) / std over the masked entries; padding positions become 0. shift_mean=False keeps the mean
    (used for rewards, whose sign carries meaning). With `all_sum` (a sum over data-parallel processes), the mean
    and variance are those of every process's entries together, so a batch split over processes is whitened as one."""
    if all_sum is None:
        mean, var = masked_mean(x, mask), masked_var(x, mask)
    else:
        m = mask.to(x.dtype)
        total = all_sum(torch.stack([(x * m).sum(), m.sum()]))
        mean = total[0] / total[1].clamp(min=1)
        sq = all_sum(((x - mean) ** 2 * m).sum())
        var = sq / (total[1] - 1) if total[1] >= 2 else torch.zeros((), dtype=x.dtype, device=x.device)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last True position of each row of a right-padded (B, T) mask."""
    return mask.long().sum(1).clamp(min=1) - 1


def kl_shaped_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                      mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards r_t = -kl_coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t)), plus the sequence score on the
    completion's last token (Ziegler et al. 2019, Eq. 2 spread over tokens).

    scores (B,); logprobs, ref_logprobs, mask (B, T). Returns (rewards (B, T), per-token kl (B, T)), zero on padding.
    Summed over t, E[kl] is the sequence KL(pi || pi_ref) that the evaluation reports."""
    m = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * m
    rewards = -kl_coef * kl
    rows = torch.arange(scores.shape[0], device=scores.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16), with V = 0 after the last token.

    rewards, values, mask (B, T). Returns (advantages, returns = advantages + values), both (B, T), 0 on padding.
    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t);  A_t = delta_t + gamma * lam * A_{t+1}."""
    m = mask.to(values.dtype)
    values = values * m
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * m[:, t]
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, (advantages + values) * m


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate (Schulman et al. 2017, Eq. 7), as a loss to minimise, averaged over real tokens.

    All inputs (B, T). Returns (loss, stats) with clipfrac (share of tokens where the clipped term is the active
    one) and approxkl = 0.5 * E[(log ratio)^2] between the current and the rollout policy."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask),
                 "approxkl": 0.5 * masked_mean(log_ratio ** 2, mask)}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_value: float) -> tuple[torch.Tensor, dict]:
    """Clipped value loss 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, +-clip_range_value).

    All inputs (B, T). Returns (loss, stats) with clipfrac (share of tokens where the clipped error is larger)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    err_unclipped = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((err_clipped > err_unclipped).float(), mask)}
    return loss, stats


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate during PPO step `step` (0-based) of a run of `total_steps` steps.

    constant: 1. linear: 1 - step / total_steps, as N+ (Huang et al. 2024) and TRL anneal it (frac = 1 - (update - 1)
    / num_updates with 1-based updates): the first step at the full rate, the last at 1 / total_steps of it, 0 from
    step total_steps on. A pure function of the step, so a resumed run has the rates of an uninterrupted one."""
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return min(1.0, max(0.0, 1.0 - step / total_steps))
    raise ValueError(f"learning-rate schedule must be 'linear' or 'constant', got '{schedule}'")


class FixedKLController:
    """A constant KL coefficient (the beta of the KL-regularised objective)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_samples: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. 2019, Sec. 2.2: a proportional controller that moves the KL coefficient towards a target
    sequence KL. error = clip(KL / target - 1, -0.2, 0.2); coef *= 1 + error * n_samples / horizon."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), float(horizon)

    def update(self, current_kl: float, n_samples: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon


@torch.no_grad()
def ema_update(target: torch.nn.Module, source: torch.nn.Module, decay: float) -> None:
    """target <- decay * target + (1 - decay) * source, parameter by parameter (EMA reference, Xu et al. 2024)."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(decay).add_(s.detach().to(t.dtype), alpha=1.0 - decay)
