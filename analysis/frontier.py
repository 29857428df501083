"""Reward-vs-KL frontier of every evaluated policy of one task/preset: frontier.csv, frontier.png, summary.md.

  python -m analysis.frontier --task sentiment --preset embedded [--runs runs] [--out results]

Reads only files written by the pipelines (done.json markers, eval/step*.json, eval/step*.samples.jsonl).
"""
from __future__ import annotations

import argparse
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

COLUMNS = ["method", "param", "seed", "step", "kl", "kl_se", "reward", "reward_se", "n"]
EXTRA = ["tag", "mean_length", "eos_rate"]
COLORS = {"sft": "black", "dpo": "tab:blue", "ppo": "tab:red", "ppo_gt": "tab:orange"}
SHARED_STAGES = ["data", "tokenizer", "sft", "reward", "evaluate_sft", "pairs", "reward_model"]
KL_BUDGETS = (1, 2, 5, 10)


def load_points(run_root: Path) -> pd.DataFrame:
    """One row per evaluated checkpoint, from every eval/step*.json under run_root."""
    rows = [json.loads(p.read_text()) for p in sorted(run_root.glob("**/eval/step*.json"))]
    if not rows:
        raise SystemExit(f"no evaluated checkpoints under {run_root}: run the pipeline first")
    df = pd.DataFrame(rows)
    for col in COLUMNS + EXTRA:
        if col not in df:
            df[col] = None
    df = df[COLUMNS + EXTRA]
    # SFT (evaluated once, shared) first, then each method by its swept parameter, seed and step.
    df["_order"] = (df.method != "sft").astype(int)
    df = df.sort_values(["_order", "method", "param", "seed", "step"], na_position="first")
    return df.drop(columns="_order").reset_index(drop=True)


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Points not dominated by another of the same set (lower-or-equal KL and higher reward), sorted by KL."""
    pts = points.sort_values(["kl", "reward"], ascending=[True, False])
    front, best = [], float("-inf")
    for _, row in pts.iterrows():
        if row["reward"] > best:
            front.append(row)
            best = row["reward"]
    return pd.DataFrame(front)


def plot_frontier(df: pd.DataFrame, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(10, 5.5))
    sft = df[df.method == "sft"]
    for method, group in df[df.method != "sft"].groupby("method"):
        color = COLORS.get(method, None)
        params = sorted(group.param.dropna().unique())
        markers = "osD^v<>Ph*"
        for i, param in enumerate(params):
            g = group[group.param == param].sort_values("step")
            ax.errorbar(g.kl, g.reward, xerr=g.kl_se, yerr=g.reward_se, fmt=markers[i % len(markers)], ms=5,
                        color=color, alpha=0.35 + 0.65 * (i + 1) / len(params), elinewidth=0.6, capsize=0,
                        label=f"{method} {_param_name(method)}={param:g}")
        front = pareto_front(pd.concat([group, sft]))
        ax.step(front.kl, front.reward, where="post", color=color, lw=1.5, ls="--", label=f"{method} Pareto front")
    if len(sft):
        ax.errorbar(sft.kl, sft.reward, yerr=sft.reward_se, fmt="*", ms=12, color="black", label="SFT (pi_ref)")
    ax.set_xlabel("sequence-level KL(pi || pi_SFT), nats (estimated from the policy's own samples)")
    ax.set_ylabel("mean r*(x, y) on held-out prefixes")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # Outside the axes: with several methods, any corner inside would hide points.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _param_name(method: str) -> str:
    return {"dpo": "β", "ppo": "KL target", "ppo_gt": "KL target"}.get(method, "param")


def _done(path: Path) -> dict:
    p = path / "done.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fmt(x, nd=3) -> str:
    return "" if x is None or (isinstance(x, float) and pd.isna(x)) else f"{x:.{nd}f}"


def examples(run_root: Path, df: pd.DataFrame, n: int) -> list[str]:
    """The first n held-out prefixes with the SFT completion and each run's last-checkpoint completion."""
    lines = []
    finals = df.loc[df.groupby(["method", "param", "seed"], dropna=False)["step"].idxmax()].sort_index()
    sources = []
    for _, r in finals.iterrows():
        if r.method == "sft":
            f = run_root / "shared" / "sft" / "eval" / f"step{int(r.step):06d}.samples.jsonl"
            label = "SFT"
        else:
            f = run_root / f"seed{int(r.seed)}" / r.tag / "eval" / f"step{int(r.step):06d}.samples.jsonl"
            label = f"{r.method} {_param_name(r.method)}={r.param:g} (step {int(r.step)}, seed {int(r.seed)})"
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


