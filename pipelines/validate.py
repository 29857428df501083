"""Config checks that run before any stage: every problem is reported at once, before anything is trained or
written."""
from __future__ import annotations

import os

from omegaconf import DictConfig

from pipelines.infra import distributed
from pipelines.infra.device import PRECISIONS
from pipelines.infra.io import UserError
from pipelines.lm.vllm_engine import BACKENDS
from pipelines.tasks.registry import TASKS

SOURCES = ("embedded", "hf", "local")
REWARDS = ("tfidf_logreg", "hf_classifier")
WANDB_MODES = ("offline", "online", "disabled")
FORMATS = tuple(TASKS)  # pipelines/tasks/registry.py: what each task format is
TEXT_TASKS = ("summarization", "dialogue")
# Stages that read the ground-truth reward r* (sentiment only)
SENTIMENT_STAGES = ("evaluate_sft", "evaluate")


def _zero_offload(cfg: DictConfig, need) -> None:
    """Under DeepSpeed: with the optimiser offloaded (ACCELERATE=deepspeed_zero3_offload) accelerate replaces a
    Trainer's torch optimiser with DeepSpeedCPUAdam and clips gradients at the launch config's value: a method that
    configures another optimiser (the DPO family's RMSprop) or another clip would silently train with different
    ones, so the launch is refused instead."""
    env = os.environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return
    m = cfg.method
    offload = env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none").lower() not in ("", "none")
    for stage, key, optimizer in (("train", "method.optimizer", m.get("optimizer")),
                                  ("sft", "model.sft.optimizer", cfg.model.sft.get("optimizer"))):
        optimizer = str(optimizer or "adamw_torch")
        need(stage not in cfg.pipeline or not offload or optimizer.startswith("adamw"),
             f"{key}={optimizer}: under DeepSpeed optimiser offload accelerate trains with DeepSpeedCPUAdam "
             "instead; launch with ACCELERATE=deepspeed_zero3 (sharded over enough GPUs, no offload) to keep "
             f"{optimizer}, or set {key}=adamw_torch deliberately")
    clip = env.get("ACCELERATE_GRADIENT_CLIPPING")
    if clip in (None, "", "none", "auto"):
        return
    # The SFT stage's Trainer clips at model.sft.max_grad_norm (absent: the Trainer's 1.0).
    for stage, key, norm in (("train", "method.max_grad_norm", m.get("max_grad_norm")),
                             ("sft", "model.sft.max_grad_norm", cfg.model.sft.get("max_grad_norm", 1.0))):
        need(stage not in cfg.pipeline or norm is None or float(clip) == float(norm),
             f"{key}={norm} but the DeepSpeed launch config clips at {clip}; make them equal "
             "(conf/accelerate/*.yaml gradient_clipping)")


