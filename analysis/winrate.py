"""Win rates of every run against the task's reference, per judge and temperature: winrates.csv,
winrate_vs_temperature[_<judge>].png, and the summary's win-rate section.

Reads runs/<task>/<preset>/seed*/<run>/winrate/<judge>/winrates.json (pipelines/stages/winrate.py). Seeds of the same
(method, setting) are averaged; the interval is the 95 % t-interval across seeds (one seed, or seeds that all scored
the same: the Wilson interval of the pooled comparisons).
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
import pandas as pd  # noqa: E402
from scipy.stats import binomtest  # noqa: E402

from analysis import cost, names, report  # noqa: E402
from analysis.intervals import t975  # noqa: E402
from analysis.load import _done, _finals, load_points, load_winrates  # noqa: E402


def wilson(wins: float, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (scipy): it stays inside [0, 1] and does not collapse to a
    point at 0 or 1 wins, as the Wald interval p ± 1.96 s.e. does ("1.000 ± 0.000")."""
    if n <= 0:
        return float("nan"), float("nan")
    ci = binomtest(int(round(wins)), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def interval(rates: pd.Series, ns: pd.Series) -> tuple[float, float]:
    """95 % interval of the mean win rate of a setting's seeds: the t-interval across seeds (clipped to [0, 1]); with
    one seed, or seeds that all scored exactly the same (no across-seed spread to measure), the Wilson interval of
    their comparisons pooled."""
    n = len(rates)
    mean = float(rates.mean())
    sd = float(rates.std(ddof=1)) if n >= 2 else 0.0
    if n >= 2 and sd > 0:
        half = t975(n - 1) * sd / math.sqrt(n)
        return max(0.0, mean - half), min(1.0, mean + half)
    return wilson(float((rates * ns).sum()), int(ns.sum()))


def _cell(row) -> str:
    return f"{row.win_rate:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (judge, split, method, param, temperature): seeds, mean win rate, its 95 % interval (`interval`;
    half_width: the larger distance from the mean, for the plots), total invalid answers."""
    if "split" not in df:  # a table from before the out-of-distribution split: all test prompts
        df = df.assign(split="test")
    out = []
    for (judge, split, method, param, temp), g in df.groupby(["judge", "split", "method", "param", "temperature"],
                                                             dropna=False):
        n = len(g)
        mean = float(g.win_rate.mean())
        low, high = interval(g.win_rate, g.n)
        out.append({"judge": judge, "split": split, "method": method, "param": param, "temperature": temp, "seeds": n,
                    "win_rate": mean, "ci_low": low, "ci_high": high, "half_width": max(mean - low, high - mean),
                    "n_per_seed": int(g.n.min()), "n_invalid": int(g.n_invalid.sum())})
    return pd.DataFrame(out)


def best_settings(agg: pd.DataFrame, chosen: dict | None = None) -> pd.DataFrame:
    """Per (judge, method): the setting shown. `chosen` (method -> setting, picked on validation data by
    validation_choice) where it names the method; otherwise the setting with the highest mean win rate over
    temperatures (prompt-response tasks, whose presets have one setting per method)."""
    keep = []
    for (judge, method), g in agg.groupby(["judge", "method"]):
        if chosen and method in chosen and (g.param == chosen[method]).any():
            best = chosen[method]
        else:
            best = g.groupby("param", dropna=False).win_rate.mean().idxmax()
        keep.append(g[g.param.isna()] if pd.isna(best) else g[g.param == best])
    return pd.concat(keep) if keep else agg


def validation_choice(run_root: Path) -> dict:
    """Per method: the setting whose final checkpoints have the highest mean r* on the VALIDATION prefixes (across
    seeds), so the win-rate table's setting is never chosen on the test prefixes it reports. {} without
    evaluations (prompt-response tasks)."""
    try:
        df = load_points(run_root)
    except SystemExit:
        return {}
    finals = _finals(df[df.method != "sft"]).dropna(subset=["val_reward"])
    out = {}
    for method, g in finals.groupby("method"):
        means = g.groupby("param", dropna=False).val_reward.mean()
        out[method] = means.idxmax()
    return out


def draw(ax, agg: pd.DataFrame, chosen: dict | None, reference: str) -> None:
    """One judge's win rates against temperature: per method its chosen setting, mean over seeds with its interval;
    the paper's methods solid, later variants dashed (analysis.names.linestyle)."""
    best = best_settings(agg[agg.split == "test"], chosen)
    for method in _ordered(best.method):
        g = best[best.method == method].sort_values("temperature")
        seeds = int(g.seeds.max())
        label = names.run_label(method, g.param.iloc[0]) + f" ({seeds} seed{'s' if seeds > 1 else ''})"
        if len(g) == 1:  # sentiment's Best-of-N: temperature 1 only
            ax.errorbar(g.temperature, g.win_rate, yerr=[g.win_rate - g.ci_low, g.ci_high - g.win_rate], fmt="s",
                        color=names.color(method), capsize=3, label=label)
        else:
            ax.plot(g.temperature, g.win_rate, marker="o", ms=4, ls=names.linestyle(method),
                    color=names.color(method), label=label)
            ax.fill_between(g.temperature, g.ci_low, g.ci_high, color=names.color(method), alpha=0.1, lw=0)
    ax.axhline(0.5, color="0.4", lw=0.8, ls=":")
    ax.set_xlabel("sampling temperature")
    ax.set_ylabel(f"win rate against {reference}")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)