def reading(df: pd.DataFrame) -> list[str]:
    """Plain statements computed from the table: which runs beat SFT, and the best reward within a KL budget."""
    sft = df[df.method == "sft"]
    if sft.empty:
        return []
    r0, se0 = float(sft.reward.iloc[0]), float(sft.reward_se.iloc[0])
    lines = ["## Reading", "", f"- SFT (π_ref): r* = {r0:.4f} ± {se0:.4f}."]
    for method, group in df[df.method != "sft"].groupby("method"):
        finals = group.loc[group.groupby(["param", "seed"])["step"].idxmax()]
        # above SFT by more than two standard errors of the difference (independent samples)
        above = [r for _, r in finals.iterrows() if r.reward - r0 > 2 * (r.reward_se ** 2 + se0 ** 2) ** 0.5]
        lines.append(f"- {method}: {len(above)} of {len(finals)} runs end with r* above SFT's by more than two "
                     f"standard errors of the difference.")
        if "mean_length" in df and finals.mean_length.notna().all() and sft.mean_length.notna().all():
            # Length is where a policy most often buys reward it was not meant to (reward hacking shows here).
            sft_len = float(sft.mean_length.iloc[0])
            lo, hi = finals.mean_length.min(), finals.mean_length.max()
            flag = " — **completions collapsed to under half of SFT's length**" if hi < sft_len / 2 else ""
            lines.append(f"  - final mean completion length {lo:.1f}-{hi:.1f} tokens (SFT {sft_len:.1f}), "
                         f"EOS rate {finals.eos_rate.min():.2f}-{finals.eos_rate.max():.2f}{flag}.")
    return lines + [""] + matched_kl(df)


def best_within(points: pd.DataFrame, budget: float) -> pd.Series | None:
    """The highest-r* point with KL <= budget (the Pareto front read as a step function); None if only SFT."""
    front = pareto_front(points)
    within = front[front.kl <= budget]
    if not len(within) or within.kl.max() <= 0:
        return None
    return within.iloc[-1]


def matched_kl(df: pd.DataFrame) -> list[str]:
    """Methods side by side at the same KL budgets: best r* of each method's checkpoints within the budget, and
    which method leads by more than two standard errors of the difference."""
    sft = df[df.method == "sft"]
    methods = [m for m in ("dpo", "ppo", "ppo_gt") if m in set(df.method)] + \
        sorted(set(df.method) - {"sft", "dpo", "ppo", "ppo_gt"})
    if not methods:
        return []
    lines = ["## Methods at matched KL", "",
             "Best r* among each method's evaluated checkpoints with KL ≤ budget (± one s.e.; the point's KL in "
             "brackets). A budget below a method's smallest KL shows —.", "",
             "| KL ≤ | " + " | ".join(methods) + " | leader (> 2 s.e.) |", "|---" * (len(methods) + 2) + "|"]
    for budget in KL_BUDGETS:
        best = {m: best_within(pd.concat([df[df.method == m], sft]), budget) for m in methods}
        cells = [f"{b.reward:.3f} ± {b.reward_se:.3f} [{b.kl:.1f}]" if b is not None else "—"
                 for b in best.values()]
        found = sorted(((b.reward, b.reward_se, m) for m, b in best.items() if b is not None), reverse=True)
        if len(found) >= 2:
            (r1, s1, m1), (r2, s2, _) = found[0], found[1]
            leader = m1 if r1 - r2 > 2 * (s1 ** 2 + s2 ** 2) ** 0.5 else "tie (within 2 s.e.)"
        else:
            leader = ""
        lines.append(f"| {budget} | " + " | ".join(cells) + f" | {leader} |")
    return lines + [""]


