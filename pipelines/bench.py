"""Benchmarks of the embedded default (make bench, make bench-e2e).

Micro-benchmarks of the hot paths on a model of the embedded default's shape with random weights: sampling,
sequence log-probs, one SFT step, DPO steps of TRL (with a reference forward pass, and with the reference log-probs
stored by the pairs stage), one PPO step of ours, and the evaluation of one checkpoint (sampling on the preset's
held-out prefixes, policy and reference log-probs).

  python -m pipelines.bench [--out results/bench] [--repeats 5]
  python -m pipelines.bench --e2e [--make-args "JOBS=2"]   # times `make reproduce-sentiment` from an empty runs/
                                                           # (pipelines/bench_e2e.py)

Writes <out>/<device>.json and .md (and e2e-<device>.json/.md). Run on an idle machine: another process on the
cores slows every number, by 5-10x on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from omegaconf import DictConfig, OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, TrainerCallback
from trl import DPOConfig

from pipelines.bench_e2e import end_to_end, machine, multi_seed, write_index
from pipelines.dpo import SampledTokenDPOTrainer
from pipelines.infra.cost_meter import meter, track
from pipelines.infra.device import trainer_precision, use_bf16
from pipelines.infra.provenance import versions
from pipelines.lm.lm_head import apply_to_trainer
from pipelines.lm.sampling import sample_completions, sequence_logprobs

CONF = Path(__file__).resolve().parents[1] / "conf"


class _StepTimer(TrainerCallback):
    """Wall time of each optimizer step inside Trainer.train (forward, backward, optimizer; no set-up)."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def _summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "repeats": len(times)}


def _timed(fn, repeats: int) -> dict:
    """Median wall time of `fn` after one warm-up call, and the FLOPs of one call as the stages' cost meter counts
    them (pipelines/infra/cost_meter.py: 6N per trained, 2N per forward token position of the metered models)."""
    fn()  # warm-up
    times = []
    with track() as cost:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return _with_flops(_summary(times), cost.flops / repeats)


def _trained(trainer, timer: "_StepTimer") -> dict:
    """A Trainer's step times (the first step warms up, left out) and the FLOPs of one step (all have one shape)."""
    with track() as cost:
        trainer.train()
    return _with_flops(_summary(timer.times[1:]), cost.flops / max(1, trainer.state.global_step))


def _with_flops(result: dict, flops: float) -> dict:
    if flops > 0:
        result["flops"] = float(f"{flops:.4g}")
        result["tflops_per_s"] = round(flops / result["median_s"] / 1e12, 4)
    return result


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) for the model-FLOPs utilisation of GPU records; another GPU:
# RVD_PEAK_TFLOPS. Datasheet numbers (SXM parts where there are two).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0,
                    "RTX 4090": 165.0}


def peak_tflops(device_name: str) -> float | None:
    """The bf16 peak of a CUDA device by name (or RVD_PEAK_TFLOPS); None where unknown (CPUs among them)."""
    if os.environ.get("RVD_PEAK_TFLOPS"):
        return float(os.environ["RVD_PEAK_TFLOPS"])
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def _suffix(precision: str) -> str:
    return "" if precision == "fp32" else f"_{precision}"


def _tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t1"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t0", pad_token="t0", unk_token="t1")


@dataclass
class Setup:
    """The model and task settings as the embedded preset overrides them (width, generation length and batch),
    or another shape from --arch/--vocab; a sampling policy and its samples to time the other steps on."""
    args: argparse.Namespace
    model_cfg: DictConfig
    task_cfg: DictConfig
    arch: DictConfig
    vocab: int
    config: GPT2Config
    device: str
    precisions: list[str]
    policy: GPT2LMHeadModel = None
    prompts: list[list[int]] = field(default_factory=list)
    completions: list[list[int]] = field(default_factory=list)

    @property
    def preset_shape(self) -> bool:
        return not self.args.arch and not self.args.vocab

    @property
    def new_tokens(self) -> int:
        return self.task_cfg.generation.max_new_tokens

    @property
    def batch(self) -> int:
        return self.task_cfg.generation.batch_size

    def gpt2(self) -> GPT2LMHeadModel:  # metered, so each timed call also reports its FLOPs
        return meter(GPT2LMHeadModel(self.config))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--eval-prefixes", type=int, default=None,
                    help="held-out prefixes of the evaluation benchmark (default: the preset's task.eval.n_prompts)")
    ap.add_argument("--e2e", action="store_true", help="time make reproduce-sentiment instead")
    ap.add_argument("--seeds", action="store_true",
                    help="time adding seeds 1 and 2 of every method (make reproduce-sentiment SEEDS='0 1 2') "
                         "on top of a finished --e2e run instead")
    ap.add_argument("--make-args", default="", help="extra make arguments for --e2e and --seeds, e.g. 'JOBS=2'")
    ap.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                    help="another GPT-2 shape (random weights), e.g. the gpt2-large one on a GPU: n_layer=36 "
                         "n_embd=1280 n_head=20 n_positions=1024; with --vocab 50257")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: the preset's)")
    return ap.parse_args(argv)


