"""Evaluation stage, shared by every method: one frontier point per policy snapshot.

For each snapshot of the method (and the SFT policy itself for method=sft): sample completions on the held-out
test prefixes (and, separately, on the validation prefixes) from the policy's full distribution, score them with
r*, and estimate the sequence-level KL(pi || pi_SFT) from the same samples. Writes eval/step<N>.json (metrics)
and eval/step<N>.samples.jsonl.
Each snapshot's file is written once, so an interrupted evaluation resumes where it stopped.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import evaluate as hf_evaluate
from omegaconf import DictConfig, OmegaConf

from pipelines.infra.device import pick_device
from pipelines.infra.io import atomic_write_json, write_jsonl
from pipelines.lm.models import load_policy, load_tokenizer
from pipelines.lm.sampling import batch_seed, sample_completions, sequence_logprobs
from pipelines.tasks.gold_reward import Reward
from pipelines.tasks.prefixes import eval_prompts
from pipelines.tasks.registry import task_of

log = logging.getLogger(__name__)
METRIC_DIR = Path(__file__).parents[1] / "numerics" / "metrics" / "sequence_kl_reward"
# The method setting each run's points are labelled with (the swept one); Preferred-FT varies only its seed.
# (ipo: beta is IPO's tau; cdpo sweeps beta at a fixed label smoothing; bon's parameter is N, set by best_of_n.)
def frontier_param(method: DictConfig):
    """The value of the method's frontier parameter (conf/method/<name>.yaml display.param), None without one."""
    key = method.display.param
    return OmegaConf.select(method, key) if key else None


def evaluate_policy(policy, ref, tokenizer, reward: Reward, prompts: list[list[int]], *, max_new_tokens: int,
                    batch_size: int, seed: int, temperature: float = 1.0, desc: str | None = None
                    ) -> tuple[dict, list[dict]]:
    """Frontier point of `policy` against `ref` on `prompts`. Returns (metrics, per-sample rows)."""
    completions = sample_completions(policy, prompts, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
                                     pad_id=tokenizer.pad_token_id, batch_size=batch_size, seed=seed, tag="eval",
                                     temperature=temperature, desc=desc and f"{desc}: sampling")
    policy_logps = sequence_logprobs(policy, prompts, completions, batch_size)
    ref_logps = policy_logps if ref is policy else sequence_logprobs(ref, prompts, completions, batch_size)
    texts = tokenizer.batch_decode([p + c for p, c in zip(prompts, completions)], skip_special_tokens=True)
    rewards = reward(texts)
    metrics = hf_evaluate.load(str(METRIC_DIR)).compute(policy_logps=policy_logps, ref_logps=ref_logps,
                                                         rewards=rewards)
    eos = tokenizer.eos_token_id
    metrics["mean_length"] = sum(len(c) for c in completions) / len(completions)
    metrics["eos_rate"] = sum(c[-1] == eos for c in completions) / len(completions)
    prompt_texts = tokenizer.batch_decode(prompts, skip_special_tokens=True)
    # Byte-level BPE: decode prompt+completion together (a character may span the boundary), then cut the prompt.
    rows = [{"prompt": pt, "completion": t[len(pt):] if t.startswith(pt) else tokenizer.decode(c),
             "completion_ids": c, "reward": r, "logratio": lp - lr}
            for pt, t, c, r, lp, lr in zip(prompt_texts, texts, completions, rewards, policy_logps, ref_logps)]
    return metrics, rows


def method_snapshots(cfg: DictConfig) -> list[tuple[int, Path]]:
    """(step, folder) of every saved policy of the configured method."""
    found = sorted(Path(cfg.paths.method).glob("snapshots/step*"))
    return [(int(p.name[4:]), p) for p in found]


def evaluate_points(cfg: DictConfig, out_dir: Path, policies: list[tuple[int, Path]], meta: dict, seed: int
                    ) -> dict:
    """Evaluate each (step, policy folder) that has no result file yet, on the test prefixes (the reported numbers:
    kl, reward, ...) and on the validation prefixes (val_kl, val_reward, ...: what selection may look at). The
    reference is always the SFT policy of the run's pipeline seed."""
    e, g = cfg.task.eval, cfg.task.generation
    device = pick_device(cfg.device)
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)
    ref = load_policy(sft_dir, device)
    reward = task_of(cfg).load_reward(cfg)
    splits = {"test": [p for p in eval_prompts(cfg, tokenizer, "test") for _ in range(e.samples_per_prompt)],
              "validation": [p for p in eval_prompts(cfg, tokenizer, "validation")
                             for _ in range(e.samples_per_prompt)]}
    points = {}
    for step, folder in policies:
        path = out_dir / f"step{step:06d}.json"
        # A point counts as done with its samples (a point restored from the ledger has none: redone).
        if not path.exists() or not path.with_suffix(".samples.jsonl").exists():
            policy = ref if Path(folder) == sft_dir else load_policy(folder, device)
            metrics: dict = {}
            for split, prompts in splits.items():
                if not prompts:
                    continue
                # The validation prefixes draw their own samples (seed tag eval/validation), independent of test's.
                found, rows = evaluate_policy(policy, ref, tokenizer, reward, prompts,
                                              max_new_tokens=g.max_new_tokens, batch_size=g.batch_size,
                                              seed=seed if split == "test" else batch_seed(seed, "eval/validation", 0),
                                              temperature=g.temperature, desc=f"eval {meta['tag']} step {step}")
                if split == "test":
                    metrics.update(found)
                    write_jsonl(out_dir / f"step{step:06d}.samples.jsonl", rows)
                else:
                    metrics.update({f"val_{k}": v for k, v in found.items()})
            metrics.update(meta, seed=seed, shared_seed=cfg.shared_seed, step=step)
            atomic_write_json(path, metrics)
            log.info("eval %s step %d: KL %.3f +- %.3f, reward %.4f +- %.4f (test)", meta["tag"], step,
                     metrics["kl"], metrics["kl_se"], metrics["reward"], metrics["reward_se"])
        points[step] = path.name
    return {"points": points}


def run_sft(cfg: DictConfig, out_dir: Path) -> dict:
    """The SFT policy's own point (KL 0), the frontier's anchor of every method run on its pipeline seed."""
    return evaluate_points(cfg, out_dir, [(0, Path(cfg.paths.sft) / "policy")],
                           {"method": "sft", "tag": "sft", "param": None}, cfg.shared_seed)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Every snapshot of the configured method; with snapshots=delete, the evaluated snapshots and the run's resume
    checkpoints are deleted afterwards (their points stay: a rerun finds them done)."""
    meta = {"method": cfg.method.name, "tag": cfg.method.tag, "param": frontier_param(cfg.method)}
    snapshots = method_snapshots(cfg)
    result = evaluate_points(cfg, out_dir, snapshots, meta, cfg.seed)
    if cfg.get("snapshots", "keep") == "delete":
        result["points"] = {int(p.stem[4:]): p.name for p in sorted(out_dir.glob("step*.json"))}
        delete_resume_state(Path(cfg.paths.method), [folder for _, folder in snapshots])
    return result


def delete_resume_state(method_dir: Path, snapshots: list[Path]) -> None:
    """Free the disk of a run whose evaluation is done: its policy snapshots, its Trainer checkpoints and PPO's
    resume state. The final policy/ (the win rates sample it) and every small file stay."""
    doomed = [*snapshots, *sorted((method_dir / "trainer").glob("checkpoint-*")), method_dir / "last",
              method_dir / "last.tmp"]
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
            log.info("snapshots=delete: removed %s", path)
    folder = method_dir / "snapshots"
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
