"""The ground-truth reward r* of the prompt-response tasks' offline smoke runs: how well an answer fits its prompt.

The smoke data's preference pairs are "the real answer over another prompt's answer" (pipelines/tasks/embedded_text.py),
so their r*(x, y) measures exactly that, without a language model, and `judge=oracle` judges those runs for free:

  tfidf_cosine      cosine(tfidf(x), tfidf(y)) over lower-cased word types with binary term frequencies
                    (repeating a word earns nothing) and idf fitted on the training prompts and answers.
                    Summaries share content words with their document: on the held-out Debian descriptions it puts
                    the real synopsis above a mismatched one in 99 % of pairs.
  word_pair_logreg  logistic regression on hashed (prompt word, answer word) pairs, trained to tell each real
                    (message, reply) of the training split from a mismatched one. Replies share few words with their
                    message (TF-IDF cosine: 54 % on chitchat), but word pairs ("hungry" -> "eat") carry the link:
                    ~69 % on the held-out chitchat conversations.

Both are gameable the way the sentiment task's TF-IDF r* is (an answer that copies the prompt's rare words scores
high); they check the pipeline, they do not judge the quality of a summary or a reply. The LLM judges do
(conf/judge/). The reward stage fits r* and records its held-out pair accuracy.
"""
from __future__ import annotations

import json
import logging
import math
import random
import re
import zlib
from collections import Counter
from pathlib import Path

import torch
from omegaconf import DictConfig

from pipelines.infra.io import UserError, atomic_write_json, read_jsonl

log = logging.getLogger(__name__)
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
KINDS = ("tfidf_cosine", "word_pair_logreg")


def words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


class TfidfCosine:
    pairwise = True  # scores (prompt, answer) pairs, not whole texts

    def __init__(self, idf: dict[str, float], default_idf: float):
        self.idf, self.default_idf = idf, default_idf

    @classmethod
    def fit(cls, documents: list[str]) -> "TfidfCosine":
        df = Counter(w for doc in documents for w in words(doc))
        n = len(documents)
        # Smoothed idf; an unseen word counts as rare as a word seen once.
        return cls({w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}, math.log((1 + n) / 2) + 1)

    def _vector(self, text: str) -> dict[str, float]:
        return {w: self.idf.get(w, self.default_idf) for w in words(text)}

    def score(self, prompt: str, answer: str) -> float:
        x, y = self._vector(prompt), self._vector(answer)
        if not x or not y:
            return 0.0
        dot = sum(v * y[w] for w, v in x.items() if w in y)
        return dot / math.sqrt(sum(v * v for v in x.values()) * sum(v * v for v in y.values()))

    def __call__(self, pairs: list[tuple[str, str]]) -> list[float]:
        return [self.score(p, a) for p, a in pairs]

    def save(self, folder: Path) -> None:
        atomic_write_json(Path(folder) / "tfidf_cosine.json", {"idf": self.idf, "default_idf": self.default_idf})

    @classmethod
    def load(cls, folder: Path) -> "TfidfCosine":
        state = json.loads((Path(folder) / "tfidf_cosine.json").read_text())
        return cls(state["idf"], state["default_idf"])


