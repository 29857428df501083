"""The summary.md writer: markdown table helpers, the provenance line, and the sections of a summary that are
computed from the run folder (set-up, reproducibility, final checkpoints, example completions, wall times, seconds
per step) or formatted from the frontier's statistics (verdict tables, reward at matched KL).

Formats only: the numbers come from analysis.load (files) and analysis.frontier / analysis.stats (statistics),
which call these functions; nothing here imports them back.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis import names
from analysis.load import SHARED_STAGES, _done, _finals, run_method


def _fmt(x, nd=3) -> str:
    return "" if x is None or (isinstance(x, float) and pd.isna(x)) else f"{x:.{nd}f}"


def git_sha() -> str:
    """The commit the analysis ran at, with `-dirty` for uncommitted changes: the pipelines' own helper, so that a
    summary and the done-markers it reads state their commit the same way."""
    # Imported here, not at the top: analysis otherwise reads files only and must load without the pipelines'
    # dependencies (torch). One line, so that a move of the module is one search/replace.
    try:
        from pipelines.infra.provenance import git_sha as pipelines_git_sha
    except ImportError:  # fallback: the tables are still written, without a commit (pipelines not importable)
        return "unknown"
    return pipelines_git_sha()


def stage_shas(run_root: Path, length: int | None = None) -> list[str]:
    """The commits the stages under run_root ran at (from their done-markers), each cut to `length` characters."""
    return sorted({_done(p.parent).get("git_sha", "")[:length] for p in run_root.glob("**/done.json")} - {""})


def save_figure(fig, path: Path, **savefig) -> None:
    """PNG at `path` and a vector PDF beside it for papers (no creation date, so an unchanged figure gives an
    unchanged file); closes the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=150, **savefig)
    fig.savefig(path.with_suffix(".pdf"), metadata={"CreationDate": None}, **savefig)
    plt.close(fig)


