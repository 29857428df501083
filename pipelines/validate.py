"""Config checks that run before any stage: every problem is reported at once, before anything is trained or
written."""
from __future__ import annotations

from omegaconf import DictConfig

from pipelines import distributed
from pipelines.common import PRECISIONS, UserError
from pipelines.vllm_sampling import BACKENDS

SOURCES = ("embedded", "hf", "local")
REWARDS = ("tfidf_logreg", "hf_classifier")
WANDB_MODES = ("offline", "online", "disabled")
# Methods trained on the preference pairs with a Trainer schedule (pipelines/dpo.py, pipelines/likelihood.py)
OFFLINE = ("dpo", "ipo", "cdpo", "preferred_ft", "unlikelihood")
FORMATS = ("prefix", "prompt_response")
TEXT_TASKS = ("summarization", "dialogue")
# Stages and methods that read the ground-truth reward r* (sentiment only)
SENTIMENT_STAGES = ("evaluate_sft", "evaluate")
GT_METHODS = ("ppo_gt", "rloo_gt")


def validate(cfg: DictConfig) -> None:
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
    _method(cfg, need)
    need(cfg.wandb.mode in WANDB_MODES, f"wandb.mode must be one of {WANDB_MODES}, got '{cfg.wandb.mode}'")
    need(bool(cfg.preset), "preset must be a non-empty name")
    if problems:
        raise UserError("bad config (nothing was run):\n  " + "\n  ".join(problems))


def _text_task(cfg: DictConfig, need) -> None:
    """Prompt-response tasks (summarization, dialogue): no r*, prompts and pairs from the data."""
    t = cfg.task
    need(t.name in TEXT_TASKS, f"task.format=prompt_response is implemented for {TEXT_TASKS}, not '{t.name}'")
    need(t.prompt.max_tokens >= 1, f"task.prompt.max_tokens must be >= 1, got {t.prompt.max_tokens}")
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
    need(cfg.method.name != "base" or bool(cfg.model.pretrained),
         "method=base prompts the pretrained base model (paper: zero-shot GPT-J, 2-shot Pythia-2.8B); this preset "
         "trains its model from scratch (model.pretrained is null), so it has none")
    need(cfg.method.name != "base" or cfg.method.shots >= 0, f"method.shots must be >= 0, got "
                                                             f"{cfg.method.get('shots')}")
    need(cfg.method.name not in GT_METHODS, f"method '{cfg.method.name}' optimises the ground-truth reward r*, "
                                            f"which the paper's '{t.name}' task does not have; use its learned-reward "
                                            "version")
    from pipelines.relevance import KINDS
    need(t.reward.kind in KINDS, f"task.reward.kind must be one of {KINDS} for task '{t.name}', got "
                                 f"'{t.reward.kind}'")


def _sentiment_task(cfg: DictConfig, need) -> None:
    t = cfg.task
    need(cfg.method.name not in ("sft", "base"), f"method={cfg.method.name} is a win-rate baseline of the "
                                                 "prompt-response tasks; in sentiment the SFT policy is the frontier's "
                                                 "anchor and every method's win-rate reference")
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


