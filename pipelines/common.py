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


def download(url: str, dest: Path, what: str, hint: str, sha256: str | None = None) -> None:
    """Fetch `url` into `dest` unless it is there (atomically: an interrupted download leaves nothing). A failed
    download is a UserError naming `what` and the way round it (`hint`); with `sha256`, so is a different file."""
    import hashlib
    import logging
    import urllib.request

    dest = Path(dest)
    if dest.exists():
        return
    logging.getLogger(__name__).info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            blob = resp.read()
    except OSError as err:
        raise UserError(f"could not download {what} ({err}).\n  {hint}") from err
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise UserError(f"the download of {url} has an unexpected checksum; try again later")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(dest)


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


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively: x86 with AVX512-BF16 or AMX-BF16, ARM with the BF16 extension
    (Linux /proc/cpuinfo flags; False where that file is missing)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


PRECISIONS = ("fp32", "bf16")


def use_bf16(precision: str, device: torch.device | str | None = None) -> bool:
    """Whether training runs in bf16 mixed precision (fp32 master weights, bf16 autocast) on `device` (default: the
    one Trainer picks). precision=bf16 asks for it where the hardware does bf16 natively: CUDA GPUs with bf16
    (Ampere and newer) and CPUs with AVX512-BF16/AMX (train steps of the embedded model 1.45-1.65x faster on
    this project's CI CPUs, results/bench); elsewhere fp32, since emulated bf16 is slower than fp32. fp32: never.
    TRL's configs default bf16 on, so every stage passes this explicitly."""
    if precision not in PRECISIONS:
        raise UserError(f"model.precision must be fp32 or bf16, got '{precision}'")
    if precision == "fp32":
        return False
    device = pick_device("auto") if device is None else torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def trainer_precision(precision: str) -> dict:
    """Trainer arguments for `precision`: bf16, and use_cpu where bf16 runs on a machine without CUDA (transformers
    refuses bf16 without a GPU unless told it is training on the CPU)."""
    bf16 = use_bf16(precision)
    return {"bf16": bf16, **({"use_cpu": True} if bf16 and not torch.cuda.is_available() else {})}


def hub_hint(name: str, err: Exception) -> UserError:
    """The error to raise when a model or dataset named by a Hub id cannot be loaded."""
    return UserError(
        f"could not load '{name}' ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).\n"
        "Paper-scale presets read models and datasets from the Hugging Face Hub, which this machine cannot reach. "
        "Run on a machine with Hub access, or point the config at a local copy (a folder made with "
        "save_pretrained / local data files), or use the embedded default (make reproduce-sentiment).")