def stamp() -> str:
    """Now, to the minute, in UTC: when a summary was written."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def table_head(columns: list[str]) -> list[str]:
    """The header and rule lines of a markdown table."""
    return [table_row(columns), "|---" * len(columns) + "|"]


def table_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


# ------------------------------------------------------------------------------------------- the run folder
def setup_lines(run_root: Path) -> list[str]:
    """'Set-up (measured)': data, tokenizer, SFT, r*, pairs and r_phi of pipeline seed 0, from their done-markers."""
    shared = run_root / "shared"
    sft, rew, pairs, data, tok = (_done(shared / s) for s in ("sft", "reward", "pairs", "data", "tokenizer"))
    out = ["## Set-up (measured)", ""]
    dm, tm, sm, rm, pm = (x.get("metrics", {}) for x in (data, tok, sft, rew, pairs))
    per_corpus = ", ".join(f"{k.split('/')[1]} {v}" for k, v in rm.items() if k.startswith("test_accuracy/"))
    plain = ", ".join(f"{k.split('/')[1]} {v}" for k, v in rm.items() if k.startswith("plain_tfidf_test_accuracy/"))
    out += [f"- Data: {dm.get('n_train')} train / {dm.get('n_validation', 0)} validation / {dm.get('n_test')} test "
            f"documents ({dm.get('train_by_corpus')}); the validation prefixes choose fronts, settings and r_phi's "
            "checkpoint, the test prefixes give every number reported.",
            f"- Tokenizer: vocabulary {tm.get('vocab_size')}.",
            f"- SFT policy (π_ref) of pipeline seed 0: {_fmt(sm.get('n_params', 0) / 1e6, 2)}M parameters, "
            f"{sm.get('steps')} steps; held-out perplexity {sm.get('eval_perplexity')} (every pipeline seed: "
            "Reproducibility below).",
            f"- r* ({rm.get('kind')}): held-out accuracy {rm.get('test_accuracy')} "
            f"({per_corpus})"
            + (f"; plain TF-IDF + LR with function words kept, on the same split: {plain}" if plain else "")
            + (f"; r* of pure filler: {rm['filler_reward']}" if rm.get("filler_reward") else "") + ".",
            f"- Preference pairs: {pm.get('n_pairs')} from {pm.get('n_prompts')} train prefixes "
            f"({pm.get('n_ties_dropped')} ties dropped); SFT samples: mean r* {pm.get('sft_mean_reward')}, "
            f"mean length {pm.get('sft_mean_length')} tokens, EOS rate {pm.get('sft_eos_rate')}."]
    rmm = _done(shared / "reward_model").get("metrics", {})
    if rmm:
        ci = rmm.get("eval_accuracy_ci95")
        out.append(f"- Learned reward model r_phi (PPO's reward) of pipeline seed 0: pairwise accuracy "
                   f"{rmm.get('eval_accuracy')}" + (f" [95 % {ci[0]}, {ci[1]}]" if ci else "")
                   + f" on {rmm.get('n_eval_pairs')} pairs of test prefixes (trained on {rmm.get('n_train_pairs')}, "
                   f"the pairs DPO trains on; checkpoint of step {rmm.get('best_step')} of {rmm.get('steps')}, "
                   "chosen on validation pairs). r* orders every pair correctly by construction.")
    return out + [""]


def stage_times(run_root: Path) -> list[tuple[str, float]]:
    """(stage, seconds) of every finished stage: the shared ones per pipeline folder, then each run's training and
    evaluation."""
    shared = run_root / "shared"
    times = []
    for folder in [shared] + sorted(run_root.glob("pipeline*"), key=lambda p: int(p.name[8:] or 0)):
        for s in SHARED_STAGES:
            d = _done(folder / ("sft/eval" if s == "evaluate_sft" else s))
            if "wall_time_s" in d:
                times.append((s if folder == shared else f"{s} {folder.name}", d["wall_time_s"]))
    for run_dir in sorted(run_root.glob("seed*/*")):
        for sub, name in (("", "train"), ("eval", "evaluate")):
            d = _done(run_dir / sub if sub else run_dir)
            if d:
                times.append((f"{name} {run_dir.parent.name}/{run_dir.name}", d["wall_time_s"]))
    return times


def wall_time_lines(times: list[tuple[str, float]]) -> list[str]:
    total = sum(t for _, t in times)
    out = ["## Wall time per stage (from the done-markers)", "", *table_head(["stage", "seconds"])]
    out += [f"| {s} | {t:.0f} |" for s, t in times]
    return out + [f"| **total** | **{total:.0f}** ({total / 60:.1f} min; parallel jobs overlap, so a run can take "
                  "less) |", ""]


def step_costs(run_root: Path) -> list[str]:
    """Seconds per training step of each method, from the train stages' done-markers."""
    per_method: dict[str, list[dict]] = {}
    for d in sorted(run_root.glob("seed*/*")):
        done = _done(d)
        method = run_method(d) if done else None
        if method and done.get("metrics", {}).get("seconds_per_step"):
            per_method.setdefault(method, []).append(done["metrics"])
    if not per_method:
        return []
    pairs = "one optimizer step on a batch of preference pairs"
    ppo = "one PPO step: rollout, scoring, and all PPO epochs over the batch"
    rloo = "one RLOO step: rollout (k per prompt), scoring, one gradient step"
    what = {"dpo": pairs, "ipo": pairs, "cdpo": pairs, "unlikelihood": pairs,
            "preferred_ft": "one optimizer step on the chosen completions of a batch of pairs",
            "ppo": ppo, "ppo_gt": ppo, "rloo": rloo, "rloo_gt": rloo}
    lines = ["## Seconds per training step", "",
             *table_head(["method", "runs", "s / step", "steps per run", "what a step is"])]
    for method, ms in per_method.items():
        sps = sum(m["seconds_per_step"] for m in ms) / len(ms)
        steps = sorted({m.get("steps") for m in ms})
        lines.append(f"| {names.display_name(method)} | {len(ms)} | {sps:.3f} | {', '.join(map(str, steps))} | "
                     f"{what.get(method, '')} |")
    return lines + [""]


def environments(run_root: Path) -> list[dict]:
    """The distinct machines and builds the stages under run_root ran on (environment block of their done-markers:
    CPU model and flags, GPU, torch build and threads, library versions), each with how many stages ran there."""
    seen: dict[str, dict] = {}
    for p in sorted(run_root.glob("**/done.json")):
        env = _done(p.parent).get("environment")
        if env:
            key = json.dumps(env, sort_keys=True)
            seen.setdefault(key, {**env, "stages": 0})["stages"] += 1
    return list(seen.values())


