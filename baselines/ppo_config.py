"""PPO's settings, checked before anything runs, and the snapshot schedule they imply (baselines/ppo.py re-exports
these: pipelines/run.py's METHODS row and the tests import them from there)."""
from __future__ import annotations

from omegaconf import DictConfig

from pipelines.infra.distributed import replicates_weights, world_size
from pipelines.infra.io import UserError


def check(cfg: DictConfig, need) -> None:
    """PPO's config, checked before anything runs (pipelines/validate.py calls it through the METHODS row)."""
    m = cfg.method
    need(m.reward in ("learned", "gt"), f"method.reward must be 'learned' or 'gt', got '{m.reward}'")
    need(m.total_steps >= 1, f"method.total_steps must be >= 1, got {m.total_steps}")
    need(m.batch_size >= 2, f"method.batch_size must be >= 2 (advantages are whitened over it), got {m.batch_size}")
    need(1 <= m.minibatch_size <= m.batch_size and m.batch_size % m.minibatch_size == 0,
         f"method.minibatch_size ({m.minibatch_size}) must divide method.batch_size ({m.batch_size})")
    need(1 <= m.micro_batch_size <= m.minibatch_size,
         f"method.micro_batch_size ({m.micro_batch_size}) must be in 1..minibatch_size ({m.minibatch_size})")
    w = world_size()
    if w > 1:  # PPO trains data-parallel (replicated or sharded): each process an equal share of both
        need(m.minibatch_size % w == 0,
             f"method.minibatch_size ({m.minibatch_size}) must be a multiple of the {w} processes of the launch")
        # Sharded, every process must make the same forward calls: equal shares of the normalisation samples too.
        need(replicates_weights() or not m.normalize_scores or m.score_norm_samples % w == 0,
             f"method.score_norm_samples ({m.score_norm_samples}) must be a multiple of the {w} processes of the "
             "launch")
    need(m.ppo_epochs >= 1, f"method.ppo_epochs must be >= 1, got {m.ppo_epochs}")
    need(m.learning_rate > 0 and m.value_learning_rate > 0, "method.learning_rate and value_learning_rate must be > 0")
    need(0 < m.lam <= 1 and 0 < m.gamma <= 1, f"method.gamma and method.lam must be in (0, 1], got {m.gamma}, {m.lam}")
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
    check_memory(cfg, need)


# Parameters of the presets' pretrained models (their Hub model cards), for the memory check below.
PRETRAINED_PARAMS = {"gpt2-large": 774e6, "EleutherAI/gpt-j-6b": 6.05e9, "EleutherAI/pythia-2.8b": 2.78e9}
# Bytes per policy parameter of PPO's four models: policy and value model train (fp32 weights, gradients and Adam's
# two moments: 16 each), reference and r_phi only run forward (fp32 weights: 4 each); activations come on top.
BYTES_PER_PARAM = 2 * 16 + 2 * 4
# Share of a GPU's memory the models may take (the rest: activations, logits, the allocator's slack).
GPU_SHARE = 0.85


def check_memory(cfg: DictConfig, need) -> None:
    """On a CUDA machine, refuse a PPO run whose models cannot fit each process's GPU: every model whole in every
    process (one process, DDP), or a 1/processes share of each (FSDP or DeepSpeed launch: sharded)."""
    import torch

    params = PRETRAINED_PARAMS.get(str(cfg.model.pretrained)) if cfg.model.pretrained else None
    if params is None or not torch.cuda.is_available():
        return
    w = world_size()
    shards = w if w > 1 and not replicates_weights() else 1
    per_process = BYTES_PER_PARAM * params / shards
    have = torch.cuda.get_device_properties(0).total_memory
    need(per_process <= GPU_SHARE * have,
         f"PPO on {cfg.model.pretrained} ({params / 1e9:.1f}B parameters) needs ~{per_process / 2**30:.0f} GiB per "
         f"process for its four models before activations ({'sharded over ' + str(shards) if shards > 1 else 'whole'}"
         f"), and this GPU has {have / 2**30:.0f} GiB: launch on more GPUs with ACCELERATE=fsdp (every model sharded "
         f"over the processes; a node of 8 x 80 GB for GPT-J 6B)")


def check_settings(m: DictConfig) -> None:
    """The PPO settings pipelines/validate.py does not check; one UserError line each, before any model is loaded."""
    if m.lr_schedule not in ("linear", "constant"):
        raise UserError(f"method.lr_schedule must be 'linear' or 'constant', got '{m.lr_schedule}'")
    if m.value_init not in ("sft", "reward_model"):
        raise UserError(f"method.value_init must be 'sft' or 'reward_model', got '{m.value_init}'")
    if m.value_init == "reward_model" and m.reward != "learned":
        raise UserError(f"method.value_init=reward_model needs the learned reward model r_phi, and method.reward="
                        f"{m.reward} trains without one (PPO-GT): use method.value_init=sft")
    steps = m.snapshot_steps
    if steps is not None and not all(isinstance(s, int) and s >= 1 for s in steps):
        raise UserError(f"method.snapshot_steps must be a list of steps >= 1, or null, got {list(steps)}")


def snapshot_steps(m: DictConfig) -> set[int]:
    """Steps after which the policy is saved for the frontier: method.snapshot_steps (those <= total_steps), or
    every eval_every steps when it is null; the last step always."""
    if m.snapshot_steps is None:
        chosen = set(range(m.eval_every, m.total_steps + 1, m.eval_every))
    else:
        chosen = {int(s) for s in m.snapshot_steps if s <= m.total_steps}
    return chosen | {m.total_steps}
