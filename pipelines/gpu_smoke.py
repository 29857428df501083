"""One-GPU smoke test of the paper presets' risky paths (make gpu-smoke): random weights at the real shapes, built on
the device in the precision under test (no Hub), one step of each path through the project's own code, so a GPU
user learns in under 10 minutes on one H100 whether the paper presets fit and how fast they go. Cases:

  generation    gpt2-large (sentiment_paper) and GPT-J 6B (summarization_paper) sampling at the presets' batch and
                length in bf16 and fp32 (TF32 on), and the bf16 samples' per-token log-probs under bf16 and fp32
                copies of the same weights (what mixing precisions does to the KL estimate)
  ppo           one PPO step (baselines/ppo.py) at gpt2-large shape, sentiment paper preset (1,024 rollouts)
  ppo_sharded   the PPO step on the sharded path (FSDP2 on every model, synced generation, the snapshot gathered and
                written) in a process group of one, against the same step unsharded from the same weights (256
                rollouts)
  dpo           one DPO step at GPT-J shape as pipelines/dpo.py builds the summarization paper preset; on
                out-of-memory retried once at 4 layers
  reward_model  r_phi's scoring pass at gpt2-large shape over 1,024 sequences, fp32 vs bf16

  python -m pipelines.gpu_smoke [--dry] [--out results/bench] [--only CASE ...] [--gptj-layers 28]

Writes <out>/gpu-smoke-<device>.json and .md (seconds, tokens / s, peak GPU memory, MFU) and rebuilds the index
<out>.md, where the record is a column of the step table. --dry: the same code at tiny shapes on the CPU (the tests);
its default --out is under runs/, so no dry record enters results/bench.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections import namedtuple
from contextlib import contextmanager
from pathlib import Path

import torch
from datasets import Dataset
from omegaconf import DictConfig, OmegaConf
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, GPTJConfig, GPTJForCausalLM
from transformers.trainer_callback import PrinterCallback
from trl import DPOConfig

from pipelines.bench import CONF, _StepTimer, _timed, _tokenizer, _trained, peak_tflops
from pipelines.bench_e2e import machine, write_index
from pipelines.dpo import SampledTokenDPOTrainer, loss_options
from pipelines.infra.cost_meter import meter
from pipelines.infra.data_parallel import DataParallel, one_process
from pipelines.infra.device import use_bf16
from pipelines.infra.provenance import environment, git_sha, versions
from pipelines.lm.lm_head import apply_to_trainer
from pipelines.lm.models import attn_kwargs
from pipelines.lm.sampling import completion_token_logprobs, sample_completions
from pipelines.lm.scorers import RewardModelScorer

CASES = ("generation", "ppo", "ppo_sharded", "dpo", "reward_model")
NO_GPU = "make gpu-smoke needs a CUDA GPU; `--dry` runs the same code at tiny shapes on CPU"
# The shapes of the presets' pretrained models (their Hub config.json: gpt2-large, EleutherAI/gpt-j-6b), keyed by
# conf/model name; the model configs name only the Hub id. --dry shrinks every model to DRY.
SHAPES = {"gpt2_large": {"n_layer": 36, "n_embd": 1280, "n_head": 20, "n_positions": 1024, "vocab_size": 50257},
          "gptj_6b": {"n_layer": 28, "n_embd": 4096, "n_head": 16, "rotary_dim": 64, "n_positions": 2048,
                      "vocab_size": 50400}}
DRY = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 512}
ARCH = {"gpt2_large": (GPT2Config, GPT2LMHeadModel), "gptj_6b": (GPTJConfig, GPTJForCausalLM)}
DPO_SETTINGS = ("optim", "learning_rate", "warmup_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                "max_grad_norm", "bf16", "gradient_checkpointing")  # recorded from the DPOConfig the case built
# Rollouts of the sharded PPO case's step (the ppo case's 1,024 would add minutes; the path is the point here).
SHARDED_ROLLOUTS = 256
PPO_SETTINGS = ("batch_size", "minibatch_size", "micro_batch_size", "ppo_epochs")  # recorded by both PPO cases
RETRY_LAYERS = 4  # GPT-J layers of the DPO retry after an out-of-memory at the full depth
EOS = 0  # eos = pad = 0 in every model here; prompts never contain it


def pick(a: argparse.Namespace, real, dry):
    """The real count or shape, or its tiny stand-in under --dry."""
    return dry if a.dry else real


# A paper experiment's model (conf/model name and config) and task config, as the experiment overrides them.
Preset = namedtuple("Preset", "model_name model task")


def preset(experiment: str) -> Preset:
    """conf/experiment/<experiment>.yaml's model and task (its `override /model` and `/task` defaults, then its own
    task keys), read the way Hydra composes them, without composing the whole config."""
    exp = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml")
    chosen = {k.removeprefix("override /"): v for d in exp.get("defaults", []) if isinstance(d, DictConfig)
              for k, v in d.items()}
    model_name, task_name = chosen["model"], chosen.get("task", "sentiment")
    task = OmegaConf.merge(OmegaConf.load(CONF / "task" / f"{task_name}.yaml"), exp.get("task", {}))
    return Preset(model_name, OmegaConf.load(CONF / "model" / f"{model_name}.yaml"), task)


def method_config(method: str, experiment: str) -> DictConfig:
    """conf/method/<method>.yaml with the experiment's method preset over it."""
    return OmegaConf.merge(OmegaConf.load(CONF / "method" / f"{method}.yaml"),
                           OmegaConf.load(CONF / "method_preset" / experiment / f"{method}.yaml").method)