def summary(run_root: Path, df: pd.DataFrame, task: str, preset: str, command: str, n_examples: int) -> str:
    shared = run_root / "shared"
    sft, rew, pairs, data, tok = (_done(shared / s) for s in ("sft", "reward", "pairs", "data", "tokenizer"))
    stage_times = []
    for s in SHARED_STAGES:
        d = _done(shared / ("sft/eval" if s == "evaluate_sft" else s))
        if d:
            stage_times.append((s, d["wall_time_s"]))
    for run_dir in sorted(run_root.glob("seed*/*")):
        for sub, name in (("", "train"), ("eval", "evaluate")):
            d = _done(run_dir / sub if sub else run_dir)
            if d:
                stage_times.append((f"{name} {run_dir.parent.name}/{run_dir.name}", d["wall_time_s"]))
    total = sum(t for _, t in stage_times)
    shas = sorted({_done(p.parent).get("git_sha", "") for p in run_root.glob("**/done.json")} - {""})
    out = [f"# {task} / {preset}: reward vs KL frontier", "",
           f"Produced by `{command}` at git SHA `{_git_sha()}` (analysis), "
           f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. "
           f"Stages ran at: {', '.join(f'`{s}`' for s in shas)}.", "",
           "![frontier](frontier.png)", "", "## Set-up (measured)", ""]
    dm, tm, sm, rm, pm = (x.get("metrics", {}) for x in (data, tok, sft, rew, pairs))
    per_corpus = ", ".join(f"{k.split('/')[1]} {v}" for k, v in rm.items() if k.startswith("test_accuracy/"))
    plain = ", ".join(f"{k.split('/')[1]} {v}" for k, v in rm.items() if k.startswith("plain_tfidf_test_accuracy/"))
    out += [f"- Data: {dm.get('n_train')} train / {dm.get('n_test')} test documents ({dm.get('train_by_corpus')}).",
            f"- Tokenizer: vocabulary {tm.get('vocab_size')}.",
            f"- SFT policy (pi_ref): {_fmt(sm.get('n_params', 0) / 1e6, 2)}M parameters, {sm.get('steps')} steps; "
            f"**held-out perplexity {sm.get('eval_perplexity')}** (eval loss {sm.get('eval_loss')}).",
            f"- r* ({rm.get('kind')}): held-out accuracy {rm.get('test_accuracy')} "
            f"({per_corpus})"
            + (f"; plain TF-IDF + LR with function words kept, on the same split: {plain}" if plain else "")
            + (f"; r* of pure filler: {rm['filler_reward']}" if rm.get("filler_reward") else "") + ".",
            f"- Preference pairs: {pm.get('n_pairs')} from {pm.get('n_prompts')} train prefixes "
            f"({pm.get('n_ties_dropped')} ties dropped); SFT samples: mean r* {pm.get('sft_mean_reward')}, "
            f"mean length {pm.get('sft_mean_length')} tokens, EOS rate {pm.get('sft_eos_rate')}."]
    rmm = _done(shared / "reward_model").get("metrics", {})
    if rmm:
        out.append(f"- Learned reward model r_phi (PPO's reward): **held-out pairwise accuracy "
                   f"{rmm.get('eval_accuracy')}** on {rmm.get('n_eval_pairs')} pairs of held-out prefixes "
                   f"(trained on {rmm.get('n_train_pairs')}; best checkpoint at step {rmm.get('best_step')} of "
                   f"{rmm.get('steps')}). r* orders every pair correctly by construction.")
    out.append("")
    out += reading(df) + ["## Frontier points", "",
            "KL = sequence-level KL(pi || pi_SFT) in nats, estimated from n samples of the policy on held-out "
            "prefixes (EOS included, full-distribution sampling); ± is one standard error.", "",
            "| method | param | seed | step | KL | ± | r* | ± | n | mean len | EOS rate |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        out.append(f"| {r.method} | {'' if pd.isna(r.param) else f'{r.param:g}'} | "
                   f"{'' if pd.isna(r.seed) else int(r.seed)} | {int(r.step)} | {_fmt(r.kl)} | {_fmt(r.kl_se)} | "
                   f"{_fmt(r.reward, 4)} | {_fmt(r.reward_se, 4)} | {int(r.n)} | {_fmt(r.mean_length, 1)} | "
                   f"{_fmt(r.eos_rate, 2)} |")
    out += ["", "## What the reward bought: completions of the same held-out prefixes", "",
            "Last checkpoint of each run, first samples of the evaluation set (text as the tokenizer decodes it).", ""]
    out += examples(run_root, df, n_examples)
    out += ["## Wall time per stage (from the done-markers)", "", "| stage | seconds |", "|---|---|"]
    out += [f"| {s} | {t:.0f} |" for s, t in stage_times]
    out += [f"| **total** | **{total:.0f}** ({total / 60:.1f} min) |", ""]
    return "\n".join(out + step_costs(run_root))