def reproducibility(run_root: Path, df: pd.DataFrame) -> list[str]:
    """What the numbers depend on: the machines and builds the stages ran on (from the done-markers), each pipeline
    seed's SFT and r_phi, and the spread that the seeds carry."""
    envs: dict[str, int] = {}
    for p in run_root.glob("**/done.json"):
        e = _done(p.parent).get("environment") or {}
        if e:
            cpu, torch_, gpu = e.get("cpu") or {}, e.get("torch") or {}, e.get("gpu") or {}
            key = (f"{cpu.get('model', 'unknown CPU')} ({cpu.get('logical_cpus')} cores, torch CPU path "
                   f"{torch_.get('cpu_capability')})" + (f", GPU {gpu.get('names')}" if gpu else "")
                   + f"; torch {torch_.get('version')}, {torch_.get('num_threads')} thread(s)")
            envs[key] = envs.get(key, 0) + 1
    lines = ["## Reproducibility", "",
             "The same command on the same machine gives byte-identical evaluation files (tests/integration/"
             "test_rerun_identical.py); on another CPU model or torch build the floating-point path differs and the "
             "numbers move (a reviewer saw PPO move by 0.15 in r* between two 2-core machines of one kind). A single "
             "run is one draw: the seeds, each re-training SFT, the pairs and r_phi, carry the claim.", ""]
    if envs:
        lines += ["Stages of these results ran on: " + "; ".join(f"{k} ({n} stage(s))" for k, n in envs.items())
                  + ".", ""]
    seeds = sorted({int(s) for s in df.loc[df.method == "sft", "shared_seed"].dropna()})
    if seeds:
        lines += table_head(["pipeline seed", "SFT perplexity", "SFT r* (test)", "pairs", "r_phi test accuracy [95 %]"])
        for seed in seeds:
            sft = df[(df.method == "sft") & (df.shared_seed == seed)]
            # <pipeline folder>/sft/eval/step000000.json: the seed's SFT, pairs and r_phi are beside its sft/
            folder = (run_root / sft.source.iloc[0]).parents[2] if "source" in sft else run_root / "missing"
            sm, pm, rm = (_done(folder / s).get("metrics", {}) for s in ("sft", "pairs", "reward_model"))
            ci = rm.get("eval_accuracy_ci95")
            lines.append(f"| {seed} | {sm.get('eval_perplexity', '—')} | {_fmt(float(sft.reward.iloc[0]), 4)} | "
                         f"{pm.get('n_pairs', '—')} | {rm.get('eval_accuracy', '—')}"
                         + (f" [{ci[0]}, {ci[1]}]" if ci else "") + " |")
        lines.append("")
    return lines


def final_checkpoints(df: pd.DataFrame) -> list[str]:
    """One row per (method, param): the last checkpoint of each seed's run, averaged across seeds."""
    finals = _finals(df)
    lines = ["## Final checkpoint of each run, mean across seeds", "",
             "Last evaluated checkpoint of each run, averaged over its seeds. KL = sequence-level KL(π ‖ π_SFT) in "
             "nats, estimated from n samples of the policy on held-out prefixes (EOS included, full-distribution "
             "sampling)" + ("; Best-of-N's is analytic" if "kl_kind" in finals and (finals.kl_kind == "analytic").any()
               else "")
             + "; sd = sample sd of r* across seeds. Every checkpoint of every seed is in frontier.csv.", "",
             *table_head(["method", "setting", "seeds", "KL", "r*", "sd of r*", "mean len", "EOS rate"])]
    for (method, param), g in finals.groupby(["method", "param"], dropna=False, sort=False):
        setting = "" if pd.isna(param) else f"{names.param_name(method)} {param:g}"
        lines.append(f"| {names.display_name(method)} | {setting} | {len(g)} | {_fmt(g.kl.mean())} | "
                     f"{_fmt(g.reward.mean(), 4)} | {_fmt(g.reward.std(ddof=1), 4)} | "
                     f"{_fmt(g.mean_length.mean(), 1)} | {_fmt(g.eos_rate.mean(), 2)} |")
    return lines + [""]


