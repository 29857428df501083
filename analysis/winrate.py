"""Win rates of every run against the task's reference, per judge and temperature: winrates.csv,
winrate_vs_temperature[_<judge>].png, and the summary's win-rate section.

Reads runs/<task>/<preset>/seed*/<run>/winrate/<judge>/winrates.json (pipelines/winrate.py). Seeds of the same
(method, setting) are averaged; the interval is the 95 % t-interval across seeds (one seed: ± its binomial s.e.).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.frontier import COLORS, NAMES, METHOD_ORDER, _run_label, t975  # noqa: E402

COLUMNS = ["judge", "method", "param", "seed", "temperature", "win_rate", "win_rate_se", "n", "n_invalid", "tag"]


def load_winrates(run_root: Path) -> pd.DataFrame:
    rows = [r for p in sorted(run_root.glob("seed*/*/winrate/*/winrates.json")) for r in json.loads(p.read_text())]
    df = pd.DataFrame(rows, columns=COLUMNS) if rows else pd.DataFrame(columns=COLUMNS)
    for col in ("param", "seed", "temperature", "win_rate", "win_rate_se", "n", "n_invalid"):
        df[col] = pd.to_numeric(df[col])
    return df


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (judge, method, param, temperature): seeds, mean win rate, 95 % half-width across seeds (one seed:
    1.96 x its binomial s.e.), total invalid answers."""
    out = []
    for (judge, method, param, temp), g in df.groupby(["judge", "method", "param", "temperature"], dropna=False):
        n = len(g)
        mean = float(g.win_rate.mean())
        half = (t975(n - 1) * float(g.win_rate.std(ddof=1)) / math.sqrt(n)) if n >= 2 \
            else 1.96 * float(g.win_rate_se.iloc[0])
        out.append({"judge": judge, "method": method, "param": param, "temperature": temp, "seeds": n,
                    "win_rate": mean, "half_width": half, "n_per_seed": int(g.n.min()),
                    "n_invalid": int(g.n_invalid.sum())})
    return pd.DataFrame(out)


def best_settings(agg: pd.DataFrame) -> pd.DataFrame:
    """Per (judge, method): the setting with the highest mean win rate over temperatures (the one plotted)."""
    keep = []
    for (judge, method), g in agg.groupby(["judge", "method"]):
        means = g.groupby("param", dropna=False).win_rate.mean()
        best = means.idxmax()
        keep.append(g[g.param.isna()] if pd.isna(best) else g[g.param == best])
    return pd.concat(keep) if keep else agg


def plot(agg: pd.DataFrame, path: Path, title: str, reference: str) -> None:
    fig, ax = plt.subplots(figsize=(8.5, 5))
    best = best_settings(agg)
    for method in sorted(set(best.method), key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m)):
        g = best[best.method == method].sort_values("temperature")
        seeds = int(g.seeds.max())
        label = _run_label(method, g.param.iloc[0]) + f" ({seeds} seed{'s' if seeds > 1 else ''})"
        if len(g) == 1:  # Best-of-N: temperature 1 only
            ax.errorbar(g.temperature, g.win_rate, yerr=g.half_width, fmt="s", color=COLORS.get(method), capsize=3,
                        label=label)
        else:
            ax.plot(g.temperature, g.win_rate, "-o", ms=4, color=COLORS.get(method), label=label)
            ax.fill_between(g.temperature, g.win_rate - g.half_width, g.win_rate + g.half_width,
                            color=COLORS.get(method), alpha=0.12, lw=0)
    ax.axhline(0.5, color="0.4", lw=0.8, ls=":")
    ax.set_xlabel("sampling temperature")
    ax.set_ylabel(f"win rate against {reference}")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def summary_lines(agg: pd.DataFrame, reference: str) -> list[str]:
    """Markdown: per judge, the best setting of each method at every temperature, mean ± 95 % half-width."""
    if agg.empty:
        return []
    lines = ["## Win rates against " + reference, "",
             "Each run's final policy sampled at each temperature (0 = greedy) on held-out prefixes and judged "
             "pairwise against the reference completion of the same prefix; A/B order randomised per comparison. "
             "Mean over seeds ± 95 % t-interval across seeds (one seed: ± 1.96 binomial s.e.); per method the "
             "setting with the best mean over temperatures (every setting is in winrates.csv). Best-of-N: its "
             "temperature-1 selections only.", ""]
    temps = sorted(agg.temperature.unique())
    for judge, g in agg.groupby("judge"):
        best = best_settings(g)
        invalid = int(g.n_invalid.sum())
        lines += [f"**Judge: {judge}** ({invalid} invalid answers in all)", "",
                  "| method | setting | seeds | " + " | ".join(f"T={t:g}" for t in temps) + " |",
                  "|---|---|---|" + "---|" * len(temps)]
        for method in sorted(set(best.method), key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99)):
            b = best[best.method == method].set_index("temperature")
            cells = [f"{b.win_rate[t]:.3f} ± {b.half_width[t]:.3f}" if t in b.index else "" for t in temps]
            param = b.param.iloc[0]
            lines.append(f"| {NAMES.get(method, method)} | {'' if pd.isna(param) else f'{param:g}'} | "
                         f"{int(b.seeds.max())} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def write(run_root: Path, out_dir: Path, task: str, preset: str, reference: str) -> list[str]:
    """winrates.csv and one plot per judge; returns the summary lines (empty when no win rates exist yet)."""
    df = load_winrates(run_root)
    if df.empty:
        return []
    df.to_csv(out_dir / "winrates.csv", index=False, float_format="%.6g")
    agg = aggregate(df)
    for judge, g in agg.groupby("judge"):
        name = "winrate_vs_temperature.png" if judge == "oracle" else f"winrate_vs_temperature_{judge}.png"
        plot(g, out_dir / name, f"{task} ({preset}): win rate vs temperature, judge {judge}", reference)
    return summary_lines(agg, reference)

