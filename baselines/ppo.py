"""PPO for RLHF (Ziegler et al. 2019; details after Huang et al. 2024), written here because TRL >= 1.13 has none.

One step: sample completions from the current policy for a batch of prompts (full distribution, no EOS masking),
score them (learned reward model, or r* for PPO-GT: any `scorer(prompts, completions) -> list[float]`), shape
the reward with a per-token KL penalty to the frozen reference (= SFT), estimate advantages with GAE, and take a
few epochs of clipped policy and value updates on minibatches. The numerics live in `ppo_math`.

Design choices (all in conf/method/ppo.yaml):
- The value model is a separate network (a trunk + a scalar head), not a head on the policy: value regression
  then cannot pull the policy's features, and the policy/value learning rates are independent. It costs one more
  forward/backward per token; at paper scale it doubles the trainable memory (the main reason for shared trunks).
  It starts from the SFT trunk with a zero head (value_init=sft) or, as in N+, from the learned reward model r_phi,
  trunk and scalar head (value_init=reward_model), the head rescaled to the normalised score.
- Policy and value learning rates anneal linearly to 0 over total_steps (lr_schedule=linear, as N+ and TRL) or stay
  constant; the rate is a pure function of the step, so resuming needs no scheduler state.
- Dropout is off in every model (eval mode throughout); rollout and update compute the same function.
- Scores are normalised with a fixed mean/std measured on SFT samples before training, so one KL coefficient
  means the same thing for rewards of any scale.

Under a multi-process launch that keeps whole weights in every process (DDP, torchrun) the loop trains
data-parallel: each process samples, scores and updates on its share of every batch and minibatch, DDP averages the
gradients, and whitening, score normalisation and the KL controller see the whole batch (pipelines/distributed.py).

Stage: reads sft/policy, data/ (train prefixes), reward_model/ (learned; also the value model's start with
value_init=reward_model) or reward/ (r*). Writes snapshots/step*/ (frontier points, at snapshot_steps or every
eval_every steps), policy/, last/ (resume checkpoint), metrics.jsonl."""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoModel, AutoModelForSequenceClassification

from baselines.onpolicy import method_scorer, prompt_stream, train_prefixes
from pipelines.infra.cost_meter import meter
from pipelines.infra.device import pick_device, use_bf16
from pipelines.infra.distributed import Replicas, replicates_weights, world_size
from pipelines.infra.io import UserError, atomic_write_json, read_jsonl
from pipelines.infra.tracking import finish_wandb, log_metrics, trainer_report_to
from pipelines.lm.lm_head import entropy
from pipelines.lm.models import attn_kwargs, load_policy, load_tokenizer
from pipelines.lm.sampling import batch_seed, right_pad, sample_completions
from pipelines.numerics import ppo_math as pm

log = logging.getLogger(__name__)