def model_config(a: argparse.Namespace, name: str, **override):
    """The transformers config of model `name` at its real shape (or the dry one), EOS = pad = 0."""
    shape = {**SHAPES[name], **(DRY if a.dry else {}), **override}
    if a.dry and "rotary_dim" in shape:
        shape["rotary_dim"] = 8
    return ARCH[name][0](**shape, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS)


def build(cls, config, a: argparse.Namespace, dtype: torch.dtype):
    """A random-weight model created on the device in `dtype` (a 6B model is never built on the host first),
    metered for the FLOPs of MFU, in eval mode (dropout off, as every stage samples and scores)."""
    with torch.device(a.device):
        model = cls._from_config(config, dtype=dtype, **attn_kwargs())
    return meter(model).eval()


def random_prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (n, length), generator=gen).tolist()


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


@contextmanager
def tf32(on: bool):
    """TF32 tensor-core matmuls for fp32 (what an fp32 run on an Ampere-or-newer GPU would switch on)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def measured(fn, repeats: int, tokens_of) -> tuple[dict, object]:
    """bench's median time (after a warm-up call) and FLOPs of `fn`, with the tokens of one call (`tokens_of` of its
    last result), tokens / s and the peak GPU memory of the timed calls (resident weights included)."""
    last = []
    r = _timed(lambda: last.append(fn()), repeats)
    return rated(r, tokens_of(last[-1])), last[-1]


def rated(r: dict, tokens: int) -> dict:
    """A timing with its tokens per call, tokens / s and the peak GPU memory since the timing began."""
    return {**r, "tokens": int(tokens), "tokens_per_s": round(tokens / r["median_s"], 1), "peak_memory_gib": peak_gib()}


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def guarded(fn, *args) -> dict:
    """fn(*args), or {"error": "out of memory", ...} when the GPU runs out: the memory is freed (after the
    exception, whose frames hold the tensors, is gone) and the script goes on."""
    try:
        return fn(*args)
    except RuntimeError as err:  # torch.OutOfMemoryError, or a CUDA library's "out of memory" RuntimeError
        if not isinstance(err, torch.cuda.OutOfMemoryError) and "out of memory" not in str(err):
            raise
        failed = {"error": "out of memory", "message": str(err).splitlines()[0][:300], "peak_memory_gib": peak_gib()}
    free_memory()
    return failed


# -- the cases ---------------------------------------------------------------------------------------------------
def logprob_gap(low: list[torch.Tensor], high: list[torch.Tensor]) -> dict:
    """How far bf16 per-token log-probs are from fp32 ones of the same weights on the same tokens, per token and
    summed per sequence (the sequence sums are what the KL estimate and DPO's log-ratios are made of)."""
    per_token = torch.cat([(a.float() - b.float()).cpu() for a, b in zip(low, high)])
    per_seq = torch.tensor([float(a.float().sum() - b.float().sum()) for a, b in zip(low, high)])
    gaps = {f"{stat}_abs_{kind}_logprob_diff": float(getattr(x.abs(), stat)())
            for kind, x in (("token", per_token), ("sequence", per_seq)) for stat in ("mean", "max")}
    return {"tokens": per_token.numel(), "sequences": per_seq.numel(), **gaps,
            "mean_sequence_logprob_diff_bf16_minus_fp32": float(per_seq.mean())}


@torch.no_grad()
def token_logprobs(model, prompts, completions, chunk: int = 32) -> list[torch.Tensor]:
    return [t for i in range(0, len(prompts), chunk)
            for t in completion_token_logprobs(model, prompts[i:i + chunk], completions[i:i + chunk])]


def generation_of(a: argparse.Namespace, experiment: str) -> dict:
    """Sampling (pipelines.lm.sampling, transformers' generate) of one preset's model at its generation batch and
    length: bf16 weights, then the same weights in fp32 (TF32 on); the bf16 samples scored by both."""
    p = preset(experiment)
    g = p.task.generation
    batch, new, length = pick(a, (g.batch_size, g.max_new_tokens, 64), (4, 8, 16))
    config = model_config(a, p.model_name)
    prompts = random_prompts(batch, length, config.vocab_size)
    model = build(ARCH[p.model_name][1], config, a, torch.bfloat16)

    def sample():
        return sample_completions(model, prompts, max_new_tokens=new, eos_id=EOS, pad_id=EOS, batch_size=batch,
                                  seed=0)
    results, logps = {}, {}
    for precision in ("bf16", "fp32"):
        if precision == "fp32":
            model = model.float()  # in place: the bf16 weights, exactly, in fp32
        with tf32(precision == "fp32" and a.device == "cuda"):
            r, completions = measured(sample, a.repeats, lambda c: sum(len(x) for x in c))
        results[f"generate_{p.model_name}_{batch}x{new}_{precision}"] = r
        if precision == "bf16":
            samples = completions
        logps[precision] = token_logprobs(model, prompts, samples)  # fp32 scoring as the stages do: TF32 off
    return {"results": results, "precision": logprob_gap(logps["bf16"], logps["fp32"])}


def case_generation(a: argparse.Namespace) -> dict:
    """Both paper models' sampling; one running out of memory leaves the other's numbers."""
    out = {"results": {}, "precision_check": {}, "tf32_for_fp32_sampling": a.device == "cuda"}
    for experiment in ("sentiment_paper", "summarization_paper"):
        name, got = preset(experiment).model_name, guarded(generation_of, a, experiment)
        free_memory()
        if "error" in got:
            out.setdefault("errors", {})[name] = got
        else:
            out["results"].update(got["results"])
            out["precision_check"][name] = got["precision"]
    return out


def ppo_learner(a: argparse.Namespace, cfg: DictConfig, config, new: int, generation_batch: int, bf16: bool,
                replicas: DataParallel | None = None):
    """Our PPO learner (baselines.ppo.PPO) at `config`'s shape: policy, reference and value model built as make bench
    builds them (random fp32 weights), rewarded for length; alone, or data-parallel / sharded over `replicas`."""
    from baselines.ppo import PPO, ValueModel

    policy, ref = (build(GPT2LMHeadModel, config, a, torch.float32) for _ in range(2))
    value = meter(ValueModel(build(GPT2LMHeadModel, config, a, torch.float32).transformer)).to(a.device)
    return PPO(policy, ref, value, lambda _, completions: [len(c) / new for c in completions], cfg, eos_id=EOS,
               pad_id=EOS, max_new_tokens=new, seed=0, generation_batch_size=generation_batch, bf16=bf16,
               replicas=replicas)


def case_ppo(a: argparse.Namespace) -> dict:
    """One PPO step of ours at gpt2-large shape, sentiment paper preset: conf/method/ppo.yaml with the preset's
    method keys (batch, minibatch, micro-batch, epochs), bf16 autocast where the model config asks for it on this
    device (`ppo_learner`)."""
    p = preset("sentiment_paper")
    cfg = method_config("ppo", "sentiment_paper")
    if a.dry:
        cfg.batch_size, cfg.minibatch_size, cfg.micro_batch_size = 8, 4, 2
    g = p.task.generation
    batch, new = pick(a, (g.batch_size, g.max_new_tokens), (4, 8))
    config = model_config(a, p.model_name)
    bf16 = use_bf16(p.model.precision, a.device)
    ppo = ppo_learner(a, cfg, config, new, batch, bf16)
    prompts = random_prompts(cfg.batch_size, pick(a, p.task.prompt.max_tokens, 4), config.vocab_size)
    steps = iter(range(10 ** 6))
    # Warm-up + 1 timed step by default (a step of 1,024 rollouts takes about a minute).
    r, stats = measured(lambda: ppo.step(next(steps), prompts), max(1, a.repeats - 1),
                        lambda _: len(prompts) * (len(prompts[0]) + new))
    r["rollout_s"] = round(stats["time/rollout_s"], 3)
    name = f"ppo_step_{p.model_name}_{cfg.batch_size}_rollouts_{cfg.ppo_epochs}_epochs" + ("_bf16" if bf16 else "")
    return {"results": {name: r}, "bf16": bf16,
            "settings": {**{k: cfg[k] for k in PPO_SETTINGS}, "generation_batch_size": batch, "max_new_tokens": new}}


def case_ppo_sharded(a: argparse.Namespace) -> dict:
    """`sharded_against_plain`; a failure of the sharded path is this case's finding (the error, first line), and
    the cases after it still run."""
    try:
        return guarded(sharded_against_plain, a)
    except Exception as err:  # noqa: BLE001 (any error of the sharded path is recorded, not raised)
        return {"error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"}


def sharded_against_plain(a: argparse.Namespace) -> dict:
    """The `ppo` case's step (SHARDED_ROLLOUTS rollouts) twice from the same random weights: plain, then on the
    sharded path of an FSDP launch (data_parallel.Sharded over a process group of this process alone: fully_shard on
    every model, generation with synced_gpus, the snapshot gathered to a full state and written as a sharded run
    writes it). The two must compute the same step: the record keeps the weight and metric differences next to how
    far the step moved the weights. What one process does not test: with a single shard FSDP2's all-gathers are
    local copies, so neither the communication nor the memory saving of several GPUs shows here; and on a GPU
    nondeterministic kernels may make the two steps differ slightly, which is why the differences are set beside
    the step's own movement rather than required to be zero."""
    from safetensors.torch import load_file

    from baselines.ppo_checkpoint import RunFolder

    p = preset("sentiment_paper")
    cfg = method_config("ppo", "sentiment_paper")
    cfg.batch_size, cfg.minibatch_size = pick(a, (SHARDED_ROLLOUTS, SHARDED_ROLLOUTS // 4), (8, 4))
    if a.dry:
        cfg.micro_batch_size = 2
    new = pick(a, p.task.generation.max_new_tokens, 8)
    config = model_config(a, p.model_name)
    bf16 = use_bf16(p.model.precision, a.device)
    prompts = random_prompts(cfg.batch_size, pick(a, p.task.prompt.max_tokens, 4), config.vocab_size)

    def one_step(dp: DataParallel, folder: Path) -> tuple[dict, dict, dict, dict]:
        """(timing, step metrics, policy weights before the step, the snapshot's weights after it), all on CPU."""
        torch.manual_seed(0)  # the same random weights in both runs (checked: max_abs_start_diff)
        ppo = ppo_learner(a, cfg, config, new, cfg.batch_size, bf16, replicas=dp)
        before = {k: v.detach().cpu().clone() for k, v in dp.full_state(ppo.policy).items()}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        stats = ppo.step(0, prompts)
        seconds = time.perf_counter() - start
        timing = rated({"median_s": round(seconds, 4), "repeats": 1}, len(prompts) * (len(prompts[0]) + new))
        start = time.perf_counter()
        RunFolder(folder, dp).snapshot(ppo, 1)
        timing["snapshot_s"] = round(time.perf_counter() - start, 3)
        after = load_file(str(folder / "snapshots" / "step000001" / "model.safetensors"))
        return timing, stats, before, after

    results, runs = {}, {}
    name = f"ppo_step_{p.model_name}_{cfg.batch_size}_rollouts" + ("_bf16" if bf16 else "")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("plain", "sharded"):
            if kind == "plain":
                got = one_step(DataParallel(active=False), Path(tmp) / kind)
            else:
                with one_process() as dp:
                    got = one_step(dp, Path(tmp) / kind)
            results[name + ("_fsdp2_one_process" if kind == "sharded" else "")] = got[0]
            runs[kind] = got[1:]
            free_memory()
    (plain_stats, before, plain), (sharded_stats, sharded_before, sharded) = runs["plain"], runs["sharded"]
    # A GPU gather may untie GPT-2's lm_head from wte, so one file can hold lm_head.weight where the other does not.
    common = sorted(set(plain) & set(sharded))

    def largest(x: dict, y: dict) -> float:
        return max((float((x[k] - y[k]).abs().max()) for k in common), default=float("nan"))
    metrics = ("objective/kl", "objective/scores", "loss/policy", "loss/value", "policy/approxkl")
    return {"results": results, "bf16": bf16, "settings": {k: cfg[k] for k in PPO_SETTINGS},
            "sharded_vs_plain": {
                "tensors_compared": len(common), "tensors_in_one_file_only": sorted(set(plain) ^ set(sharded)),
                "max_abs_start_diff": largest(before, sharded_before),
                "max_abs_weight_diff": largest(plain, sharded),
                "max_abs_weight_change_of_the_step": largest(plain, before),
                "metric_abs_diff": {m: abs(float(plain_stats[m]) - float(sharded_stats[m])) for m in metrics}}}


def dpo_attempt(a: argparse.Namespace, layers: int) -> dict:
    """One DPO run of (repeats + 1) optimiser steps at GPT-J shape with `layers` layers, configured as
    pipelines/dpo.py configures the summarization paper preset: DPOConfig from pipelines.lm.trainer.training_args
    (RMSprop, learning rate, warm-up, per-device batch, accumulation, bf16, no gradient checkpointing) and the
    reference log-probs stored by the pairs stage (no reference model); prompts of the preset's max length."""
    from pipelines.lm.trainer import training_args

    p = preset("summarization_paper")
    m = method_config("dpo", "summarization_paper")
    if a.dry:
        m.batch_size, m.gradient_accumulation_steps = 2, 2
    cfg = OmegaConf.create({"method": m, "model": p.model, "wandb": {"mode": "disabled"}, "seed": 0})
    steps = a.repeats + 1
    length, new = pick(a, (p.task.prompt.max_tokens, p.task.generation.max_new_tokens), (16, 8))
    config = model_config(a, p.model_name, n_layer=layers)
    n_pairs = m.batch_size * m.gradient_accumulation_steps * steps
    prompts = random_prompts(n_pairs, length, config.vocab_size, seed=1)
    completions = random_prompts(2 * n_pairs, new, config.vocab_size, seed=2)
    pairs = Dataset.from_dict({"prompt_ids": prompts, "chosen_ids": completions[:n_pairs],
                               "rejected_ids": completions[n_pairs:], "ref_chosen_logps": [-100.0] * n_pairs,
                               "ref_rejected_logps": [-100.0] * n_pairs})
    policy = build(GPTJForCausalLM, config, a, torch.float32)  # fp32 master weights, as load_policy loads them
    n_params, per_layer = (sum(q.numel() for q in x.parameters()) for x in (policy, policy.transformer.h[0]))
    with tempfile.TemporaryDirectory() as tmp:
        targs = {**training_args(cfg, Path(tmp)), "max_steps": steps, "disable_tqdm": True, "save_strategy": "no"}
        args = DPOConfig(beta=m.beta, max_length=None, precompute_ref_log_probs=True, **loss_options(m), **targs)
        trainer = SampledTokenDPOTrainer(model=policy, ref_model=None, args=args, train_dataset=pairs,
                                         processing_class=_tokenizer(config.vocab_size),
                                         callbacks=[timer := _StepTimer()])
        trainer.remove_callback(PrinterCallback)  # no log dictionaries between the progress lines
        apply_to_trainer(trainer, p.model.dense_logits)
        r = rated(_trained(trainer, timer), 2 * m.batch_size * m.gradient_accumulation_steps * (length + new))
    del trainer, policy
    free_memory()
    name = f"dpo_step_{p.model_name}_{layers}_layers_{m.batch_size * m.gradient_accumulation_steps}_pairs"
    return {"layers": layers, "n_params": n_params, "params_per_layer": per_layer,
            "results": {name + ("_bf16" if args.bf16 else ""): r},
            "settings": {**{k: getattr(args, k) for k in DPO_SETTINGS}, "stored_ref_logps": True,
                         "prompt_tokens": length, "completion_tokens": new}}


def case_dpo(a: argparse.Namespace) -> dict:
    """DPO at the full GPT-J depth (--gptj-layers); on out-of-memory once more at RETRY_LAYERS layers."""
    full, retry = pick(a, (a.gptj_layers or SHAPES["gptj_6b"]["n_layer"], RETRY_LAYERS), (DRY["n_layer"], 1))
    attempts = [{"layers": full, **guarded(dpo_attempt, a, full)}]
    if "error" in attempts[0]:
        attempts.append({"layers": retry, **guarded(dpo_attempt, a, retry)})
    done = next((x for x in attempts if "error" not in x), None)
    out = {"attempts": attempts, "layers_used": done["layers"] if done else None}
    if done is None:
        return {**out, "error": "out of memory"}
    if len(attempts) > 1:
        layer = done["params_per_layer"]
        out["note"] = (f"{attempts[0]['layers']} layers ran out of memory; {done['layers']} fit. Each further layer "
                       "adds 12 bytes per parameter of training state (fp32 weight, gradient, RMSprop average) and "
                       "its activations: extrapolate the peak linearly in the layer count (one layer: "
                       f"{layer / 1e6:.0f}M parameters, {12 * layer / 2**30:.2f} GiB of state).")
    return {**out, "results": done["results"]}


def case_reward_model(a: argparse.Namespace) -> dict:
    """r_phi's scoring pass (RewardModelScorer: right padding, the head at the last real token, no gradient) at
    gpt2-large shape over 1,024 prompt + completion sequences of the sentiment preset's lengths, fp32 (TF32 on)
    vs bf16 weights; also how far the bf16 scores are from the fp32 ones."""
    p = preset("sentiment_paper")
    g = p.task.generation
    n, batch = pick(a, (1024, g.batch_size), (16, 4))
    prompt_len, new = pick(a, (p.task.prompt.max_tokens, g.max_new_tokens), (4, 8))
    config = model_config(a, p.model_name, num_labels=1)
    prompts = random_prompts(n, prompt_len, config.vocab_size, seed=3)
    # completions of every length from full down to full - 7, so padding and the last-token pick are exercised
    completions = [c[:new - i % 8] for i, c in enumerate(random_prompts(n, new, config.vocab_size, seed=4))]
    scorer = RewardModelScorer.__new__(RewardModelScorer)  # the scorer's own code, on a random model
    scorer.model = build(GPT2ForSequenceClassification, config, a, torch.float32)
    scorer.pad_id, scorer.device, scorer.batch_size = EOS, a.device, batch
    results, scores = {}, {}
    for precision in ("fp32", "bf16"):
        if precision == "bf16":
            scorer.model = scorer.model.to(torch.bfloat16)
        with tf32(precision == "fp32" and a.device == "cuda"):
            r, scores[precision] = measured(lambda: scorer(prompts, completions), a.repeats,
                                            lambda _: sum(len(x) + len(y) for x, y in zip(prompts, completions)))
        r["sequences"], r["sequences_per_s"] = n, round(n / r["median_s"], 1)
        results[f"reward_model_score_{p.model_name}_{n}_sequences_{precision}"] = r
    gap = (torch.tensor(scores["bf16"]) - torch.tensor(scores["fp32"])).abs()
    return {"results": results, "bf16_vs_fp32_scores": {"mean_abs_diff": float(gap.mean()),
                                                         "max_abs_diff": float(gap.max())}}


# -- the record --------------------------------------------------------------------------------------------------
def write_record(a: argparse.Namespace, cases: dict, argv: list[str]) -> Path:
    """<out>/gpu-smoke-<device>.json and .md, then the index <out>.md (bench_e2e.write_index), which shows a record's
    `results` (here every case's timings) as one column of its step table."""
    cuda = a.device == "cuda"
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_tflops(device_name) if cuda else None
    flat = {name: r for c in cases.values() for name, r in c.get("results", {}).items()}
    for r in flat.values():
        if peak and "tflops_per_s" in r:
            r["mfu"] = round(r["tflops_per_s"] / peak, 4)
    gpt2 = model_config(a, "gpt2_large")
    with torch.device("meta"):  # its parameter count, nothing allocated
        gpt2_params = sum(q.numel() for q in GPT2LMHeadModel(gpt2).parameters())
    record = {"kind": "gpu-smoke", "device": device_name, "dry": a.dry, "git_sha": git_sha(),
              "machine": machine(), "environment": environment(), "versions": versions(), "arguments": argv,
              "peak_bf16_tflops": peak,
              "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
              # the index's model line reads these: the gpt2-large shape (the GPT-J results name their model)
              "model": {"n_layer": gpt2.n_layer, "n_embd": gpt2.n_embd}, "vocab": gpt2.vocab_size,
              "n_params": gpt2_params, "cases": cases, "results": flat}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = device_name.replace(" ", "_") + ("-dry" if a.dry else "")
    path = out / f"gpu-smoke-{slug}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    path.with_suffix(".md").write_text("\n".join(record_page(record)) + "\n")
    write_index(out)
    return path


def record_page(r: dict) -> list[str]:
    """The record as a page: every timing, the precision checks, the DPO attempts."""
    cases, peak = r["cases"], r["peak_bf16_tflops"]
    lines = [f"# GPU smoke test on {r['device']}" + (" (dry: tiny shapes)" if r["dry"] else ""), "",
             f"`python -m pipelines.gpu_smoke {' '.join(r['arguments'])}` at `{r['git_sha']}`. {r['machine']} "
             "Random weights. Tokens: generated (generation), rollout positions (PPO: rollouts x (prompt + max new "
             "tokens)), pair positions of an optimiser step (DPO), scored positions (reward model). Peak memory: "
             "torch.cuda.max_memory_allocated in the timed calls (resident weights included). FLOPs as make bench "
             "counts them" + (f"; MFU against the dense bf16 peak, {peak:g} TFLOP/s (TF32's is half)." if peak
                              else "."), "",
             "| case | operation | seconds | tokens | tokens / s | TFLOP/s | MFU | peak GiB |", "|---" * 8 + "|"]
    for case, c in cases.items():
        for name, x in c.get("results", {}).items():
            mfu = f"{100 * x['mfu']:.1f} %" if "mfu" in x else ""
            lines.append(f"| {case} | {name} | {x['median_s']} (median of {x['repeats']}) | {x['tokens']} | "
                         f"{x['tokens_per_s']} | {x.get('tflops_per_s', '')} | {mfu} | {x['peak_memory_gib']} |")
        for name, e in ({case: c} if "error" in c else c.get("errors", {})).items():
            lines.append(f"| {case} | {name}: **{e['error']}** | | | | | | {e.get('peak_memory_gib')} |")
    lines += ["", "bf16 vs fp32 log-probs of the bf16 samples (nats; same weights):", "",
              "| model | tokens | mean abs / token | max abs / token | mean abs / sequence | max abs / sequence | "
              "mean bf16 - fp32 / sequence |", "|---" * 7 + "|"]
    keys = ("mean_abs_token_logprob_diff", "max_abs_token_logprob_diff", "mean_abs_sequence_logprob_diff",
            "max_abs_sequence_logprob_diff", "mean_sequence_logprob_diff_bf16_minus_fp32")
    for name, g in cases.get("generation", {}).get("precision_check", {}).items():
        lines.append(f"| {name} | {g['tokens']} | " + " | ".join(f"{g[k]:.4g}" for k in keys) + " |")
    if rm := cases.get("reward_model", {}).get("bf16_vs_fp32_scores"):
        lines += ["", f"Reward model: bf16 scores differ from fp32 by {rm['mean_abs_diff']:.4g} on average, "
                  f"{rm['max_abs_diff']:.4g} at most."]
    if sh := cases.get("ppo_sharded", {}).get("sharded_vs_plain"):
        diffs = ", ".join(f"{m} {d:.3g}" for m, d in sh["metric_abs_diff"].items())
        lines += ["", "Sharded PPO step (FSDP2, one process) against the plain step from the same weights: weights "
                  f"differ by {sh['max_abs_weight_diff']:.3g} at most ({sh['tensors_compared']} tensors) where the "
                  f"step moved them by up to {sh['max_abs_weight_change_of_the_step']:.3g}; step metrics differ by "
                  f"{diffs}. One process: FSDP2's gathers are local copies, so this checks the sharded code path on "
                  "this device, not the communication of several GPUs."]
    if dpo := cases.get("dpo", {}).get("attempts"):
        tried = ", ".join(f"{x['layers']} layers: " + x.get("error", "ran") for x in dpo)
        lines += ["", f"DPO at GPT-J shape: {tried}. {cases['dpo'].get('note', '')}".rstrip()]
    return lines


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="the same code at tiny shapes (CPU, seconds)")
    ap.add_argument("--out", default=None, help="record folder (default results/bench; --dry: runs/gpu-smoke-dry)")
    ap.add_argument("--only", nargs="+", choices=CASES, default=list(CASES), metavar="CASE",
                    help=f"run these cases only: {', '.join(CASES)}")
    ap.add_argument("--gptj-layers", type=int, default=None, help="GPT-J layers of the DPO case (default 28)")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per measurement after a warm-up")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = str(Path(os.environ.get("RVD_RUNS", "runs")) / "gpu-smoke-dry") if args.dry else "results/bench"
    return args


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    if not args.dry and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        raise SystemExit(2)
    args.device, threads, cases = "cuda" if torch.cuda.is_available() else "cpu", torch.get_num_threads(), {}
    if args.dry:  # tiny matrices gain nothing from threads; on a busy CPU, waiting for them is ~100x slower
        torch.set_num_threads(1)
    try:
        for case in (c for c in CASES if c in args.only):
            cases[case] = run_case(args, case)
    finally:
        torch.set_num_threads(threads)
    path = write_record(args, cases, argv)
    print(f"gpu-smoke: wrote {path} and {path.with_suffix('.md')}")
    return path


def run_case(a: argparse.Namespace, case: str) -> dict:
    """One case (case_<name>), its wall time and peak GPU memory (since it began, or of its timed calls); prints
    one progress line."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    got = {**guarded(globals()[f"case_{case}"], a), "seconds": round(time.perf_counter() - start, 2)}
    free_memory()
    peaks = [r.get("peak_memory_gib") for r in got.get("results", {}).values()] + [peak_gib()]
    got["peak_memory_gib"] = max((x for x in peaks if x is not None), default=None)
    print(f"gpu-smoke: {case}: {got.get('error', 'ok')}, {got['seconds']:.1f} s, peak GPU memory "
          f"{got['peak_memory_gib']} GiB", flush=True)
    return got


if __name__ == "__main__":
    main()
