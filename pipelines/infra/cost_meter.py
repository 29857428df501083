"""Cost accounting of a stage: wall time, tokens, estimated FLOPs and peak memory, written to its done-marker.

`run_stage` opens a `StageCost` around every stage. Models take part through `meter(model)`, a forward pre-hook
that counts the token positions of every forward pass: with gradient (a training pass: forward + backward) or
without (reference and value passes, scoring, each generation step). Samplers add the tokens they generate.

FLOPs are the usual estimate (Kaplan et al. 2020): 2N per token position of a forward pass and 6N of a training
pass, N = the model's parameters without its position table (a tied input/output embedding counts once, as the
output projection it is). Attention's O(T^2) term and padding-free savings are ignored; the estimate is the same
for every method, so their ratio is what it is for. The TF-IDF r* is not metered (a sparse dot product per text).

Peak host memory is the largest resident set size seen by a sampler thread (every 0.2 s) during the stage, of the
whole process; peak GPU memory is torch's max_memory_allocated since the stage began."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import torch

_current: list["StageCost"] = []


class StageCost:
    """Counters of one stage. Use through `track()`."""

    def __init__(self):
        self.train_tokens = 0      # token positions through a forward pass with gradient (then a backward pass)
        self.forward_tokens = 0    # token positions through a forward pass without gradient (generation included)
        self.generated_tokens = 0  # completion tokens sampled
        self.flops = 0.0
        self.peak_rss_bytes = 0
        self._start = time.time()
        self._stop = threading.Event()

    def add_pass(self, tokens: int, n_params: int, train: bool) -> None:
        if train:
            self.train_tokens += tokens
            self.flops += 6.0 * n_params * tokens
        else:
            self.forward_tokens += tokens
            self.flops += 2.0 * n_params * tokens

    def _sample_memory(self) -> None:
        import psutil

        proc = psutil.Process()
        while True:
            try:
                self.peak_rss_bytes = max(self.peak_rss_bytes, proc.memory_info().rss)
            except psutil.Error:  # pragma: no cover - the process is going away
                return
            if self._stop.wait(0.2):
                return

    def summary(self) -> dict:
        out = {"wall_s": round(time.time() - self._start, 2), "train_tokens": self.train_tokens,
               "forward_tokens": self.forward_tokens, "generated_tokens": self.generated_tokens,
               "flops_est": float(f"{self.flops:.4g}"), "peak_host_mem_mb": round(self.peak_rss_bytes / 2**20, 1),
               "peak_gpu_mem_mb": None}
        if torch.cuda.is_available():
            out["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out


@contextmanager
def track():
    """Meter everything inside: `with track() as cost: ...; cost.summary()`. Nested tracks count into the inner
    one only (a stage that runs its upstream stages does so before it opens its own track)."""
    cost = StageCost()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sampler = threading.Thread(target=cost._sample_memory, daemon=True)
    sampler.start()
    _current.append(cost)
    try:
        yield cost
    finally:
        _current.remove(cost)
        cost._stop.set()
        sampler.join(timeout=1.0)


def current() -> StageCost | None:
    return _current[-1] if _current else None


def flop_params(model: torch.nn.Module) -> int:
    """N of the FLOPs estimate: parameters, each shared tensor once, without learned position tables."""
    seen, n = set(), 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen or name.endswith(("wpe.weight", "embed_positions.weight")):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def meter(model: torch.nn.Module) -> torch.nn.Module:
    """Count every forward pass of `model` into the current stage's cost (idempotent). Returns the model."""
    if getattr(model, "_rvd_metered", False):
        return model
    n_params = flop_params(model)

    def hook(module, args, kwargs):
        cost = current()
        if cost is None:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
            tokens = int(ids.shape[0] * ids.shape[1]) if ids is not None else 0
        else:
            tokens = int(ids.numel())
        train = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
        cost.add_pass(tokens, n_params, train)

    model.register_forward_pre_hook(hook, with_kwargs=True)
    model._rvd_metered = True
    return model


def add_generated(tokens: int) -> None:
    cost = current()
    if cost is not None:
        cost.generated_tokens += int(tokens)
