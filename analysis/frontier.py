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
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

COLUMNS = ["method", "param", "seed", "step", "kl", "kl_se", "reward", "reward_se", "n"]
EXTRA = ["tag", "mean_length", "eos_rate", "kl_kind"]
NUMERIC = ["param", "seed", "step", "kl", "kl_se", "reward", "reward_se", "n", "mean_length", "eos_rate"]
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
KL_BUDGETS = (1, 2, 5, 10)
# What the win rates of each task are measured against (pipelines/winrate.py).
REFERENCES = {"sentiment": "the SFT policy's completion"}
# t_{0.975, dof} for dof = 1..30: scipy is not a dependency of the project, and seeds are few.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(dof: int) -> float:
    """Two-sided 95 % quantile of Student's t; the normal 1.960 beyond 30 degrees of freedom (at most 4 % low)."""
    if dof < 1:
        return float("nan")
    return T975[dof - 1] if dof <= len(T975) else 1.960


def load_points(run_root: Path) -> pd.DataFrame:
    """One row per evaluated checkpoint, from every eval/step*.json under run_root."""
    # Only finished evaluations: a run still being evaluated would enter with part of its checkpoints.
    rows = [json.loads(p.read_text()) for p in sorted(run_root.glob("**/eval/step*.json"))
            if (p.parent / "done.json").exists()]
    if not rows:
        raise SystemExit(f"no evaluated checkpoints under {run_root}: run the pipeline first")
    df = pd.DataFrame(rows)
    for col in COLUMNS + EXTRA:
        if col not in df:
            df[col] = None
    df = df[COLUMNS + EXTRA]
    # Parameter-free methods (preferred_ft) write param null; without this a column of only nulls stays object.
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col])
    df["kl_kind"] = df.kl_kind.fillna("estimated")
    # SFT (evaluated once, shared) first, then each method by its swept parameter, seed and step.
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
    """Points not dominated by another of the same set (lower-or-equal KL and higher reward), sorted by KL."""
    pts = points.sort_values(["kl", "reward"], ascending=[True, False])
    front, best = [], float("-inf")
    for _, row in pts.iterrows():
        if row["reward"] > best:
            front.append(row)
            best = row["reward"]
    return pd.DataFrame(front)


def _front(points: pd.DataFrame) -> pd.DataFrame:
    """pareto_front of the points with a KL and a reward; an empty frame with the same columns if there are none."""
    pts = points.dropna(subset=["kl", "reward"])
    return pareto_front(pts) if len(pts) else pts


def interpolate_front(points: pd.DataFrame, kl_grid) -> np.ndarray:
    """r* of the Pareto front of `points` (one method and seed, plus the SFT point) at each KL of kl_grid: linear
    between consecutive front points, flat from the last front point up to the largest KL any point of the seed
    reached (a checkpoint further out that scored lower does not lower the best reward within that budget), NaN
    beyond it (never extrapolated)."""
    grid = np.asarray(kl_grid, dtype=float)
    front = _front(points)
    if front.empty:
        return np.full(grid.shape, np.nan)
    xs, ys = front.kl.to_numpy(float), front.reward.to_numpy(float)
    reached = float(points.kl.max())
    if reached > xs[-1]:
        xs, ys = np.append(xs, reached), np.append(ys, ys[-1])
    # Linear rather than a step: sampling from one of two policies at random per prompt earns the chord's reward at
    # no more than the chord's KL (KL is convex), so the chord is achievable without training anything new.
    return np.interp(grid, xs, ys, left=np.nan, right=np.nan)


def _complete_seeds(df: pd.DataFrame, method: str) -> tuple[list, list]:
    """(complete, incomplete) seeds of `method`: a seed is complete when it has every setting any seed of the
    method has. A seed still being trained has a front over fewer settings, which is not the same frontier."""
    rows = df[df.method == method]
    settings = {s: set(g.param.fillna(-1.0)) for s, g in rows.groupby("seed")}
    full = set().union(*settings.values()) if settings else set()
    complete = sorted(s for s, ps in settings.items() if ps >= full)
    return complete, sorted(set(settings) - set(complete))