def plot(agg: pd.DataFrame, path: Path, title: str, reference: str, chosen: dict | None = None) -> None:
    fig, ax = plt.subplots(figsize=(8.5, 5))
    draw(ax, agg, chosen, reference)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    report.save_figure(fig, path)


def figure_panel(run_root: Path, judge: str = "oracle") -> tuple[pd.DataFrame, dict] | None:
    """(the judge's aggregated win rates, the validation-chosen settings) for the paper's Fig. 2 right panel
    (analysis.frontier.plot_figure2); None without win rates of that judge."""
    df = load_winrates(run_root)
    if df.empty:
        return None
    agg = aggregate(df)
    agg = agg[agg.judge == judge]
    return (agg, validation_choice(run_root)) if len(agg) else None


def _ordered(methods) -> list[str]:
    """Display order (conf/method/*.yaml); SFT, the policy every method starts from, after the trained ones, where
    these tables have always listed it (its display order puts it first, as in the frontier's)."""
    return sorted(set(methods), key=lambda m: (m == "sft", names.sort_key(m)))


def summary_lines(agg: pd.DataFrame, reference: str, prompt_response: bool = False, chosen: dict | None = None
                  ) -> list[str]:
    """Markdown: per judge, the best setting of each method at every temperature, mean ± 95 % half-width; for the
    prompt-response tasks also the out-of-distribution table (split "ood", temperature 0)."""
    if agg.empty:
        return []
    if prompt_response:
        how = ("Each run's final policy sampled at each temperature (0 = greedy) on held-out prompts and judged "
               "pairwise against the data's own answer to the same prompt; A/B order randomised per comparison. "
               "Best-of-N: the r_phi-best of N samples of the SFT policy at each temperature (at 0 all N are the "
               "greedy one). SFT: the reference policy itself.")
    else:
        how = ("Each run's final policy sampled at each temperature (0 = greedy) on held-out prefixes and judged "
               "pairwise against the reference completion of the same prefix; A/B order randomised per comparison. "
               "Best-of-N: its temperature-1 selections only.")
    lines = ["## Win rates against " + reference, "",
             how + " Mean over seeds [95 % interval]: the t-interval across seeds, or, for one seed or seeds that "
             "all scored the same, the Wilson interval of their comparisons pooled; per method "
             + ("the setting whose final checkpoints have the highest mean r* on the validation prefixes (chosen "
                "without looking at these test win rates)" if chosen else
                "the setting with the best mean over temperatures")
             + " (every setting is in winrates.csv).", ""]
    ood = agg[agg.split == "ood"]
    agg = agg[agg.split == "test"]
    temps = sorted(agg.temperature.unique())
    for judge, g in agg.groupby("judge"):
        best = best_settings(g, chosen)
        invalid = int(g.n_invalid.sum())
        lines += [f"**Judge: {judge}** ({invalid} invalid answers in all)", "",
                  *report.table_head(["method", "setting", "seeds", *(f"T={t:g}" for t in temps)])]
        for method in _ordered(best.method):
            b = best[best.method == method].set_index("temperature")
            cells = [_cell(b.loc[t]) if t in b.index else "" for t in temps]
            param = b.param.iloc[0]
            lines.append(f"| {names.display_name(method)} | {'' if pd.isna(param) else f'{param:g}'} | "
                         f"{int(b.seeds.max())} | " + " | ".join(cells) + " |")
        lines.append("")
    if len(ood):
        lines += ["### Out of distribution (temperature 0)", "",
                  "The same final policies on the out-of-distribution prompts (CNN/DailyMail articles in the TL;DR "
                  "format, the judge told they are news articles), greedy, against their reference summaries.", "",
                  *report.table_head(["judge", "method", "setting", "seeds", "win rate", "n"])]
        for (judge, method, param), b in ood.groupby(["judge", "method", "param"], dropna=False):
            lines.append(f"| {judge} | {names.display_name(method)} | {'' if pd.isna(param) else f'{param:g}'} | "
                         f"{int(b.seeds.max())} | {_cell(b.iloc[0])} | "
                         f"{int(b.n_per_seed.iloc[0])} |")
        lines.append("")
    return lines