class ValueModel(torch.nn.Module):
    """V(s_t) for every position: a transformer trunk + a linear head. From the SFT policy (`load`): the head is
    zero-init, so the first value estimates are 0 and the first advantages are the returns themselves. From the
    reward model (`from_reward_model`, N+): r_phi's trunk and scalar head, so V(s_t) starts as r_phi read at t."""

    def __init__(self, trunk: torch.nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = torch.nn.Linear(trunk.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    @classmethod
    def load(cls, folder: str | Path) -> "ValueModel":
        """From a causal-LM folder (the SFT policy: fresh head) or a folder saved by `save` (head restored)."""
        trunk = AutoModel.from_pretrained(str(folder), use_safetensors=True, trust_remote_code=False, **attn_kwargs())
        model = cls(trunk)
        head = Path(folder) / "value_head.safetensors"
        if head.exists():
            model.head.load_state_dict(load_file(str(head)))
        return meter(model.eval())

    @classmethod
    def from_reward_model(cls, folder: str | Path) -> "ValueModel":
        """From a saved sequence classifier with one label (r_phi): its trunk and its scalar head (`score`, no bias
        in GPT-2: the head's bias starts at 0). The trunk's token embedding may have rows the policy never emits
        (r_phi's added pad token); they are kept and never read."""
        clf = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True,
                                                                 trust_remote_code=False, **attn_kwargs())
        score = getattr(clf, "score", None)
        if not isinstance(score, torch.nn.Linear) or score.out_features != 1:
            raise UserError(f"value_init=reward_model: {folder} has no scalar `score` head (Linear(hidden, 1))")
        model = cls(clf.base_model)
        with torch.no_grad():
            model.head.weight.copy_(score.weight)
            if score.bias is not None:
                model.head.bias.copy_(score.bias)
        return meter(model.eval())

    @torch.no_grad()
    def normalise_head(self, mean: float, std: float) -> None:
        """head <- (head - mean) / std: an r_phi head then predicts the normalised score PPO's returns are made of."""
        self.head.weight.div_(std)
        self.head.bias.sub_(mean).div_(std)

    def save(self, folder: Path) -> None:
        self.trunk.save_pretrained(str(folder), safe_serialization=True)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()},
                  str(folder / "value_head.safetensors"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        with torch.autocast(hidden.device.type, enabled=False):  # the scalar head in fp32 under mixed precision
            return self.head(hidden.float()).squeeze(-1)


@dataclass
class Batch:
    """A rollout batch, right-padded. ids/attn (B, W): prompt + completion; positions (B, T): index of the state
    that emits completion token t (the previous position); mask (B, T): True = real completion token."""
    ids: torch.Tensor
    attn: torch.Tensor
    positions: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor

    def rows(self, index: torch.Tensor) -> "Batch":
        return Batch(*(t[index] for t in (self.ids, self.attn, self.positions, self.tokens, self.mask)))


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int, device) -> Batch:
    ids, attn = right_pad([p + c for p, c in zip(prompts, completions)], pad_id, device)
    T = max(1, max(len(c) for c in completions))
    positions = torch.zeros((len(prompts), T), dtype=torch.long)
    tokens = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        positions[i, :len(c)] = torch.arange(len(p) - 1, len(p) - 1 + len(c))
        tokens[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, :len(c)] = True
    return Batch(ids, attn, positions.to(device), tokens.to(device), mask.to(device))