def _method(cfg: DictConfig, need) -> None:
    s = cfg.model.sft
    need(s.epochs > 0 and s.learning_rate > 0 and s.batch_size >= 1 and s.block_size >= 2,
         "model.sft needs epochs > 0, learning_rate > 0, batch_size >= 1, block_size >= 2")
    m = cfg.method
    w = distributed.world_size()
    if w > 1:  # a configured batch is the global batch of one optimiser step, split over the processes
        batches = {"model.sft.batch_size": s.batch_size}
        if cfg.get("reward_model") is not None:
            batches["reward_model.batch_size"] = cfg.reward_model.batch_size
        if m.name in OFFLINE or m.name in ("rloo", "rloo_gt"):
            batches["method.batch_size"] = m.batch_size
        for key, b in batches.items():
            need(b % w == 0, f"{key} ({b}) is the global batch of an optimiser step: it must be a multiple of "
                             f"the {w} processes of the launch")
    if m.name in OFFLINE:
        need(m.learning_rate > 0, f"method.learning_rate must be > 0, got {m.learning_rate}")
        need(m.batch_size >= 1, f"method.batch_size must be >= 1, got {m.batch_size}")
        need(m.eval_every >= 1, f"method.eval_every must be >= 1, got {m.eval_every}")
        need(m.epochs > 0 or m.max_steps > 0, "method needs epochs > 0 or max_steps > 0")
    if m.name in ("dpo", "ipo", "cdpo"):
        need(m.beta > 0, f"method.beta must be > 0, got {m.beta}")
    if m.name == "cdpo":
        need(0 <= m.label_smoothing < 0.5, f"method.label_smoothing must be in [0, 0.5), got {m.label_smoothing}")
    if m.name == "unlikelihood":
        need(m.alpha >= 0, f"method.alpha must be >= 0, got {m.alpha}")
    if m.name == "bon":
        need(len(m.n_grid) > 0 and all(n >= 1 for n in m.n_grid), f"method.n_grid must be N >= 1, got {m.n_grid}")
        need(m.n_prompts is None or m.n_prompts >= 1, f"method.n_prompts must be >= 1 or null, got {m.n_prompts}")
        need(m.chunk_prompts >= 1 and m.sample_batch_size >= 1, "method.chunk_prompts and sample_batch_size must "
                                                                 "be >= 1")
    if m.name in ("rloo", "rloo_gt"):
        need(m.reward in ("learned", "gt"), f"method.reward must be 'learned' or 'gt', got '{m.reward}'")
        need(m.num_generations >= 2, f"method.num_generations must be >= 2 (leave-one-out baseline), got "
                                     f"{m.num_generations}")
        need(m.batch_size % m.num_generations == 0 if m.num_generations else False,
             f"method.batch_size ({m.batch_size}) must be a multiple of num_generations ({m.num_generations})")
        need(m.beta >= 0 and m.learning_rate > 0 and m.total_steps >= 1,
             "method needs beta >= 0, learning_rate > 0, total_steps >= 1")
        need(m.eval_every >= 1 and m.save_steps >= 1, "method.eval_every and method.save_steps must be >= 1")
        need(not m.normalize_scores or m.score_norm_samples >= 2,
             "method.score_norm_samples must be >= 2 when normalize_scores is on")
    if m.name in ("ppo", "ppo_gt"):
        need(m.reward in ("learned", "gt"), f"method.reward must be 'learned' or 'gt', got '{m.reward}'")
        need(m.total_steps >= 1, f"method.total_steps must be >= 1, got {m.total_steps}")
        need(m.batch_size >= 2, f"method.batch_size must be >= 2 (advantages are whitened over it), got "
                                f"{m.batch_size}")
        need(1 <= m.minibatch_size <= m.batch_size and m.batch_size % m.minibatch_size == 0,
             f"method.minibatch_size ({m.minibatch_size}) must divide method.batch_size ({m.batch_size})")
        need(1 <= m.micro_batch_size <= m.minibatch_size,
             f"method.micro_batch_size ({m.micro_batch_size}) must be in 1..minibatch_size ({m.minibatch_size})")
        if w > 1 and distributed.replicates_weights():  # PPO trains data-parallel: each process a share of both
            need(m.minibatch_size % w == 0,
                 f"method.minibatch_size ({m.minibatch_size}) must be a multiple of the {w} processes of the launch")
        need(m.ppo_epochs >= 1, f"method.ppo_epochs must be >= 1, got {m.ppo_epochs}")
        need(m.learning_rate > 0 and m.value_learning_rate > 0, "method.learning_rate and value_learning_rate "
                                                               "must be > 0")
        need(0 < m.lam <= 1 and 0 < m.gamma <= 1, f"method.gamma and method.lam must be in (0, 1], got "
                                                  f"{m.gamma}, {m.lam}")
        need(m.clip_range > 0 and m.clip_range_value > 0, "method.clip_range and clip_range_value must be > 0")
        need(m.kl.init_coef >= 0, f"method.kl.init_coef must be >= 0, got {m.kl.init_coef}")
        need(m.kl.target is None or m.kl.target > 0, f"method.kl.target must be > 0 or null, got {m.kl.target}")
        need(m.kl.target is None or m.kl.init_coef > 0, "method.kl.init_coef must be > 0 with an adaptive target "
                                                       "(the controller scales it)")
        need(m.kl.horizon > 0, f"method.kl.horizon must be > 0, got {m.kl.horizon}")
        need(m.ref_ema_decay is None or 0 < m.ref_ema_decay < 1,
             f"method.ref_ema_decay must be in (0, 1) or null, got {m.ref_ema_decay}")
        need(m.eval_every >= 1 and m.save_steps >= 1, "method.eval_every and method.save_steps must be >= 1")
        need(not m.normalize_scores or m.score_norm_samples >= 2,
             "method.score_norm_samples must be >= 2 when normalize_scores is on")