def _seed_points(df: pd.DataFrame, method: str) -> list[pd.DataFrame]:
    """Each complete seed's checkpoints of `method` (all params and steps), each with the shared SFT point."""
    sft = df[df.method == "sft"]
    complete, _ = _complete_seeds(df, method)
    groups = [g for s, g in df[df.method == method].groupby("seed", dropna=False) if s in complete]
    return [pd.concat([g, sft]) if len(sft) else g for g in groups]


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
    """One row per (method, KL budget): seeds whose front reaches the KL, mean of their interpolated r*, sample sd,
    95 % t-interval half-width; first_kl is the smallest KL of any of the method's own front points (below it, a
    value is the chord from SFT)."""
    rows = []
    for method in _methods(df):
        seeds = _seed_points(df, method)
        values = np.array([interpolate_front(p, budgets) for p in seeds]).reshape(len(seeds), len(budgets))
        n, mean, sd, half = _across_seeds(values)
        own = [f[f.method != "sft"].kl for f in map(_front, seeds)]
        first = min((k.min() for k in own if len(k)), default=float("nan"))
        rows += [{"method": method, "kl": b, "n_seeds": int(n[i]), "mean": mean[i], "sd": sd[i],
                  "half_width": half[i], "first_kl": first} for i, b in enumerate(budgets)]
    return pd.DataFrame(rows, columns=["method", "kl", "n_seeds", "mean", "sd", "half_width", "first_kl"])


def _kl_list(budgets: list[float]) -> str:
    """[2, 5, 10] -> 'KL 2, 5 and 10'."""
    s = [f"{b:g}" for b in budgets]
    return "KL " + (s[0] if len(s) == 1 else ", ".join(s[:-1]) + " and " + s[-1])


def _compare(table: pd.DataFrame, a: str, b: str) -> tuple[bool, str, str]:
    """Method a against b, budget by budget. Returns whether any budget has two seeds of each (tested), the relation
    (dominates, dominated, mixed, indistinguishable; by the sign of the means when untested, equal if no sign) and
    the budgets behind it, as text."""
    ta, tb = (table[table.method == m].set_index("kl") for m in (a, b))
    budgets = [k for k in ta.index if k in tb.index]
    tested = any(ta.n_seeds[k] >= 2 and tb.n_seeds[k] >= 2 for k in budgets)
    need = 2 if tested else 1
    out: dict[str, list[float]] = {}
    for k in budgets:
        ra, rb = ta.loc[k], tb.loc[k]
        na, nb = int(ra.n_seeds), int(rb.n_seeds)
        if na < need or nb < need:
            short = " and ".join(NAMES.get(m, m) for m, n in ((a, na), (b, nb)) if n < need)
            out.setdefault(f"short:{short}", []).append(k)
            continue
        diff = ra["mean"] - rb["mean"]
        # Welch-like with the smaller sample's degrees of freedom: conservative when the seed counts differ.
        bound = t975(min(na, nb) - 1) * math.sqrt(ra["sd"] ** 2 / na + rb["sd"] ** 2 / nb) if tested else 0.0
        key = "higher" if diff > bound else "lower" if diff < -bound else "within noise" if tested else "equal"
        out.setdefault(key, []).append(k)
    higher, lower = "higher" in out, "lower" in out
    compared_any = any(not key.startswith("short:") for key in out)
    relation = ("mixed" if higher and lower else "dominates" if higher else "dominated" if lower
                else "indistinguishable" if tested else "equal" if compared_any else "incomparable")
    found = [f"{key} at {_kl_list(out[key])}" for key in ("higher", "lower", "within noise", "equal") if key in out]
    notes = []
    for key in (k for k in out if k.startswith("short:")):
        who = key.split(":", 1)[1]
        notes.append(f"fewer than 2 seeds of {who} reach {_kl_list(out[key])}" if tested
                     else f"{who} {'do' if ' and ' in who else 'does'} not reach {_kl_list(out[key])}")
    # Below the rival's first own point its value is the chord from SFT: say so where such a budget was compared.
    compared = [k for key, ks in out.items() if not key.startswith("short:") for k in ks]
    first = tb.first_kl.iloc[0] if len(tb) else float("nan")
    if pd.notna(first) and any(k < first for k in compared):
        notes.append(f"{NAMES.get(b, b)} has no points below KL {first:.1f}")
    return tested, relation, "; ".join([", ".join(found)] * bool(found) + notes)


