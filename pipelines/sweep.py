"""Seed sweeps that survive interruptions: `python -m pipelines.sweep --experiment E --seeds 0-9 --methods dpo ppo`.

The jobs are (seed, method, setting) for every setting of the method's preset grid
(conf/method_preset/<experiment>/<method>.yaml, `hydra.sweeper.params`). They run seed by seed, so that whatever
is finished when a sitting ends is a set of complete seeds: first the seed's own pipeline (SFT, pairs, r_phi) on
every core, then its method jobs side by side (`--jobs` processes, one thread each), longest first.

A job is done when its evaluation (and win-rate) stages are done with the hash the current config gives them, in
the run folder or in the ledger: `results/<task>/<preset>/ledger/seed<k>.jsonl`, one line per small file a finished
job or pipeline wrote (done-markers, eval/step*.json, winrates.json; never weights or samples). The ledger is
committed, so a sweep resumes from it on a fresh clone: ledger files missing from the run folder are written back
(done-markers marked `restored`, which the stage runner treats as not done, so nothing downstream trusts weights that
are not there) and the finished jobs are skipped. The analysis then reads the run folder as if nothing was lost.

  python -m pipelines.sweep --experiment sentiment_embedded --seeds 0-9 --methods dpo ppo ppo_gt --list
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from pipelines.infra.bookkeeping import Stage, config_hash, read_done
from pipelines.infra.io import UserError, atomic_write_text

CONF = Path(__file__).resolve().parents[1] / "conf"
# Small files worth keeping: what the analysis reads, never weights, samples or judge transcripts.
LEDGER_GLOBS = ("done.json", "eval/done.json", "eval/step*.json", "winrate/*/done.json", "winrate/*/winrates.json")
PIPELINE_STAGES = ("sft", "sft/eval", "pairs", "reward_model")
FIXED_STAGES = ("data", "tokenizer", "reward")


@dataclass
class Job:
    seed: int
    method: str
    overrides: list[str]
    cfg: DictConfig = field(repr=False, default=None)


def parse_seeds(text: str) -> list[int]:
    """'0-9' -> [0..9]; '0,2,5' -> [0, 2, 5]; '3' -> [3]."""
    out: list[int] = []
    for part in str(text).replace(" ", ",").split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out += list(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    if not out:
        raise UserError(f"--seeds: no seed in '{text}' (e.g. 0-9 or 0,1,2)")
    return sorted(dict.fromkeys(out))


def compose_cfg(overrides: list[str], hydra_node: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra_node)


def grid(experiment: str, method: str, extra: list[str]) -> list[list[str]]:
    """The method's preset grid as lists of overrides (the cartesian product of its sweeper params)."""
    cfg = compose_cfg([f"experiment={experiment}", f"method={method}", *extra], hydra_node=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    axes = [[f"{k}={v.strip()}" for v in str(values).split(",")] for k, values in params.items()]
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def plan_hash(cfg: DictConfig, stages: dict[str, Stage], name: str, _memo: dict | None = None) -> str:
    """The config hash `name` would get in a run of `cfg`, computed without running anything (as run_stage does)."""
    memo = {} if _memo is None else _memo
    if name not in memo:
        stage = stages[name]
        deps = stage.deps(cfg) if callable(stage.deps) else stage.deps
        memo[name] = config_hash(cfg, stage, {d: plan_hash(cfg, stages, d, memo) for d in deps})[0]
    return memo[name]


def final_stages(cfg: DictConfig) -> list[tuple[str, Path]]:
    """(stage, folder) of the stages whose done-markers make a job finished: evaluate and, when in the pipeline,
    winrate."""
    from pipelines.run import STAGES
    names = [n for n in ("evaluate", "winrate") if n in cfg.pipeline]
    return [(n, Path(STAGES[n].out_dir(cfg))) for n in names]


def job_done(cfg: DictConfig) -> bool:
    from pipelines.run import STAGES
    memo: dict = {}
    for name, folder in final_stages(cfg):
        done = read_done(folder)
        if done is None or done.get("hash") != plan_hash(cfg, STAGES, name, memo):
            return False
    return True


# ---------------------------------------------------------------------------------------------------- ledger
def ledger_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.results) / "ledger"


def record(cfg: DictConfig, seed: int, folders: list[Path]) -> int:
    """Add the small files of `folders` (finished stages under the run root) to the seed's ledger. Returns the number
    of new or changed files."""
    run_root = Path(cfg.paths.run_root)
    path = ledger_dir(cfg) / f"seed{seed}.jsonl"
    entries = {e["path"]: e for e in _read(path)}
    changed = 0
    for folder in folders:
        for pattern in LEDGER_GLOBS:
            for f in sorted(Path(folder).glob(pattern)):
                rel = str(f.relative_to(run_root))
                text = f.read_text()
                if rel.endswith("done.json"):
                    text = json.dumps({k: v for k, v in json.loads(text).items() if k != "restored"}, sort_keys=True)
                if entries.get(rel, {}).get("text") != text:
                    entries[rel] = {"path": rel, "text": text}
                    changed += 1
    if changed:
        atomic_write_text(path, "".join(json.dumps(entries[k], sort_keys=True) + "\n" for k in sorted(entries)))
    return changed


