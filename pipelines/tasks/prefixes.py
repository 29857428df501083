"""Review prefixes as prompts (paper: 2-8 tokens of an IMDb review). Train prefixes feed the preference pairs,
test prefixes the evaluation; both are a deterministic function of the documents, tokenizer and seed, so every
method is evaluated on the same held-out prefixes."""
from __future__ import annotations

import random

from omegaconf import DictConfig

from pipelines.infra.io import UserError
from pipelines.tasks.data import load_split


def make_prefixes(docs: list[dict], tokenizer, n: int, min_tokens: int, max_tokens: int, seed: int,
                  split: str) -> list[dict]:
    """The first k tokens (k uniform in [min_tokens, max_tokens]) of the first n usable documents, in a seeded
    order. A document must be longer than its prefix. Returns dicts with prompt_ids, doc (index), label."""
    order = list(range(len(docs)))
    random.Random(f"{seed}-{split}-order").shuffle(order)
    rng = random.Random(f"{seed}-{split}-length")
    out = []
    for i in order:
        if len(out) == n:
            break
        k = rng.randint(min_tokens, max_tokens)
        ids = tokenizer(docs[i]["text"])["input_ids"]
        if len(ids) > k:
            out.append({"prompt_ids": ids[:k], "doc": i, "label": docs[i]["label"]})
    if len(out) < n:
        raise UserError(f"asked for {n} {split} prompts but only {len(out)} {split} documents are long enough; "
                        f"lower the prompt count or add data")
    return out


def eval_prompts(cfg: DictConfig, tokenizer, split: str = "test", n: int | None = None) -> list[list[int]]:
    """The held-out prefixes of `split` (test: task.eval.n_prompts of them; validation: n_validation_prompts), the
    same for every method and seed (drawn with data_seed)."""
    e = cfg.task.eval
    n = n or (e.n_prompts if split == "test" else e.get("n_validation_prompts") or 0)
    if n == 0:
        return []
    rows = make_prefixes(load_split(cfg.paths.data, split), tokenizer, n, cfg.task.prompt.min_tokens,
                         cfg.task.prompt.max_tokens, cfg.data_seed, split)
    return [x["prompt_ids"] for x in rows]


def test_prompts(cfg: DictConfig, tokenizer, n: int | None = None) -> list[list[int]]:
    """The held-out test prefixes (the first n of them)."""
    return eval_prompts(cfg, tokenizer, "test", n)
