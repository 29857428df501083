"""Benchmarks of the embedded default (make bench, make bench-e2e).

Micro-benchmarks of the hot paths on a model of the embedded default's shape with random weights: sampling,
sequence log-probs, one SFT step, DPO steps of TRL (with a reference forward pass, and with the reference log-probs
stored by the pairs stage), one PPO step of ours, and the evaluation of one checkpoint (sampling on the preset's
held-out prefixes, policy and reference log-probs).

  python -m pipelines.bench [--out results/bench] [--repeats 5]
  python -m pipelines.bench --e2e [--make-args "JOBS=2"]   # times `make reproduce-sentiment` from an empty runs/

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
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from datasets import Dataset
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, TrainerCallback
from trl import DPOConfig

from pipelines.dpo import SampledTokenDPOTrainer
from pipelines.infra.cost_meter import meter, track
from pipelines.infra.device import trainer_precision, use_bf16
from pipelines.infra.provenance import git_sha, versions
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
    them (pipelines/cost.py: 6N per trained, 2N per forward token position of the metered models)."""
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


def machine() -> str:
    """The machine in one line: cores, processor, memory."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
        cpu = name or cpu
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"Machine: {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB{gpu}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads.")


def end_to_end(out: Path, make_args: list[str]) -> None:
    """Time `make reproduce-sentiment` from a state where only the venv and the data cache exist (an empty runs
    folder), then add up what the done-markers say each stage took."""
    runs = Path(os.environ.get("RVD_RUNS", "runs"))
    if runs.exists() and any(runs.iterdir()):
        raise SystemExit(f"the end-to-end benchmark starts from an empty {runs}/: move it aside (or set RVD_RUNS to "
                         "an empty folder) and rerun")
    start = time.time()
    record = {**_timed_make(["make", "reproduce-sentiment", *make_args]), "machine": machine(),
              **stage_times(runs, start)}
    write_e2e(out, record)


def _timed_make(command: list[str]) -> dict:
    """Run a make command (failing loudly); its command line, wall seconds, commit and finish time."""
    sha, start = git_sha(), time.time()
    subprocess.run(command, check=True)
    return {"command": shlex.join(command), "seconds": round(time.time() - start, 1), "git_sha": sha,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def stage_times(runs: Path, start: float) -> dict:
    """Stage wall times summed over all runs, and the two phases: the shared stages that run first, alone (up to
    the last of them to finish), then the parallel jobs (everything after)."""
    stages: dict[str, float] = {}
    shared_end = start
    for done in runs.glob("**/done.json"):
        d = json.loads(done.read_text())
        shared = "shared" in done.parts
        key = d["stage"] if shared else f"method {d['stage']}"
        stages[key] = stages.get(key, 0.0) + d["wall_time_s"]
        if shared and d["stage"] != "reward_model":  # r_phi trains as one of the parallel jobs
            shared_end = max(shared_end, datetime.fromisoformat(d["finished_at"]).timestamp())
    return {"stage_seconds": {k: round(v, 1) for k, v in sorted(stages.items())},
            "phase_seconds": {"shared stages (all cores, one after another)": round(shared_end - start, 1)}}


def multi_seed(out: Path, make_args: list[str]) -> None:
    """Time `make reproduce-sentiment-seeds` on top of the state a `--e2e` run left (seed 0 of every method done,
    so seeds 1 and 2 are added) and write it into that end-to-end record."""
    path = _e2e_path(out)
    runs = Path(os.environ.get("RVD_RUNS", "runs")) / "sentiment" / "embedded"
    if not path.exists() or not list(runs.glob("seed0/*/done.json")):
        raise SystemExit(f"the multi-seed benchmark continues an end-to-end run: `make bench-e2e` first (it needs "
                         f"{path} and the seed-0 runs under {runs})")
    record = json.loads(path.read_text())
    timed = _timed_make(["make", "reproduce-sentiment-seeds", *make_args])
    record["multi_seed"] = {**timed, "total_seconds": round(record["seconds"] + timed["seconds"], 1)}
    _save_e2e(path, record)


def _e2e_path(out: Path) -> Path:
    slug = f"e2e-cpu-{os.cpu_count()}cores" if not torch.cuda.is_available() else \
        f"e2e-{torch.cuda.get_device_name().replace(' ', '_')}"
    return out / f"{slug}.json"


def write_e2e(out: Path, record: dict) -> None:
    """<out>/e2e-<device>.{json,md}; earlier measurements in the existing json are kept as its history."""
    out.mkdir(parents=True, exist_ok=True)
    path = _e2e_path(out)
    history = []
    if path.exists():
        old = json.loads(path.read_text())
        history = old.get("history", []) + [{k: old[k] for k in ("git_sha", "finished_at", "seconds", "command")}]
    _save_e2e(path, {**record, "history": history})


def _save_e2e(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=2) + "\n")
    seconds, history = record["seconds"], record.get("history", [])
    lines = [f"# End-to-end: `{record['command']}`", "",
             f"**{seconds / 60:.1f} min** from an empty runs folder (venv and data cache present), at "
             f"`{record['git_sha']}`, finished {record['finished_at']}. {record['machine']}", ""]
    for name, s in record.get("phase_seconds", {}).items():
        lines.append(f"- {name}: {s / 60:.1f} min; the parallel method jobs (and r_phi) after them: "
                     f"{(seconds - s) / 60:.1f} min.")
    ms = record.get("multi_seed")
    if ms:
        lines.append(f"- three seeds: `{ms['command']}` right after it (seeds 1 and 2 of every method added; the "
                     f"shared stages and seed 0 skipped) took {ms['seconds'] / 60:.1f} min more at "
                     f"`{ms['git_sha'][:10]}`, finished {ms['finished_at']}: **{ms['total_seconds'] / 60:.1f} min** "
                     "for the three-seed frontier from an empty runs folder.")
    lines += ["", "Stage wall times summed over all runs (parallel jobs overlap, so the sum exceeds the total):", "",
              "| stage | minutes |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in record["stage_seconds"].items()]
    if history:
        lines += ["", "Earlier measurements (same command and machine class; the presets of those commits):", "",
                  "| git SHA | finished | minutes |", "|---|---|---|"]
        lines += [f"| `{h['git_sha'][:10]}` | {h['finished_at']} | {h['seconds'] / 60:.1f} |" for h in history]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    write_index(path.parent)
    print("\n".join(lines))


TARGET_MIN = 30  # the default `make reproduce-sentiment` on the 2-core CPU (issue 7)


def write_index(out: Path) -> Path:
    """`<out>.md` (results/bench.md): every record under `out` on one page, rebuilt from the json files after each
    benchmark: the end-to-end times against the 30-minute target, then the step timings, one column per device."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    e2e = {k: r for k, r in records.items() if "command" in r}
    steps = {k: r for k, r in records.items() if "results" in r}
    lines = ["# Benchmarks", "", f"Rebuilt from the records in `{out.name}/` by every `make bench`, `make bench-e2e` "
             "and `make bench-e2e-seeds` (each record's own page has its machine, commit and history).", "",
             "## End to end", "", f"Target: the default `make reproduce-sentiment` (every method, one seed, evaluation "
             f"and plots) in at most {TARGET_MIN} minutes on the 2-core CPU, from an empty runs folder.", ""]
    if e2e:
        lines += ["| record | one seed (min) | target | three seeds (min) | commit | finished | machine |",
                  "|---|---|---|---|---|---|---|"]
        for k, r in e2e.items():
            ms, target_machine = r.get("multi_seed"), k == "e2e-cpu-2cores"  # the machine the target is set for
            met = ("met" if r["seconds"] <= TARGET_MIN * 60 else "missed") if target_machine else ""
            three = f"{ms['total_seconds'] / 60:.1f}" if ms else "not measured"
            lines.append(f"| [{k}]({out.name}/{k}.md) | **{r['seconds'] / 60:.1f}** | {met} | {three} | "
                         f"`{r['git_sha'][:10]}` | {r['finished_at']} | {r['machine'].removeprefix('Machine: ')} |")
    else:
        lines.append("No end-to-end record yet: `make bench-e2e` (about half an hour on an idle 2-core machine).")
    lines += ["", "## Steps", ""]
    if steps:
        names = list(dict.fromkeys(n for r in steps.values() for n in r["results"]))
        lines += ["Median seconds per operation (tokens / s and, on GPUs, model-FLOPs utilisation in brackets) at each "
                  "record's model shape:", "",
                  "| operation | " + " | ".join(f"[{k}]({out.name}/{k}.md)" for k in steps) + " |",
                  "|---|" + "---|" * len(steps)]
        for n in names:
            cells = []
            for r in steps.values():
                x = r["results"].get(n)
                rate = [f"{x['tokens'] / x['median_s']:.0f}"] if x and x.get("tokens") else []
                rate += [f"MFU {100 * x['mfu']:.1f} %"] if x and "mfu" in x else []
                cells.append(f"{x['median_s']}" + (f" ({', '.join(rate)})" if rate else "") if x else "")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        shapes = [f"{k}: GPT-2 {r['model'].get('n_layer')}x{r['model'].get('n_embd')}, vocab {r.get('vocab')}, "
                  f"{r['n_params'] / 1e6:.2f}M parameters" for k, r in steps.items()]
        lines += ["", "Models: " + "; ".join(shapes) + "."]
    else:
        lines.append("No step record yet: `make bench`.")
    if all(k.startswith("cpu-") for k in steps):
        lines += ["", "No GPU record yet: `make bench` on a CUDA machine adds one (a column here and "
                  f"`{out.name}/<GPU name>.md`)."]
    path = out.with_suffix(".md")
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--eval-prefixes", type=int, default=None,
                    help="held-out prefixes of the evaluation benchmark (default: the preset's task.eval.n_prompts)")
    ap.add_argument("--e2e", action="store_true", help="time make reproduce-sentiment instead")
    ap.add_argument("--seeds", action="store_true",
                    help="time make reproduce-sentiment-seeds on top of a finished --e2e run instead")
    ap.add_argument("--make-args", default="", help="extra make arguments for --e2e and --seeds, e.g. 'JOBS=2'")
    ap.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                    help="another GPT-2 shape (random weights), e.g. the gpt2-large one on a GPU: n_layer=36 "
                         "n_embd=1280 n_head=20 n_positions=1024; with --vocab 50257")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: the preset's)")
    args = ap.parse_args(argv)
    if args.e2e or args.seeds:
        (multi_seed if args.seeds else end_to_end)(Path(args.out), shlex.split(args.make_args))
        return
    # The model and task settings as the embedded preset overrides them (width, generation length and batch).
    preset = OmegaConf.load(CONF / "experiment" / "sentiment_embedded.yaml")
    model_cfg = OmegaConf.merge(OmegaConf.load(CONF / "model" / "tiny.yaml"), preset.get("model", {}))
    task_cfg = OmegaConf.merge(OmegaConf.load(CONF / "task" / "sentiment.yaml"), preset.get("task", {}))
    shape = OmegaConf.from_dotlist(args.arch)
    unknown = sorted(set(shape) - set(model_cfg.arch))
    if unknown:
        raise SystemExit(f"--arch: unknown key(s) {unknown}; the GPT-2 shape has {sorted(model_cfg.arch)}")
    a = OmegaConf.merge(model_cfg.arch, shape)
    vocab = args.vocab or model_cfg.tokenizer.vocab_size
    preset_shape = not args.arch and not args.vocab
    new_tokens, batch = task_cfg.generation.max_new_tokens, task_cfg.generation.batch_size
    torch.manual_seed(0)
    attn = {"attn_implementation": model_cfg.attn_implementation} if model_cfg.attn_implementation else {}
    config = GPT2Config(vocab_size=vocab, n_positions=a.n_positions, n_embd=a.n_embd, n_layer=a.n_layer,
                        n_head=a.n_head, activation_function=a.activation, eos_token_id=0, bos_token_id=0,
                        pad_token_id=0, **attn)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Training steps in fp32 and, where the preset trains in bf16 on this device, in bf16 mixed precision too.
    precisions = ["fp32"] + (["bf16"] if use_bf16(model_cfg.precision, device) else [])

    def gpt2() -> GPT2LMHeadModel:  # metered, so each timed call also reports its FLOPs
        return meter(GPT2LMHeadModel(config))

    policy = gpt2().to(device).eval()
    prompts = [[int(x) for x in torch.randint(1, vocab, (5,))] for _ in range(batch)]
    # Never sample EOS so every completion has the full length (random weights would stop at random places).
    with torch.no_grad():
        policy.lm_head.weight[0].zero_()
    completions = sample_completions(policy, prompts, max_new_tokens=new_tokens, eos_id=0, pad_id=0,
                                     batch_size=batch, seed=0)
    results = {
        f"sample_{batch}x{new_tokens}_tokens": _timed(lambda: sample_completions(
            policy, prompts, max_new_tokens=new_tokens, eos_id=0, pad_id=0, batch_size=batch, seed=0), args.repeats),
        f"sequence_logprobs_{batch}_sequences": _timed(lambda: sequence_logprobs(policy, prompts, completions, batch),
                                                       args.repeats),
    }
    # One SFT step (plain causal-LM loss, AdamW) on a batch of the SFT shape.
    sft = model_cfg.sft
    train_model = gpt2().to(device).train()
    opt = torch.optim.AdamW(train_model.parameters(), lr=1e-4)
    blocks = torch.randint(0, vocab, (sft.batch_size, sft.block_size), device=device)

    def sft_step(bf16: bool):
        opt.zero_grad()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = train_model(input_ids=blocks, labels=blocks).loss
        loss.backward()
        opt.step()
    for prec in precisions:
        results[f"sft_step_{sft.batch_size}x{sft.block_size}{_suffix(prec)}"] = _timed(
            lambda: sft_step(prec == "bf16"), args.repeats)
    # DPO steps through TRL, on pairs of the sampled shape.
    n_pairs = 32 * (args.repeats + 1)
    pairs = Dataset.from_dict({"prompt_ids": [prompts[i % batch] for i in range(n_pairs)],
                               "chosen_ids": [completions[i % batch] for i in range(n_pairs)],
                               "rejected_ids": [completions[(i + 1) % batch] for i in range(n_pairs)]})
    with tempfile.TemporaryDirectory() as tmp:
        dpo_kwargs = dict(output_dir=tmp, beta=0.1, per_device_train_batch_size=32, max_steps=args.repeats + 1,
                          learning_rate=1e-4, optim="rmsprop", report_to=[], gradient_checkpointing=False,
                          logging_steps=1000, save_strategy="no", disable_tqdm=True,
                          dataloader_pin_memory=torch.cuda.is_available())
        trainer = SampledTokenDPOTrainer(model=gpt2(), ref_model=gpt2(),
                                         args=DPOConfig(**dpo_kwargs, bf16=False), train_dataset=pairs,
                                         processing_class=_tokenizer(vocab),
                                         callbacks=[timer := _StepTimer()])
        apply_to_trainer(trainer, model_cfg.dense_logits)
        results["dpo_step_32_pairs"] = _trained(trainer, timer)
        # The same steps reading the reference log-probs stored by the pairs stage (no reference model).
        stored = pairs.add_column("ref_chosen_logps", [-50.0] * n_pairs).add_column("ref_rejected_logps",
                                                                                  [-50.0] * n_pairs)
        # Log-probs as the preset computes them (model.dense_logits) and, where that is the dense path, through
        # TRL's fused LM head too (what it replaces).
        heads = [("", model_cfg.dense_logits)] + ([("_trl_fused_head", False)] if model_cfg.dense_logits else [])
        for prec in precisions:
            for head, dense in heads:
                stored_args = DPOConfig(**dpo_kwargs, precompute_ref_log_probs=True, **trainer_precision(prec))
                trainer = SampledTokenDPOTrainer(model=gpt2(), ref_model=None, args=stored_args,
                                                 train_dataset=stored, processing_class=_tokenizer(vocab),
                                                 callbacks=[timer := _StepTimer()])
                apply_to_trainer(trainer, dense)
                results[f"dpo_step_32_pairs_stored_ref_logps{_suffix(prec)}{head}"] = _trained(trainer, timer)
    # One PPO step with the embedded preset's PPO settings (rollout, scoring, all PPO epochs); a cheap stand-in
    # scorer, so the number is PPO's own cost (add the reward model's forward for method=ppo).
    from baselines.ppo import PPO, ValueModel

    ppo_cfg = OmegaConf.merge(OmegaConf.load(CONF / "method" / "ppo.yaml"),
                              OmegaConf.load(CONF / "method_preset" / "sentiment_embedded" / "ppo.yaml").method)
    for prec in precisions:
        torch.manual_seed(0)
        ppo_policy = gpt2().to(device)
        with torch.no_grad():
            ppo_policy.lm_head.weight[0].zero_()
        value_model = meter(ValueModel(GPT2LMHeadModel(config).transformer)).to(device)
        ppo = PPO(ppo_policy, gpt2().to(device), value_model,
                  lambda p, c: [len(x) / new_tokens for x in c], ppo_cfg, eos_id=0, pad_id=0,
                  max_new_tokens=new_tokens, seed=0, generation_batch_size=batch, bf16=prec == "bf16")
        ppo_prompts = [prompts[i % batch] for i in range(ppo_cfg.batch_size)]
        step = iter(range(10 ** 6))
        results[f"ppo_step_{ppo_cfg.batch_size}_rollouts_{ppo_cfg.ppo_epochs}_epochs{_suffix(prec)}"] = _timed(
            lambda: ppo.step(next(step), ppo_prompts), args.repeats)
    # The evaluation of one checkpoint: the preset's held-out prefixes, one sample each, policy and reference
    # log-probs (a stand-in reward: r* is a TF-IDF model, negligible next to this).
    from pipelines.stages.evaluate import evaluate_policy

    n_eval = args.eval_prefixes or task_cfg.eval.n_prompts * task_cfg.eval.samples_per_prompt
    eval_prompts = [prompts[i % batch] for i in range(n_eval)]
    tok = _tokenizer(vocab)
    results[f"evaluate_checkpoint_{n_eval}_prefixes"] = _timed(lambda: evaluate_policy(
        policy, ppo_policy, tok, lambda texts: [0.5] * len(texts), eval_prompts, max_new_tokens=new_tokens,
        batch_size=batch, seed=0), max(1, args.repeats // 2))
    tokens = {f"sample_{batch}x{new_tokens}_tokens": batch * new_tokens,
              f"sequence_logprobs_{batch}_sequences": sum(len(p) + len(c) for p, c in zip(prompts, completions)),
              "dpo_step_32_pairs": 2 * sum(len(prompts[i % batch]) + len(completions[i % batch]) for i in range(32)),
              f"evaluate_checkpoint_{n_eval}_prefixes": n_eval * new_tokens}
    for prec in precisions:
        tokens[f"sft_step_{sft.batch_size}x{sft.block_size}{_suffix(prec)}"] = sft.batch_size * sft.block_size
        for head, _ in heads:
            tokens[f"dpo_step_32_pairs_stored_ref_logps{_suffix(prec)}{head}"] = tokens["dpo_step_32_pairs"]
    for name, n in tokens.items():
        results[name]["tokens"] = n
    device_name = torch.cuda.get_device_name() if device == "cuda" else f"cpu-{torch.get_num_threads()}threads"
    peak = peak_tflops(device_name) if device == "cuda" else None
    for name, r in results.items():  # model-FLOPs utilisation against the bf16 peak, of the bf16 steps
        if peak and name.endswith(("_bf16", "_bf16_trl_fused_head")) and "tflops_per_s" in r:
            r["mfu"] = round(r["tflops_per_s"] / peak, 4)
    record = {"device": device_name, "machine": platform.machine(), "processor": platform.processor(),
              "model": OmegaConf.to_container(a), "vocab": vocab, "peak_bf16_tflops": peak,
              "n_params": sum(p.numel() for p in policy.parameters()), "versions": versions(), "results": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = device_name.replace(" ", "_") + ("" if preset_shape else f"-{a.n_layer}x{a.n_embd}-v{vocab}")
    (out / f"{slug}.json").write_text(json.dumps(record, indent=2) + "\n")
    shape = "the embedded default's shape" if preset_shape else "shape set by --arch/--vocab"
    command = shlex.join(["python", "-m", "pipelines.bench", *(sys.argv[1:] if argv is None else argv)]) \
        if not preset_shape else "make bench"
    lines = [f"# Benchmarks on {device_name}", "", f"Model: GPT-2 {a.n_layer}x{a.n_embd}, vocab {vocab}, "
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
    print("\n".join(lines))


if __name__ == "__main__":
    main()
