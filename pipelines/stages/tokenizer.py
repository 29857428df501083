"""Tokenizer stage. Embedded: byte-level BPE trained on the train documents. Paper: the model's own tokenizer.
Writes a save_pretrained folder that every later stage loads."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipelines.lm.models import load_tokenizer, train_tokenizer
from pipelines.tasks.data import load_split


def run(cfg: DictConfig, out_dir: Path) -> dict:
    m = cfg.model
    train = load_split(cfg.paths.data, "train")
    if m.pretrained:
        tok = load_tokenizer(m.pretrained)
    else:
        tok = train_tokenizer([d["text"] for d in train], m.tokenizer.vocab_size, m.tokenizer.min_frequency)
    tok.save_pretrained(str(out_dir))
    sample = train[0]["text"][:200]
    ids = tok(sample)["input_ids"]
    return {"vocab_size": len(tok), "chars_per_token": round(len(sample) / max(1, len(ids)), 3),
            "roundtrip_ok": tok.decode(ids) == sample}