def token_logprobs(model, b: Batch, with_entropy: bool = False):
    """log pi(a_t | s_t) of the completion tokens, (B, T) float32; optionally the per-token entropy too."""
    logits = model(input_ids=b.ids, attention_mask=b.attn).logits
    logits = logits.gather(1, b.positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).float()
    logp_all = torch.log_softmax(logits, dim=-1)
    logps = logp_all.gather(-1, b.tokens.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logps
    return logps, entropy(logp_all)


def token_values(value_model: ValueModel, b: Batch) -> torch.Tensor:
    return value_model(b.ids, b.attn).gather(1, b.positions)


class PPO:
    """The PPO learner: policy, value model, frozen (or EMA) reference, their optimisers and the KL controller.
    `step(step_index, prompts)` does one rollout + update; everything it needs to resume is in `state_dict()`."""

    def __init__(self, policy, ref, value_model: ValueModel, scorer, args: DictConfig, eos_id: int, pad_id: int,
                 max_new_tokens: int, seed: int, generation_batch_size: int = 64, temperature: float = 1.0,
                 bf16: bool = False, replicas: Replicas | None = None):
        self.policy, self.ref, self.value_model, self.scorer, self.a = policy, ref, value_model, scorer, args
        self.eos_id, self.pad_id, self.max_new_tokens, self.seed = eos_id, pad_id, max_new_tokens, seed
        self.generation_batch_size, self.temperature = generation_batch_size, temperature
        for model in (policy, ref, value_model):
            model.eval()  # dropout off everywhere (gradients still flow in eval mode)
        ref.requires_grad_(False)
        # Data-parallel over the processes of a launch (each samples and scores its share of the batch; gradients
        # are averaged by DDP; whitening, the KL controller and the logged means use the whole batch), or alone.
        self.replicas = replicas or Replicas(active=False)
        self.policy_train, self.value_train = self.replicas.wrap(policy), self.replicas.wrap(value_model)
        # Adam eps 1e-5 as in the reference PPO implementations (Huang et al. 2024). The rates are set before every
        # step from the schedule (`set_learning_rates`).
        pm.lr_factor(args.lr_schedule, 0, args.total_steps)  # an unknown schedule fails here, not at step 1
        self.policy_opt = torch.optim.Adam(policy.parameters(), lr=args.learning_rate, eps=1e-5)
        self.value_opt = torch.optim.Adam(value_model.parameters(), lr=args.value_learning_rate, eps=1e-5)
        kl = args.kl
        self.kl_ctl = pm.AdaptiveKLController(kl.init_coef, kl.target, kl.horizon) if kl.target is not None \
            else pm.FixedKLController(kl.init_coef)
        # Fixed score normalisation (set by `fit_score_normalisation`, or identity when switched off).
        self.score_mean, self.score_std = 0.0, 1.0
        self.device = next(policy.parameters()).device
        # Mixed precision (model.precision=bf16 where the device has it): fp32 weights, optimiser and losses; the
        # forward passes of rollout scoring and of the update under bf16 autocast, so old and new log-probs of a
        # rollout come from the same numerics (ratio 1 at the first minibatch). Sampling stays fp32.
        self.bf16 = bf16

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # -- rollout helpers --------------------------------------------------------------------------------------
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

    def _tag(self, tag: str) -> str:
        """Sampling-seed tag: each data-parallel process draws its own samples."""
        return tag if self.replicas.size == 1 else f"{tag}/rank{self.replicas.rank}"

    def fit_score_normalisation(self, prompts: list[list[int]]) -> None:
        """Mean and std of the scores of SFT (= initial policy) samples; scores are then (s - mean) / std. `prompts`
        is this process's share; the statistics are those of every process's samples."""
        scores = self.raw_scores(prompts, self.sample(prompts, self._tag("ppo/score_norm")))
        mean, std = self.replicas.mean_std(scores)
        self.score_mean, self.score_std = mean, max(std, 1e-6)
        log.info("ppo: score normalisation from %d SFT samples: mean %.4f, std %.4f", len(prompts) * self.replicas.size,
                 self.score_mean, self.score_std)

    @torch.no_grad()
    def _forward_in_chunks(self, b: Batch):
        """Rollout-time quantities in micro-batches: old log-probs, entropies, reference log-probs, values."""
        out = {"logprobs": [], "entropy": [], "ref_logprobs": [], "values": []}
        n = b.ids.shape[0]
        for s in range(0, n, self.a.micro_batch_size):
            mb = b.rows(torch.arange(s, min(n, s + self.a.micro_batch_size), device=self.device))
            with self.autocast():
                lp, ent = token_logprobs(self.policy, mb, with_entropy=True)
                out["logprobs"].append(lp)
                out["entropy"].append(ent)
                out["ref_logprobs"].append(token_logprobs(self.ref, mb))
                out["values"].append(token_values(self.value_model, mb))
        return {k: torch.cat(v) for k, v in out.items()}

    def set_learning_rates(self, step_index: int) -> float:
        """Policy and value rates of step `step_index` (lr_schedule over total_steps); returns the schedule factor."""
        factor = pm.lr_factor(self.a.lr_schedule, step_index, self.a.total_steps)
        for opt, base in ((self.policy_opt, self.a.learning_rate), (self.value_opt, self.a.value_learning_rate)):
            for group in opt.param_groups:
                group["lr"] = base * factor
        return factor

    # -- one PPO step ---------------------------------------------------------------------------------------
    def step(self, step_index: int, prompts: list[list[int]]) -> dict:
        """One rollout + update on `prompts` (this process's share of the step's batch)."""
        a, rep = self.a, self.replicas
        t0 = time.time()
        # 0. learning rates of this step (a pure function of the step: a resumed run anneals as an uninterrupted one)
        lr = a.learning_rate * self.set_learning_rates(step_index)
        # 1. rollout: completions from the current policy's full distribution
        completions = self.sample(prompts, self._tag(f"ppo/rollout/{step_index}"))
        b = pack(prompts, completions, self.pad_id, self.device)
        t_rollout = time.time() - t0
        # 2. score: r_phi or r*, then the fixed normalisation
        raw = self.raw_scores(prompts, completions)
        scores = (raw - self.score_mean) / self.score_std if a.normalize_scores else raw
        # 3. old log-probs, reference log-probs, values; KL-shaped per-token rewards
        fwd = self._forward_in_chunks(b)
        mask = b.mask
        rewards, kl = pm.kl_shaped_rewards(scores, fwd["logprobs"], fwd["ref_logprobs"], mask, self.kl_ctl.value)
        # 4. GAE; advantages whitened over the batch's real tokens
        advantages, returns = pm.gae(rewards, fwd["values"], mask, a.gamma, a.lam)
        if a.whiten_advantages:
            advantages = pm.whiten(advantages, mask, all_sum=rep.all_sum if rep.size > 1 else None)
        # 5. PPO epochs over shuffled minibatches (gradient accumulated over micro-batches); each process takes
        # its share of every minibatch, DDP averages the processes' gradients at the last micro-batch.
        n, minibatch = len(prompts), a.minibatch_size // rep.size
        gen = torch.Generator().manual_seed(batch_seed(self.seed, self._tag("ppo/minibatches"), step_index))
        stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "vf_loss", "pg_clipfrac", "vf_clipfrac",
                                                         "approxkl")}
        for _ in range(a.ppo_epochs):
            order = torch.randperm(n, generator=gen).to(self.device)
            for start in range(0, n, minibatch):
                mb_rows = order[start:start + minibatch]
                mb_tokens = mask[mb_rows].sum().clamp(min=1)
                self.policy_opt.zero_grad(set_to_none=True)
                self.value_opt.zero_grad(set_to_none=True)
                micro_starts = range(0, len(mb_rows), a.micro_batch_size)
                for ms in micro_starts:
                    rows = mb_rows[ms:ms + a.micro_batch_size]
                    mb, mb_mask = b.rows(rows), mask[rows]
                    # Token-weighted: each micro-batch's mean scaled by its share of the minibatch's tokens.
                    weight = mb_mask.sum() / mb_tokens
                    with rep.no_sync([self.policy_train, self.value_train], skip=ms != micro_starts[-1]):
                        with self.autocast():
                            new_logps = token_logprobs(self.policy_train, mb)
                            new_values = token_values(self.value_train, mb)
                        pg_loss, pg_stats = pm.policy_loss(new_logps, fwd["logprobs"][rows], advantages[rows],
                                                           mb_mask, a.clip_range)
                        vf_loss, vf_stats = pm.value_loss(new_values, fwd["values"][rows], returns[rows], mb_mask,
                                                          a.clip_range_value)
                        (weight * (pg_loss + a.vf_coef * vf_loss)).backward()
                    for k, v in (("pg_loss", pg_loss), ("vf_loss", vf_loss), ("pg_clipfrac", pg_stats["clipfrac"]),
                                 ("vf_clipfrac", vf_stats["clipfrac"]), ("approxkl", pg_stats["approxkl"])):
                        stats[k].append(float(v.detach()))
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), a.max_grad_norm)
                torch.nn.utils.clip_grad_norm_(self.value_model.parameters(), a.max_grad_norm)
                self.policy_opt.step()
                self.value_opt.step()
        # 6. KL controller (on the whole batch's KL) and (optionally) the EMA reference
        kl_coef = self.kl_ctl.value
        lengths = mask.sum(1).float()
        eos = torch.tensor([float(len(c) > 0 and c[-1] == self.eos_id) for c in completions], device=self.device)
        # Per-sequence means over every process's rollouts: KL, scores, normalised scores, entropy, length, EOS
        means = rep.batch_mean(torch.stack([kl.sum(1).mean(), raw.mean(), scores.mean(),
                                            (fwd["entropy"] * mask).sum(1).mean(), lengths.mean(), eos.mean()]), n)
        seq_kl, raw_mean, score_mean, entropy, mean_len, eos_rate = (float(t) for t in means)
        self.kl_ctl.update(seq_kl, n * rep.size)
        if a.ref_ema_decay is not None:
            pm.ema_update(self.ref, self.policy, a.ref_ema_decay)
        # 7. metrics (TRL key names); losses, clip fractions and value statistics are this process's
        non_score = -kl_coef * seq_kl
        mean = lambda k: sum(stats[k]) / max(1, len(stats[k]))  # noqa: E731
        return {
            "objective/kl": seq_kl, "objective/kl_coef": kl_coef, "objective/scores": raw_mean,
            "objective/scores_normalized": score_mean, "objective/non_score_reward": non_score,
            "objective/rlhf_reward": score_mean + non_score,
            "objective/entropy": entropy, "lr": lr,
            "policy/approxkl": mean("approxkl"), "policy/clipfrac": mean("pg_clipfrac"),
            "loss/policy": mean("pg_loss"), "loss/value": mean("vf_loss"), "val/clipfrac": mean("vf_clipfrac"),
            "val/mean": float(pm.masked_mean(fwd["values"], mask)),
            "val/explained_variance": float(1 - pm.masked_var(returns - fwd["values"], mask)
                                            / pm.masked_var(returns, mask).clamp(min=1e-8)),
            "rollout/mean_length": mean_len, "rollout/eos_rate": eos_rate,
            "time/rollout_s": t_rollout, "time/step_s": time.time() - t0}

    # -- resume ---------------------------------------------------------------------------------------------
    def save(self, folder: Path, step: int) -> None:
        """Everything needed to continue exactly: weights, optimisers, KL coefficient, normalisation, RNG, step."""
        folder.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(str(folder / "policy"), safe_serialization=True)
        self.value_model.save(folder / "value")
        if self.a.ref_ema_decay is not None:
            self.ref.save_pretrained(str(folder / "ref"), safe_serialization=True)
        torch.save({"policy_opt": self.policy_opt.state_dict(), "value_opt": self.value_opt.state_dict(),
                    "torch_rng": torch.get_rng_state()}, folder / "optimizers.pt")
        atomic_write_json(folder / "state.json", {"step": step, "kl_coef": self.kl_ctl.value,
                                                  "score_mean": self.score_mean, "score_std": self.score_std})

    def load(self, folder: Path) -> int:
        """Restore from `save`; returns the number of finished steps. Weights were loaded by the caller."""
        blob = torch.load(folder / "optimizers.pt", weights_only=True, map_location=self.device)
        self.policy_opt.load_state_dict(blob["policy_opt"])
        self.value_opt.load_state_dict(blob["value_opt"])
        torch.set_rng_state(blob["torch_rng"].cpu())
        state = json.loads((folder / "state.json").read_text())
        self.kl_ctl.value = state["kl_coef"]
        self.score_mean, self.score_std = state["score_mean"], state["score_std"]
        return int(state["step"])


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
    if w > 1 and replicates_weights():  # PPO trains data-parallel: each process a share of both
        need(m.minibatch_size % w == 0,
             f"method.minibatch_size ({m.minibatch_size}) must be a multiple of the {w} processes of the launch")
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


