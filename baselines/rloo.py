"""RLOO (REINFORCE with a leave-one-out baseline, Ahmadian et al. 2024) through TRL's RLOOTrainer: k completions per
prompt, each one's advantage is its KL-penalised reward minus the mean of the other k - 1. A cheaper online
baseline than PPO (no value model, one gradient step per batch of rollouts).

method=rloo uses the learned reward model r_phi, method=rloo_gt the ground-truth r*. As for PPO, scores are
normalised with the mean/std of SFT samples' scores measured once before training (PPO's normalisation, the same
samples: baselines/onpolicy.py), so `beta` (TRL's fixed coefficient on the sequence KL in the reward) means the
same for both rewards. TRL samples from the full distribution here (temperature 1, top_k 0, top_p 1) and keeps
EOS, like the project's own sampler. TRL left-pads the prompts and scores them without position ids:
`MaskPositionRLOOTrainer` gives its models position ids from the attention mask, so the log-probs it trains on are
those of the model that sampled.
Reads sft/policy, data/ (train prefixes), reward_model/ or reward/. Writes snapshots/step*/, policy/, metrics.jsonl."""
from __future__ import annotations

import logging
from pathlib import Path

from datasets import Dataset
from omegaconf import DictConfig
from trl import RLOOConfig, RLOOTrainer

from baselines.onpolicy import method_scorer, score_normalisation, train_prefixes
from pipelines.infra.cost_meter import add_generated, meter
from pipelines.infra.device import gradient_checkpointing, pick_device, use_bf16
from pipelines.infra.distributed import per_process
from pipelines.infra.tracking import JsonlMetrics, trainer_report_to
from pipelines.lm import vllm_engine
from pipelines.lm.lm_head import apply_to_trainer, use_mask_positions
from pipelines.lm.models import load_policy, load_tokenizer
from pipelines.lm.trainer import SnapshotPolicy, train_and_save

log = logging.getLogger(__name__)


def make_reward_func(scorer, mean: float, std: float):
    """TRL reward function: normalised score of (prompt ids, sampled completion ids)."""
    def normalised_score(prompts, completions, completion_ids, prompt_ids, **kwargs) -> list[float]:
        add_generated(sum(len(c) for c in completion_ids))  # TRL samples with its own generate: count here
        return [(s - mean) / std for s in scorer(prompt_ids, completion_ids)]
    return normalised_score


class MaskPositionRLOOTrainer(RLOOTrainer):
    """RLOOTrainer whose policy and reference take position ids from the attention mask.

    TRL left-pads the prompts of a batch and scores prompt + completion in `_get_per_token_logps_and_entropies` with
    input ids and attention mask only, so GPT-2 would count positions from the first pad column and the old,
    reference and training log-probs would belong to a shifted model (generation itself derives them from the mask).
    That hook builds its model inputs inline (with multimodal branches): overriding it would fork TRL's code. The
    models' forward is wrapped instead (pipelines.lm_head.use_mask_positions), after TRL has patched it with its fused
    LM head here in __init__: one place that covers every forward of both models (rollout scoring, reference, loss),
    either LM head (the dense one, installed later by apply_to_trainer, derives them itself too), and a DDP wrapper
    (which calls the module's forward); calls that pass position ids, as `generate` does, are left as they are."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for model in (self.model, self.ref_model):
            if model is not None:
                use_mask_positions(model)


def make_trainer(policy, reward_func, args: RLOOConfig, data: Dataset, tokenizer, callbacks: list,
                 dense_logits: bool) -> RLOOTrainer:
    """The trainer `run` trains with (the tests build it here too)."""
    trainer = MaskPositionRLOOTrainer(model=policy, reward_funcs=reward_func, args=args, train_dataset=data,
                                      processing_class=tokenizer, callbacks=callbacks)
    apply_to_trainer(trainer, dense_logits)
    return trainer


def run(cfg: DictConfig, out_dir: Path) -> dict:
    m, g = cfg.method, cfg.task.generation
    device = pick_device(cfg.device)
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)
    scorer = method_scorer(cfg, tokenizer, device)
    pool = train_prefixes(cfg, tokenizer, m.n_prompts)
    policy = load_policy(sft_dir, device)
    mean, std = 0.0, 1.0
    if m.normalize_scores:  # PPO's, on the same samples (every process of a launch measures all of them)
        mean, std = score_normalisation(policy, scorer, pool, cfg, tokenizer.eos_token_id, tokenizer.pad_token_id)
        log.info("rloo: score normalisation from %d SFT samples: mean %.4f, std %.4f", m.score_norm_samples, mean, std)
    # TRL tokenises the prompt text itself; prompt_ids (the project's prefix ids) reach the reward function.
    data = Dataset.from_dict({"prompt": tokenizer.batch_decode(pool), "prompt_ids": pool})
    args = RLOOConfig(
        output_dir=str(out_dir / "trainer"), per_device_train_batch_size=per_process(m.batch_size),
        num_generations=m.num_generations, max_completion_length=g.max_new_tokens, temperature=g.temperature,
        top_k=0, top_p=1.0, beta=m.beta, learning_rate=m.learning_rate, lr_scheduler_type="constant",
        max_grad_norm=m.max_grad_norm, max_steps=m.total_steps, logging_steps=1, save_steps=m.save_steps,
        save_total_limit=1, disable_dropout=True, bf16=use_bf16(cfg.model.precision, device),
        gradient_checkpointing=gradient_checkpointing(cfg.model),
        report_to=trainer_report_to(cfg, out_dir, f"{m.tag}-seed{cfg.seed}"),
        seed=cfg.seed, dataloader_num_workers=0, use_cpu=device.type == "cpu",
        # task.generation.backend=vllm: TRL's own colocated vLLM engine samples the rollouts.
        use_vllm=vllm_engine.active(), vllm_mode="colocate",
        vllm_gpu_memory_utilization=vllm_engine.gpu_memory_utilization())
    trainer = make_trainer(policy, make_reward_func(scorer, mean, std), args, data, tokenizer,
                           [JsonlMetrics(out_dir / "metrics.jsonl"),
                            SnapshotPolicy(out_dir / "snapshots", m.eval_every, tokenizer)], cfg.model.dense_logits)
    if getattr(trainer, "ref_model", None) is not None:  # TRL loads the KL reference itself (beta > 0)
        meter(trainer.ref_model)
    return {**train_and_save(trainer, tokenizer, out_dir), "n_prompts": len(data), "score_mean": mean, "score_std": std}


def check(cfg: DictConfig, need) -> None:
    m = cfg.method
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
