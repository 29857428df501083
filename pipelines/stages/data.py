"""Data stage: read the task's corpus, split it into train / validation / test, write data/."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from pipelines.infra.io import UserError, write_jsonl
from pipelines.tasks.data import read_embedded, read_hf, read_local, split_docs, split_validation

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    from pipelines.tasks import prompt_response
    if prompt_response.is_text_task(cfg):  # summarization, dialogue: prompts, answers and pairs from the data
        return prompt_response.run_data(cfg, out_dir)
    d = cfg.task.data
    if d.source == "embedded":
        train, test = split_docs(read_embedded(cfg.paths.cache, list(d.embedded_corpora)), d.test_fraction,
                                 cfg.data_seed, d.max_docs)
    elif d.source == "local":
        train, test = split_docs(read_local(d.local_files), d.test_fraction, cfg.data_seed, d.max_docs)
    elif d.source == "hf":
        splits = read_hf(d.hf_id)
        if "test" in splits:  # keep the dataset's own split (IMDb: 25k/25k)
            train, test = splits["train"], splits["test"]
            if d.max_docs:
                train, test = train[:d.max_docs], test[:d.max_docs]
        else:
            train, test = split_docs(splits["train"], d.test_fraction, cfg.data_seed, d.max_docs)
    else:
        raise UserError(f"task.data.source: unknown source '{d.source}' (embedded, hf or local)")
    validation, test = split_validation(test, d.get("validation_fraction") or 0.0, cfg.data_seed)
    if len(train) < 2 or len(test) < 1:
        raise UserError(f"too few documents after the split: {len(train)} train, {len(test)} test")
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "validation.jsonl", validation)
    write_jsonl(out_dir / "test.jsonl", test)
    stats = {"n_train": len(train), "n_validation": len(validation), "n_test": len(test),
             "train_by_corpus": dict(Counter(x["corpus"] for x in train)),
             "test_by_corpus": dict(Counter(x["corpus"] for x in test)),
             "train_positive_fraction": round(sum(x["label"] for x in train) / len(train), 4)}
    log.info("data: %s", stats)
    return stats
