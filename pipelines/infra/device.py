"""Device and numeric precision: where a model runs and whether it trains and samples in bf16."""
from __future__ import annotations

from pathlib import Path

import torch

from pipelines.infra.io import UserError


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


# Inference precision of this process, set once by the entry point (configure_inference) like the thread count:
# sampling, the evaluation's log-probs and r_phi's scores run under bf16 autocast on a CUDA GPU where the preset
# trains in bf16 (model.precision=bf16; the paper presets), in fp32 everywhere else, so the CPU default's numbers
# never change. Samples and the log-probs of the KL then come from the same precision, vLLM's too
# (pipelines/lm/vllm_engine.py). r* (the ground truth being measured) always scores in fp32.
_INFERENCE = {"bf16": False}


def configure_inference(precision: str, device_name: str = "auto") -> None:
    """Inference precision for this process; on CUDA also TF32 tensor cores for the fp32 matmuls that remain."""
    device = pick_device(device_name)
    _INFERENCE["bf16"] = device.type == "cuda" and use_bf16(precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def inference_bf16() -> bool:
    return _INFERENCE["bf16"]


def inference_autocast(device: torch.device):
    """Context for a forward pass or generation outside training: bf16 autocast where configure_inference chose it
    (CUDA only), else nothing at all: an autocast the caller opened (reference_logps: the training precision) stays
    in force (`autocast(enabled=False)` would switch it off)."""
    from contextlib import nullcontext

    if _INFERENCE["bf16"] and device.type == "cuda":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def gradient_checkpointing(model_cfg) -> bool:
    """Recompute activations in the backward pass (model.gradient_checkpointing: the GPT-J preset, where they would
    not fit next to its training state; absent elsewhere: off, as the numbers were measured)."""
    return bool(model_cfg.get("gradient_checkpointing", False))
