"""What each pipeline costs: the DPO pipeline (preference pairs -> DPO) against the RLHF pipeline (preference pairs ->
reward model -> PPO), each stage counted once, from the cost blocks of the stages' done-markers
(pipelines/infra/cost_meter.py). Writes cost.csv and cost.png; `lines()` gives the summary.md section.

  python -m analysis.cost --task sentiment --preset embedded [--runs runs] [--out results]

A method's training cost is the mean over its finished runs (every setting and seed is one full training run).
The SFT policy and the evaluation are the same for both pipelines and are listed apart, outside the ratio.
The paper's rebuttal claims DPO needs ~5-8x less compute time and at most half the accelerator memory of RLHF.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.load import COST_FIELDS as FIELDS  # noqa: E402
from analysis.load import stage_costs  # noqa: E402
from analysis.report import table_head  # noqa: E402

# Pipelines compared: name -> (shared stages, the method whose train stage completes it).
PIPELINES = {"DPO": (["pairs"], "dpo"), "RLHF (PPO)": (["pairs", "reward_model"], "ppo")}
PAPER_CLAIM = "DPO needs ~5-8x less compute time and at most half the accelerator memory of PPO-based RLHF"


def pipeline_table(stages: pd.DataFrame) -> pd.DataFrame:
    """Per pipeline: one row per component (a train stage: the mean over its runs, the largest peak memory) and a
    total (sums; peak memory the largest component's). A pipeline whose stages are not all there is left out."""
    rows = []
    for pipeline, (shared, method) in PIPELINES.items():
        parts = []
        for comp in shared + [f"train {method}"]:
            sel = stages[stages.component == comp]
            if sel.empty:
                break
            parts.append({"pipeline": pipeline, "component": comp, "runs": len(sel),
                          **{k: sel[k].max() if k.startswith("peak") else sel[k].mean() for k in FIELDS}})
        else:
            part = pd.DataFrame(parts)
            total = {"pipeline": pipeline, "component": "total", "runs": None}
            for k in FIELDS:
                vals = part[k].dropna()
                total[k] = (vals.max() if k.startswith("peak") else vals.sum()) if len(vals) else None
            rows += parts + [total]
    return pd.DataFrame(rows, columns=["pipeline", "component", "runs"] + FIELDS)


def ratios(table: pd.DataFrame) -> dict[str, float]:
    """RLHF total / DPO total for wall time, FLOPs, tokens and peak memory (> 1: DPO is cheaper)."""
    totals = table[table.component == "total"].set_index("pipeline")
    if not {"DPO", "RLHF (PPO)"} <= set(totals.index):
        return {}
    dpo, rlhf = totals.loc["DPO"], totals.loc["RLHF (PPO)"]
    out = {}
    for k in FIELDS:
        if pd.notna(dpo[k]) and pd.notna(rlhf[k]) and dpo[k] > 0:
            out[k] = float(rlhf[k] / dpo[k])
    return out


def plot(table: pd.DataFrame, path: Path, title: str) -> None:
    """Stacked bars of wall time and estimated FLOPs per pipeline (one segment per component), and peak memory."""
    parts = table[table.component != "total"]
    pipelines = list(dict.fromkeys(parts.pipeline))
    comps = list(dict.fromkeys(parts.component))
    colors = dict(zip(comps, plt.cm.tab10.colors))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for ax, (field, label, scale) in zip(axes, [("wall_s", "wall time (min)", 60.0),
                                                ("flops_est", "estimated FLOPs (TFLOP)", 1e12)]):
        for y, pipeline in enumerate(pipelines):
            left = 0.0
            for _, row in parts[parts.pipeline == pipeline].iterrows():
                width = row[field] / scale
                ax.barh(y, width, left=left, color=colors[row.component], edgecolor="white",
                        label=row.component if y == 0 or row.component not in
                        set(parts[parts.pipeline == pipelines[0]].component) else None)
                left += width
            ax.text(left, y, f" {left:.3g}", va="center", fontsize=9)
        ax.set_yticks(range(len(pipelines)), pipelines)
        ax.set_xlabel(label)
        ax.margins(x=0.2)
    totals = table[table.component == "total"].set_index("pipeline")
    mem_field = "peak_gpu_mem_mb" if totals.peak_gpu_mem_mb.notna().all() else "peak_host_mem_mb"
    ax = axes[2]
    ax.barh(range(len(pipelines)), [totals.loc[p, mem_field] / 1024 for p in pipelines], color="tab:gray")
    for y, p in enumerate(pipelines):
        ax.text(totals.loc[p, mem_field] / 1024, y, f" {totals.loc[p, mem_field] / 1024:.2f}", va="center",
                fontsize=9)
    ax.set_yticks(range(len(pipelines)), pipelines)
    ax.set_xlabel("peak GPU memory (GiB)" if mem_field == "peak_gpu_mem_mb" else "peak host memory, process (GiB)")
    ax.margins(x=0.25)
    handles, labels = axes[0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    fig.legend(uniq.values(), uniq.keys(), loc="lower center", ncol=len(uniq), frameon=False,
               bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def lines(table: pd.DataFrame, stages: pd.DataFrame) -> list[str]:
    """The summary.md section: both pipelines' totals, the measured ratios next to the paper's claim, and the
    training cost of every method."""
    if table.empty:
        return []
    r = ratios(table)
    out = ["## Cost: the DPO pipeline against the RLHF pipeline", "",
           "From the cost blocks of the stages' done-markers ([cost.csv](cost.csv), [cost.png](cost.png)): each stage "
           "counted once, a method's training as the mean over its runs; SFT and evaluation are common to both and "
           "left out. FLOPs are estimated as 6N per trained token and 2N per forward token (generation included); "
           "peak memory is the process's (host RSS; GPU where there is one).", "",
           *table_head(["pipeline", "component", "runs", "wall (s)", "trained tokens", "forward tokens", "generated",
                        "est. FLOPs", "peak host (MiB)", "peak GPU (MiB)"])]
    for _, row in table.iterrows():
        bold = "**" if row.component == "total" else ""
        out.append(f"| {row.pipeline} | {bold}{row.component}{bold} | {'' if pd.isna(row.runs) else int(row.runs)} | "
                   f"{row.wall_s:.0f} | {row.train_tokens:.3g} | {row.forward_tokens:.3g} | "
                   f"{row.generated_tokens:.3g} | {row.flops_est:.3g} | {row.peak_host_mem_mb:.0f} | "
                   f"{'' if pd.isna(row.peak_gpu_mem_mb) else f'{row.peak_gpu_mem_mb:.0f}'} |")
    if r:
        gpu = r.get("peak_gpu_mem_mb")
        mem, where = (gpu, "GPU") if gpu is not None else (
            r.get("peak_host_mem_mb", float("nan")),
            "host RSS of the whole process, which the Python/torch runtime dominates at this model size")
        out += ["", f"**Measured: the RLHF pipeline took {r['wall_s']:.2f}x the wall time and {r['flops_est']:.2f}x "
                    f"the estimated FLOPs of the DPO pipeline; peak memory {mem:.2f}x ({where}).** "
                    f"Paper's claim: {PAPER_CLAIM}."]
    trains = stages[stages.method.notna()]
    if not trains.empty:
        out += ["", "Training stage of every method (mean over its runs):", "",
                *table_head(["method", "runs", "wall (s)", "est. FLOPs", "generated tokens", "peak host (MiB)"])]
        for method, sel in trains.groupby("method", sort=False):
            out.append(f"| {method} | {len(sel)} | {sel.wall_s.mean():.0f} | {sel.flops_est.mean():.3g} | "
                       f"{sel.generated_tokens.mean():.3g} | {sel.peak_host_mem_mb.mean():.0f} |")
    return out + [""]


def write(run_root: Path, out_dir: Path, task: str, preset: str) -> list[str]:
    """cost.csv and cost.png (when both pipelines are complete); returns the summary.md lines."""
    stages = stage_costs(run_root)
    if stages.empty:
        return []
    table = pipeline_table(stages)
    if table.empty:
        return []
    table.to_csv(out_dir / "cost.csv", index=False, float_format="%.6g")
    plot(table, out_dir / "cost.png", f"{task} ({preset}): cost of each pipeline")
    return lines(table, stages)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--preset", default="embedded")
    ap.add_argument("--runs", default=os.environ.get("RVD_RUNS", "runs"))
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    out_dir = Path(args.out) / args.task / args.preset
    out_dir.mkdir(parents=True, exist_ok=True)
    found = write(Path(args.runs) / args.task / args.preset, out_dir, args.task, args.preset)
    print("\n".join(found) if found else "no finished stages with cost blocks (or not both pipelines) yet")


if __name__ == "__main__":
    main()
