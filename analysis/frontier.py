"""Reward-vs-KL frontier of every evaluated policy of one task/preset: frontier.csv, frontier.png,
frontier_runs.png, summary.md.

  python -m analysis.frontier --task sentiment --preset embedded [--runs runs] [--out results]

Reads only files written by the pipelines (done.json markers, eval/step*.json, eval/step*.samples.jsonl).
Methods are compared through each seed's Pareto front (its checkpoints plus the shared SFT point), read at fixed
KL budgets by linear interpolation, then averaged across seeds with a t-interval.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import t as student_t  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from analysis import stats  # noqa: E402

COLUMNS = ["method", "param", "seed", "shared_seed", "step", "kl", "kl_se", "reward", "reward_se", "n"]
VALIDATION = ["val_kl", "val_kl_se", "val_reward", "val_reward_se", "val_n"]
# source: the eval file a point was read from, relative to the run root (its samples lie beside it).
EXTRA = ["tag", "mean_length", "eos_rate", "kl_kind", "source"]
NUMERIC = ["param", "seed", "shared_seed", "step", "kl", "kl_se", "reward", "reward_se", "n", "mean_length",
           "eos_rate", *VALIDATION]
# Summary tables and the verdict list methods in this order; any other method follows, alphabetically.
METHOD_ORDER = ("dpo", "ipo", "cdpo", "ppo", "ppo_gt", "rloo", "rloo_gt", "bon", "preferred_ft", "unlikelihood")
COLORS = {"sft": "black", "dpo": "tab:blue", "ipo": "tab:cyan", "cdpo": "navy", "ppo": "tab:red",
          "ppo_gt": "tab:orange", "rloo": "tab:purple", "rloo_gt": "tab:pink", "preferred_ft": "tab:green",
          "unlikelihood": "tab:olive", "bon": "tab:gray"}
NAMES = {"sft": "SFT", "dpo": "DPO", "ipo": "IPO", "cdpo": "cDPO", "ppo": "PPO", "ppo_gt": "PPO-GT", "rloo": "RLOO",
         "rloo_gt": "RLOO-GT", "bon": "Best-of-N", "preferred_ft": "Preferred-FT", "unlikelihood": "Unlikelihood"}
PARAM_NAMES = {"dpo": "β", "ipo": "τ", "cdpo": "β", "unlikelihood": "α", "bon": "N", "ppo": "KL target",
               "ppo_gt": "KL target", "rloo": "β", "rloo_gt": "β"}
SHARED_STAGES = ["data", "tokenizer", "sft", "reward", "evaluate_sft", "pairs", "reward_model"]
# KL budgets (nats) at which fronts are read and compared; the paper's frontier spans ~0-20 at gpt2-large, the
# embedded points ~0.3-10.
KL_BUDGETS = (0.5, 1, 2, 4, 8)
# The verdict: DPO against these rivals (the paper's Fig. 2 claim).
RIVALS = ("ppo", "ppo_gt")
ALPHA = 0.05
# What the win rates of each task are measured against (pipelines/winrate.py).
REFERENCES = {"sentiment": "the SFT policy's completion"}


def t975(dof: int) -> float:
    """Two-sided 95 % quantile of Student's t (NaN below one degree of freedom)."""
    return float(student_t.ppf(0.975, dof)) if dof >= 1 else float("nan")


