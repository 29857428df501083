"""PPO for RLHF (Ziegler et al. 2019; details after Huang et al. 2024), written here because TRL >= 1.13 has none.

One step (`PPO.step`, in numbered sections like cleanrl's ppo.py): 1. sample completions from the current policy for
a batch of prompts (full distribution, no EOS masking); 2. score them (learned reward model, or r* for PPO-GT: any
`scorer(prompts, completions) -> list[float]`) and shape the reward with a per-token KL penalty to the frozen
reference (= SFT); 3. estimate advantages with GAE; 4. take a few epochs of clipped policy and value updates on
minibatches; 5. move the KL controller and log. The numerics live in pipelines/numerics/ppo_math.py.

Design choices (all in conf/method/ppo.yaml):
- The value model is a separate network (a trunk + a scalar head), not a head on the policy: value regression
  then cannot pull the policy's features, and the policy/value learning rates are independent. It costs one more
  forward/backward per token; at paper scale it doubles the trainable memory (the main reason for shared trunks).
  It starts from the SFT trunk with a zero head (value_init=sft) or, as in N+, from the learned reward model r_phi,
  trunk and scalar head (value_init=reward_model), the head rescaled to the normalised score.
- Policy and value learning rates anneal linearly to 0 over total_steps (lr_schedule=linear, as N+ and TRL) or stay
  constant; the rate is a pure function of the step, so resuming needs no scheduler state.
- Dropout is off in every model (eval mode throughout); rollout and update compute the same function.
- Scores are normalised with a fixed mean/std measured on SFT samples before training (the one normalisation of
  the online methods, baselines/onpolicy.py), so one KL coefficient means the same thing for rewards of any scale.

Under a multi-process launch the loop trains data-parallel: every process-dependent line goes through
`DataParallel` (pipelines/infra/data_parallel.py), the identity in a single process. A launch that keeps whole
weights in every process (DDP, torchrun) replicates the models (torch DDP); an FSDP or DeepSpeed launch shards
policy, value model, reference and r_phi over the processes with torch FSDP2 (`Sharded`), so that a GPT-J 6B PPO
fits one node of 8 x 80 GB. Sharded, each process samples its share of the rollouts through HF generate on the
sharded policy, which gathers each block's weights as it runs (TRL's PPOTrainer generated the same way under FSDP);
docs/scaling.md says why not a vLLM engine per process. Siblings: ppo_models.py (value model, rollout batch,
per-token log-probs and values), ppo_checkpoint.py (resume state, run folder), ppo_config.py (config checks,
snapshot schedule).

Stage: reads sft/policy, data/ (train prefixes), reward_model/ (learned; also the value model's start with
value_init=reward_model) or reward/ (r*). Writes snapshots/step*/ (frontier points, at snapshot_steps or every
eval_every steps), policy/, last/ (resume checkpoint), metrics.jsonl."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from baselines.onpolicy import method_scorer, prompt_stream, score_normalisation, train_prefixes
from baselines.ppo_checkpoint import RunFolder, load_state
from baselines.ppo_config import check, check_settings, snapshot_steps
from baselines.ppo_models import Batch, ValueModel, load_value_model, pack, token_logprobs, token_values
from pipelines.infra.data_parallel import DataParallel, for_launch
from pipelines.infra.device import pick_device, use_bf16
from pipelines.infra.io import read_jsonl
from pipelines.infra.tracking import finish_wandb, log_metrics, trainer_report_to
from pipelines.lm.models import load_policy, load_tokenizer
from pipelines.lm.sampling import batch_seed, sample_completions
from pipelines.numerics import ppo_math as pm

# Imported from here by pipelines/run.py, pipelines/bench.py and the tests.
__all__ = ["PPO", "ValueModel", "Batch", "pack", "token_logprobs", "run", "check", "check_settings", "snapshot_steps"]
log = logging.getLogger(__name__)
LOSS_STATS = ("pg_loss", "vf_loss", "pg_clipfrac", "vf_clipfrac", "approxkl")


@dataclass
class Rollout:
    """What the rollout's policy, reference and value model computed on it (B, T), no gradient: the update's
    `old` log-probs and values."""
    logprobs: torch.Tensor
    entropy: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor


class PPO:
    """The PPO learner: policy, value model, frozen (or EMA) reference, their optimisers and the KL controller.
    `step(step_index, prompts)` does one rollout + update; ppo_checkpoint.save_state saves what resuming needs."""

    def __init__(self, policy, ref, value_model: ValueModel, scorer, args: DictConfig, eos_id: int, pad_id: int,
                 max_new_tokens: int, seed: int, generation_batch_size: int = 64, temperature: float = 1.0,
                 bf16: bool = False, replicas: DataParallel | None = None):
        self.policy, self.ref, self.value_model, self.scorer, self.a = policy, ref, value_model, scorer, args
        self.eos_id, self.pad_id, self.max_new_tokens, self.seed = eos_id, pad_id, max_new_tokens, seed
        self.generation_batch_size, self.temperature = generation_batch_size, temperature
        for model in (policy, ref, value_model):
            model.eval()  # dropout off everywhere (gradients still flow in eval mode)
        ref.requires_grad_(False)
        # This process alone, or data-parallel over the processes of a launch: the backward passes through DDP, or
        # every model is sharded in place (FSDP2; before the optimisers are built, which then hold shards).
        self.dp = replicas or DataParallel(active=False)
        self.policy_train, self.value_train = self.dp.wrap(policy), self.dp.wrap(value_model)
        self.ref = self.dp.frozen(ref)
        # Adam eps 1e-5 as in the reference PPO implementations (Huang et al. 2024). The rates are set before every
        # step from the schedule (`set_learning_rates`).
        pm.lr_factor(args.lr_schedule, 0, args.total_steps)  # an unknown schedule fails here, not at step 1
        self.policy_opt = torch.optim.Adam(policy.parameters(), lr=args.learning_rate, eps=1e-5)
        self.value_opt = torch.optim.Adam(value_model.parameters(), lr=args.value_learning_rate, eps=1e-5)
        kl = args.kl
        self.kl_ctl = pm.AdaptiveKLController(kl.init_coef, kl.target, kl.horizon) if kl.target is not None \
            else pm.FixedKLController(kl.init_coef)
        # Fixed score normalisation (set by `run` from onpolicy.score_normalisation, or identity when switched off).
        self.score_mean, self.score_std = 0.0, 1.0
        self.device = next(policy.parameters()).device
        # Mixed precision (model.precision=bf16 where the device has it): fp32 weights, optimiser and losses; the
        # forward passes of rollout scoring and of the update under bf16 autocast, so old and new log-probs of a
        # rollout come from the same numerics (ratio 1 at the first minibatch). Sampling runs in the process's
        # inference precision (pipelines/infra/device.py: fp32 on CPUs, bf16 autocast on a bf16 GPU preset).
        self.bf16 = bf16

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def set_learning_rates(self, step_index: int) -> float:
        """Policy and value rates of step `step_index` (lr_schedule over total_steps); returns the schedule factor."""
        factor = pm.lr_factor(self.a.lr_schedule, step_index, self.a.total_steps)
        for opt, base in ((self.policy_opt, self.a.learning_rate), (self.value_opt, self.a.value_learning_rate)):
            for group in opt.param_groups:
                group["lr"] = base * factor
        return factor

    # -- one PPO step -----------------------------------------------------------------------------------------
    def step(self, step_index: int, prompts: list[list[int]]) -> dict:
        """One rollout + update on `prompts` (this process's share of the step's batch); the step's metrics."""
        a, dp = self.a, self.dp
        t0 = time.time()
        # 0. Learning rates of this step (a pure function of the step: a resumed run anneals as an uninterrupted one).
        lr = a.learning_rate * self.set_learning_rates(step_index)

        # 1. Rollout: one completion per prompt from the current policy's full distribution.
        completions = self.sample(prompts, dp.seed_tag(f"ppo/rollout/{step_index}"))
        b = pack(prompts, completions, self.pad_id, self.device)
        t_rollout = time.time() - t0

        # 2. Scores (r_phi or r*, then the fixed normalisation) and KL-shaped per-token rewards, from the rollout's
        #    log-probs under the policy and the reference.
        raw = self.raw_scores(prompts, completions)
        scores = (raw - self.score_mean) / self.score_std if a.normalize_scores else raw
        old = self.rollout_forward(b)
        rewards, kl = pm.kl_shaped_rewards(scores, old.logprobs, old.ref_logprobs, b.mask, self.kl_ctl.value)

        # 3. Advantages (GAE) and returns; advantages whitened over the whole batch's real tokens.
        advantages, returns = pm.gae(rewards, old.values, b.mask, a.gamma, a.lam)
        if a.whiten_advantages:
            advantages = pm.whiten(advantages, b.mask, all_sum=dp.whole_batch_sum)

        # 4. PPO epochs over shuffled minibatches: clipped policy and value losses, one optimiser step each.
        losses = self.update(step_index, b, old, advantages, returns)

        # 5. KL controller on the whole batch's KL (with the coefficient this step used), EMA reference, metrics.
        kl_coef = self.kl_ctl.value
        means = self.batch_means(b, completions, kl, raw, scores, old.entropy)
        self.kl_ctl.update(means["kl"], dp.total(len(prompts)))
        if a.ref_ema_decay is not None:
            pm.ema_update(self.ref, self.policy, a.ref_ema_decay)
        non_score = -kl_coef * means["kl"]
        return {
            "objective/kl": means["kl"], "objective/kl_coef": kl_coef, "objective/scores": means["raw"],
            "objective/scores_normalized": means["scores"], "objective/non_score_reward": non_score,
            "objective/rlhf_reward": means["scores"] + non_score, "objective/entropy": means["entropy"], "lr": lr,
            "policy/approxkl": losses["approxkl"], "policy/clipfrac": losses["pg_clipfrac"],
            "loss/policy": losses["pg_loss"], "loss/value": losses["vf_loss"], "val/clipfrac": losses["vf_clipfrac"],
            "val/mean": float(pm.masked_mean(old.values, b.mask)),
            "val/explained_variance": float(1 - pm.masked_var(returns - old.values, b.mask)
                                            / pm.masked_var(returns, b.mask).clamp(min=1e-8)),
            "rollout/mean_length": means["length"], "rollout/eos_rate": means["eos"],
            "time/rollout_s": t_rollout, "time/step_s": time.time() - t0}

    # -- 1. and 2.: rollout, scores, the rollout's forward passes ---------------------------------------------
    def sample(self, prompts: list[list[int]], tag: str) -> list[list[int]]:
        return sample_completions(self.policy, prompts, max_new_tokens=self.max_new_tokens, eos_id=self.eos_id,
                                  pad_id=self.pad_id, batch_size=self.generation_batch_size, seed=self.seed,
                                  tag=tag, temperature=self.temperature)

    def raw_scores(self, prompts, completions) -> torch.Tensor:
        scores = torch.tensor(self.scorer(prompts, completions), dtype=torch.float32, device=self.device)
        if self.a.missing_eos_penalty is not None:
            # Huang et al. 2024: a completion cut at the length limit gets a fixed low score instead.
            no_eos = torch.tensor([len(c) == 0 or c[-1] != self.eos_id for c in completions], device=self.device)
            scores = torch.where(no_eos, torch.full_like(scores, float(self.a.missing_eos_penalty)), scores)
        return scores

    @torch.no_grad()
    def rollout_forward(self, b: Batch) -> Rollout:
        """Old log-probs, entropies, reference log-probs and values of the rollout, in micro-batches."""
        parts = []
        n = b.ids.shape[0]
        for s in range(0, n, self.a.micro_batch_size):
            mb = b.rows(torch.arange(s, min(n, s + self.a.micro_batch_size), device=self.device))
            with self.autocast():
                logprobs, ent = token_logprobs(self.policy, mb, with_entropy=True)
                parts.append((logprobs, ent, token_logprobs(self.ref, mb), token_values(self.value_model, mb)))
        return Rollout(*(torch.cat(column) for column in zip(*parts)))

    # -- 4.: the update -----------------------------------------------------------------------------------------
    def update(self, step_index: int, b: Batch, old: Rollout, advantages: torch.Tensor, returns: torch.Tensor
               ) -> dict[str, float]:
        """ppo_epochs passes over the rollout in shuffled minibatches (each process its share of every minibatch);
        returns each loss statistic's mean over the micro-batches."""
        a = self.a
        n, minibatch = b.ids.shape[0], self.dp.local(a.minibatch_size)
        gen = torch.Generator().manual_seed(batch_seed(self.seed, self.dp.seed_tag("ppo/minibatches"), step_index))
        stats: dict[str, list[float]] = {k: [] for k in LOSS_STATS}
        for _ in range(a.ppo_epochs):
            order = torch.randperm(n, generator=gen).to(self.device)
            for start in range(0, n, minibatch):
                self.minibatch_step(order[start:start + minibatch], b, old, advantages, returns, stats)
        return {k: sum(v) / max(1, len(v)) for k, v in stats.items()}

    def minibatch_step(self, rows: torch.Tensor, b: Batch, old: Rollout, advantages: torch.Tensor,
                       returns: torch.Tensor, stats: dict[str, list[float]]) -> None:
        """One optimiser step of both models on the minibatch `rows`, gradients accumulated over micro-batches, each
        weighted by its share of the minibatch's tokens (token-weighted means); DDP averages the processes'
        gradients at the last micro-batch. Appends each micro-batch's loss statistics to `stats`."""
        a = self.a
        mb_tokens = b.mask[rows].sum().clamp(min=1)
        self.policy_opt.zero_grad(set_to_none=True)
        self.value_opt.zero_grad(set_to_none=True)
        micro_starts = range(0, len(rows), a.micro_batch_size)
        for ms in micro_starts:
            micro = rows[ms:ms + a.micro_batch_size]
            weight = b.mask[micro].sum() / mb_tokens
            with self.dp.accumulate([self.policy_train, self.value_train], sync=ms == micro_starts[-1]):
                loss, micro_stats = self.loss(b.rows(micro), old, advantages[micro], returns[micro], micro)
                (weight * loss).backward()
            for k, v in micro_stats.items():
                stats[k].append(float(v.detach()))
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), a.max_grad_norm)
        torch.nn.utils.clip_grad_norm_(self.value_model.parameters(), a.max_grad_norm)
        self.policy_opt.step()
        self.value_opt.step()

    def loss(self, mb: Batch, old: Rollout, advantages: torch.Tensor, returns: torch.Tensor, rows: torch.Tensor):
        """Clipped policy loss + vf_coef * clipped value loss of micro-batch `mb` (rows `rows` of the rollout)."""
        with self.autocast():
            new_logps = token_logprobs(self.policy_train, mb)
            new_values = token_values(self.value_train, mb)
        pg_loss, pg = pm.policy_loss(new_logps, old.logprobs[rows], advantages, mb.mask, self.a.clip_range)
        vf_loss, vf = pm.value_loss(new_values, old.values[rows], returns, mb.mask, self.a.clip_range_value)
        stats = {"pg_loss": pg_loss, "vf_loss": vf_loss, "pg_clipfrac": pg["clipfrac"], "vf_clipfrac": vf["clipfrac"],
                 "approxkl": pg["approxkl"]}
        return pg_loss + self.a.vf_coef * vf_loss, stats

    # -- 5.: the whole batch's means ------------------------------------------------------------------------------
    def batch_means(self, b: Batch, completions, kl, raw, scores, entropy) -> dict[str, float]:
        """Per-sequence means over every process's rollouts: KL, scores, normalised scores, entropy, length, EOS."""
        lengths = b.mask.sum(1).float()
        eos = torch.tensor([float(len(c) > 0 and c[-1] == self.eos_id) for c in completions], device=self.device)
        means = self.dp.batch_mean(torch.stack([kl.sum(1).mean(), raw.mean(), scores.mean(),
                                                (entropy * b.mask).sum(1).mean(), lengths.mean(), eos.mean()]),
                                   len(completions))
        return dict(zip(("kl", "raw", "scores", "entropy", "length", "eos"), (float(t) for t in means)))