def _setup(args: argparse.Namespace) -> Setup:
    preset = OmegaConf.load(CONF / "experiment" / "sentiment_embedded.yaml")
    model_cfg = OmegaConf.merge(OmegaConf.load(CONF / "model" / "tiny.yaml"), preset.get("model", {}))
    task_cfg = OmegaConf.merge(OmegaConf.load(CONF / "task" / "sentiment.yaml"), preset.get("task", {}))
    shape = OmegaConf.from_dotlist(args.arch)
    unknown = sorted(set(shape) - set(model_cfg.arch))
    if unknown:
        raise SystemExit(f"--arch: unknown key(s) {unknown}; the GPT-2 shape has {sorted(model_cfg.arch)}")
    a = OmegaConf.merge(model_cfg.arch, shape)
    vocab = args.vocab or model_cfg.tokenizer.vocab_size
    attn = {"attn_implementation": model_cfg.attn_implementation} if model_cfg.attn_implementation else {}
    config = GPT2Config(vocab_size=vocab, n_positions=a.n_positions, n_embd=a.n_embd, n_layer=a.n_layer,
                        n_head=a.n_head, activation_function=a.activation, eos_token_id=0, bos_token_id=0,
                        pad_token_id=0, **attn)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Training steps in fp32 and, where the preset trains in bf16 on this device, in bf16 mixed precision too.
    precisions = ["fp32"] + (["bf16"] if use_bf16(model_cfg.precision, device) else [])
    return Setup(args, model_cfg, task_cfg, a, vocab, config, device, precisions)


def _sampler(s: Setup):
    """A random policy of the preset's shape and prompts for it (kept in s); returns the timed sampling call."""
    torch.manual_seed(0)
    s.policy = s.gpt2().to(s.device).eval()
    s.prompts = [[int(x) for x in torch.randint(1, s.vocab, (5,))] for _ in range(s.batch)]
    # Never sample EOS so every completion has the full length (random weights would stop at random places).
    with torch.no_grad():
        s.policy.lm_head.weight[0].zero_()

    def sample():
        return sample_completions(s.policy, s.prompts, max_new_tokens=s.new_tokens, eos_id=0, pad_id=0,
                                  batch_size=s.batch, seed=0)
    return sample


def speed_probe(repeats: int = 5) -> dict:
    """How fast the machine is right now: the median seconds of `make bench`'s sampling operation (the preset's
    generation batch and length, random weights) on one thread, as each method job of the sweep runs. The 2-core
    box's speed drifts between sessions (1.5-5x), so `make bench-e2e` records this before and after each timed run:
    an end-to-end time is comparable with another only beside its probe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = _setup(_parse(["--repeats", str(repeats)]))
        timed = _timed(_sampler(s), repeats)
    finally:
        torch.set_num_threads(threads)
    return {"operation": f"sample_{s.batch}x{s.new_tokens}_tokens", "threads": 1, "repeats": repeats,
            "median_s": timed["median_s"]}


def _time_sampling(s: Setup) -> dict:
    """Sampling and sequence log-probs at the preset's generation batch; keeps the samples for the other steps."""
    sample = _sampler(s)
    s.completions = sample()
    return {f"sample_{s.batch}x{s.new_tokens}_tokens": _timed(sample, s.args.repeats),
            f"sequence_logprobs_{s.batch}_sequences": _timed(
                lambda: sequence_logprobs(s.policy, s.prompts, s.completions, s.batch), s.args.repeats)}


def _time_sft(s: Setup) -> dict:
    """One SFT step (plain causal-LM loss, AdamW) on a batch of the SFT shape."""
    sft = s.model_cfg.sft
    train_model = s.gpt2().to(s.device).train()
    opt = torch.optim.AdamW(train_model.parameters(), lr=1e-4)
    blocks = torch.randint(0, s.vocab, (sft.batch_size, sft.block_size), device=s.device)

    def sft_step(bf16: bool):
        opt.zero_grad()
        with torch.autocast(s.device, dtype=torch.bfloat16, enabled=bf16):
            loss = train_model(input_ids=blocks, labels=blocks).loss
        loss.backward()
        opt.step()
    return {f"sft_step_{sft.batch_size}x{sft.block_size}{_suffix(prec)}": _timed(lambda: sft_step(prec == "bf16"),
                                                                               s.args.repeats)
            for prec in s.precisions}


def _dpo_heads(s: Setup) -> list[tuple[str, bool]]:
    """Log-probs as the preset computes them (model.dense_logits) and, where that is the dense path, through TRL's
    fused LM head too (what it replaces)."""
    dense = s.model_cfg.dense_logits
    return [("", dense)] + ([("_trl_fused_head", False)] if dense else [])


