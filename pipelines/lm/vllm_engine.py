"""Optional vLLM generation on a GPU, behind the same contract as `pipelines.sampling.sample_completions`.

task.generation.backend chooses who samples: `hf` (transformers' generate, the default and the only choice on CPU),
`vllm` (this module; vLLM installed and a CUDA GPU, else a clear error before any stage runs) or `auto` (vllm where
both are present, else hf). `auto` is resolved once per process, before the stage hashes are taken, so a stage
records the backend that really sampled (samples of the two backends differ, even at the same seed).

One engine per process, colocated with training on the same GPU (top-level `vllm_gpu_memory_utilization` of its
memory), built from the first policy it samples (its folder, or its Hub id: the zero-shot base model) and fed the
current weights before every call: PPO pushes its policy once per rollout, evaluation each checkpoint (so the
engine reads no weight file itself: `load_format="dummy"`; a Hub model's pickled weights are never opened). Between
calls it sleeps (vLLM's sleep mode, level 1: weights moved to host memory, KV cache freed), so training gets the
GPU back; it wakes before the next push. It runs inside this process (vLLM's external launcher, as TRL's colocate
mode), which is what lets the weights be pushed without a server; its rendezvous takes a free port, so jobs side
by side on one node do not collide. It samples in the precision the log-probs of the KL are computed in (bf16
where the process infers in bf16, pipelines/infra/device.py, else fp32), so samples and log-probs come from one
model. Samples follow the project's rules: full distribution (top_k 0 = off, top_p 1, min_p 0), EOS kept at the
end of a completion that stopped on it, a seed per prompt. RLOO is TRL's trainer: it gets TRL's own colocated vLLM
(`use_vllm`) from the same setting.

vLLM runs in single-process jobs only. Under a launch of several processes most sampling stages (pairs, evaluation,
Best-of-N, win rates) run in the main process while the others wait, and vLLM's engine must be built by every
process of the launch together: `auto` is hf there, and `vllm` is refused before anything runs. Sweeps get vLLM
with one single-process job per GPU (docs/scaling.md).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

from pipelines.infra.device import inference_bf16
from pipelines.infra.distributed import free_port, world_size
from pipelines.infra.io import UserError

log = logging.getLogger(__name__)
BACKENDS = ("hf", "vllm", "auto")
_STATE: dict = {"backend": "hf", "gpu_memory_utilization": 0.3, "engine": None}


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def resolve_backend(name: str) -> str:
    """hf or vllm for a configured backend; a UserError where vllm is asked for but cannot run here."""
    if name not in BACKENDS:
        raise UserError(f"task.generation.backend must be one of {', '.join(BACKENDS)}, got '{name}'")
    if name == "auto":
        return "vllm" if vllm_available() and world_size() == 1 else "hf"
    if name == "vllm":
        if world_size() > 1:
            raise UserError(f"task.generation.backend=vllm runs in single-process jobs, and this launch has "
                            f"{world_size()} processes (the main-process sampling stages cannot build vLLM's engine, "
                            "which needs every process); use backend=hf or auto here, or one job per GPU")
        if importlib.util.find_spec("vllm") is None:
            raise UserError("task.generation.backend=vllm: vLLM is not installed (pip install vllm, on a machine with "
                            "a CUDA GPU); use backend=hf, or auto to take vLLM only where it is installed")
        if not torch.cuda.is_available():
            raise UserError("task.generation.backend=vllm needs a CUDA GPU (none is visible); use backend=hf or auto")
    return name


def configure(cfg) -> str:
    """Resolve cfg.task.generation.backend for this process (written back into cfg, so stage hashes carry the
    backend that samples) and remember the engine settings. Returns the backend."""
    from omegaconf import OmegaConf, open_dict

    g = cfg.task.generation
    backend = resolve_backend(g.get("backend", "hf"))
    if g.get("backend", "hf") != backend:
        with open_dict(cfg):
            OmegaConf.update(cfg, "task.generation.backend", backend)
    _STATE.update(backend=backend, gpu_memory_utilization=float(cfg.get("vllm_gpu_memory_utilization", 0.3)))
    if backend == "vllm":
        log.info("sampling with vLLM (colocated, %.0f %% of the GPU's memory)",
                 100 * _STATE["gpu_memory_utilization"])
    return backend


def active() -> bool:
    return _STATE["backend"] == "vllm"


def gpu_memory_utilization() -> float:
    return _STATE["gpu_memory_utilization"]


def completion_ids(output, eos_id: int) -> list[int]:
    """Token ids of one vLLM completion with the project's EOS convention: a completion that stopped on EOS ends
    with it (vLLM may leave a stop token out), one cut at the length limit does not."""
    ids = list(output.token_ids)
    if output.finish_reason == "stop" and (not ids or ids[-1] != eos_id):
        ids.append(eos_id)
    return ids


class VLLMEngine:
    """A vLLM engine in this process, built from a causal-LM folder, sampling token ids from token-id prompts."""

    def __init__(self, model: str, max_model_len: int, gpu_memory_utilization: float, revision: str | None = None):
        from vllm import LLM

        # The external launcher keeps the engine in this process (the weights can then be pushed into it); it reads
        # the torch.distributed variables, which a single process does not set. A free port for its rendezvous: two
        # jobs on one node must not share one.
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        self.dtype = "bfloat16" if inference_bf16() else "float32"
        # Random weights at build: the policy's own are pushed before every call (push_weights).
        self.llm = LLM(model=model, revision=revision, skip_tokenizer_init=True, dtype=self.dtype,
                       load_format="dummy", max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization, distributed_executor_backend="external_launcher",
                       enable_prefix_caching=False, enable_sleep_mode=True, trust_remote_code=False, seed=0)
        self.asleep = False

    def push_weights(self, model: torch.nn.Module) -> None:
        """Load `model`'s current weights (transformers' parameter names, as in its checkpoint) into the engine,
        waking it first (its weight memory back, then its KV cache)."""
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        runner.load_weights((name, tensor.detach()) for name, tensor in model.state_dict().items())
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Free the engine's GPU memory until the next push_weights: weights to host memory, KV cache dropped
        (level 1; level 2 would also drop model buffers, which older vLLM releases do not rebuild on wake-up)."""
        self.llm.sleep(level=1)
        self.asleep = True

    def sample(self, prompts: list[list[int]], *, max_new_tokens: int, eos_id: int, temperature: float,
               seeds: list[int]) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(n=1, temperature=temperature, top_k=0, top_p=1.0, min_p=0.0,
                                 repetition_penalty=1.0, max_tokens=max_new_tokens, stop_token_ids=[eos_id],
                                 seed=seed, detokenize=False) for seed in seeds]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                    use_tqdm=False)
        self.sleep()  # training (PPO's update) gets the memory until the next call
        return [completion_ids(o.outputs[0], eos_id) for o in outputs]


def engine_for(model: torch.nn.Module) -> VLLMEngine:
    """The process's engine (built on first use from the folder `model` was loaded from), holding `model`'s
    current weights."""
    if _STATE["engine"] is None:
        source = getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "")
        if not source:
            raise UserError("vLLM sampling needs a policy loaded from a folder or the Hub (its architecture); this "
                            "one was built in memory")
        from pipelines.lm.models import context_length

        # A Hub id (the zero-shot base model) loads at the revision transformers resolved, so both hold one model.
        revision = None if Path(source).is_dir() else getattr(model.config, "_commit_hash", None)
        _STATE["engine"] = VLLMEngine(str(source), context_length(model), _STATE["gpu_memory_utilization"],
                                      revision)
    engine = _STATE["engine"]
    engine.push_weights(model)
    return engine