def restore(cfg: DictConfig) -> int:
    """Write every ledger file that is missing from the run folder back into it; done-markers are marked restored
    (the stage runner reruns such a stage when something needs its outputs). Returns the number of files written."""
    run_root = Path(cfg.paths.run_root)
    written = 0
    for path in sorted(ledger_dir(cfg).glob("seed*.jsonl")):
        for e in _read(path):
            target = run_root / e["path"]
            if target.exists():
                continue
            text = e["text"]
            if target.name == "done.json":
                text = json.dumps({**json.loads(text), "restored": True}, indent=2, sort_keys=True) + "\n"
            atomic_write_text(target, text)
            written += 1
    return written


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# ------------------------------------------------------------------------------------------------------ runs
def _command(overrides: list[str], threads: int) -> list[str]:
    return [sys.executable, "-m", "pipelines.run", *overrides, f"threads={threads}"]


def _run(cmd: list[str], log_path: Path, label: str) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    print(f"[{label}] started (log: {log_path})", flush=True)
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    took = (time.time() - start) / 60
    if result.returncode != 0:
        tail = log_path.read_text().splitlines()[-30:]
        raise UserError(f"[{label}] FAILED after {took:.1f} min; the end of {log_path}:\n" + "\n".join(tail))
    print(f"[{label}] done in {took:.1f} min", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--seeds", default="0", help="e.g. 0-9 or 0,1,2")
    ap.add_argument("--methods", nargs="+", required=True)
    ap.add_argument("--jobs", type=int, default=2, help="method jobs side by side")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads of the pipeline stages")
    ap.add_argument("--list", action="store_true", help="list the jobs and whether each is done; train nothing")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = ap.parse_args(argv)
    try:
        sweep(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def sweep(args) -> None:
    from pipelines.run import METHODS, check

    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise UserError(f"--methods: unknown method(s) {unknown}; methods are {sorted(METHODS)}")
    seeds = parse_seeds(args.seeds)
    base = [f"experiment={args.experiment}", *args.overrides]
    # Every job composed and validated before anything trains.
    jobs: list[Job] = []
    for seed in seeds:
        for method in args.methods:
            for setting in grid(args.experiment, method, args.overrides):
                overrides = [*base, f"method={method}", f"seed={seed}", *setting]
                cfg = compose_cfg(overrides)
                check(cfg)
                jobs.append(Job(seed, method, overrides, cfg))
    first = jobs[0].cfg
    restored = restore(first)
    if restored:
        print(f"ledger: {restored} file(s) of earlier runs written back into {first.paths.run_root}", flush=True)
    todo = [j for j in jobs if not job_done(j.cfg)]
    print(f"{args.experiment}: {len(jobs)} job(s) over seeds {seeds[0]}-{seeds[-1]}, {len(jobs) - len(todo)} done, "
          f"{len(todo)} to run", flush=True)
    if args.list:
        for j in jobs:
            print(f"  {'done' if j not in todo else 'todo'}  seed {j.seed}  {j.cfg.method.tag}")
        return
    logs = Path(first.paths.run_root) / "logs" / "sweep"
    # The seed's pipeline stages (those before train in the configured pipeline), on every core.
    pipeline = [s for s in first.pipeline if s not in ("train", "evaluate", "winrate")]
    needs_rphi = {m for m in args.methods if "reward_model" in METHODS[m].inputs}
    start = time.time()
    for seed in seeds:
        seed_jobs = [j for j in todo if j.seed == seed]
        if not seed_jobs:
            continue
        stages = pipeline + (["reward_model"] if needs_rphi & {j.method for j in seed_jobs} else [])
        _run(_command([*base, f"seed={seed}", f"pipeline=[{','.join(stages)}]"], args.threads),
             logs / f"seed{seed}_pipeline.log", f"seed {seed} pipeline")
        cfg = jobs[[j.seed for j in jobs].index(seed)].cfg
        pipeline_dir = Path(cfg.paths.pipeline)
        record(cfg, seed, [pipeline_dir / s for s in PIPELINE_STAGES]
               + [Path(cfg.paths.shared) / s for s in FIXED_STAGES])
        # Longest first: the on-policy methods (PPO, RLOO, Best-of-N) take longest per setting.
        seed_jobs.sort(key=lambda j: not METHODS[j.method].on_policy)

        def one(job: Job) -> None:
            _run(_command(job.overrides, 1), logs / f"seed{job.seed}_{job.cfg.method.tag}.log",
                 f"seed {job.seed} {job.cfg.method.tag}")
            record(job.cfg, job.seed, [Path(job.cfg.paths.method)])

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for future in [pool.submit(one, j) for j in seed_jobs]:
                future.result()
        print(f"seed {seed}: {len(seed_jobs)} job(s) done; {(time.time() - start) / 60:.1f} min since the sweep "
              "started", flush=True)
    print(f"{args.experiment}: seeds {seeds[0]}-{seeds[-1]} done in {(time.time() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
