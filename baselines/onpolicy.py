"""What the online methods share (PPO, RLOO): the prompt pool and its seeded stream, the scorer of the reward
they optimise."""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from pipelines.infra.io import UserError
from pipelines.lm.sampling import batch_seed
from pipelines.tasks.data import load_split
from pipelines.tasks.prefixes import make_prefixes


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
    """The first n train prefixes (token ids): the prompt pool of the online methods. Prompt-response tasks: the
    first n train prompts of the data (pipelines/text_task.py)."""
    from pipelines.tasks import prompt_response
    if prompt_response.is_text_task(cfg):
        return prompt_response.train_prompts(cfg, tokenizer, n)
    return [x["prompt_ids"] for x in make_prefixes(
        load_split(cfg.paths.data, "train"), tokenizer, n, cfg.task.prompt.min_tokens, cfg.task.prompt.max_tokens,
        cfg.shared_seed, "train")]


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
