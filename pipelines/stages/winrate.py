"""Win-rate stage, shared by every method: the final policy of a run against the task's reference, judged pairwise.

For each temperature of task.winrate.temperatures (0 = greedy), sample one completion per held-out prefix from the
run's final policy and ask the judge (conf/judge/: the oracle r*, a local LM, or any OpenAI-compatible endpoint)
whether it beats the reference completion of the same prefix (sentiment: the SFT policy's sample from the
evaluation stage). The order shown to the judge is randomised per comparison (seeded) and stored. Judgments go
through the on-disk judge cache shared by the whole preset, so nothing is asked twice.
Writes winrate/<judge>/winrates.json (per temperature: win rate, s.e., n, n_invalid) and judgments.jsonl.
Best-of-N has no policy to sample at other temperatures; its stage reads its temperature-1 selections instead.

Prompt-response tasks (summarization, dialogue): the reference is the data's own answer to each held-out prompt
(the reference summary, the chosen response); Best-of-N is judged at every temperature it sampled at; with
task.winrate.ood_n_prompts > 0 and an out-of-distribution split (CNN/DailyMail), each policy is also judged there at
temperature 0 (rows with split "ood", the paper's out-of-distribution table)."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from baselines import best_of_n
from pipelines.infra.device import pick_device
from pipelines.infra.io import UserError, atomic_write_json, read_jsonl, write_jsonl
from pipelines.judge import Comparison, JudgeStopped, build_judge, load_template, run_judgments, run_options, win_rate
from pipelines.lm.models import load_policy, load_tokenizer
from pipelines.lm.sampling import sample_completions
from pipelines.stages.evaluate import frontier_param
from pipelines.tasks.prompt_response import few_shot_prefix
from pipelines.tasks.registry import task_of

log = logging.getLogger(__name__)


def _policy_completions(cfg: DictConfig, policy, tokenizer, prompt_ids: list[list[int]], temperature: float
                        ) -> list[str]:
    """Completion texts of the run's final policy at one temperature (same decoding as the evaluation stage)."""
    g = cfg.task.generation
    completions = sample_completions(policy, prompt_ids, max_new_tokens=g.max_new_tokens,
                                     eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                                     batch_size=g.batch_size, seed=cfg.seed, tag=f"winrate/T{temperature}",
                                     temperature=temperature, desc=f"{cfg.method.tag} T={temperature}: sampling")
    prompts = tokenizer.batch_decode(prompt_ids, skip_special_tokens=True)
    texts = tokenizer.batch_decode([p + c for p, c in zip(prompt_ids, completions)], skip_special_tokens=True)
    # Byte-level BPE: decode together, then cut the prompt (as the evaluation stage does).
    return [t[len(p):] if t.startswith(p) else tokenizer.decode(c) for p, t, c in zip(prompts, texts, completions)]


def policy_dir(cfg: DictConfig) -> Path | str:
    """The policy a run is judged by: its final one, the SFT policy itself (method sft), or the pretrained base
    model (method base: a Hub id or a folder)."""
    if cfg.method.name == "base":
        return str(cfg.model.pretrained)
    return Path(cfg.paths.sft if cfg.method.name == "sft" else cfg.paths.method) / "policy"


def _best_of_n_completions(cfg: DictConfig, n_prompts: int) -> list[str]:
    """Best-of-N's selections at the largest N (temperature 1 only: it has no policy of its own)."""
    n = max(cfg.method.n_grid)
    rows = read_jsonl(Path(cfg.paths.method) / "eval" / f"step{n:06d}.samples.jsonl")
    if len(rows) < n_prompts:
        raise UserError(f"best-of-{n} has selections for {len(rows)} prefixes, task.winrate.n_prompts={n_prompts}")
    return [r["completion"] for r in rows[:n_prompts]]


