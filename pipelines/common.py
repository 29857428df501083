"""Small shared helpers: user-facing errors, atomic file writes, provenance, device and precision."""
from __future__ import annotations

import functools
import json
import os
import platform
import re
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


# Libraries whose version is recorded beside the core ones when installed (distribution names, read from their
# metadata: nothing is imported).
OPTIONAL_LIBRARIES = ("numpy", "tokenizers", "accelerate", "safetensors", "scikit-learn")


@functools.lru_cache(maxsize=None)
def _versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    import datasets
    import transformers
    import trl

    found = {"python": platform.python_version(), "torch": torch.__version__,
             "transformers": transformers.__version__, "trl": trl.__version__, "datasets": datasets.__version__}
    for name in OPTIONAL_LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return tuple(found.items())


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries the results depend on (the optional ones where installed)."""
    return dict(_versions())


# CPU features that select another floating-point kernel (vector width, fused multiply-add, bf16/fp16 and int8 dot
# products, matrix tiles): two CPUs that differ in these may round differently on the same run. x86 names from
# the `flags` line of /proc/cpuinfo, ARM names from its `Features` line.
SIMD_FLAGS = frozenset({
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "neon", "asimd", "asimdhp", "asimddp", "fphp", "bf16", "i8mm", "sve", "sve2", "sme"})


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux; empty elsewhere)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _torch_build_versions() -> dict[str, str | None]:
    """The oneDNN and MKL versions torch was built with, read from its build summary (None where absent)."""
    try:
        text = torch.__config__.show()
    except Exception:  # noqa: BLE001 - provenance must never stop a run
        return {"onednn": None, "mkl": None}
    onednn = re.search(r"(?:MKL-DNN|oneDNN)\s+v?([0-9][\w.]*)", text)
    mkl = re.search(r"Math Kernel Library Version\s+([0-9][0-9.]*)", text)
    return {"onednn": onednn.group(1) if onednn else None, "mkl": mkl.group(1) if mkl else None}


@functools.lru_cache(maxsize=None)
def _static_environment() -> str:
    """What cannot change within a process, as JSON (so every caller gets its own copy); the thread counts and
    the usable CPUs can, and are read at each call of environment()."""
    info = _cpuinfo()
    features = set((info.get("flags") or info.get("features") or "").split())
    model = info.get("model name") or info.get("hardware") or platform.processor() or platform.machine()
    build = _torch_build_versions()
    gpu = None
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        gpu = {"count": count, "names": [torch.cuda.get_device_name(i) for i in range(count)],
               "capabilities": [".".join(map(str, torch.cuda.get_device_capability(i))) for i in range(count)],
               "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    return json.dumps({
        "platform": platform.platform(), "machine": platform.machine(),
        "cpu": {"model": model, "simd": sorted(features & SIMD_FLAGS), "logical_cpus": os.cpu_count()},
        "torch": {"version": torch.__version__, "cuda": torch.version.cuda,
                  "mkldnn": torch.backends.mkldnn.is_available(), "mkl": torch.backends.mkl.is_available(),
                  "onednn_version": build["onednn"], "mkl_version": build["mkl"], "cpu_capability": capability},
        "gpu": gpu,
        "versions": versions(),
    })


def environment() -> dict:
    """Where a result was computed: the CPU (model, the SIMD features that pick floating-point kernels, logical
    and usable core counts), the torch build (version, CUDA, MKL/oneDNN and their versions, the kernel ISA it
    dispatches to) and its current intra-/inter-op thread counts, the GPUs (None without CUDA), the OS and the
    library versions. The same command may give other numbers on another CPU or thread count; on one machine
    runs are byte-identical. Holds no hostname, user name or environment variable."""
    env = json.loads(_static_environment())
    try:  # the CPUs this process may run on (an affinity mask or a container's cpuset can narrow them)
        env["cpu"]["usable_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        env["cpu"]["usable_cpus"] = None
    env["torch"]["num_threads"] = torch.get_num_threads()
    env["torch"]["num_interop_threads"] = torch.get_num_interop_threads()
    return env


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