def build(cfg: DictConfig, tokenizer, scorer, start_dir: Path | None, dp: DataParallel) -> PPO:
    """The learner of a fresh or resumed run: policy and reference (SFT, or the checkpoint's), value model."""
    m, g = cfg.method, cfg.task.generation
    device = pick_device(cfg.device)
    sft_dir = Path(cfg.paths.sft) / "policy"
    # Sharded, each model is read into host memory and sharded before the next is read: only one whole model is
    # ever on the GPU, on its way to its shards (at GPT-J 6B the four whole models would not fit).
    load_to = "cpu" if dp.sharded else device
    policy = dp.place(load_policy(start_dir / "policy" if start_dir else sft_dir, load_to))
    ref = dp.place(load_policy(start_dir / "ref" if start_dir and m.ref_ema_decay is not None else sft_dir, load_to))
    value_model = dp.place(load_value_model(m, cfg, start_dir, sft_dir).to(load_to))
    return PPO(policy, ref, value_model, scorer, m, tokenizer.eos_token_id, tokenizer.pad_token_id,
               g.max_new_tokens, cfg.seed, g.batch_size, g.temperature, bf16=use_bf16(cfg.model.precision, device),
               replicas=dp)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    m = cfg.method
    check_settings(m)
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)
    scorer = method_scorer(cfg, tokenizer, pick_device(cfg.device))
    pool = train_prefixes(cfg, tokenizer, m.n_prompts)
    # Under a multi-process launch every process runs this loop on its share of each batch (replicated or sharded
    # models: for_launch) and the main one alone writes files; else this process alone.
    dp = for_launch()
    if dp.sharded and hasattr(scorer, "model"):  # r_phi sharded like the others (every process scores its share)
        scorer.model = dp.frozen(scorer.model)
    folder = RunFolder(out_dir, dp)
    if dp.main:
        folder.recover()
    dp.barrier()
    start_dir = folder.resume_point()
    ppo = build(cfg, tokenizer, scorer, start_dir, dp)
    if start_dir:
        start = load_state(ppo, start_dir)
        log.info("ppo: resuming after step %d", start)
        if dp.main:
            folder.forget_after(start)
    else:
        start = 0
        if dp.main:
            folder.clear()
        if m.normalize_scores:
            fit_score_normalisation(ppo, cfg, pool)
    report_to = trainer_report_to(cfg, out_dir, f"{m.tag}-seed{cfg.seed}") if dp.main else []
    t0, last_row, snapshots = time.time(), {}, snapshot_steps(m)
    for step in tqdm(range(start, m.total_steps), desc=f"{m.tag}", initial=start, total=m.total_steps,
                     disable=not dp.main):
        last_row = ppo.step(step, dp.shard(prompt_stream(pool, m.batch_size, cfg.seed, step)))
        done = step + 1
        if dp.main:
            log_metrics(folder.metrics, done, last_row, wandb_on=bool(report_to))
        # Every process: a sharded policy is gathered collectively, then the main process writes.
        if done in snapshots:
            folder.snapshot(ppo, done)
        if done % m.save_steps == 0 or done == m.total_steps:
            folder.checkpoint(ppo, done)
    dp.check_in_sync(ppo.policy)
    dp.check_in_sync(ppo.value_model)
    folder.finish(ppo, tokenizer)
    if not dp.main:
        return {}
    finish_wandb()
    steps_timed = [r["time/step_s"] for r in read_jsonl(folder.metrics)]
    return {"steps": m.total_steps, "world_size": dp.size, "sharded": dp.sharded, "resumed_from": start,
            "final_kl": round(last_row.get("objective/kl", 0.0), 4),
            "final_kl_coef": round(last_row.get("objective/kl_coef", 0.0), 5),
            "final_scores": round(last_row.get("objective/scores", 0.0), 4),
            "score_mean": ppo.score_mean, "score_std": ppo.score_std,
            "seconds_per_step": round(sum(steps_timed) / max(1, len(steps_timed)), 4),
            "wall_time_loop_s": round(time.time() - t0, 2)}


def fit_score_normalisation(ppo: PPO, cfg: DictConfig, pool: list[list[int]]) -> None:
    """The fixed score normalisation from SFT samples (onpolicy.score_normalisation, PPO's scores with its missing-EOS
    penalty; every process samples its share); with value_init=reward_model, r_phi's head rescaled to it."""
    ppo.score_mean, ppo.score_std = score_normalisation(ppo.policy, ppo.raw_scores, pool, cfg, ppo.eos_id,
                                                        ppo.pad_id, ppo.dp)
    log.info("ppo: score normalisation from %d SFT samples: mean %.4f, std %.4f", cfg.method.score_norm_samples,
             ppo.score_mean, ppo.score_std)
    if cfg.method.value_init == "reward_model":  # r_phi's head then predicts the normalised score
        ppo.value_model.normalise_head(ppo.score_mean, ppo.score_std)
