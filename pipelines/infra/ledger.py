"""The results ledger of a seed sweep: `results/<task>/<preset>/ledger/seed<k>.jsonl`, one line per small file a
finished job or pipeline wrote (done-markers, eval/step*.json, winrates.json; never weights or samples). It is
committed, so a sweep resumes from it on a fresh clone: `restore` writes missing files back into the run folder
(done-markers marked restored, which the stage runner treats as not done), `record` adds a finished job's files.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from omegaconf import DictConfig

from pipelines.infra.io import atomic_write_text

# Small files worth keeping: what the analysis reads, never weights, samples or judge transcripts.
LEDGER_GLOBS = ("done.json", "eval/done.json", "eval/step*.json", "winrate/*/done.json", "winrate/*/winrates.json")

_LEDGER_LOCK = threading.Lock()  # parallel jobs record into the same seed file


def ledger_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.results) / "ledger"


def record(cfg: DictConfig, seed: int, folders: list[Path]) -> int:
    """Add the small files of `folders` (finished stages under the run root) to the seed's ledger. Returns the number
    of new or changed files."""
    run_root = Path(cfg.paths.run_root)
    path = ledger_dir(cfg) / f"seed{seed}.jsonl"
    with _LEDGER_LOCK:
        entries = {e["path"]: e for e in _read(path)}
        changed = 0
        for folder in folders:
            for pattern in LEDGER_GLOBS:
                for f in sorted(Path(folder).glob(pattern)):
                    rel = str(f.relative_to(run_root))
                    text = f.read_text()
                    if rel.endswith("done.json"):
                        text = json.dumps({k: v for k, v in json.loads(text).items() if k != "restored"},
                                          sort_keys=True)
                    if entries.get(rel, {}).get("text") != text:
                        entries[rel] = {"path": rel, "text": text}
                        changed += 1
        if changed:
            atomic_write_text(path, "".join(json.dumps(entries[k], sort_keys=True) + "\n" for k in sorted(entries)))
    return changed


def restore(cfg: DictConfig) -> int:
    """Write every ledger file that is missing from the run folder back into it; done-markers are marked restored
    (the stage runner reruns such a stage when something needs its outputs). Returns the number of files written."""
    run_root = Path(cfg.paths.run_root)
    written = 0
    for path in sorted(ledger_dir(cfg).glob("seed*.jsonl")):
        for e in _read(path):
            target = run_root / e["path"]
            if target.exists():
                continue
            text = e["text"]
            if target.name == "done.json":
                text = json.dumps({**json.loads(text), "restored": True}, indent=2, sort_keys=True) + "\n"
            atomic_write_text(target, text)
            written += 1
    return written


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