def examples(run_root: Path, df: pd.DataFrame, n: int) -> list[str]:
    """The first n held-out prefixes with the SFT completion and the last-checkpoint completion of one run per
    (method, param): its smallest seed, so the table does not grow with the seeds."""
    lines = []
    finals = _finals(df).sort_values("seed", kind="stable").groupby(["method", "param"], dropna=False).head(1)
    sources = []
    for _, r in finals.sort_index().iterrows():
        if pd.isna(r.get("source")):
            continue
        f = (run_root / r.source).with_suffix(".samples.jsonl")
        label = "SFT" if r.method == "sft" else \
            f"{names.run_label(r.method, r.param)} (step {int(r.step)}, seed {int(r.seed)})"
        if f.exists():
            sources.append((label, [json.loads(x) for x in f.read_text().splitlines()[:n]]))
    for i in range(n):
        if not sources or i >= len(sources[0][1]):
            break
        lines.append(f"**Prefix {i + 1}:** `{sources[0][1][i]['prompt']}`\n")
        lines.append("| policy | r* | completion |\n|---|---|---|")
        for label, rows in sources:
            text = rows[i]["completion"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {label} | {rows[i]['reward']:.3f} | {text} |")
        lines.append("")
    return lines


# ------------------------------------------------------------------------------- the frontier's statistics
def verdict_tables(results: dict, alpha: float) -> list[str]:
    """Per rival: the paired test at each compared budget (DPO − rival), the budgets left out and why, and how often
    bootstrap resamples of the seeds give the same relation (results: analysis.frontier.verdict's)."""
    lines = []
    for rival, r in results.items():
        name = names.display_name(rival)
        lines += [f"**DPO vs {name}** ({r['n_seeds']} paired seeds: {', '.join(map(str, r['seeds']))}): "
                  f"{r['relation']}; the same relation in {r['stability']['stability']:.1%} of "
                  f"{r['stability']['n_boot']} bootstrap resamples of the seeds "
                  f"({', '.join(f'{k} {v}' for k, v in r['stability']['counts'].items() if v)}).", ""]
        comp = r["compared"]
        if len(comp):
            lines += table_head(["KL", "seeds", "DPO", name, f"DPO − {name} [95 % CI]", "p", "p (Holm)",
                                 "min. detectable difference", "result"])
            for _, c in comp.iterrows():
                lines.append(f"| {c.budget:g} | {int(c.n)} | {c.mean_a:.3f} | {c.mean_b:.3f} | {c.mean_diff:+.3f} "
                             f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}] | {c.p:.3g} | {c.p_holm:.3g} | {c.mdd:.3f} | "
                             f"{c.sign} |")
            lines.append("")
        if r["left_out"]:
            lines += ["Budgets left out (not every seed of both has its own checkpoint at or below the budget and a "
                      "front reaching it):", ""] + [f"- KL {x['budget']:g}: {x['reason']}" for x in r["left_out"]]
            lines.append("")
    if results:
        lines += [f"Paired t-test on the per-seed differences (seed s of both methods shares SFT and pairs), "
                  f"two-sided, Holm-corrected over the budgets compared, α = {alpha:g}. Minimum detectable difference: "
                  "the true difference a paired t-test at that α detects with 80 % power given the seeds' sd of the "
                  "differences, (t_{1−α/2, n−1} + t_{0.8, n−1}) · sd / √n (uncorrected α; Holm makes it larger). "
                  "Each seed's front is chosen on validation prefixes and read on test prefixes.", ""]
    return lines


def matched_kl(table: pd.DataFrame) -> list[str]:
    """A seed table (analysis.frontier.seed_table) as markdown: rows are KL budgets, one column per method,
    'mean ± half-width (seeds)'."""
    methods = list(dict.fromkeys(table.method))
    if not methods:
        return []
    head = table_head(["KL", *(names.display_name(m) for m in methods)])
    lines = ["## Reward at matched KL (mean across seeds, 95 % interval)", "",
             "Each seed's Pareto front is chosen on the validation prefixes (its checkpoints and its own SFT point); "
             "its checkpoints' test r* is read at the KL by linear interpolation between front points from the seed's "
             "own first front checkpoint, then flat at the last one's reward up to the largest KL any checkpoint of "
             "the seed reached (a budget is KL ≤ b: the best policy the seed found within it; no chord from SFT, no "
             "extrapolation beyond what the seed reached); mean across the seeds that cover the KL ± the 95 % "
             "t-interval half-width "
             "t_{0.975, n−1} · sd / √n, seed count in brackets (of the method's seeds), — where none covers it"
             + ("; Best-of-N's KL is analytic, log N − (N−1)/N." if "bon" in methods else "."), "", *head]
    for budget in dict.fromkeys(table.kl):
        rows = table[table.kl == budget].set_index("method")
        lines.append(table_row([f"{budget:g}", *(_cell(rows.loc[m]) for m in methods)]))
    lines += ["", "Across-seed sd of r* at each budget (the spread the seeds carry):", "", *head]
    for budget in dict.fromkeys(table.kl):
        rows = table[table.kl == budget].set_index("method")
        lines.append(table_row([f"{budget:g}", *(_fmt(rows.loc[m, "sd"]) or "—" for m in methods)]))
    return lines + [""]


def _cell(row: pd.Series) -> str:
    """'0.751 ± 0.012 (3/10)'; no ± with one seed; — with none."""
    n, of = int(row.n_seeds), int(row.seeds)
    if n == 0:
        return "—"
    return f"{row['mean']:.3f} ± {row.half_width:.3f} ({n}/{of})" if n >= 2 else f"{row['mean']:.3f} ({n}/{of})"