def verdict(table: pd.DataFrame) -> str:
    """One quotable sentence, computed from seed_table: does DPO's frontier dominate PPO's and PPO-GT's here? At each
    budget with two or more seeds of both, a difference of means beyond t_{0.975, min(n)-1} sqrt(sd1²/n1 + sd2²/n2)
    counts; DPO dominates if significantly higher somewhere and never significantly lower."""
    present = set(table.method)
    if "dpo" not in present:
        return "No verdict can be given: DPO has no evaluated runs."
    rivals = [m for m in ("ppo", "ppo_gt") if m in present]
    if not rivals:
        return "No verdict can be given: neither PPO nor PPO-GT has evaluated runs."
    comps = {m: _compare(table, "dpo", m) for m in rivals}
    if not any(tested for tested, _, _ in comps.values()):
        verbs = {"dominates": "dominate", "dominated": "be dominated by", "mixed": "cross", "equal": "equal",
                 "incomparable": "share no KL budget with"}
        clauses = [f"{verbs[rel]} {NAMES[m]}'s ({detail})" for m, (_, rel, detail) in comps.items()]
        return ("No verdict can be given with one seed: taken at face value, the single-seed means would have DPO's "
                f"frontier {' and '.join(clauses)}.")
    verbs = {"dominates": "dominates", "dominated": "is dominated by",
             "mixed": "neither dominates nor is dominated by", "indistinguishable": "is indistinguishable from"}
    clauses = [f"{verbs[rel]} {NAMES[m]}'s ({'mixed: ' if rel == 'mixed' else ''}{detail})" if tested else
               f"cannot be tested against {NAMES[m]}'s with one seed (by mean: {detail})"
               for m, (tested, rel, detail) in comps.items()]
    rels = [rel if tested else "untested" for tested, rel, _ in comps.values()]
    claim = ("holds" if all(r == "dominates" for r in rels) else
             "does not hold" if any(r in ("dominated", "mixed", "indistinguishable") for r in rels) else
             "cannot be settled")
    whom = "both" if len(rivals) == 2 else NAMES[rivals[0]]
    return (f"At this scale DPO's frontier {' and '.join(clauses)}, so the paper's claim that DPO dominates {whom} "
            f"{claim} here (two-sided 95 % t-test on the difference of per-seed mean r* at each KL budget).")


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
    """Per method: the mean of its seeds' interpolated Pareto fronts (over the KL range every seed reached), a 95 %
    t-band across seeds, and each seed's front points faintly."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    sft = df[df.method == "sft"]
    banded = False
    for method in _methods(df):
        color = COLORS.get(method)
        seeds = _seed_points(df, method)
        fronts = [_front(p) for p in seeds]
        top = max((float(p.kl.max()) for p in seeds if len(p)), default=0.0)
        # Dense grid plus every front point, so the mean line passes through a lone seed's corners exactly.
        grid = np.unique(np.concatenate([np.linspace(0, top, 300)] + [f.kl.to_numpy(float) for f in fronts]))
        n, mean, _, half = _across_seeds(np.array([interpolate_front(p, grid) for p in seeds]))
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
        ax.errorbar(sft.kl, sft.reward, yerr=sft.reward_se, fmt="*", ms=12, color="black", label="SFT (pi_ref)")
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
        if r.method == "sft":
            f = run_root / "shared" / "sft" / "eval" / f"step{int(r.step):06d}.samples.jsonl"
            label = "SFT"
        else:
            f = run_root / f"seed{int(r.seed)}" / r.tag / "eval" / f"step{int(r.step):06d}.samples.jsonl"
            label = f"{_run_label(r.method, r.param)} (step {int(r.step)}, seed {int(r.seed)})"
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
    """Plain statements computed from the table: the verdict on DPO against PPO and PPO-GT, which runs beat SFT,
    and every method's reward at matched KL."""
    sft = df[df.method == "sft"]
    if sft.empty:
        return []
    table = seed_table(df)
    r0, se0 = float(sft.reward.iloc[0]), float(sft.reward_se.iloc[0])
    lines = ["## Reading", "", verdict(table), "", *incomplete_note(df), f"- SFT (π_ref): r* = {r0:.4f} ± {se0:.4f}."]
    for method in _methods(df):
        group = df[df.method == method]
        finals = group.loc[group.groupby(["param", "seed"], dropna=False)["step"].idxmax()]
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
    return lines + [""] + matched_kl(table)