def write(run_root: Path, out_dir: Path, task: str, preset: str, reference: str, prompt_response: bool = False
          ) -> list[str]:
    """winrates.csv and one plot per judge; returns the summary lines (empty when no win rates exist yet)."""
    df = load_winrates(run_root)
    if df.empty:
        return []
    df.to_csv(out_dir / "winrates.csv", index=False, float_format="%.6g")
    agg = aggregate(df)
    chosen = {} if prompt_response else validation_choice(run_root)
    for judge, g in agg.groupby("judge"):
        name = "winrate_vs_temperature.png" if judge == "oracle" else f"winrate_vs_temperature_{judge}.png"
        plot(g, out_dir / name, f"{task} ({preset}): win rate vs temperature, judge {judge}", reference, chosen)
    return summary_lines(agg, reference, prompt_response, chosen)


# ------------------------------------------------------------------------------- prompt-response tasks' summary
# The paper's numbers (GPT-4 judge; shared/paper-facts.md), printed beside ours for orientation only: the embedded
# presets are not the paper's experiment.
PAPER = {
    "summarization": ["TL;DR, GPT-J 6B, win rate against the reference summary (GPT-4 'C' judge): DPO ≈ 0.61 at T=0 "
                      "and ≈ 0.6 up to T=0.5; PPO ≈ 0.57 at its best T (0), ≈ 0.2 at T=0.75; Best-of-128 peaks "
                      "≈ 0.57 at T=0.5; SFT ≈ 0.4. Out of distribution (CNN/DailyMail, T=0): DPO 0.36, PPO 0.26."],
    "dialogue": ["Anthropic HH single-turn, Pythia-2.8B, win rate against the chosen response (GPT-4): DPO ≈ "
                 "0.60-0.63 at T 0.7-1.0 and ≈ 0.36 at T=0.25; Best-of-128 ≈ 0.54-0.61; 2-shot Pythia ≈ 0.2; "
                 "Preferred-FT is the reference policy (no PPO in the paper's figure)."],
}
REFERENCE_NAMES = {"summarization": "the reference summary", "dialogue": "the chosen response"}
SMOKE_NOTE = ("**This is the offline smoke preset: it checks that the whole chain runs and writes its tables and "
              "plots on this CPU. It is not the paper's science** (a tiny model trained from scratch, preference "
              "pairs 'real answer over another prompt's answer', "
              "a word-level relevance oracle as judge; docs/scaling.md).")


