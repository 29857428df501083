"""What the online methods share (PPO, RLOO): the prompt pool and its seeded stream, the scorer of the reward
they optimise, and its normalisation (mean and std of the scores of SFT samples, measured once before training)."""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from pipelines.infra.distributed import Replicas
from pipelines.infra.io import UserError
from pipelines.lm.sampling import batch_seed, sample_completions


def text_scorer(reward, tokenizer):
    """Adapt a text reward (r*: TF-IDF model or a classifier with its own tokenizer) to the scorer interface."""
    def score(prompts: list[list[int]], completions: list[list[int]]) -> list[float]:
        return list(reward(tokenizer.batch_decode([p + c for p, c in zip(prompts, completions)],
                                                  skip_special_tokens=True)))
    return score


def method_scorer(cfg: DictConfig, tokenizer, device):
    """The reward an online method optimises: r_phi (method.reward=learned) or r* (gt), as a scorer on token ids."""
    if cfg.method.reward == "learned":
        from pipelines.lm.scorers import load_scorer
        return load_scorer(cfg, device)
    if cfg.method.reward == "gt":
        from pipelines.tasks.gold_reward import load_reward
        return text_scorer(load_reward(cfg), tokenizer)
    raise UserError(f"method.reward must be 'learned' or 'gt', got '{cfg.method.reward}'")


def train_prefixes(cfg: DictConfig, tokenizer, n: int) -> list[list[int]]:
    """The first n train prompts (token ids): the prompt pool of the online methods. Sentiment: train prefixes;
    prompt-response tasks: the data's train prompts (the task's train_prompts, pipelines/tasks/registry.py)."""
    from pipelines.tasks.registry import task_of
    return task_of(cfg).train_prompts(cfg, tokenizer, n)


def prompt_stream(prompts: list[list[int]], batch_size: int, seed: int, step: int) -> list[list[int]]:
    """Prompts of step `step`: passes over a seeded permutation of the pool, a pure function of (seed, step)."""
    n = len(prompts)
    orders: dict[int, list[int]] = {}  # one permutation per pass touched by this step (one or two)
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(k, n)
        if epoch not in orders:
            gen = torch.Generator().manual_seed(batch_seed(seed, "ppo/prompts", epoch))
            orders[epoch] = torch.randperm(n, generator=gen).tolist()
        out.append(prompts[orders[epoch][i]])
    return out


# Seed tag of the normalisation samples. It names PPO, which measured it first; RLOO draws the very same samples.
SCORE_NORM_TAG = "ppo/score_norm"


def score_normalisation(policy, score, pool: list[list[int]], cfg: DictConfig, eos_id: int, pad_id: int,
                        replicas: Replicas | None = None) -> tuple[float, float]:
    """(mean, std) of the scores of samples of `policy` (the SFT policy, before any update), floored at 1e-6: the
    fixed normalisation (s - mean) / std of PPO and RLOO, so that one KL coefficient means the same for rewards of
    any scale, and both methods of one seed divide by the same numbers.

    The samples: method.score_norm_samples prompts of the pool's seeded stream (seed + 1, so not the first training
    batch), one completion each at the task's generation settings, seed tag SCORE_NORM_TAG. `score(prompts,
    completions)` is the method's reward as it trains on it (PPO: with its missing-EOS penalty). Under `replicas`
    (PPO's data-parallel processes) each process samples its share of the prompts (its own seed tag) and the
    statistics are those of every process's scores; alone, the mean and the unbiased std of one float32 tensor."""
    m, g = cfg.method, cfg.task.generation
    replicas = replicas or Replicas(active=False)
    prompts = replicas.shard(prompt_stream(pool, m.score_norm_samples, cfg.seed + 1, 0))
    tag = SCORE_NORM_TAG if replicas.size == 1 else f"{SCORE_NORM_TAG}/rank{replicas.rank}"
    completions = sample_completions(policy, prompts, max_new_tokens=g.max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                                     batch_size=g.batch_size, seed=cfg.seed, tag=tag, temperature=g.temperature)
    device = next(policy.parameters()).device
    mean, std = replicas.mean_std(torch.as_tensor(score(prompts, completions), dtype=torch.float32, device=device))
    return mean, max(std, 1e-6)