def _time_dpo(s: Setup) -> dict:
    """DPO steps through TRL on pairs of the sampled shape: with a reference model, then reading the reference
    log-probs stored by the pairs stage (no reference model)."""
    results = {}
    n_pairs = 32 * (s.args.repeats + 1)
    pairs = Dataset.from_dict({"prompt_ids": [s.prompts[i % s.batch] for i in range(n_pairs)],
                               "chosen_ids": [s.completions[i % s.batch] for i in range(n_pairs)],
                               "rejected_ids": [s.completions[(i + 1) % s.batch] for i in range(n_pairs)]})
    with tempfile.TemporaryDirectory() as tmp:
        dpo_kwargs = dict(output_dir=tmp, beta=0.1, per_device_train_batch_size=32, max_steps=s.args.repeats + 1,
                          learning_rate=1e-4, optim="rmsprop", report_to=[], gradient_checkpointing=False,
                          logging_steps=1000, save_strategy="no", disable_tqdm=True,
                          dataloader_pin_memory=torch.cuda.is_available())
        trainer = SampledTokenDPOTrainer(model=s.gpt2(), ref_model=s.gpt2(),
                                         args=DPOConfig(**dpo_kwargs, bf16=False), train_dataset=pairs,
                                         processing_class=_tokenizer(s.vocab), callbacks=[timer := _StepTimer()])
        apply_to_trainer(trainer, s.model_cfg.dense_logits)
        results["dpo_step_32_pairs"] = _trained(trainer, timer)
        stored = pairs.add_column("ref_chosen_logps", [-50.0] * n_pairs).add_column("ref_rejected_logps",
                                                                                  [-50.0] * n_pairs)
        for prec in s.precisions:
            for head, dense in _dpo_heads(s):
                stored_args = DPOConfig(**dpo_kwargs, precompute_ref_log_probs=True, **trainer_precision(prec))
                trainer = SampledTokenDPOTrainer(model=s.gpt2(), ref_model=None, args=stored_args,
                                                 train_dataset=stored, processing_class=_tokenizer(s.vocab),
                                                 callbacks=[timer := _StepTimer()])
                apply_to_trainer(trainer, dense)
                results[f"dpo_step_32_pairs_stored_ref_logps{_suffix(prec)}{head}"] = _trained(trainer, timer)
    return results


def _time_ppo(s: Setup) -> tuple[dict, GPT2LMHeadModel]:
    """One PPO step with the embedded preset's PPO settings (rollout, scoring, all PPO epochs); a cheap stand-in
    scorer, so the number is PPO's own cost (add the reward model's forward for method=ppo). Returns the timings
    and a policy to serve as the evaluation's reference."""
    from baselines.ppo import PPO, ValueModel

    ppo_cfg = OmegaConf.merge(OmegaConf.load(CONF / "method" / "ppo.yaml"),
                              OmegaConf.load(CONF / "method_preset" / "sentiment_embedded" / "ppo.yaml").method)
    results, ppo_policy = {}, None
    for prec in s.precisions:
        torch.manual_seed(0)
        ppo_policy = s.gpt2().to(s.device)
        with torch.no_grad():
            ppo_policy.lm_head.weight[0].zero_()
        value_model = meter(ValueModel(GPT2LMHeadModel(s.config).transformer)).to(s.device)
        ppo = PPO(ppo_policy, s.gpt2().to(s.device), value_model,
                  lambda p, c: [len(x) / s.new_tokens for x in c], ppo_cfg, eos_id=0, pad_id=0,
                  max_new_tokens=s.new_tokens, seed=0, generation_batch_size=s.batch, bf16=prec == "bf16")
        ppo_prompts = [s.prompts[i % s.batch] for i in range(ppo_cfg.batch_size)]
        step = iter(range(10 ** 6))
        results[f"ppo_step_{ppo_cfg.batch_size}_rollouts_{ppo_cfg.ppo_epochs}_epochs{_suffix(prec)}"] = _timed(
            lambda: ppo.step(next(step), ppo_prompts), s.args.repeats)
    return results, ppo_policy


