"""Ground-truth reward r*(x, y) = p(positive | x + y): one interface, two implementations.

Embedded: `TfidfLogReg`, a TF-IDF (unigrams + bigrams) + logistic-regression classifier trained here on the
labelled train documents, in torch, saved as safetensors + a JSON vocabulary (no pickle). Two choices keep it
from being trivially gameable: function words (and, the, of ...) are not features, so filler cannot buy reward
(a first version's top positive feature was "and"), and the TF-IDF vector is L2-normalised, so sheer length or
repetition cannot either.
Paper: `HFClassifierReward`, a pretrained sequence classifier (siebert/sentiment-roberta-large-english).
The sentiment task's reward stage (`run`) trains (embedded) or checks (paper) it; `load` reads what it wrote.
"""
from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from pathlib import Path
from typing import Protocol

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from pipelines.infra.device import pick_device
from pipelines.infra.io import UserError, atomic_write_json, hub_hint
from pipelines.tasks.data import load_split

log = logging.getLogger(__name__)

# Function words carry no sentiment but differ in frequency between positive and negative reviews, which is
# exactly what a policy exploits. Negations and intensifiers (not, no, never, very, too...) stay as features.
STOPWORDS = frozenset("""
a an the and or of at by for with about into through to from in on as
i me my we our you your he him his she her it its they them their this that these those who whom which what
is are was were be been being am have has had having do does did
it's 's s t one film movie
""".split())
TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class Reward(Protocol):
    def __call__(self, texts: list[str]) -> list[float]:
        """p(positive) in [0, 1] for each text."""


def features(text: str, stopwords: frozenset = STOPWORDS) -> list[str]:
    """Unigrams and bigrams over the content words of `text` (lower-cased, punctuation and function words dropped)."""
    words = [w for w in TOKEN_RE.findall(text.lower()) if w not in stopwords]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class TfidfLogReg:
    """p(positive | text) = sigmoid(w . tfidf(text) + b), tfidf = L2-normalised (1 + log tf) * idf."""

    def __init__(self, vocab: dict[str, int], idf: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 stopwords: frozenset = STOPWORDS):
        self.vocab, self.idf, self.weight, self.bias, self.stopwords = vocab, idf, weight, bias, stopwords
        self._idf = idf.tolist()  # plain floats for the per-feature loop in transform()

    def transform(self, texts: list[str]) -> torch.Tensor:
        """Sparse (len(texts), n_features) matrix of L2-normalised TF-IDF rows."""
        rows, cols, vals = [], [], []
        for i, text in enumerate(texts):
            counts = Counter(f for f in features(text, self.stopwords) if f in self.vocab)
            row = [(self.vocab[f], (1.0 + math.log(c)) * self._idf[self.vocab[f]]) for f, c in counts.items()]
            norm = math.sqrt(sum(v * v for _, v in row)) or 1.0
            for j, v in row:
                rows.append(i)
                cols.append(j)
                vals.append(v / norm)
        return torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1),
                                       torch.tensor(vals, dtype=torch.float32), (len(texts), len(self.vocab)),
                                       check_invariants=False)

    def logits(self, texts: list[str]) -> torch.Tensor:
        return torch.sparse.mm(self.transform(texts), self.weight[:, None])[:, 0] + self.bias

    def __call__(self, texts: list[str]) -> list[float]:
        out = []
        for start in range(0, len(texts), 512):
            out += torch.sigmoid(self.logits(texts[start:start + 512])).tolist()
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"idf": self.idf, "weight": self.weight, "bias": self.bias.reshape(1)},
                  str(folder / "model.safetensors"))
        atomic_write_json(folder / "vocab.json", self.vocab)

    @classmethod
    def load(cls, folder: Path) -> "TfidfLogReg":
        t = load_file(str(Path(folder) / "model.safetensors"))
        vocab = json.loads((Path(folder) / "vocab.json").read_text())
        return cls(vocab, t["idf"], t["weight"], t["bias"][0])

    @classmethod
    def fit(cls, texts: list[str], labels: list[int], *, min_df: int, max_features: int, l2: float,
            steps: int, stopwords: frozenset = STOPWORDS) -> "TfidfLogReg":
        """stopwords=frozenset() gives plain TF-IDF + LR (kept only as the accuracy baseline: it is gameable)."""
        df = Counter(f for t in texts for f in set(features(t, stopwords)))
        kept = sorted((f for f, c in df.items() if c >= min_df), key=lambda f: (-df[f], f))[:max_features]
        vocab = {f: i for i, f in enumerate(sorted(kept))}
        n = len(texts)
        idf = torch.tensor([math.log((1 + n) / (1 + df[f])) + 1.0 for f in sorted(kept)])
        x = cls(vocab, idf, torch.zeros(len(vocab)), torch.zeros(()), stopwords).transform(texts).coalesce()
        y = torch.tensor(labels, dtype=torch.float32)
        w = torch.zeros(len(vocab), requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        # Full-batch L-BFGS on the L2-regularised logistic loss: convex, so the result does not depend on a seed.
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            logits = torch.sparse.mm(x, w[:, None])[:, 0] + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + l2 * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return cls(vocab, idf, w.detach(), b.detach(), stopwords)


def accuracy_by_corpus(reward: Reward, docs: list[dict], prefix: str) -> dict[str, float]:
    """{prefix/corpus: accuracy} for each corpus of `docs`."""
    return {f"{prefix}/{c}": round(accuracy(reward, [d for d in docs if d["corpus"] == c]), 4)
            for c in sorted({d["corpus"] for d in docs})}


def accuracy(reward: Reward, docs: list[dict]) -> float:
    preds = reward([d["text"] for d in docs])
    return sum((p > 0.5) == bool(d["label"]) for p, d in zip(preds, docs)) / max(1, len(docs))


class HFClassifierReward:
    """p(label == positive_label) from a pretrained sequence classifier with its own tokenizer."""

    def __init__(self, name: str, positive_label: str, device: torch.device, batch_size: int = 32):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from pipelines.infra.hub import loaded, revision_of

        revision = revision_of(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False, revision=revision)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                name, use_safetensors=True, trust_remote_code=False, revision=revision).to(device).eval()
        except (OSError, ValueError) as err:
            raise hub_hint(name, err, revision) from None
        loaded(name, getattr(self.model.config, "_commit_hash", None))
        from pipelines.infra.cost_meter import meter
        meter(self.model)
        labels = {v.upper(): int(k) for k, v in self.model.config.id2label.items()}
        if positive_label.upper() not in labels:
            raise UserError(f"task.reward.positive_label '{positive_label}' is not a label of {name} "
                            f"(its labels: {sorted(labels)})")
        self.positive = labels[positive_label.upper()]
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> list[float]:
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=True, max_length=min(512, self.tokenizer.model_max_length)
                                 ).to(self.device)
            out += torch.softmax(self.model(**enc).logits.float(), -1)[:, self.positive].tolist()
        return out


