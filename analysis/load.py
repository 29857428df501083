"""Reading what the pipelines wrote into DataFrames: evaluated checkpoints (eval/step*.json), win rates
(winrate/<judge>/winrates.json), the cost blocks and done-markers of the stages. Reads files only; no statistics,
no plots, no markdown.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis import names

COLUMNS = ["method", "param", "seed", "shared_seed", "step", "kl", "kl_se", "reward", "reward_se", "n"]
VALIDATION = ["val_kl", "val_kl_se", "val_reward", "val_reward_se", "val_n"]
# source: the eval file a point was read from, relative to the run root (its samples lie beside it).
# param_name: what `param` is for the row's method (β, τ, KL target, N, α); git_sha: the commit its evaluation ran at.
EXTRA = ["tag", "param_name", "mean_length", "eos_rate", "kl_kind", "git_sha", "source"]
NUMERIC = ["param", "seed", "shared_seed", "step", "kl", "kl_se", "reward", "reward_se", "n", "mean_length",
           "eos_rate", *VALIDATION]
# The folder of a sweep group's tuning trials (conf/experiment/*.yaml, sweep.groups.*.folder): never on a frontier;
# analysis.tuning reads them.
TUNING = "tuning"
# The stages every method's runs share, per pipeline seed (their done-markers give the set-up and wall times).
SHARED_STAGES = ["data", "tokenizer", "sft", "reward", "evaluate_sft", "pairs", "reward_model"]
WINRATE_COLUMNS = ["judge", "judge_model", "split", "method", "param", "param_name", "seed", "temperature", "win_rate",
                   "win_rate_se", "n", "n_invalid", "tag", "git_sha"]
# The cost block of a done-marker (pipelines' cost meter).
COST_FIELDS = ["wall_s", "train_tokens", "forward_tokens", "generated_tokens", "flops_est", "peak_host_mem_mb",
               "peak_gpu_mem_mb"]


def _done(path: Path) -> dict:
    """A stage folder's done-marker, or {} when it has none (a torn marker counts as none, as in the pipelines'
    skip/resume bookkeeping)."""
    try:
        return json.loads((path / "done.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _stage_config(path: Path) -> dict:
    """The resolved config a stage folder's stage_config.json recorded ({} without one)."""
    try:
        return json.loads((path / "stage_config.json").read_text()).get("config") or {}
    except (OSError, json.JSONDecodeError):
        return {}


def stage_configs(run_root: Path) -> dict[str, dict]:
    """Every stage's recorded config under run_root (tuning trials included), keyed by its folder relative to
    run_root: what results.json cites as the resolved config of every stage."""
    return {p.parent.relative_to(run_root).as_posix(): json.loads(p.read_text())
            for p in sorted(run_root.glob("**/stage_config.json"))}


def run_method(run_dir: Path) -> str | None:
    """The method a run folder (seed<k>/<tag>) trained, from its stage_config.json; None without one."""
    return (_stage_config(run_dir).get("method") or {}).get("name")


def load_points(run_root: Path) -> pd.DataFrame:
    """One row per evaluated checkpoint, from every eval/step*.json under run_root. Test-prefix numbers in kl,
    reward, ...; validation-prefix numbers in val_kl, val_reward, ...; shared_seed = the run's pipeline seed (its SFT,
    pairs and r_phi). SFT rows: one per pipeline seed, with seed = shared_seed."""
    # Only finished evaluations: a run still being evaluated would enter with part of its checkpoints.
    shas: dict[Path, str] = {}
    rows = [{**json.loads(p.read_text()), "source": p.relative_to(run_root).as_posix(),
             "git_sha": shas.setdefault(p.parent, _done(p.parent).get("git_sha"))}
            for p in sorted(run_root.glob("**/eval/step*.json")) if (p.parent / "done.json").exists()
            and p.relative_to(run_root).parts[0] != TUNING]
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
    df["param_name"] = [None if m == "sft" else names.param_name(m) for m in df.method]
    df = df.drop_duplicates(subset=["method", "tag", "seed", "shared_seed", "step"])
    # SFT (one per pipeline seed) first, then each method by its swept parameter, seed and step.
    df["_order"] = df.method.map(lambda m: -1 if m == "sft" else names.rank(m))
    df = df.sort_values(["_order", "method", "param", "seed", "step"], na_position="first")
    return df.drop(columns="_order").reset_index(drop=True)


def _finals(df: pd.DataFrame) -> pd.DataFrame:
    """The last evaluated checkpoint of each run (method, param, seed), SFT included."""
    return df.loc[df.groupby(["method", "param", "seed"], dropna=False)["step"].idxmax()].sort_index()


def load_winrates(run_root: Path) -> pd.DataFrame:
    """Every row of every seed*/<run>/winrate/<judge>/winrates.json under run_root (pipelines' win-rate stage)."""
    rows = []
    for p in sorted(run_root.glob("seed*/*/winrate/*/winrates.json")):
        # the judge's model from the stage's own config; the commit from its done-marker
        cfg = _stage_config(p.parent)
        model = cfg.get("judge.model", (cfg.get("judge") or {}).get("model"))
        extra = {"judge_model": model, "git_sha": _done(p.parent).get("git_sha")}
        rows += [{**r, **extra, "param_name": names.param_name(r.get("method"))} for r in json.loads(p.read_text())]
    df = pd.DataFrame(rows, columns=WINRATE_COLUMNS) if rows else pd.DataFrame(columns=WINRATE_COLUMNS)
    df["split"] = df["split"].fillna("test")  # rows written before the out-of-distribution split existed
    for col in ("param", "seed", "temperature", "win_rate", "win_rate_se", "n", "n_invalid"):
        df[col] = pd.to_numeric(df[col])
    return df


def stage_costs(run_root: Path) -> pd.DataFrame:
    """One row per finished stage that has a cost block: component (shared stage name or 'train <method>'),
    method, seed, tag and the cost fields."""
    rows = []
    for name in ("sft", "pairs", "reward_model"):
        cost = _done(run_root / "shared" / name).get("cost")
        if cost:
            rows.append({"component": name, "method": None, "tag": name, **{k: cost.get(k) for k in COST_FIELDS}})
    for run_dir in sorted(run_root.glob("seed*/*")):
        done = _done(run_dir)
        if not done.get("cost") or not (run_dir / "stage_config.json").exists():
            continue
        method = run_method(run_dir)
        rows.append({"component": f"train {method}", "method": method, "tag": run_dir.name,
                     **{k: done["cost"].get(k) for k in COST_FIELDS}})
    df = pd.DataFrame(rows, columns=["component", "method", "tag"] + COST_FIELDS)
    for k in COST_FIELDS:
        df[k] = pd.to_numeric(df[k])
    return df
