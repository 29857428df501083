"""Reward-vs-KL frontier of every evaluated policy of one task/preset: frontier.csv, frontier.png,
frontier_runs.png, summary.md.

  python -m analysis.frontier --task sentiment --preset embedded [--runs runs] [--out results]

Reads only files written by the pipelines (done.json markers, eval/step*.json, eval/step*.samples.jsonl).
Methods are compared through each seed's Pareto front (its checkpoints plus the shared SFT point), read at fixed
KL budgets by linear interpolation, then averaged across seeds with a t-interval.

Here: the fronts, their statistics across seeds, the verdict, the plots and the command. Reading the run folder is
analysis.load's, the summary's sections analysis.report's, method names and colours analysis.names'.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from analysis import cost, names, report, stats, tuning, winrate  # noqa: E402
from analysis.intervals import across_seeds  # noqa: E402
from analysis.load import load_points, stage_configs  # noqa: E402

# KL budgets (nats) at which fronts are read and compared; the paper's frontier spans ~0-20 at gpt2-large, the
# embedded points ~0.3-10.
KL_BUDGETS = (0.5, 1, 2, 4, 8)
# The verdict: DPO against these rivals (the paper's Fig. 2 claim).
RIVALS = ("ppo", "ppo_gt")
ALPHA = 0.05
# What the win rates of each task are measured against (the pipelines' win-rate stage).
REFERENCES = {"sentiment": "the SFT policy's completion"}


def _methods(df: pd.DataFrame) -> list[str]:
    """The trained methods present, in display order (conf/method/*.yaml), then any other alphabetically."""
    present = set(df.method) - {"sft"}
    return sorted(present, key=names.sort_key)


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Points not dominated by another of the same set (lower-or-equal KL and higher reward), sorted by KL, on the
    test numbers: for plotting raw points only; every selection uses analysis.stats.validation_front."""
    pts = points.sort_values(["kl", "reward"], ascending=[True, False])
    front, best = [], float("-inf")
    for _, row in pts.iterrows():
        if row["reward"] > best:
            front.append(row)
            best = row["reward"]
    return pd.DataFrame(front)


def _front(points: pd.DataFrame) -> pd.DataFrame:
    """The seed's front chosen on validation (its test columns are what is reported)."""
    pts = points.dropna(subset=["kl", "reward"]).copy()
    if pts.empty:
        return pts
    # Points evaluated before validation prefixes existed: selection falls back to their test numbers.
    for col in ("kl", "reward"):
        pts[f"val_{col}"] = pts[f"val_{col}"].fillna(pts[col])
    return stats.validation_front(pts)


def interpolate_front(points: pd.DataFrame, kl_grid) -> np.ndarray:
    """Test r* of the validation-chosen front of `points` (one method and seed, plus its SFT point) at each KL of
    kl_grid: linear between front points, NaN below the seed's first own front point (no chord from SFT) and beyond
    its reach (flat after the last front point up to the largest KL the seed's checkpoints reached; never
    extrapolated). analysis.stats.front_curve."""
    return stats.front_curve(_front(points), kl_grid, stats.reach(points))


def _complete_seeds(df: pd.DataFrame, method: str) -> tuple[list, list]:
    """(complete, incomplete) seeds of `method`: a seed is complete when it has every setting any seed of the
    method has. A seed still being trained has a front over fewer settings, which is not the same frontier."""
    rows = df[df.method == method]
    settings = {s: set(g.param.fillna(-1.0)) for s, g in rows.groupby("seed")}
    full = set().union(*settings.values()) if settings else set()
    complete = sorted(s for s, ps in settings.items() if ps >= full)
    return complete, sorted(set(settings) - set(complete))


def _seed_points(df: pd.DataFrame, method: str) -> dict:
    """Each complete seed's checkpoints of `method` (all params and steps), with the SFT point of the seed's own
    pipeline seed (its reference policy). Keyed by (seed, shared_seed)."""
    complete, _ = _complete_seeds(df, method)
    out = {}
    for (seed, shared), g in df[df.method == method].groupby(["seed", "shared_seed"], dropna=False):
        if seed not in complete:
            continue
        sft = df[(df.method == "sft") & (df.shared_seed == shared)]
        out[(seed, shared)] = pd.concat([g, sft]) if len(sft) else g
    return dict(sorted(out.items()))


def incomplete_note(df: pd.DataFrame) -> list[str]:
    """Which seeds are left out of the seed statistics because they lack some of their method's settings."""
    notes = []
    for method in _methods(df):
        complete, partial = _complete_seeds(df, method)
        if partial:
            notes.append(f"{names.display_name(method)} seed{'s' if len(partial) > 1 else ''} "
                         f"{', '.join(str(int(s)) for s in partial)}")
    return [f"Left out of the seed statistics (not every setting evaluated yet): {'; '.join(notes)}. Their points "
            "are in frontier.csv and frontier_runs.png.", ""] if notes else []


def seed_curves(df: pd.DataFrame, method: str, budgets=KL_BUDGETS) -> dict:
    """Per complete seed of `method`: its validation-chosen front read on test at each budget. Returns {"keys":
    [(seed, shared_seed)], "values": (seeds x budgets), "first_kl": first own front KL per seed, "last_kl": the largest
    KL any checkpoint of the seed reached, its reach}."""
    pts = _seed_points(df, method)
    fronts = [_front(p) for p in pts.values()]
    reaches = [stats.reach(p) for p in pts.values()]
    return {"keys": list(pts), "values": np.array([stats.front_curve(f, budgets, r) for f, r in zip(fronts, reaches)]
                                                  ).reshape(len(fronts), len(budgets)),
            "first_kl": np.array([stats.first_own_kl(f) for f in fronts], dtype=float),
            "last_kl": np.array(reaches, dtype=float)}


def seed_table(df: pd.DataFrame, budgets=KL_BUDGETS) -> pd.DataFrame:
    """One row per (method, KL budget): seeds whose validation-chosen front covers the KL with its own checkpoints,
    mean of their test r* there, sample sd, 95 % t-interval half-width; first_kl is the smallest KL of any seed's own
    front point, all_from_kl the budget from which every seed has one (below it a seed has no measurement)."""
    rows = []
    for method in _methods(df):
        c = seed_curves(df, method, budgets)
        n, mean, sd, half = across_seeds(c["values"]) if len(c["keys"]) else (np.zeros(len(budgets)),) + \
            (np.full(len(budgets), np.nan),) * 3
        first = np.nanmin(c["first_kl"]) if np.isfinite(c["first_kl"]).any() else float("nan")
        every = np.nanmax(c["first_kl"]) if np.isfinite(c["first_kl"]).all() and len(c["first_kl"]) else float("nan")
        rows += [{"method": method, "kl": b, "n_seeds": int(n[i]), "seeds": len(c["keys"]), "mean": mean[i],
                  "sd": sd[i], "half_width": half[i], "first_kl": first, "all_from_kl": every}
                 for i, b in enumerate(budgets)]
    return pd.DataFrame(rows, columns=["method", "kl", "n_seeds", "seeds", "mean", "sd", "half_width", "first_kl",
                                       "all_from_kl"])


def paired(df: pd.DataFrame, a: str, b: str, budgets=KL_BUDGETS) -> dict | None:
    """The seeds both methods have (same seed and pipeline seed: same SFT and pairs), their curves aligned row by
    row, for analysis.stats.compare_methods. None when either method is absent."""
    if a not in set(df.method) or b not in set(df.method):
        return None
    ca, cb = seed_curves(df, a, budgets), seed_curves(df, b, budgets)
    common = [k for k in ca["keys"] if k in cb["keys"]]
    ia, ib = [ca["keys"].index(k) for k in common], [cb["keys"].index(k) for k in common]
    return {"seeds": [int(k[0]) for k in common], "values_a": ca["values"][ia], "values_b": cb["values"][ib],
            "first_kl_a": ca["first_kl"][ia], "first_kl_b": cb["first_kl"][ib],
            "max_kl_a": ca["last_kl"][ia], "max_kl_b": cb["last_kl"][ib]}


def compare(df: pd.DataFrame, a: str, b: str, budgets=KL_BUDGETS, n_boot: int = 2000) -> dict | None:
    """compare_methods of a against b on their common seeds, with the bootstrap stability of its relation."""
    p = paired(df, a, b, budgets)
    if p is None:
        return None
    result = stats.compare_methods(p["values_a"], p["values_b"], budgets, ALPHA, name_a=names.display_name(a),
                                   name_b=names.display_name(b), seeds=p["seeds"], first_kl_a=p["first_kl_a"],
                                   first_kl_b=p["first_kl_b"], max_kl_a=p["max_kl_a"], max_kl_b=p["max_kl_b"])
    result["stability"] = stats.bootstrap_stability(p["values_a"], p["values_b"], budgets, n_boot=n_boot, seed=0,
                                                    alpha=ALPHA)
    result["seeds"] = p["seeds"]
    return result


def verdict(df: pd.DataFrame, budgets=KL_BUDGETS) -> tuple[str, dict]:
    """One quotable sentence, computed from the points: does DPO's frontier dominate PPO's and PPO-GT's here?
    Paired t-tests across the seeds both methods have, at each budget every one of those seeds reaches with its own
    checkpoints, Holm-corrected over budgets (analysis.stats). Returns (sentence, {rival: compare result})."""
    present = set(df.method)
    if "dpo" not in present:
        return "No verdict can be given: DPO has no evaluated runs.", {}
    results = {m: compare(df, "dpo", m, budgets) for m in RIVALS if m in present}
    if not results:
        return "No verdict can be given: neither PPO nor PPO-GT has evaluated runs.", {}
    sentence = stats.verdict_sentence(results, names.display_names())
    stable = "; ".join(f"{names.display_name(m)}: {r['stability']['stability']:.0%} of {r['stability']['n_boot']} "
                       f"resamples give '{r['relation']}'" for m, r in results.items())
    return f"{sentence} Stability under bootstrap resampling of the seeds: {stable}.", results


def _label(method: str) -> str:
    """Legend name; Best-of-N's KL is analytic (log N - (N-1)/N), not estimated from samples like the others'."""
    return names.display_name(method) + (" (analytic KL)" if method == "bon" else "")


def _axis_labels(set_x, set_y) -> None:
    set_x(names.KL_LABEL)
    set_y("mean r*(x, y) on held-out prefixes")


def draw_frontier(ax, df: pd.DataFrame) -> list:
    """Per method: the mean of its seeds' fronts (chosen on validation, test r* read between their own points,
    over the KL range every seed covers), a 95 % t-band across seeds, and each seed's front points faintly. The
    paper's methods solid, later variants dashed (analysis.names.linestyle). Returns the legend handles."""
    sft = df[df.method == "sft"]
    banded = False
    for method in _methods(df):
        color = names.color(method)
        seeds = list(_seed_points(df, method).values())
        fronts = [_front(p) for p in seeds]
        top = max((float(f.kl.max()) for f in fronts if len(f)), default=0.0)
        # Dense grid plus every front point, so the mean line passes through a lone seed's corners exactly.
        grid = np.unique(np.concatenate([np.linspace(0, top, 300)] + [f.kl.to_numpy(float) for f in fronts]))
        values = np.array([stats.front_curve(f, grid, stats.reach(p)) for f, p in zip(fronts, seeds)]
                          ).reshape(len(fronts), len(grid))
        n, mean, _, half = across_seeds(values)
        several = len(seeds) >= 2
        # Only where every seed has data: a mean over a changing set of seeds jumps where one drops out.
        every = n == len(seeds)
        mean = np.where(every, mean, np.nan)
        ax.plot(grid, mean, color=color, lw=1.8, ls=names.linestyle(method),
                label=_label(method) + (f", {len(seeds)} seeds" if several else ""))
        if several:
            banded = True
            # light bands, no edge: several methods' bands overlap without hiding each other's lines
            ax.fill_between(grid, mean - half, mean + half, where=every, color=color, alpha=0.12, lw=0)
        for f in fronts:
            own = f[f.method != "sft"]
            ax.plot(own.kl, own.reward, "o", ms=3, color=color, alpha=0.4)
    if len(sft):
        label = names.SFT_LABEL + (f", mean ± sd of {len(sft)} pipeline seeds" if len(sft) > 1 else "")
        spread = sft.reward.std(ddof=1) if len(sft) > 1 else float(sft.reward_se.iloc[0])
        ax.errorbar([0.0], [sft.reward.mean()], yerr=[spread], fmt="*", ms=12, color="black", label=label)
    _axis_labels(ax.set_xlabel, ax.set_ylabel)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    return handles + [Patch(color="0.5", alpha=0.25, label="95 % t-interval across seeds")] * banded + \
        [Line2D([], [], ls="none", marker="o", ms=3, color="0.5", alpha=0.6, label="each seed's front points"),
         Line2D([], [], color="0.3", ls="-", label="solid: the paper's methods"),
         Line2D([], [], color="0.3", ls="--", label="dashed: later variants")]


def plot_frontier(df: pd.DataFrame, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(10, 5.5))
    handles = draw_frontier(ax, df)
    ax.set_title(title)
    # Outside the axes: with several methods, any corner inside would hide points.
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    report.save_figure(fig, path)


def plot_figure2(df: pd.DataFrame, run_root: Path, path: Path, title: str, reference: str) -> bool:
    """The paper's Fig. 2 layout: reward vs KL on the left, win rate vs sampling temperature on the right (the r*
    oracle's win rates), one legend for both. False (nothing written) without win rates."""
    panel = winrate.figure_panel(run_root)
    if panel is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1.25, 1]})
    handles = draw_frontier(left, df)
    left.set_title("reward vs KL")
    winrate.draw(right, *panel, reference)
    right.set_title(f"win rate vs temperature (judge: {panel[0].judge.iloc[0]})")
    seen = {h.get_label() for h in handles}
    handles += [h for h in right.get_legend_handles_labels()[0] if h.get_label() not in seen]
    fig.suptitle(title)
    fig.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), borderaxespad=0.0)
    report.save_figure(fig, path, bbox_inches="tight")
    return True


def plot_runs(df: pd.DataFrame, path: Path, title: str) -> None:
    """Every evaluated checkpoint (± one s.e.), one marker per swept value, in one small panel per method on shared
    axes, SFT's star in each: the raw points behind frontier.png."""
    methods = _methods(df) or ["sft"]
    ncols = min(4, len(methods))
    nrows = math.ceil(len(methods) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 0.6, 2.9 * nrows + 0.8), sharex=True, sharey=True,
                             squeeze=False)
    sft = df[df.method == "sft"]
    markers = "osD^v<>Ph*"
    for ax, method in zip(axes.flat, methods):
        group = df[df.method == method] if method != "sft" else df.iloc[:0]
        params = sorted(group.param.dropna().unique()) + ([float("nan")] if group.param.isna().any() else [])
        for i, param in enumerate(params):
            g = group[group.param.isna() if pd.isna(param) else group.param == param]
            ax.errorbar(g.kl, g.reward, xerr=g.kl_se, yerr=g.reward_se, fmt=markers[i % len(markers)], ms=4,
                        color=names.color(method), alpha=0.35 + 0.65 * (i + 1) / len(params), elinewidth=0.5,
                        capsize=0, label=None if pd.isna(param) else f"{param:g}")
        if len(sft):
            ax.plot(sft.kl, sft.reward, "*", ms=10, color="black")
        ax.set_title(_label(method), fontsize=9)
        ax.grid(alpha=0.3)
        if params and not all(pd.isna(p) for p in params):
            ax.legend(fontsize=6, title=names.param_name(method), title_fontsize=6, loc="lower right")
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    _axis_labels(fig.supxlabel, fig.supylabel)
    fig.suptitle(f"{title}: every checkpoint, all seeds (star: SFT)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reading(df: pd.DataFrame) -> list[str]:
    """Plain statements computed from the points: the verdict on DPO against PPO and PPO-GT with its tests, which
    runs beat their SFT, and every method's reward at matched KL."""
    sft = df[df.method == "sft"]
    if sft.empty:
        return []
    table = seed_table(df)
    sentence, results = verdict(df)
    lines = ["## Verdict", "", sentence, "", *report.verdict_tables(results, ALPHA), *incomplete_note(df),
             "## Reading", "",
             f"- SFT (π_ref): r* = {sft.reward.mean():.4f} (mean over {len(sft)} pipeline seed(s)"
             + (f", sd {sft.reward.std(ddof=1):.4f}" if len(sft) > 1 else f" ± {float(sft.reward_se.iloc[0]):.4f}")
             + ")."]
    sft_by_seed = sft.set_index("shared_seed")
    for method in _methods(df):
        group = df[df.method == method]
        finals = group.loc[group.groupby(["param", "seed"], dropna=False)["step"].idxmax()]
        # above its own SFT by more than two standard errors of the difference (independent samples)
        above = [r for _, r in finals.iterrows() if r.shared_seed in sft_by_seed.index and
                 r.reward - sft_by_seed.reward[r.shared_seed] >
                 2 * (r.reward_se ** 2 + sft_by_seed.reward_se[r.shared_seed] ** 2) ** 0.5]
        lines.append(f"- {names.display_name(method)}: {len(above)} of {len(finals)} runs end with r* above their "
                     f"SFT's by more than two standard errors of the difference.")
        if "mean_length" in df and finals.mean_length.notna().all() and sft.mean_length.notna().all():
            # Length is where a policy most often buys reward it was not meant to (reward hacking shows here).
            sft_len = float(sft.mean_length.mean())
            lo, hi = finals.mean_length.min(), finals.mean_length.max()
            flag = " — **completions collapsed to under half of SFT's length**" if hi < sft_len / 2 else ""
            lines.append(f"  - final mean completion length {lo:.1f}-{hi:.1f} tokens (SFT {sft_len:.1f}), "
                         f"EOS rate {finals.eos_rate.min():.2f}-{finals.eos_rate.max():.2f}{flag}.")
    return lines + [""] + report.matched_kl(table)


def summary(run_root: Path, df: pd.DataFrame, task: str, preset: str, command: str, n_examples: int,
            winrate_lines: list[str] | None = None, tuning_lines: list[str] | None = None) -> str:
    """summary.md of the frontier command, without the cost section (main appends it)."""
    out = [f"# {task} / {preset}: reward vs KL frontier", "",
           f"Produced by `{command}` at git SHA `{report.git_sha()}` (analysis), {report.stamp()}. "
           f"Stages ran at: {', '.join(f'`{s}`' for s in report.stage_shas(run_root))}.", "",
           "![frontier](frontier.png)", "",
           "Every checkpoint of every seed, one panel per method: [frontier_runs.png](frontier_runs.png).", ""]
    out += report.setup_lines(run_root)
    out += reading(df) + report.reproducibility(run_root, df) + (tuning_lines or []) + (winrate_lines or [])
    out += report.final_checkpoints(df)
    out += ["## What the reward bought: completions of the same held-out prefixes", "",
            "Last checkpoint of one run per method and parameter (its smallest seed), first samples of the "
            "evaluation set (text as the tokenizer decodes it).", ""]
    out += report.examples(run_root, df, n_examples)
    out += report.wall_time_lines(report.stage_times(run_root))
    return "\n".join(out + report.step_costs(run_root))


def _plain(x):
    """JSON-ready: numpy scalars to Python numbers, NaN to null, tables to lists of rows."""
    if isinstance(x, pd.DataFrame):
        return [_plain(r) for r in x.to_dict(orient="records")]
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def results_json(df: pd.DataFrame, task: str, preset: str, command: str, tuned: pd.DataFrame | None = None,
                 run_root: Path | None = None, out_dir: Path | None = None) -> dict:
    """The summary's numbers in one machine-readable file (results.json), in the spirit of lm-evaluation-harness:
    the verdict, each comparison's per-budget tests and bootstrap stability, the budgets left out and why, each
    method's mean test r* at each budget and seeds; with run_root, the commits, machines and library versions the
    stages ran with and the resolved config of every stage; with out_dir, the win rates and the cost tables."""
    sentence, results = verdict(df)
    claim = next((c for c in ("does not hold", "holds", "is undecided") if f"{c} here" in sentence
                  or f"{c} at this scale" in sentence), "no verdict")
    return _plain({
        "task": task, "preset": preset, "command": command, "git_sha": report.git_sha(),
        "budgets_are": "KL <= b: each seed's best validation-chosen checkpoint within b (analysis.stats.front_curve)",
        "claim": claim.replace("is ", ""), "verdict": sentence,
        "comparisons": {f"dpo_vs_{m}": {"relation": r["relation"], "n_seeds": r["n_seeds"], "seeds": r["seeds"],
                                       "alpha": r["alpha"], "stability": r["stability"], "left_out": r["left_out"],
                                       "budgets": r["compared"]} for m, r in results.items()},
        "matched_kl": seed_table(df), "n_points": len(df),
        "seeds": {m: sorted(int(x) for x in g.seed.dropna().unique()) for m, g in df.groupby("method")},
        "tuning": tuned if tuned is not None and not tuned.empty else None,
        **(_provenance(run_root) if run_root is not None else {}),
        **({k: _table(out_dir / f"{k}.csv") for k in ("winrates", "cost")} if out_dir is not None else {})})


def _table(path: Path):
    return pd.read_csv(path) if path.exists() else None


def _provenance(run_root: Path) -> dict:
    return {"stage_git_shas": report.stage_shas(run_root), "environments": report.environments(run_root),
            "stage_configs": stage_configs(run_root)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--preset", default="embedded")
    ap.add_argument("--runs", default=os.environ.get("RVD_RUNS", "runs"),
                    help="root of the training outputs (paths.root; default $RVD_RUNS, else runs)")
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
    plot_runs(df, out_dir / "frontier_runs.png", f"{args.task} ({args.preset})")
    reference = REFERENCES.get(args.task, "the reference")
    lines = winrate.write(run_root, out_dir, args.task, args.preset, reference)
    plot_figure2(df, run_root, out_dir / "figure2.png", f"{args.task} ({args.preset})", reference)
    cost_lines = cost.write(run_root, out_dir, args.task, args.preset)
    tuned = tuning.table(run_root)
    tuning_lines = tuning.write(tuned, out_dir)
    (out_dir / "summary.md").write_text(summary(run_root, df, args.task, args.preset, args.command, args.examples,
                                                lines, tuning_lines) + "\n".join(cost_lines))
    record = results_json(df, args.task, args.preset, args.command, tuned, run_root, out_dir)
    (out_dir / "results.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out_dir}/frontier.csv, frontier.png (.pdf), frontier_runs.png, summary.md, results.json "
          f"({len(df)} points)")


if __name__ == "__main__":
    main()
