"""Stage `reward`: train (or load) the ground-truth reward r* of the task and write reward/."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from pipelines.tasks.data import load_split
from pipelines.tasks.gold_reward import TfidfLogReg, accuracy, accuracy_by_corpus, load_reward

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Train (embedded) or check (paper) r*, and record its held-out accuracy per corpus."""
    from pipelines.tasks import prompt_response, relevance
    if prompt_response.is_text_task(cfg):
        return relevance.run(cfg, out_dir)
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
        model = load_reward(cfg)
        test = test[:1000]  # a large classifier: a sample of the test set is enough for the record
    metrics.update(accuracy_by_corpus(model, test, "test_accuracy"))
    metrics["test_accuracy"] = round(accuracy(model, test), 4)
    log.info("r*: %s", {k: v for k, v in metrics.items() if "accuracy" in k})
    return metrics