def load_value_model(m: DictConfig, cfg: DictConfig, start_dir: Path | None, sft_dir: Path) -> ValueModel:
    """A resumed run's value model, else a fresh one as value_init says (SFT trunk + zero head, or r_phi)."""
    if start_dir:
        return ValueModel.load(start_dir / "value")
    if m.value_init == "reward_model":
        return ValueModel.from_reward_model(Path(cfg.paths.reward_model) / "model")
    return ValueModel.load(sft_dir)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    m, g = cfg.method, cfg.task.generation
    check_settings(m)
    device = pick_device(cfg.device)
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)
    scorer = method_scorer(cfg, tokenizer, device)
    pool = train_prefixes(cfg, tokenizer, m.n_prompts)
    # Under a multi-process launch that keeps whole weights in every process (DDP, torchrun), every process runs
    # this loop on its share of each batch; the main one alone writes files. Else this process alone.
    replicas = Replicas(active=replicates_weights())
    last, tmp = out_dir / "last", out_dir / "last.tmp"
    if replicas.main and not (last / "state.json").exists() and (tmp / "state.json").exists():
        # Interrupted between removing the old checkpoint and renaming the new one (state.json is written last,
        # so a last.tmp that has it is complete).
        shutil.rmtree(last, ignore_errors=True)
        tmp.rename(last)
    replicas.barrier()
    start_dir = last if (last / "state.json").exists() else None
    policy = load_policy(start_dir / "policy" if start_dir else sft_dir, device)
    ref = load_policy(start_dir / "ref" if start_dir and m.ref_ema_decay is not None else sft_dir, device)
    value_model = load_value_model(m, cfg, start_dir, sft_dir).to(device)
    ppo = PPO(policy, ref, value_model, scorer, m, tokenizer.eos_token_id, tokenizer.pad_token_id,
              g.max_new_tokens, cfg.seed, g.batch_size, g.temperature, bf16=use_bf16(cfg.model.precision, device),
              replicas=replicas)
    metrics_path = out_dir / "metrics.jsonl"
    if start_dir:
        start = ppo.load(start_dir)
        log.info("ppo: resuming after step %d", start)
        if replicas.main:
            # Drop what was logged or snapshotted after the checkpoint; those steps are redone.
            kept = [r for r in read_jsonl(metrics_path) if r["step"] <= start] if metrics_path.exists() else []
            metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            for snap in (out_dir / "snapshots").glob("step*"):
                if int(snap.name[4:]) > start:
                    shutil.rmtree(snap)
    else:
        start = 0
        if replicas.main:
            metrics_path.unlink(missing_ok=True)
            shutil.rmtree(out_dir / "snapshots", ignore_errors=True)  # from a start that never reached a checkpoint
        if m.normalize_scores:
            ppo.fit_score_normalisation(replicas.shard(prompt_stream(pool, m.score_norm_samples, cfg.seed + 1, 0)))
            if m.value_init == "reward_model":  # r_phi's head then predicts the normalised score
                value_model.normalise_head(ppo.score_mean, ppo.score_std)
    report_to = trainer_report_to(cfg, out_dir, f"{m.tag}-seed{cfg.seed}") if replicas.main else []
    t0, last_row, snapshots = time.time(), {}, snapshot_steps(m)
    for step in tqdm(range(start, m.total_steps), desc=f"{m.tag}", initial=start, total=m.total_steps,
                     disable=not replicas.main):
        row = ppo.step(step, replicas.shard(prompt_stream(pool, m.batch_size, cfg.seed, step)))
        done = step + 1
        last_row = row
        if not replicas.main:
            continue
        log_metrics(metrics_path, done, row, wandb_on=bool(report_to))
        if done in snapshots:
            target = out_dir / "snapshots" / f"step{done:06d}"
            if not target.exists():
                policy.save_pretrained(str(target), safe_serialization=True)
        if done % m.save_steps == 0 or done == m.total_steps:
            shutil.rmtree(tmp, ignore_errors=True)
            ppo.save(tmp, done)
            shutil.rmtree(last, ignore_errors=True)
            tmp.rename(last)
    replicas.check_in_sync(policy)
    replicas.check_in_sync(value_model)
    if not replicas.main:
        return {}
    policy.save_pretrained(str(out_dir / "policy"), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir / "policy"))
    shutil.rmtree(last, ignore_errors=True)  # optimiser state is not needed once done
    finish_wandb()
    rows = read_jsonl(metrics_path)
    steps_timed = [r["time/step_s"] for r in rows]
    return {"steps": m.total_steps, "world_size": replicas.size, "resumed_from": start,
            "final_kl": round(last_row.get("objective/kl", 0.0), 4),
            "final_kl_coef": round(last_row.get("objective/kl_coef", 0.0), 5),
            "final_scores": round(last_row.get("objective/scores", 0.0), 4),
            "score_mean": ppo.score_mean, "score_std": ppo.score_std,
            "seconds_per_step": round(sum(steps_timed) / max(1, len(steps_timed)), 4),
            "wall_time_loop_s": round(time.time() - t0, 2)}