def run(cfg: DictConfig, out_dir: Path) -> dict:
    w, task = cfg.task.winrate, task_of(cfg)
    sft_tokenizer = load_tokenizer(Path(cfg.paths.sft) / "policy")
    prompt_ids, refs = task.winrate_references(cfg, sft_tokenizer, w.n_prompts, "test")
    judge = build_judge(cfg.judge, reward=task.load_reward(cfg) if cfg.judge.backend == "oracle" else None)
    template = load_template(w.template if cfg.judge.get("template") is None else cfg.judge.template)
    is_bon = cfg.method.name == "bon"
    # Best-of-N: judged at each temperature it sampled at, or at T = 1 by its evaluation's selections
    bon_by_selections = is_bon and not task.bon_per_temperature
    temperatures = [1.0] if bon_by_selections else list(w.temperatures)
    meta = {"method": cfg.method.name, "tag": cfg.method.tag, "seed": cfg.seed, "judge": cfg.judge.name,
            "param": max(cfg.method.n_grid) if is_bon else
            frontier_param(cfg.method)}
    # Best-of-N samples from the SFT policy; at T = 0 (prompt-response tasks) every one of its N samples is the
    # greedy one, so it is judged by that.
    sampler = Path(cfg.paths.sft) / "policy" if is_bon else policy_dir(cfg)
    if not is_bon or (not bon_by_selections and 0 in temperatures):
        tokenizer, policy = load_tokenizer(sampler), load_policy(sampler, pick_device(cfg.device))
    results, all_rows = [], []
    # judge_dry_run=true: sample, count the judge calls not yet cached and their estimated cost, judge nothing.
    dry_run, needed, cost = bool(cfg.get("judge_dry_run", False)), 0, 0.0
    jobs = [("test", t, prompt_ids, refs) for t in temperatures]
    # an out-of-distribution split (summarization: CNN/DailyMail) is judged at T = 0 when the data has one
    if w.get("ood_n_prompts", 0) and not is_bon and (Path(cfg.paths.data) / "ood.jsonl").exists():
        ood_ids, ood_refs = task.winrate_references(cfg, sft_tokenizer, w.ood_n_prompts, "ood")
        jobs.append(("ood", 0.0, ood_ids, ood_refs))
    if cfg.method.name == "base" and cfg.method.shots:  # k-shot: the same examples before every prompt
        shots = few_shot_prefix(cfg, tokenizer, int(cfg.method.shots))
        jobs = [(s, t, [shots + p for p in ids], r) for s, t, ids, r in jobs]
    for split, temperature, ids, split_refs in jobs:
        if bon_by_selections:
            candidates = _best_of_n_completions(cfg, w.n_prompts)
        elif is_bon and temperature > 0:
            n = max(cfg.method.n_grid)
            candidates = [sft_tokenizer.decode(c, skip_special_tokens=True)
                          for c in best_of_n.selections(cfg, temperature, n)[:len(ids)]]
        else:
            candidates = _policy_completions(cfg, policy, tokenizer, ids, temperature)
        tmpl = load_template(w.ood_template) if split == "ood" else template
        prefix = f"{cfg.method.tag}/seed{cfg.seed}/T{temperature}" + ("/ood" if split == "ood" else "")
        comparisons = [Comparison(id=f"{prefix}/{i}", prompt=r["prompt"], candidate=c, reference=r["completion"])
                       for i, (r, c) in enumerate(zip(split_refs, candidates))]
        try:
            report = run_judgments(judge, tmpl, comparisons, cache_dir=Path(cfg.paths.judge_cache),
                                   seed=cfg.seed, both_orders=w.both_orders, progress=False, dry_run=dry_run,
                                   **run_options(cfg.judge))
        except JudgeStopped as err:  # the endpoint keeps failing: stop cleanly, answers so far are cached
            raise UserError(f"win rates of {cfg.method.tag} seed {cfg.seed} at T={temperature}: {err}") from None
        if dry_run:
            needed += report.n_calls_needed
            cost += report.estimated_cost
            continue
        rate, se, n_valid, n_invalid = win_rate(report.primary)
        row = {**meta, "split": split, "temperature": temperature, "win_rate": rate, "win_rate_se": se, "n": n_valid,
               "n_invalid": n_invalid, "calls": report.n_calls, "cached": report.n_cached,
               "cost_usd": report.estimated_cost, "agreement": report.agreement_rate,
               "position_bias": report.position_bias}
        results.append(row)
        all_rows += [{**j.to_dict(), "split": split, "temperature": temperature} for j in report.judgments]
        # The texts behind the judgments (summary.md shows a few).
        write_jsonl(out_dir / f"samples_{split}_T{temperature:g}.jsonl",
                    [{"id": c.id, "prompt": c.prompt, "reference": c.reference, "candidate": c.candidate}
                     for c in comparisons])
        log.info("win rate %s %s T=%.2f vs %s (%s): %.3f +- %.3f (n %d, invalid %d)", cfg.method.tag, split,
                 temperature, w.reference, cfg.judge.name, rate, se, n_valid, n_invalid)
    if dry_run:  # pipelines.run.judge_dry_run prints it; no marker is written
        return {"dry_run": True, "text": (
            f"judge dry run for {cfg.method.tag} seed {cfg.seed}: {needed} call(s) to {cfg.judge.name} "
            f"({cfg.judge.model}) needed over {len(temperatures)} temperature(s), estimated cost {cost:.4f} at "
            f"{cfg.judge.price_in_per_m:g}/{cfg.judge.price_out_per_m:g} per 1M input/output tokens; nothing was "
            "judged or written (drop judge_dry_run to run it)")}
    write_jsonl(out_dir / "judgments.jsonl", all_rows)
    atomic_write_json(out_dir / "winrates.json", results)
    return {"points": len(results)}