def matched_kl(table: pd.DataFrame) -> list[str]:
    """seed_table as markdown: rows are KL budgets, one column per method, 'mean ± half-width (seeds)'."""
    methods = list(dict.fromkeys(table.method))
    if not methods:
        return []
    lines = ["## Reward at matched KL (interpolated, mean across seeds, 95 % interval)", "",
             "Each seed's Pareto front (its checkpoints plus the SFT point at KL 0) read at the KL by linear "
             "interpolation between front points, flat after the last one up to the largest KL the seed reached, "
             "never extrapolated; mean across the seeds that reach it ± the 95 % "
             "t-interval half-width t_{0.975, n−1} · sd / √n, seed count in brackets, — where no seed reaches it"
             + ("; Best-of-N's KL is analytic, log N − (N−1)/N." if "bon" in methods else "."), "",
             "| KL | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for budget in dict.fromkeys(table.kl):
        rows = table[table.kl == budget].set_index("method")
        lines.append(f"| {budget:g} | " + " | ".join(_cell(rows.loc[m]) for m in methods) + " |")
    return lines + [""]


def _cell(row: pd.Series) -> str:
    """'0.751 ± 0.012 (3)'; no ± with one seed; — with none."""
    n = int(row.n_seeds)
    if n == 0:
        return "—"
    return f"{row['mean']:.3f} ± {row.half_width:.3f} ({n})" if n >= 2 else f"{row['mean']:.3f} ({n})"


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
           "![frontier](frontier.png)", "",
           "Every checkpoint of every seed, one panel per method: [frontier_runs.png](frontier_runs.png).", "",
           "## Set-up (measured)", ""]
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
    out += reading(df) + (winrate_lines or []) + final_checkpoints(df)
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


def preset_changes(before_dir: Path, df: pd.DataFrame) -> list[str]:
    """The effect of a change of the preset on the frontier: `before_dir` holds the previous run's frontier.csv and
    changes.md (what changed, as a markdown list); a table of each method's matched-KL reward before and after."""
    csv, notes = before_dir / "frontier.csv", before_dir / "changes.md"
    if not csv.exists() or not notes.exists():
        return []
    before = pd.read_csv(csv)
    for col in NUMERIC:
        if col in before:
            before[col] = pd.to_numeric(before[col], errors="coerce")
    # Like for like: "after" on the seeds the before run has too (a one-seed before against a three-seed mean would
    # mix a preset's effect with seed noise); the mean over every seed of this run stands beside it when it has more.
    same = df[df.seed.isin(set(before.seed.dropna())) | (df.method == "sft")]
    old, new = (seed_table(d).set_index(["method", "kl"]) for d in (before, same))
    every = seed_table(df).set_index(["method", "kl"])
    more = set(df.seed.dropna()) - set(before.seed.dropna())
    seeds = ", ".join(f"{s:g}" for s in sorted(set(before.seed.dropna())))
    lines = ["## Preset changes since the previous committed run, and their effect on the frontier", "",
             notes.read_text().strip(), "",
             f"Before: `{csv}` (that run's frontier.csv). Mean interpolated r* at matched KL (as above) on the seeds "
             f"both runs have (seed {seeds}), after − before; — where a run does not reach that KL."
             + (" The last column is this run's mean over all its seeds (± 95 % interval, seed count)."
                if more else ""),
             "", "| method | KL | before | after | after − before |" + (" after, all seeds |" if more else ""),
             "|---|---|---|---|---|" + ("---|" if more else "")]
    sft_b, sft_a = before[before.method == "sft"], df[df.method == "sft"]
    if len(sft_b) and len(sft_a):
        b, a = float(sft_b.reward.iloc[0]), float(sft_a.reward.iloc[0])
        lines.append(f"| SFT | 0 | {b:.3f} | {a:.3f} | {a - b:+.3f} |" + (f" {a:.3f} |" if more else ""))
    for method, budget in new.index:
        a = new.loc[(method, budget), "mean"]
        b = old.loc[(method, budget), "mean"] if (method, budget) in old.index else float("nan")
        diff = f"{a - b:+.3f}" if not (np.isnan(a) or np.isnan(b)) else "—"
        row = f"| {NAMES.get(method, method)} | {budget:g} | {_fmt(b) or '—'} | {_fmt(a) or '—'} | {diff} |"
        if more:
            e = every.loc[(method, budget)]
            row += f" {_cell(e) or '—'} |"
        lines.append(row)
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
    plot_runs(df, out_dir / "frontier_runs.png", f"{args.task} ({args.preset})")
    from analysis import winrate  # after the frontier's own helpers are defined (it imports them)
    lines = winrate.write(run_root, out_dir, args.task, args.preset, REFERENCES.get(args.task, "the reference"))
    from analysis import cost
    cost_lines = cost.write(run_root, out_dir, args.task, args.preset)
    changes = preset_changes(out_dir / "before", df)
    (out_dir / "summary.md").write_text(summary(run_root, df, args.task, args.preset, args.command, args.examples,
                                                lines) + "\n".join(cost_lines + changes))
    print(f"wrote {out_dir}/frontier.csv, frontier.png, frontier_runs.png, summary.md ({len(df)} points)")


if __name__ == "__main__":
    main()