def load(cfg: DictConfig) -> Reward:
    """The sentiment task's r* that the reward stage prepared (its folder is paths.reward)."""
    r = cfg.task.reward
    if r.kind == "tfidf_logreg":
        return TfidfLogReg.load(Path(cfg.paths.reward))
    if r.kind == "hf_classifier":
        return HFClassifierReward(r.hf_id, r.positive_label, pick_device(cfg.device))
    raise UserError(f"task.reward.kind: unknown kind '{r.kind}' (tfidf_logreg or hf_classifier)")


def load_reward(cfg: DictConfig) -> Reward:
    """The r* of cfg's task, whatever its format: sentiment's classifier (`load`) or the prompt-response tasks'
    relevance r* (pipelines/tasks/relevance.py). The stages read it as task_of(cfg).load_reward
    (pipelines/tasks/registry.py); this entry stays for the callers that import it from here."""
    from pipelines.tasks import prompt_response, relevance
    return (relevance.load if prompt_response.is_text_task(cfg) else load)(cfg)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """The reward stage of the sentiment task: train (embedded) or check (paper) r*, and record its held-out
    accuracy per corpus."""
    r = cfg.task.reward
    train, test = load_split(cfg.paths.data, "train"), load_split(cfg.paths.data, "test")
    metrics: dict = {"kind": r.kind}
    if r.kind == "tfidf_logreg":
        # Choose the L2 strength on a validation tenth of the train documents, then refit on all of them.
        cut = max(1, len(train) // 10)
        fit_docs, val_docs = train[cut:], train[:cut]
        scores = {}
        for l2 in r.l2_grid:
            model = TfidfLogReg.fit([d["text"] for d in fit_docs], [d["label"] for d in fit_docs],
                                    min_df=r.min_df, max_features=r.max_features, l2=l2, steps=r.steps)
            scores[l2] = accuracy(model, val_docs)
            log.info("r*: l2=%g validation accuracy %.4f", l2, scores[l2])
        best = max(scores, key=lambda k: (scores[k], -k))
        model = TfidfLogReg.fit([d["text"] for d in train], [d["label"] for d in train], min_df=r.min_df,
                                max_features=r.max_features, l2=best, steps=r.steps)
        model.save(out_dir)
        metrics.update(l2=best, validation_accuracy=scores, n_features=len(model.vocab))
        top = torch.topk(model.weight, 10)
        bottom = torch.topk(-model.weight, 10)
        inv = {i: f for f, i in model.vocab.items()}
        metrics["top_positive_features"] = [inv[i] for i in top.indices.tolist()]
        metrics["top_negative_features"] = [inv[i] for i in bottom.indices.tolist()]
        # The same classifier with function words kept: the usual TF-IDF + LR, for the accuracy record only.
        plain = TfidfLogReg.fit([d["text"] for d in train], [d["label"] for d in train], min_df=r.min_df,
                                max_features=r.max_features, l2=best, steps=r.steps, stopwords=frozenset())
        metrics.update(accuracy_by_corpus(plain, test, "plain_tfidf_test_accuracy"))
        filler = "and the and of and a and"
        metrics["filler_reward"] = {"''": round(model([""])[0], 4), filler: round(model([filler])[0], 4),
                                    "plain tfidf, filler": round(plain([filler])[0], 4)}
    else:
        model = load(cfg)
        test = test[:1000]  # a large classifier: a sample of the test set is enough for the record
    metrics.update(accuracy_by_corpus(model, test, "test_accuracy"))
    metrics["test_accuracy"] = round(accuracy(model, test), 4)
    log.info("r*: %s", {k: v for k, v in metrics.items() if "accuracy" in k})
    return metrics
