"""Best-of-N baseline: for each held-out prefix, N completions sampled from the SFT policy are scored by the learned
reward model r_phi and the best one is kept; no training. Its KL to the SFT policy is the analytic
log N - (N - 1) / N (Stiennon et al. 2020; an upper bound, Beirami et al. 2024), reported as such (kl_kind
"analytic"), not estimated from samples like every other point.

Stage `train` (method=bon): sample max(N) completions per prefix once, score them all with r_phi, in resumable
chunks (samples/chunk*.jsonl). Stage `evaluate`: for each N of the grid, the first N samples of each prefix (nested
sets, as if sampled separately) -> the r_phi-best -> r*; one eval/step<N>.json per N.
Reads sft/policy, reward_model/, data/ (test prefixes), reward/ (r*).

Prompt-response tasks (summarization, dialogue) have no r* and no frontier: the train stage samples at every
temperature of the win-rate sweep (the paper plots Best-of-128 against temperature), into samples/T<t>/, and the
win-rate stage judges the r_phi-best of max(N) (`selections`). At temperature 0 every sample is the greedy one."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from omegaconf import DictConfig
from tqdm.auto import tqdm

from pipelines.infra.device import pick_device
from pipelines.infra.io import UserError, atomic_write_json, read_jsonl, write_jsonl
from pipelines.lm.models import load_policy, load_tokenizer
from pipelines.lm.sampling import sample_completions
from pipelines.tasks.registry import task_of

log = logging.getLogger(__name__)


def analytic_kl(n: int) -> float:
    """KL(best-of-n || pi) = log n - (n - 1) / n nats for a continuous reward without ties."""
    return math.log(n) - (n - 1) / n


def select_best(scores: list[list[float]], n: int) -> list[int]:
    """Per prefix, the index of the highest score among its first n samples (the first one on a tie)."""
    out = []
    for row in scores:
        if len(row) < n:
            raise ValueError(f"best-of-{n} needs {n} scored samples per prefix, found {len(row)}")
        head = row[:n]
        out.append(max(range(n), key=lambda i: (head[i], -i)))
    return out


def sampling_temperatures(cfg: DictConfig) -> list[float]:
    """Temperatures the train stage samples at: the task's one (sentiment), or every non-zero one of the win-rate
    sweep (prompt-response tasks: Task.bon_per_temperature)."""
    if not task_of(cfg).bon_per_temperature:
        return [float(cfg.task.generation.temperature)]
    return [float(t) for t in cfg.task.winrate.temperatures if t > 0]


def samples_dir(cfg: DictConfig, temperature: float) -> Path:
    root = Path(cfg.paths.method) / "samples"
    return root / f"T{temperature:g}" if task_of(cfg).bon_per_temperature else root


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Sample and score max(N) completions per held-out prefix, chunk by chunk (a rerun skips finished chunks)."""
    from pipelines.lm.scorers import load_scorer

    m, g = cfg.method, cfg.task.generation
    device = pick_device(cfg.device)
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)
    policy = load_policy(sft_dir, device)
    scorer = load_scorer(cfg, device)
    # (prompts, split of each): sentiment's evaluation prefixes (test, validation), or the win-rate test prompts
    prompts, splits = task_of(cfg).bon_prompts(cfg, tokenizer)
    n_max = max(m.n_grid)
    chunks = range(0, len(prompts), m.chunk_prompts)
    t0, sampled = time.time(), 0
    for temperature in sampling_temperatures(cfg):
        # The tag of the temperature-1 sentiment samples predates the temperature sweep: kept, so its samples stay.
        tag = f"bon/T{temperature:g}" if task_of(cfg).bon_per_temperature else "bon"
        for c, start in enumerate(tqdm(chunks, desc=f"best-of-{n_max} T={temperature:g}: sample + score r_phi")):
            path = samples_dir(cfg, temperature) / f"chunk{c:04d}.jsonl"
            if path.exists():
                continue
            batch = prompts[start:start + m.chunk_prompts]
            repeated = [p for p in batch for _ in range(n_max)]
            completions = sample_completions(policy, repeated, max_new_tokens=g.max_new_tokens,
                                             eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                                             batch_size=m.sample_batch_size, seed=cfg.seed, tag=f"{tag}/{c}",
                                             temperature=temperature)
            scores = scorer(repeated, completions)
            write_jsonl(path, [{"prompt_ids": p, "split": split, "completions": completions[i * n_max:(i + 1) * n_max],
                                "scores": scores[i * n_max:(i + 1) * n_max]}
                               for i, (p, split) in enumerate(zip(batch, splits[start:start + m.chunk_prompts]))])
            sampled += len(repeated)
    seconds = time.time() - t0
    return {"n_prompts": len(prompts), "n_max": n_max, "samples_this_run": sampled,
            "temperatures": sampling_temperatures(cfg),
            "seconds_per_1k_samples": round(1000 * seconds / sampled, 3) if sampled else None}


