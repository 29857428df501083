"""The tuning trials of a sweep group with `trials` (conf/experiment/*.yaml, sweep.groups.*): each trial scored on
validation prefixes only, one table (tuning.csv) and the summary's Tuning section. Reads files only.

A trial's score at a KL budget b is the best validation r* of any evaluated policy within it (validation KL <= b),
its SFT reference included (the floor every method starts from); its score is the mean over TUNING_BUDGETS, the
budgets the verdict compares. The trial with the highest score is the one validation would pick; the table says
whether that is the preset's setting (what the headline runs use) and, when it is not, by how much it wins.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import names
from analysis.load import TUNING, _stage_config

# The budgets the verdict compares at this scale (summary.md): every seed of DPO, PPO and PPO-GT has a checkpoint of
# its own at or below each.
TUNING_BUDGETS = (1, 2, 4)
# The settings a trial may vary (the sweep group's trial axes); shown in the table when they differ between trials.
KEYS = ("learning_rate", "beta", "kl.target", "total_steps")


def _setting(run_dir: Path) -> dict:
    method = _stage_config(run_dir)["method"]
    out = {"method": method["name"]}
    for key in KEYS:
        node = method
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return out


def _val_points(run_dir: Path) -> list[tuple[float, float]]:
    """(validation KL, validation r*) of a run's evaluated checkpoints (only a finished evaluation)."""
    ev = run_dir / "eval"
    if not (ev / "done.json").exists():
        return []
    rows = [json.loads(p.read_text()) for p in sorted(ev.glob("step*.json"))]
    return [(r["val_kl"], r["val_reward"]) for r in rows if r.get("val_kl") is not None]


def _sft_point(run_root: Path, seed: int) -> tuple[float, float] | None:
    """The validation r* of the SFT policy of pipeline seed `seed` (KL 0 to itself)."""
    pipeline = run_root / ("shared" if seed == 0 else f"pipeline{seed}")
    for p in sorted((pipeline / "sft" / "eval").glob("step*.json")):
        r = json.loads(p.read_text())
        if r.get("val_reward") is not None:
            return 0.0, r["val_reward"]
    return None


def score(points: list[tuple[float, float]], budgets=TUNING_BUDGETS) -> np.ndarray:
    """Best validation r* within each budget (KL <= b) among `points`; NaN where none is within it."""
    out = np.full(len(budgets), np.nan)
    for i, b in enumerate(budgets):
        within = [r for kl, r in points if kl <= b]
        if within:
            out[i] = max(within)
    return out


def _headline_run(run_root: Path, seed: int, trial: str) -> Path | None:
    """The headline run a trial varies (seed<k>/<tag> whose tag the trial's name extends), None without one."""
    found = [d for d in (run_root / f"seed{seed}").glob("*") if d.is_dir() and trial.startswith(d.name + "_")]
    return max(found, key=lambda d: len(d.name)) if found else None


def preset_value(run_root: Path, method: str, seed: int, key: str):
    """The value of `key` in the method's headline runs at `seed` (what the preset gives), None without one."""
    for run_dir in sorted((run_root / f"seed{seed}").glob("*")):
        cfg = run_dir / "stage_config.json"
        if cfg.exists():
            s = _setting(run_dir)
            if s["method"] == method:
                return s[key]
    return None


