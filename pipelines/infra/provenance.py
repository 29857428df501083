"""Provenance of a result: the git commit, library versions and the machine (recorded in every done-marker)."""
from __future__ import annotations

import functools
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import torch


def git_sha() -> str:
    """The commit the code ran at, with `-dirty` when the work tree has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]  # the repository
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        # results/ holds outputs that a run rewrites, not code: changes there do not make the code dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
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
    # GPU numerics this process chose (pipelines/infra/device.py configure_inference): both False on CPUs.
    from pipelines.infra.device import inference_bf16

    env["torch"]["inference_bf16"] = inference_bf16()
    env["torch"]["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    # The Hub commits this process loaded (id -> commit; pipelines/infra/hub.py): {} offline.
    from pipelines.infra.hub import loaded_commits

    env["hub"] = loaded_commits()
    return env