def step_costs(run_root: Path) -> list[str]:
    """Seconds per training step of each method, from the train stages' done-markers."""
    per_method: dict[str, list[dict]] = {}
    for d in sorted(run_root.glob("seed*/*")):
        done = _done(d)
        method = json.loads((d / "stage_config.json").read_text())["config"]["method"]["name"] \
            if done and (d / "stage_config.json").exists() else None
        if method and done.get("metrics", {}).get("seconds_per_step"):
            per_method.setdefault(method, []).append(done["metrics"])
    if not per_method:
        return []
    what = {"dpo": "one optimizer step on a batch of preference pairs",
            "ppo": "one PPO step: rollout, scoring, and all PPO epochs over the batch",
            "ppo_gt": "one PPO step: rollout, scoring, and all PPO epochs over the batch"}
    lines = ["## Seconds per training step", "", "| method | runs | s / step | steps per run | what a step is |",
             "|---|---|---|---|---|"]
    for method, ms in per_method.items():
        sps = sum(m["seconds_per_step"] for m in ms) / len(ms)
        steps = sorted({m.get("steps") for m in ms})
        lines.append(f"| {method} | {len(ms)} | {sps:.3f} | {', '.join(map(str, steps))} | {what.get(method, '')} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--preset", default="embedded")
    ap.add_argument("--runs", default="runs", help="root of the training outputs (paths.root)")
    ap.add_argument("--out", default="results", help="root of the committed results")
    ap.add_argument("--command", default="(not given)", help="the command that produced the runs, for provenance")
    ap.add_argument("--examples", type=int, default=3, help="held-out prefixes shown with completions")
    args = ap.parse_args(argv)
    run_root = Path(args.runs) / args.task / args.preset
    out_dir = Path(args.out) / args.task / args.preset
    out_dir.mkdir(parents=True, exist_ok=True)
    df = load_points(run_root)
    df.to_csv(out_dir / "frontier.csv", index=False, float_format="%.6g")
    plot_frontier(df, out_dir / "frontier.png", f"{args.task} ({args.preset}): reward vs KL")
    (out_dir / "summary.md").write_text(summary(run_root, df, args.task, args.preset, args.command, args.examples))
    print(f"wrote {out_dir}/frontier.csv, frontier.png, summary.md ({len(df)} points)")


if __name__ == "__main__":
    main()