def selections(cfg: DictConfig, temperature: float, n: int) -> list[list[int]]:
    """The r_phi-best of the first n samples of each held-out prompt at one sampled temperature (token ids)."""
    rows = [r for f in sorted(samples_dir(cfg, temperature).glob("chunk*.jsonl")) for r in read_jsonl(f)
            if r.get("split", "test") == "test"]
    if not rows:
        raise UserError(f"best-of-N has no samples at T={temperature:g} in {samples_dir(cfg, temperature)}; "
                        "rerun its train stage")
    picks = select_best([r["scores"] for r in rows], n)
    return [r["completions"][i] for r, i in zip(rows, picks)]


def _split_point(tokenizer, reward, rows: list[dict], n: int) -> tuple[dict, list[dict]]:
    """r* of the r_phi-best of the first n samples of each row's prefix: (metrics, per-prefix rows)."""
    picks = select_best([r["scores"] for r in rows], n)
    prompts = [r["prompt_ids"] for r in rows]
    completions = [r["completions"][i] for r, i in zip(rows, picks)]
    texts = tokenizer.batch_decode([p + c for p, c in zip(prompts, completions)], skip_special_tokens=True)
    rewards = list(reward(texts))
    k = len(rewards)
    mean = sum(rewards) / k
    se = math.sqrt(sum((x - mean) ** 2 for x in rewards) / (k - 1) / k) if k > 1 else float("nan")
    prompt_texts = tokenizer.batch_decode(prompts, skip_special_tokens=True)
    samples = [{"prompt": pt, "completion": t[len(pt):] if t.startswith(pt) else tokenizer.decode(c),
                "completion_ids": c, "reward": r, "proxy_score": row["scores"][i]}
               for pt, t, c, r, row, i in zip(prompt_texts, texts, completions, rewards, rows, picks)]
    eos = tokenizer.eos_token_id
    metrics = {"kl": analytic_kl(n), "kl_se": 0.0, "reward": mean, "reward_se": se, "n": k,
               "proxy_score": sum(row["scores"][i] for row, i in zip(rows, picks)) / k,
               "mean_length": sum(len(c) for c in completions) / k,
               "eos_rate": sum(c[-1] == eos for c in completions) / k}
    return metrics, samples


def evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    """One frontier point per N: r* of the r_phi-best of the first N samples of each prefix, on the test prefixes
    (kl, reward, ...) and the validation prefixes (val_kl, val_reward, ...), as every other method's points."""
    m = cfg.method
    tokenizer = load_tokenizer(Path(cfg.paths.sft) / "policy")
    rows = [r for f in sorted(samples_dir(cfg, cfg.task.generation.temperature).glob("chunk*.jsonl"))
            for r in read_jsonl(f)]
    by_split = {split: [r for r in rows if r.get("split", "test") == split] for split in ("test", "validation")}
    reward = task_of(cfg).load_reward(cfg)
    points = {}
    for n in sorted(m.n_grid):
        path = out_dir / f"step{n:06d}.json"
        if not path.exists() or not path.with_suffix(".samples.jsonl").exists():
            metrics, samples = _split_point(tokenizer, reward, by_split["test"], n)
            write_jsonl(out_dir / f"step{n:06d}.samples.jsonl", samples)
            if by_split["validation"]:
                found, _ = _split_point(tokenizer, reward, by_split["validation"], n)
                metrics.update({f"val_{k}": v for k, v in found.items()})
            metrics.update({"method": m.name, "tag": m.tag, "param": n, "seed": cfg.seed,
                            "shared_seed": cfg.shared_seed, "step": n, "kl_kind": "analytic"})
            atomic_write_json(path, metrics)
            log.info("eval best-of-%d: KL %.3f (analytic), reward %.4f +- %.4f (test)", n, metrics["kl"],
                     metrics["reward"], metrics["reward_se"])
        points[n] = path.name
    return {"points": points}


def check(cfg: DictConfig, need) -> None:
    m = cfg.method
    need(len(m.n_grid) > 0 and all(n >= 1 for n in m.n_grid), f"method.n_grid must be N >= 1, got {m.n_grid}")
    need(m.n_prompts is None or m.n_prompts >= 1, f"method.n_prompts must be >= 1 or null, got {m.n_prompts}")
    need(m.chunk_prompts >= 1 and m.sample_batch_size >= 1, "method.chunk_prompts and sample_batch_size must be >= 1")