def table(run_root: Path, budgets=TUNING_BUDGETS) -> pd.DataFrame:
    """One row per finished trial under run_root/tuning/seed<k>/<tag>: its setting, validation score per budget,
    mean, whether it is the preset's learning rate and whether validation picks it (per method and seed)."""
    rows = []
    for run_dir in sorted((run_root / TUNING).glob("seed*/*")):
        points = _val_points(run_dir)
        if not points or not (run_dir / "stage_config.json").exists():
            continue
        seed = int(run_dir.parent.name.removeprefix("seed"))
        sft = _sft_point(run_root, seed)
        vals = score(points + ([sft] if sft else []), budgets)
        s = _setting(run_dir)
        headline = _headline_run(run_root, seed, run_dir.name)
        rows.append({"method": s["method"], "seed": seed, "tag": run_dir.name,
                     # the trial at the headline runs' settings against the headline run itself (None: no such run)
                     "same_as_headline": (_val_points(headline) == points) if headline is not None else None,
                     **{k: s[k] for k in KEYS}, **{f"val_r_kl{b:g}": v for b, v in zip(budgets, vals)},
                     "score": float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan,
                     "preset": s["learning_rate"] == preset_value(run_root, s["method"], seed, "learning_rate")})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    best = df.groupby(["method", "seed"])["score"].transform("max")
    df["chosen"] = df.score == best
    return df


def lines(df: pd.DataFrame, budgets=TUNING_BUDGETS) -> list[str]:
    """The summary's Tuning section."""
    if df.empty:
        return []
    out = ["## Tuning: the same trials for each compared method, chosen on validation", "",
           "Each trial is one run at pipeline seed "
           f"{', '.join(str(s) for s in sorted(df.seed.unique()))} in its own folder (tuning/, never on a frontier); "
           f"score = mean over KL budgets {', '.join(f'{b:g}' for b in budgets)} of the best validation r* of any "
           "evaluated policy within the budget (SFT included). `preset` = the learning rate of the headline runs; "
           "`chosen` = validation's pick (analysis.tuning; the trials: conf/experiment/*.yaml, sweep.groups.tuning). "
           "One run per trial: a difference in score smaller than the across-seed sd of r* (Reward at matched KL "
           "above) is within what one seed's draw moves.", ""]
    varied = [k for k in KEYS if df.groupby("method")[k].nunique().max() > 1 or k == "learning_rate"]
    fixed = [k for k in KEYS if k not in varied and df[k].notna().any()]
    head = ["method", *fixed, *varied, *[f"val r* KL≤{b:g}" for b in budgets], "score", "preset", "chosen"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [names.display_name(r.method), *[_cell(r[k]) for k in fixed + varied],
                 *[f"{r[f'val_r_kl{b:g}']:.3f}" for b in budgets], f"{r.score:.3f}",
                 "yes" if r.preset else "", "**yes**" if r.chosen else ""]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    same = df[df.preset & df.same_as_headline.notna()]
    if len(same):
        exact = int(same.same_as_headline.astype(bool).sum())
        out.append(f"- The trials at the preset's rate reproduce the headline runs of the same seed and setting "
                   f"exactly (every checkpoint's validation KL and r*) in {exact} of {len(same)} case(s).")
    for (method, seed), g in df.groupby(["method", "seed"]):
        pick, preset = g[g.chosen].iloc[0], g[g.preset]
        name = names.display_name(method)
        trials = f"{len(g)} trials"
        if preset.empty:
            out.append(f"- {name}: {trials}; the preset's learning rate has no finished trial.")
        elif pick.preset:
            out.append(f"- {name}: {trials}; validation picks the preset's learning rate {_cell(pick.learning_rate)}"
                       " (the headline runs').")
        else:
            gain = pick.score - preset.score.iloc[0]
            out.append(f"- {name}: {trials}; validation picks learning rate {_cell(pick.learning_rate)}, "
                       f"{gain:+.3f} in score over the preset's {_cell(preset.learning_rate.iloc[0])}: **the headline "
                       f"runs use the preset's rate, not the tuned one**.")
    return out + [""]


def _cell(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "—"
    return f"{x:g}" if isinstance(x, (int, float, np.floating, np.integer)) else str(x)


def write(df: pd.DataFrame, out_dir: Path, budgets=TUNING_BUDGETS) -> list[str]:
    """tuning.csv and the summary lines of table()'s output; nothing when no trial has finished."""
    if df.empty:
        return []
    df.to_csv(out_dir / "tuning.csv", index=False, float_format="%.6g")
    return lines(df, budgets)