def load_points(run_root: Path) -> pd.DataFrame:
    """One row per evaluated checkpoint, from every eval/step*.json under run_root. Test-prefix numbers in kl,
    reward, ...; validation-prefix numbers in val_kl, val_reward, ...; shared_seed = the run's pipeline seed (its SFT,
    pairs and r_phi). SFT rows: one per pipeline seed, with seed = shared_seed."""
    # Only finished evaluations: a run still being evaluated would enter with part of its checkpoints.
    rows = [{**json.loads(p.read_text()), "source": p.relative_to(run_root).as_posix()}
            for p in sorted(run_root.glob("**/eval/step*.json")) if (p.parent / "done.json").exists()]
    if not rows:
        raise SystemExit(f"no evaluated checkpoints under {run_root}: run the pipeline first")
    df = pd.DataFrame(rows)
    for col in COLUMNS + VALIDATION + EXTRA:
        if col not in df:
            df[col] = None
    df = df[COLUMNS + VALIDATION + EXTRA]
    # Parameter-free methods (preferred_ft) write param null; without this a column of only nulls stays object.
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col])
    # Evaluations written before pipeline seeds existed all ran on pipeline seed 0.
    df["shared_seed"] = df.shared_seed.fillna(0)
    df["kl_kind"] = df.kl_kind.fillna("estimated")
    df = df.drop_duplicates(subset=["method", "tag", "seed", "shared_seed", "step"])
    # SFT (one per pipeline seed) first, then each method by its swept parameter, seed and step.
    df["_order"] = df.method.map(lambda m: -1 if m == "sft" else _rank(m))
    df = df.sort_values(["_order", "method", "param", "seed", "step"], na_position="first")
    return df.drop(columns="_order").reset_index(drop=True)


def _rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def _methods(df: pd.DataFrame) -> list[str]:
    """The trained methods present, in METHOD_ORDER, then any other alphabetically."""
    present = set(df.method) - {"sft"}
    return sorted(present, key=lambda m: (_rank(m), m))


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
    its last front point (a front extends only to checkpoints on it; never extrapolated). analysis.stats.front_curve."""
    return stats.front_curve(_front(points), kl_grid)


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
            notes.append(f"{NAMES.get(method, method)} seed{'s' if len(partial) > 1 else ''} "
                         f"{', '.join(str(int(s)) for s in partial)}")
    return [f"Left out of the seed statistics (not every setting evaluated yet): {'; '.join(notes)}. Their points "
            "are in frontier.csv and frontier_runs.png.", ""] if notes else []


def seed_curves(df: pd.DataFrame, method: str, budgets=KL_BUDGETS) -> dict:
    """Per complete seed of `method`: its validation-chosen front read on test at each budget. Returns {"keys":
    [(seed, shared_seed)], "values": (seeds x budgets), "first_kl": first own front KL per seed, "last_kl": last
    front KL per seed}."""
    pts = _seed_points(df, method)
    fronts = [_front(p) for p in pts.values()]
    return {"keys": list(pts), "values": np.array([stats.front_curve(f, budgets) for f in fronts]
                                                  ).reshape(len(fronts), len(budgets)),
            "first_kl": np.array([stats.first_own_kl(f) for f in fronts], dtype=float),
            "last_kl": np.array([stats.last_kl(f) for f in fronts], dtype=float)}


def _across_seeds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column of a (seeds x KL) array, ignoring NaN: seed count, mean, sample sd (ddof 1) and the 95 %
    t-interval half-width t_{0.975, n-1} sd / sqrt(n); sd and half-width NaN below two seeds."""
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[None, :]
    ok = ~np.isnan(v)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, v, 0.0).sum(axis=0) / n
        sq = np.where(ok, (v - mean) ** 2, 0.0).sum(axis=0)
        sd = np.where(n >= 2, np.sqrt(sq / np.maximum(n - 1, 1)), np.nan)
        half = np.array([t975(int(k) - 1) for k in n]) * sd / np.sqrt(n)
    return n, mean, sd, half