def _time_evaluation(s: Setup, ref: GPT2LMHeadModel) -> dict:
    """The evaluation of one checkpoint: the preset's held-out prefixes, one sample each, policy and reference
    log-probs (a stand-in reward: r* is a TF-IDF model, negligible next to this)."""
    from pipelines.stages.evaluate import evaluate_policy

    n_eval = s.args.eval_prefixes or s.task_cfg.eval.n_prompts * s.task_cfg.eval.samples_per_prompt
    prompts = [s.prompts[i % s.batch] for i in range(n_eval)]
    tok = _tokenizer(s.vocab)
    return {f"evaluate_checkpoint_{n_eval}_prefixes": _timed(lambda: evaluate_policy(
        s.policy, ref, tok, lambda texts: [0.5] * len(texts), prompts, max_new_tokens=s.new_tokens,
        batch_size=s.batch, seed=0), max(1, s.args.repeats // 2))}


def _add_tokens(s: Setup, results: dict) -> None:
    """Tokens each timed operation processed (for tokens / s)."""
    sft = s.model_cfg.sft
    n_eval = next(int(k.split("_")[2]) for k in results if k.startswith("evaluate_checkpoint_"))
    pair_tokens = 2 * sum(len(s.prompts[i % s.batch]) + len(s.completions[i % s.batch]) for i in range(32))
    tokens = {f"sample_{s.batch}x{s.new_tokens}_tokens": s.batch * s.new_tokens,
              f"sequence_logprobs_{s.batch}_sequences": sum(len(p) + len(c) for p, c in zip(s.prompts, s.completions)),
              "dpo_step_32_pairs": pair_tokens, f"evaluate_checkpoint_{n_eval}_prefixes": n_eval * s.new_tokens}
    for prec in s.precisions:
        tokens[f"sft_step_{sft.batch_size}x{sft.block_size}{_suffix(prec)}"] = sft.batch_size * sft.block_size
        for head, _ in _dpo_heads(s):
            tokens[f"dpo_step_32_pairs_stored_ref_logps{_suffix(prec)}{head}"] = pair_tokens
    for name, n in tokens.items():
        results[name]["tokens"] = n


def _write(s: Setup, results: dict, argv: list[str] | None) -> list[str]:
    """<out>/<device>.json and .md, and the index page; returns the page's lines."""
    device_name = torch.cuda.get_device_name() if s.device == "cuda" else f"cpu-{torch.get_num_threads()}threads"
    peak = peak_tflops(device_name) if s.device == "cuda" else None
    for name, r in results.items():  # model-FLOPs utilisation against the bf16 peak, of the bf16 steps
        if peak and name.endswith(("_bf16", "_bf16_trl_fused_head")) and "tflops_per_s" in r:
            r["mfu"] = round(r["tflops_per_s"] / peak, 4)
    a = s.arch
    record = {"device": device_name, "machine": platform.machine(), "processor": platform.processor(),
              "model": OmegaConf.to_container(a), "vocab": s.vocab, "peak_bf16_tflops": peak,
              "n_params": sum(p.numel() for p in s.policy.parameters()), "versions": versions(), "results": results}
    out = Path(s.args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = device_name.replace(" ", "_") + ("" if s.preset_shape else f"-{a.n_layer}x{a.n_embd}-v{s.vocab}")
    (out / f"{slug}.json").write_text(json.dumps(record, indent=2) + "\n")
    shape = "the embedded default's shape" if s.preset_shape else "shape set by --arch/--vocab"
    command = shlex.join(["python", "-m", "pipelines.bench", *(sys.argv[1:] if argv is None else argv)]) \
        if not s.preset_shape else "make bench"
    lines = [f"# Benchmarks on {device_name}", "", f"Model: GPT-2 {a.n_layer}x{a.n_embd}, vocab {s.vocab}, "
             f"{record['n_params'] / 1e6:.2f}M parameters ({shape}, random weights). "
             f"Command: `{command}`. {machine()}", "",
             "Tokens: generated (sampling, evaluation), or token positions through the model (log-probs, training "
             "steps, both sequences of a pair). FLOPs: the stages' cost estimate (6N per trained, 2N per forward "
             "token position, padding included)" + (f"; MFU against the bf16 peak of {peak:g} TFLOP/s, of the bf16 "
                                                    "steps." if peak else "."), "",
             "| operation | seconds | tokens | tokens / s | TFLOP/s | MFU |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        n = r.get("tokens")
        rate = f"{n / r['median_s']:.0f}" if n else ""
        mfu = f"{100 * r['mfu']:.1f} %" if "mfu" in r else ""
        lines.append(f"| {name} | {r['median_s']} (median of {r['repeats']}) | {n or ''} | {rate} | "
                     f"{r.get('tflops_per_s', '')} | {mfu} |")
    (out / f"{slug}.md").write_text("\n".join(lines) + "\n")
    write_index(out)
    return lines


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.e2e or args.seeds:
        (multi_seed if args.seeds else end_to_end)(Path(args.out), shlex.split(args.make_args), speed_probe)
        return
    s = _setup(args)
    results = {**_time_sampling(s), **_time_sft(s), **_time_dpo(s)}
    ppo_results, ppo_policy = _time_ppo(s)
    results.update(ppo_results)
    results.update(_time_evaluation(s, ppo_policy))
    _add_tokens(s, results)
    print("\n".join(_write(s, results, argv)))


if __name__ == "__main__":
    main()