class WordPairLogReg:
    pairwise = True

    def __init__(self, weight: torch.Tensor, bias: float):
        self.weight, self.bias = weight, bias

    @staticmethod
    def features(prompt: str, answer: str, buckets: int) -> list[int]:
        return [zlib.crc32(f"{a}|{b}".encode()) % buckets for a in words(prompt) for b in words(answer)]

    @classmethod
    def fit(cls, pairs: list[dict], buckets: int, epochs: int, lr: float, seed: int) -> "WordPairLogReg":
        """pairs: {prompt, chosen, rejected}; chosen is the real answer (label 1), rejected a mismatched one (0)."""
        examples = [(cls.features(p["prompt"], p[side], buckets), float(side == "chosen"))
                    for p in pairs for side in ("chosen", "rejected")]
        emb = torch.nn.EmbeddingBag(buckets, 1, mode="sum")
        torch.nn.init.zeros_(emb.weight)
        bias = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adagrad([emb.weight, bias], lr=lr)
        for epoch in range(epochs):
            order = list(range(len(examples)))
            random.Random(f"{seed}-{epoch}").shuffle(order)
            for start in range(0, len(order), 512):
                batch = [examples[i] for i in order[start:start + 512]]
                flat, offsets = _bags([f for f, _ in batch])
                logits = emb(flat, offsets).squeeze(1) + bias
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, torch.tensor([y for _, y in batch]))
                opt.zero_grad()
                loss.backward()
                opt.step()
        return cls(emb.weight.detach().squeeze(1).clone(), float(bias.detach()))

    def __call__(self, pairs: list[tuple[str, str]]) -> list[float]:
        out = []
        for prompt, answer in pairs:
            f = self.features(prompt, answer, len(self.weight))
            logit = float(self.weight[f].sum()) + self.bias if f else self.bias
            out.append(1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, logit)))))
        return out

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file
        save_file({"weight": self.weight.contiguous(), "bias": torch.tensor([self.bias])},
                  str(Path(folder) / "word_pair_logreg.safetensors"))

    @classmethod
    def load(cls, folder: Path) -> "WordPairLogReg":
        from safetensors.torch import load_file
        state = load_file(str(Path(folder) / "word_pair_logreg.safetensors"))
        return cls(state["weight"], float(state["bias"]))


def _bags(feature_lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    flat, offsets = [], []
    for f in feature_lists:
        offsets.append(len(flat))
        flat += f
    return torch.tensor(flat, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def pair_accuracy(model, pairs: list[dict]) -> float:
    """Fraction of pairs whose chosen answer scores strictly higher (ties count as misses)."""
    from pipelines.tasks.prompt_response import judge_prompt

    scores = model([(judge_prompt(p["prompt"]), p[s]) for p in pairs for s in ("chosen", "rejected")])
    return sum(a > b for a, b in zip(scores[::2], scores[1::2])) / max(1, len(pairs))


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Reward stage of the prompt-response tasks: fit r* on the training split, record its held-out accuracy on
    real-vs-mismatched pairs of the test split."""
    from pipelines.tasks.embedded_text import mismatched_pairs
    from pipelines.tasks.prompt_response import judge_prompt

    r = cfg.task.reward
    data = Path(cfg.paths.data)
    train = read_jsonl(data / "train.jsonl")
    test = [{"prompt": x["prompt"], "completion": x["reference"]} for x in read_jsonl(data / "test.jsonl")]
    if r.kind == "tfidf_cosine":
        model = TfidfCosine.fit([judge_prompt(x["prompt"]) + " " + x["completion"] for x in train])
    elif r.kind == "word_pair_logreg":
        pairs = mismatched_pairs(train, cfg.data_seed)
        model = WordPairLogReg.fit([{**p, "prompt": judge_prompt(p["prompt"])} for p in pairs], r.buckets,
                                   r.epochs, r.learning_rate, cfg.data_seed)
    else:
        raise UserError(f"task.reward.kind: unknown kind '{r.kind}' for task '{cfg.task.name}' ({KINDS})")
    model.save(out_dir)
    held_out = mismatched_pairs(test, cfg.data_seed + 1)
    metrics = {"kind": r.kind, "test_pair_accuracy": round(pair_accuracy(model, held_out), 4),
               "n_test_pairs": len(held_out)}
    log.info("r*: %s", metrics)
    return metrics


def load(cfg: DictConfig):
    folder = Path(cfg.paths.reward)
    kind = cfg.task.reward.kind
    if kind == "tfidf_cosine":
        return TfidfCosine.load(folder)
    if kind == "word_pair_logreg":
        return WordPairLogReg.load(folder)
    raise UserError(f"task.reward.kind: unknown kind '{kind}' for task '{cfg.task.name}' ({KINDS})")
