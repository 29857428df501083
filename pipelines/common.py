"""Small shared helpers: user-facing errors, atomic file writes, provenance, device and precision."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch


class UserError(Exception):
    """A problem the user can fix (bad config, bad data, missing download). Printed without a traceback."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file + rename, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def git_sha() -> str:
    """The commit the code ran at, with `-dirty` when the work tree has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        # results/ holds outputs that a run rewrites, not code: changes there do not make the code dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=here.parent, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    import datasets
    import transformers
    import trl

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl.__version__, "datasets": datasets.__version__}


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_bf16(precision: str) -> bool:
    """bf16 only where asked for and supported: TRL turns it on by default, which is wrong on CPU."""
    return precision == "bf16" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def hub_hint(name: str, err: Exception) -> UserError:
    """The error to raise when a model or dataset named by a Hub id cannot be loaded."""
    return UserError(
        f"could not load '{name}' ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).\n"
        "Paper-scale presets read models and datasets from the Hugging Face Hub, which this machine cannot reach. "
        "Run on a machine with Hub access, or point the config at a local copy (a folder made with "
        "save_pretrained / local data files), or use the embedded default (make reproduce-sentiment).")