def stage_lines(run_root: Path) -> list[str]:
    data, sft, reward, pairs, rm = (_done(run_root / "shared" / s).get("metrics", {})
                                    for s in ("data", "sft", "reward", "pairs", "reward_model"))
    lines = ["## Shared stages", ""]
    if data:
        lines.append(f"- data: {data.get('n_train')} SFT examples, {data.get('n_prefs')} preference pairs, "
                     f"{data.get('n_test')} test prompts" + (f", {data['n_ood']} out-of-distribution prompts"
                                                             if data.get("n_ood") else ""))
    if sft:
        lines.append(f"- SFT: {sft.get('steps')} steps, held-out perplexity {sft.get('eval_perplexity')}, "
                     f"{sft.get('n_params', 0) / 1e6:.2f}M parameters; {sft.get('n_prompt_too_long', 0)} prompts "
                     "over the length cap left out")
    if reward:
        lines.append(f"- r* ({reward.get('kind')}): the real answer above a mismatched one in "
                     f"{reward.get('test_pair_accuracy')} of {reward.get('n_test_pairs')} held-out pairs")
    if pairs:
        lines.append(f"- pairs: {pairs.get('n_pairs')} (prompt {pairs.get('mean_prompt_tokens')} tokens, chosen "
                     f"{pairs.get('mean_chosen_tokens')}, rejected {pairs.get('mean_rejected_tokens')} on average); "
                     f"SFT log-prob margin chosen − rejected {pairs.get('sft_logp_margin')}")
    if rm:
        acc = {k: v for k, v in rm.items() if "accuracy" in k}
        lines.append(f"- reward model r_phi: {acc}")
    return lines + [""]


QUOTE = 80


def _quote(text: str) -> str:
    text = text.strip()
    return text if len(text) <= QUOTE else text[:QUOTE] + " […]"


def example_lines(run_root: Path, judge: str, n: int) -> list[str]:
    """A few held-out prompts with the reference and each method's greedy (else lowest-temperature) answer."""
    by_method: dict[str, list[dict]] = {}
    for run_dir in sorted(run_root.glob("seed0/*")):
        files = sorted((run_dir / "winrate" / judge).glob("samples_test_T*.jsonl"),
                       key=lambda p: float(p.stem.split("_T")[-1]))
        if files:
            by_method[run_dir.name] = [json.loads(line) for line in files[0].read_text().splitlines()[:n]]
    if not by_method:
        return []
    first = next(iter(by_method.values()))
    lines = ["## Examples (seed 0, lowest temperature)", "",
             f"The data's prompt and reference answer are cut to their first {QUOTE} characters (the data are not "
             "this project's to republish); the answers of the policies are shown whole.", ""]
    for i, row in enumerate(first):
        lines += [f"**Prompt {i + 1}.** {_quote(row['prompt'])!r}", "", f"- reference: {_quote(row['reference'])!r}"]
        lines += [f"- {tag}: {rows[i]['candidate'].strip()!r}" for tag, rows in by_method.items() if i < len(rows)]
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Win-rate tables and plots of the summarization and dialogue tasks.")
    ap.add_argument("--task", required=True, choices=sorted(PAPER))
    ap.add_argument("--preset", default="embedded")
    ap.add_argument("--runs", default=os.environ.get("RVD_RUNS", "runs"),
                    help="root of the training outputs (paths.root; default $RVD_RUNS, else runs)")
    ap.add_argument("--out", default="results", help="root of the committed results")
    ap.add_argument("--command", default="(not given)", help="the command that produced the runs, for provenance")
    ap.add_argument("--examples", type=int, default=3)
    args = ap.parse_args(argv)
    run_root = Path(args.runs) / args.task / args.preset
    out_dir = Path(args.out) / args.task / args.preset
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = REFERENCE_NAMES[args.task]
    lines = write(run_root, out_dir, args.task, args.preset, reference, prompt_response=True)
    if not lines:
        raise SystemExit(f"no win rates under {run_root} (run the pipeline first)")
    cost_lines = cost.write(run_root, out_dir, args.task, args.preset)
    sha = report.git_sha()[:7]
    ran_at = report.stage_shas(run_root, 7)
    judges = sorted(load_winrates(run_root).judge.unique())
    head = [f"# {args.task} ({args.preset}): win rates", "",
            f"Produced by `{args.command}`; its stages ran at commit(s) {', '.join(ran_at) or 'unknown'}, these "
            f"tables were written at {sha or 'unknown'}, {report.stamp()}. Judge(s): {', '.join(judges)}.", ""]
    if args.preset != "paper":
        head += [SMOKE_NOTE, ""]
    head += ["The paper, for orientation: " + PAPER[args.task][0], ""]
    body = head + stage_lines(run_root) + lines + example_lines(run_root, judges[0], args.examples) + cost_lines
    (out_dir / "summary.md").write_text("\n".join(body) + "\n")
    print(f"wrote {out_dir}/winrates.csv, winrate_vs_temperature*.png, summary.md")


if __name__ == "__main__":
    main()