def validate(cfg: DictConfig, method) -> None:
    """Every check of `cfg`; `method` is its METHODS row (pipelines/run.py), whose own check covers method.*."""
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    t = cfg.task
    fmt = t.get("format", "prefix")
    need(fmt in FORMATS, f"task.format must be one of {FORMATS}, got '{fmt}'")
    text = fmt == "prompt_response"
    need(t.data.source in SOURCES, f"task.data.source must be one of {SOURCES}, got '{t.data.source}'")
    if "test_fraction" in t.data:
        need(0 < t.data.test_fraction < 1, f"task.data.test_fraction must be in (0, 1), got {t.data.test_fraction}")
    need(fmt not in FORMATS or fmt in method.formats, _format_refusal(cfg, method, fmt))
    if text:
        _text_task(cfg, need)
    else:
        need(t.data.max_docs is None or t.data.max_docs > 0, f"task.data.max_docs must be > 0, got {t.data.max_docs}")
        need(1 <= t.prompt.min_tokens <= t.prompt.max_tokens,
             f"task.prompt needs 1 <= min_tokens <= max_tokens, got {t.prompt.min_tokens}..{t.prompt.max_tokens}")
    need(t.generation.max_new_tokens >= 1, f"task.generation.max_new_tokens must be >= 1, got "
                                           f"{t.generation.max_new_tokens}")
    # Pairs (every task), PPO/RLOO rollouts and sentiment's evaluation and Best-of-N sample at this temperature
    need(t.generation.temperature == 1.0,
         f"task.generation.temperature={t.generation.temperature} is not supported: only 1.0 is, because the KL and "
         "PPO's log-probs are computed at T = 1 (the win-rate sampling temperatures are task.winrate.temperatures, "
         "which this does not affect)")
    need(t.generation.batch_size >= 1, f"task.generation.batch_size must be >= 1, got {t.generation.batch_size}")
    need(t.generation.get("backend", "hf") in BACKENDS,
         f"task.generation.backend must be one of {', '.join(BACKENDS)}, got '{t.generation.get('backend')}'")
    need(cfg.model.precision in PRECISIONS,
         f"model.precision must be {' or '.join(PRECISIONS)}, got '{cfg.model.precision}'")
    need(isinstance(cfg.model.get("dense_logits"), bool),
         f"model.dense_logits must be true or false, got {cfg.model.get('dense_logits')!r}")
    need(cfg.get("snapshots", "keep") in ("keep", "delete"),
         f"snapshots must be keep or delete, got '{cfg.get('snapshots')}'")
    _zero_offload(cfg, need)
    need(0 < cfg.get("vllm_gpu_memory_utilization", 0.3) < 1,
         f"vllm_gpu_memory_utilization must be in (0, 1), got {cfg.get('vllm_gpu_memory_utilization')}")
    w = t.get("winrate")
    if w is not None:
        need(len(w.temperatures) > 0 and all(0 <= x <= 2 for x in w.temperatures),
             f"task.winrate.temperatures must be in [0, 2] (0 = greedy), got {list(w.temperatures)}")
    if not text:
        _sentiment_task(cfg, need)
    if not cfg.model.pretrained:
        a = cfg.model.arch
        need(a is not None, "model.arch is required when model.pretrained is null")
        if a is not None:
            longest = max(t.prompt.max_tokens, t.prompt.get("ood_max_tokens") or 0)
            need(longest + t.generation.max_new_tokens <= a.n_positions,
                 f"prompt ({longest}) + completion ({t.generation.max_new_tokens}) tokens exceed the "
                 f"model context model.arch.n_positions={a.n_positions}")
            need(a.n_embd % a.n_head == 0, f"model.arch.n_embd ({a.n_embd}) must be divisible by n_head ({a.n_head})")
        need(cfg.model.tokenizer.vocab_size and cfg.model.tokenizer.vocab_size >= 260,
             "model.tokenizer.vocab_size must be >= 260 (256 bytes + special tokens)")
    _method(cfg, method, need)
    need(cfg.wandb.mode in WANDB_MODES, f"wandb.mode must be one of {WANDB_MODES}, got '{cfg.wandb.mode}'")
    need(bool(cfg.preset), "preset must be a non-empty name")
    if problems:
        raise UserError("bad config (nothing was run):\n  " + "\n  ".join(problems))


def _text_task(cfg: DictConfig, need) -> None:
    """Prompt-response tasks (summarization, dialogue): no r*, prompts and pairs from the data."""
    t = cfg.task
    need(t.name in TEXT_TASKS, f"task.format=prompt_response is implemented for {TEXT_TASKS}, not '{t.name}'")
    need(t.prompt.max_tokens >= 1, f"task.prompt.max_tokens must be >= 1, got {t.prompt.max_tokens}")
    cut = t.prompt.get("truncation")
    if cut:
        need(1 <= cut.max_prompt_length < cut.max_length,
             f"task.prompt.truncation needs 1 <= max_prompt_length < max_length, got {cut.max_prompt_length} and "
             f"{cut.max_length}")
        need(cut.max_prompt_length + t.generation.max_new_tokens <= cut.max_length,
             f"task.prompt.truncation: max_prompt_length ({cut.max_prompt_length}) + task.generation.max_new_tokens "
             f"({t.generation.max_new_tokens}) must fit max_length ({cut.max_length})")
    for key in ("max_sft", "max_pairs", "max_test"):
        value = t.data.get(key)
        need(value is None or value >= 1, f"task.data.{key} must be >= 1 or null, got {value}")
    need(t.pairs.n_pairs is None or t.pairs.n_pairs >= 1, f"task.pairs.n_pairs must be >= 1 or null, got "
                                                          f"{t.pairs.n_pairs}")
    need(t.pairs.chunk_size >= 1, f"task.pairs.chunk_size must be >= 1, got {t.pairs.chunk_size}")
    w = t.winrate
    need(w.n_prompts >= 1, f"task.winrate.n_prompts must be >= 1, got {w.n_prompts}")
    need(w.get("ood_n_prompts", 0) >= 0, f"task.winrate.ood_n_prompts must be >= 0, got {w.get('ood_n_prompts')}")
    stages = [s for s in cfg.pipeline if s in SENTIMENT_STAGES]
    need(not stages, f"pipeline: stage(s) {stages} make the sentiment task's reward-vs-KL frontier; task "
                     f"'{t.name}' is compared by win rate (pipeline=[data,tokenizer,sft,reward,pairs,train,winrate])")
    from pipelines.tasks.relevance import KINDS
    need(t.reward.kind in KINDS, f"task.reward.kind must be one of {KINDS} for task '{t.name}', got "
                                 f"'{t.reward.kind}'")