def seed_table(df: pd.DataFrame, budgets=KL_BUDGETS) -> pd.DataFrame:
    """One row per (method, KL budget): seeds whose validation-chosen front covers the KL with its own checkpoints,
    mean of their test r* there, sample sd, 95 % t-interval half-width; first_kl is the smallest KL of any seed's own
    front point, all_from_kl the budget from which every seed has one (below it a seed has no measurement)."""
    rows = []
    for method in _methods(df):
        c = seed_curves(df, method, budgets)
        n, mean, sd, half = _across_seeds(c["values"]) if len(c["keys"]) else (np.zeros(len(budgets)),) + \
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
    result = stats.compare_methods(p["values_a"], p["values_b"], budgets, ALPHA, name_a=NAMES.get(a, a),
                                   name_b=NAMES.get(b, b), seeds=p["seeds"], first_kl_a=p["first_kl_a"],
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
    sentence = stats.verdict_sentence(results, NAMES)
    stable = "; ".join(f"{NAMES[m]}: {r['stability']['stability']:.0%} of {r['stability']['n_boot']} resamples "
                       f"give '{r['relation']}'" for m, r in results.items())
    return f"{sentence} Stability under bootstrap resampling of the seeds: {stable}.", results


def _label(method: str) -> str:
    """Legend name; Best-of-N's KL is analytic (log N - (N-1)/N), not estimated from samples like the others'."""
    return NAMES.get(method, method) + (" (analytic KL)" if method == "bon" else "")


def _run_label(method: str, param) -> str:
    """'dpo β=0.1'; parameter-free methods (preferred_ft) by name only."""
    return method if pd.isna(param) else f"{method} {_param_name(method)}={param:g}"


def _param_name(method: str) -> str:
    return PARAM_NAMES.get(method, "param")


def _axis_labels(set_x, set_y) -> None:
    set_x("sequence-level KL(pi || pi_SFT), nats (estimated from the policy's own samples)")
    set_y("mean r*(x, y) on held-out prefixes")


def plot_frontier(df: pd.DataFrame, path: Path, title: str) -> None:
    """Per method: the mean of its seeds' fronts (chosen on validation, test r* read between their own points,
    over the KL range every seed covers), a 95 % t-band across seeds, and each seed's front points faintly."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    sft = df[df.method == "sft"]
    banded = False
    for method in _methods(df):
        color = COLORS.get(method)
        seeds = list(_seed_points(df, method).values())
        fronts = [_front(p) for p in seeds]
        top = max((float(f.kl.max()) for f in fronts if len(f)), default=0.0)
        # Dense grid plus every front point, so the mean line passes through a lone seed's corners exactly.
        grid = np.unique(np.concatenate([np.linspace(0, top, 300)] + [f.kl.to_numpy(float) for f in fronts]))
        values = np.array([stats.front_curve(f, grid) for f in fronts]).reshape(len(fronts), len(grid))
        n, mean, _, half = _across_seeds(values)
        several = len(seeds) >= 2
        # Only where every seed has data: a mean over a changing set of seeds jumps where one drops out.
        every = n == len(seeds)
        mean = np.where(every, mean, np.nan)
        ax.plot(grid, mean, color=color, lw=1.8, ls="--" if method == "bon" else "-",
                label=_label(method) + (f", {len(seeds)} seeds" if several else ""))
        if several:
            banded = True
            ax.fill_between(grid, mean - half, mean + half, where=every, color=color, alpha=0.15, lw=0)
        for f in fronts:
            own = f[f.method != "sft"]
            ax.plot(own.kl, own.reward, "o", ms=3, color=color, alpha=0.4)
    if len(sft):
        label = "SFT (pi_ref)" + (f", mean ± sd of {len(sft)} pipeline seeds" if len(sft) > 1 else "")
        spread = sft.reward.std(ddof=1) if len(sft) > 1 else float(sft.reward_se.iloc[0])
        ax.errorbar([0.0], [sft.reward.mean()], yerr=[spread], fmt="*", ms=12, color="black", label=label)
    _axis_labels(ax.set_xlabel, ax.set_ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color="0.5", alpha=0.25, label="95 % t-interval across seeds")] * banded + \
        [Line2D([], [], ls="none", marker="o", ms=3, color="0.5", alpha=0.6, label="each seed's front points")]
    # Outside the axes: with several methods, any corner inside would hide points.
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


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
                        color=COLORS.get(method), alpha=0.35 + 0.65 * (i + 1) / len(params), elinewidth=0.5,
                        capsize=0, label=None if pd.isna(param) else f"{param:g}")
        if len(sft):
            ax.plot(sft.kl, sft.reward, "*", ms=10, color="black")
        ax.set_title(_label(method), fontsize=9)
        ax.grid(alpha=0.3)
        if params and not all(pd.isna(p) for p in params):
            ax.legend(fontsize=6, title=_param_name(method), title_fontsize=6, loc="lower right")
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    _axis_labels(fig.supxlabel, fig.supylabel)
    fig.suptitle(f"{title}: every checkpoint, all seeds (star: SFT)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _done(path: Path) -> dict:
    """A stage folder's done-marker, or {} when it has none (a torn marker counts as none, as in pipelines.stages)."""
    try:
        return json.loads((path / "done.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fmt(x, nd=3) -> str:
    return "" if x is None or (isinstance(x, float) and pd.isna(x)) else f"{x:.{nd}f}"


def _finals(df: pd.DataFrame) -> pd.DataFrame:
    """The last evaluated checkpoint of each run (method, param, seed), SFT included."""
    return df.loc[df.groupby(["method", "param", "seed"], dropna=False)["step"].idxmax()].sort_index()


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
            f"{_run_label(r.method, r.param)} (step {int(r.step)}, seed {int(r.seed)})"
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
    """Plain statements computed from the points: the verdict on DPO against PPO and PPO-GT with its tests, which
    runs beat their SFT, and every method's reward at matched KL."""
    sft = df[df.method == "sft"]
    if sft.empty:
        return []
    table = seed_table(df)
    sentence, results = verdict(df)
    lines = ["## Verdict", "", sentence, "", *verdict_tables(results), *incomplete_note(df),
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
        lines.append(f"- {method}: {len(above)} of {len(finals)} runs end with r* above their SFT's by more than "
                     f"two standard errors of the difference.")
        if "mean_length" in df and finals.mean_length.notna().all() and sft.mean_length.notna().all():
            # Length is where a policy most often buys reward it was not meant to (reward hacking shows here).
            sft_len = float(sft.mean_length.mean())
            lo, hi = finals.mean_length.min(), finals.mean_length.max()
            flag = " — **completions collapsed to under half of SFT's length**" if hi < sft_len / 2 else ""
            lines.append(f"  - final mean completion length {lo:.1f}-{hi:.1f} tokens (SFT {sft_len:.1f}), "
                         f"EOS rate {finals.eos_rate.min():.2f}-{finals.eos_rate.max():.2f}{flag}.")
    return lines + [""] + matched_kl(table)


def verdict_tables(results: dict) -> list[str]:
    """Per rival: the paired test at each compared budget (DPO − rival), the budgets left out and why, and how often
    bootstrap resamples of the seeds give the same relation."""
    lines = []
    for rival, r in results.items():
        name = NAMES.get(rival, rival)
        lines += [f"**DPO vs {name}** ({r['n_seeds']} paired seeds: {', '.join(map(str, r['seeds']))}): "
                  f"{r['relation']}; the same relation in {r['stability']['stability']:.1%} of "
                  f"{r['stability']['n_boot']} bootstrap resamples of the seeds "
                  f"({', '.join(f'{k} {v}' for k, v in r['stability']['counts'].items() if v)}).", ""]
        comp = r["compared"]
        if len(comp):
            lines += ["| KL | seeds | DPO | " + name + " | DPO − " + name + " [95 % CI] | p | p (Holm) | "
                      "min. detectable difference | result |", "|---" * 9 + "|"]
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
                  f"two-sided, Holm-corrected over the budgets compared, α = {ALPHA:g}. Minimum detectable difference: "
                  "the true difference a paired t-test at that α detects with 80 % power given the seeds' sd of the "
                  "differences, (t_{1−α/2, n−1} + t_{0.8, n−1}) · sd / √n (uncorrected α; Holm makes it larger). "
                  "Each seed's front is chosen on validation prefixes and read on test prefixes.", ""]
    return lines


def matched_kl(table: pd.DataFrame) -> list[str]:
    """seed_table as markdown: rows are KL budgets, one column per method, 'mean ± half-width (seeds)'."""
    methods = list(dict.fromkeys(table.method))
    if not methods:
        return []
    lines = ["## Reward at matched KL (mean across seeds, 95 % interval)", "",
             "Each seed's Pareto front is chosen on the validation prefixes (its checkpoints and its own SFT point); "
             "its checkpoints' test r* is read at the KL by linear interpolation between front points, only between "
             "the seed's own first and last front checkpoint (no chord from SFT, no flat extension, no "
             "extrapolation); mean across the seeds that cover the KL ± the 95 % t-interval half-width "
             "t_{0.975, n−1} · sd / √n, seed count in brackets (of the method's seeds), — where none covers it"
             + ("; Best-of-N's KL is analytic, log N − (N−1)/N." if "bon" in methods else "."), "",
             "| KL | " + " | ".join(NAMES.get(m, m) for m in methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for budget in dict.fromkeys(table.kl):
        rows = table[table.kl == budget].set_index("method")
        lines.append(f"| {budget:g} | " + " | ".join(_cell(rows.loc[m]) for m in methods) + " |")
    lines += ["", "Across-seed sd of r* at each budget (the spread the seeds carry):", "",
              "| KL | " + " | ".join(NAMES.get(m, m) for m in methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for budget in dict.fromkeys(table.kl):
        rows = table[table.kl == budget].set_index("method")
        lines.append(f"| {budget:g} | " + " | ".join(_fmt(rows.loc[m, "sd"]) or "—" for m in methods) + " |")
    return lines + [""]


def _cell(row: pd.Series) -> str:
    """'0.751 ± 0.012 (3/10)'; no ± with one seed; — with none."""
    n, of = int(row.n_seeds), int(row.seeds)
    if n == 0:
        return "—"
    return f"{row['mean']:.3f} ± {row.half_width:.3f} ({n}/{of})" if n >= 2 else f"{row['mean']:.3f} ({n}/{of})"


def final_checkpoints(df: pd.DataFrame) -> list[str]:
    """One row per (method, param): the last checkpoint of each seed's run, averaged across seeds."""
    finals = _finals(df)
    lines = ["## Final checkpoint of each run, mean across seeds", "",
             "Last evaluated checkpoint of each run, averaged over its seeds. KL = sequence-level KL(pi || pi_SFT) in "
             "nats, estimated from n samples of the policy on held-out prefixes (EOS included, full-distribution "
             "sampling)" + ("; Best-of-N's is analytic" if "kl_kind" in finals and (finals.kl_kind == "analytic").any()
               else "")
             + "; sd = sample sd of r* across seeds. Every checkpoint of every seed is in frontier.csv.", "",
             "| method | param | seeds | KL | r* | sd of r* | mean len | EOS rate |", "|---" * 8 + "|"]
    for (method, param), g in finals.groupby(["method", "param"], dropna=False, sort=False):
        lines.append(f"| {method} | {'' if pd.isna(param) else f'{param:g}'} | {len(g)} | {_fmt(g.kl.mean())} | "
                     f"{_fmt(g.reward.mean(), 4)} | {_fmt(g.reward.std(ddof=1), 4)} | "
                     f"{_fmt(g.mean_length.mean(), 1)} | {_fmt(g.eos_rate.mean(), 2)} |")
    return lines + [""]


def summary(run_root: Path, df: pd.DataFrame, task: str, preset: str, command: str, n_examples: int,
            winrate_lines: list[str] | None = None) -> str:
    shared = run_root / "shared"
    sft, rew, pairs, data, tok = (_done(shared / s) for s in ("sft", "reward", "pairs", "data", "tokenizer"))
    stage_times = []
    for folder in [shared] + sorted(run_root.glob("pipeline*"), key=lambda p: int(p.name[8:] or 0)):
        for s in SHARED_STAGES:
            d = _done(folder / ("sft/eval" if s == "evaluate_sft" else s))
            if "wall_time_s" in d:
                stage_times.append((s if folder == shared else f"{s} {folder.name}", d["wall_time_s"]))
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
           "![frontier](frontier.png)", "",
           "Every checkpoint of every seed, one panel per method: [frontier_runs.png](frontier_runs.png).", "",
           "## Set-up (measured)", ""]
    dm, tm, sm, rm, pm = (x.get("metrics", {}) for x in (data, tok, sft, rew, pairs))
    per_corpus = ", ".join(f"{k.split('/')[1]} {v}" for k, v in rm.items() if k.startswith("test_accuracy/"))
    plain = ", ".join(f"{k.split('/')[1]} {v}" for k, v in rm.items() if k.startswith("plain_tfidf_test_accuracy/"))
    out += [f"- Data: {dm.get('n_train')} train / {dm.get('n_validation', 0)} validation / {dm.get('n_test')} test "
            f"documents ({dm.get('train_by_corpus')}); the validation prefixes choose fronts, settings and r_phi's "
            "checkpoint, the test prefixes give every number reported.",
            f"- Tokenizer: vocabulary {tm.get('vocab_size')}.",
            f"- SFT policy (pi_ref) of pipeline seed 0: {_fmt(sm.get('n_params', 0) / 1e6, 2)}M parameters, "
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
    out.append("")
    out += reading(df) + reproducibility(run_root, df) + (winrate_lines or []) + final_checkpoints(df)
    out += ["## What the reward bought: completions of the same held-out prefixes", "",
            "Last checkpoint of one run per method and parameter (its smallest seed), first samples of the "
            "evaluation set (text as the tokenizer decodes it).", ""]
    out += examples(run_root, df, n_examples)
    out += ["## Wall time per stage (from the done-markers)", "", "| stage | seconds |", "|---|---|"]
    out += [f"| {s} | {t:.0f} |" for s, t in stage_times]
    out += [f"| **total** | **{total:.0f}** ({total / 60:.1f} min; parallel jobs overlap, so a run can take less) |",
            ""]
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
    pairs = "one optimizer step on a batch of preference pairs"
    ppo = "one PPO step: rollout, scoring, and all PPO epochs over the batch"
    rloo = "one RLOO step: rollout (k per prompt), scoring, one gradient step"
    what = {"dpo": pairs, "ipo": pairs, "cdpo": pairs, "unlikelihood": pairs,
            "preferred_ft": "one optimizer step on the chosen completions of a batch of pairs",
            "ppo": ppo, "ppo_gt": ppo, "rloo": rloo, "rloo_gt": rloo}
    lines = ["## Seconds per training step", "", "| method | runs | s / step | steps per run | what a step is |",
             "|---|---|---|---|---|"]
    for method, ms in per_method.items():
        sps = sum(m["seconds_per_step"] for m in ms) / len(ms)
        steps = sorted({m.get("steps") for m in ms})
        lines.append(f"| {method} | {len(ms)} | {sps:.3f} | {', '.join(map(str, steps))} | {what.get(method, '')} |")
    return lines + [""]


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
        lines += ["| pipeline seed | SFT perplexity | SFT r* (test) | pairs | r_phi test accuracy [95 %] |",
                  "|---|---|---|---|---|"]
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
    plot_runs(df, out_dir / "frontier_runs.png", f"{args.task} ({args.preset})")
    from analysis import winrate  # after the frontier's own helpers are defined (it imports them)
    lines = winrate.write(run_root, out_dir, args.task, args.preset, REFERENCES.get(args.task, "the reference"))
    from analysis import cost
    cost_lines = cost.write(run_root, out_dir, args.task, args.preset)
    (out_dir / "summary.md").write_text(summary(run_root, df, args.task, args.preset, args.command, args.examples,
                                                lines) + "\n".join(cost_lines))
    print(f"wrote {out_dir}/frontier.csv, frontier.png, frontier_runs.png, summary.md ({len(df)} points)")


if __name__ == "__main__":
    main()