def _sentiment_task(cfg: DictConfig, need) -> None:
    t = cfg.task
    need(t.reward.kind in REWARDS, f"task.reward.kind must be one of {REWARDS}, got '{t.reward.kind}'")
    need(t.pairs.n_prompts >= 1, f"task.pairs.n_prompts must be >= 1, got {t.pairs.n_prompts}")
    need(t.pairs.samples_per_prompt >= 2,
         f"task.pairs.samples_per_prompt must be >= 2 (pairs need two samples), got {t.pairs.samples_per_prompt}")
    need(t.pairs.tie_threshold >= 0, f"task.pairs.tie_threshold must be >= 0, got {t.pairs.tie_threshold}")
    need(t.pairs.chunk_size >= 1, f"task.pairs.chunk_size must be >= 1, got {t.pairs.chunk_size}")
    need(t.eval.n_prompts >= 1, f"task.eval.n_prompts must be >= 1, got {t.eval.n_prompts}")
    need(t.eval.samples_per_prompt >= 1, f"task.eval.samples_per_prompt must be >= 1, got {t.eval.samples_per_prompt}")
    w = t.get("winrate")
    if w is not None:
        need(1 <= w.n_prompts <= t.eval.n_prompts, f"task.winrate.n_prompts must be in 1..task.eval.n_prompts "
                                                   f"({t.eval.n_prompts}): the references are SFT's evaluation "
                                                   f"samples; got {w.n_prompts}")


def _format_refusal(cfg: DictConfig, method, fmt: str) -> str:
    """Why `method` does not run on a task of format `fmt`."""
    name = cfg.method.name
    if fmt == "prompt_response" and "reward" in method.inputs:
        return (f"method '{name}' optimises the ground-truth reward r*, which the paper's '{cfg.task.name}' task does "
                "not have; use its learned-reward version")
    if fmt == "prefix":
        return (f"method={name} is a win-rate baseline of the prompt-response tasks; in sentiment the SFT policy is "
                "the frontier's anchor and every method's win-rate reference")
    return f"method '{name}' runs on task.format {list(method.formats)}, not '{fmt}'"


def _method(cfg: DictConfig, method, need) -> None:
    s = cfg.model.sft
    need(s.epochs > 0 and s.learning_rate > 0 and s.batch_size >= 1 and s.block_size >= 2,
         "model.sft needs epochs > 0, learning_rate > 0, batch_size >= 1, block_size >= 2")
    m = cfg.method
    w = distributed.world_size()
    accumulation = s.get("gradient_accumulation_steps", 1)
    need(accumulation >= 1 and s.batch_size % (w * accumulation) == 0,
         f"model.sft.batch_size ({s.batch_size}) must be a multiple of the {w} process(es) x "
         f"model.sft.gradient_accumulation_steps ({accumulation})")
    if w > 1:  # a configured batch is the global batch of an optimiser step, split over the processes
        batches = {"model.sft.batch_size": s.batch_size}
        if cfg.get("reward_model") is not None:
            batches["reward_model.batch_size"] = cfg.reward_model.batch_size
        if method.global_batch:
            batches["method.batch_size"] = m.batch_size
        for key, b in batches.items():
            need(b % w == 0, f"{key} ({b}) is the global batch of an optimiser step: it must be a multiple of "
                             f"the {w} processes of the launch")
    if method.check is not None:
        method.check(cfg, need)
