"""The one way the reproduce targets run their jobs: `python -m pipelines.sweep --experiment E [--seeds 0-2]`.

What an experiment sweeps is part of its definition: the `sweep:` block of conf/experiment/<E>.yaml (read here, never
part of a stage hash) names its `methods` (the default of --methods), its `jobs` (the default of --jobs; 1 at paper
scale, one GPU) and, for the committed multi-seed verdict, its `groups` (methods, each group at its own seeds, one
group after the other: --groups; a group with `trials` runs those settings instead of the preset grids, in run
folders of its own, for tuning). Which methods read the learned reward model r_phi comes from their METHODS rows
(pipelines/run.py), never from a list.

The jobs are (seed, method, setting) for every setting of the method's preset grid
(conf/method_preset/<experiment>/<method>.yaml, `hydra.sweeper.params`). They run seed by seed, so that whatever
is finished when a sitting ends is a set of complete seeds: first the seed's own pipeline (the stages of
cfg.pipeline before train: data, tokenizer, SFT, r*, pairs) alone on every core, then its method jobs side by side
(`--jobs` processes, cores / jobs threads each), on-policy methods first (they take longest). r_phi is a job of its
own, started first: its readers wait for it, every other job runs beside it. Each job's output goes to its log
(runs/<task>/<preset>/logs/sweep/; with one job at a time also to the terminal); the terminal gets a line per job
started and done, with how many are done and an ETA from the mean job time.

A job is done when its evaluation (and win-rate) stages are done with the hash the current config gives them, in the
run folder or in the ledger (pipelines/infra/ledger.py): `results/<task>/<preset>/ledger/seed<k>.jsonl`, one line
per small file a finished job or pipeline wrote (done-markers, eval/step*.json, winrates.json; never weights or
samples). The ledger is committed, so a sweep resumes from it on a fresh clone: ledger files missing from the run
folder are written back (done-markers marked `restored`, which the stage runner treats as not done, so nothing
downstream trusts weights that are not there) and the finished jobs are skipped. The analysis then reads the run
folder as if nothing was lost. --no-ledger (the one-seed reproduce targets) neither restores from the ledger nor
writes to it: the run trains what the run folder lacks and leaves the committed files alone.

  python -m pipelines.sweep --experiment sentiment_embedded --seeds 0-9 --methods dpo ppo ppo_gt --list
  python -m pipelines.sweep --experiment sentiment_embedded --groups --group headline.seeds=0-4 --list
  python -m pipelines.sweep --experiment sentiment_paper --accelerate ddp --no-ledger -- wandb.mode=online
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipelines.infra.bookkeeping import is_done
from pipelines.infra.io import UserError
from pipelines.infra.ledger import record, restore

CONF = Path(__file__).resolve().parents[1] / "conf"
PIPELINE_STAGES = ("sft", "sft/eval", "pairs", "reward_model")
FIXED_STAGES = ("data", "tokenizer", "reward")
# The stages of a method job; the seed's pipeline is every stage of cfg.pipeline before them.
METHOD_STAGES = ("train", "evaluate", "winrate")
DEFAULT_JOBS = 2


@dataclass
class Job:
    seed: int
    method: str
    overrides: list[str]
    cfg: DictConfig = field(repr=False, default=None)


@dataclass
class Task:
    """One process of the sweep: a method job (counted in the progress lines) or r_phi's training."""
    label: str
    cmd: list[str]
    log: Path
    after: tuple[str, ...] = ()  # labels of the tasks it waits for
    counted: bool = True
    then: Callable[[], None] | None = None  # after it succeeded (the ledger)


def parse_seeds(text: str) -> list[int]:
    """'0-9' -> [0..9]; '0,2,5' or '0 2 5' -> [0, 2, 5]; '3' -> [3]."""
    out: list[int] = []
    try:
        for part in str(text).replace(" ", ",").split(","):
            if not part:
                continue
            if "-" in part:
                lo, hi = part.split("-", 1)
                out += list(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise UserError(f"--seeds: cannot read '{text}' (e.g. 0-9 or 0,1,2)") from None
    if not out:
        raise UserError(f"--seeds: no seed in '{text}' (e.g. 0-9 or 0,1,2)")
    return sorted(dict.fromkeys(out))


def seeds_text(seeds: list[int]) -> str:
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def split_names(values) -> list[str]:
    """Method names given as separate words, one quoted string ("dpo ppo") or a comma list."""
    return [n for v in values or [] for n in re.split(r"[\s,]+", str(v)) if n]


def compose_cfg(overrides: list[str], hydra_node: bool = False) -> DictConfig:
    """The config a `python -m pipelines.run <overrides>` job runs with (numbers in their canonical type)."""
    from pipelines.infra.schema import field_error
    from pipelines.run import canonical_numbers

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=hydra_node)
    except (ConfigCompositionException, OmegaConfBaseException) as err:  # a value the structured config refuses
        raise UserError(f"bad config (nothing was run): {field_error(err)}") from None
    return canonical_numbers(cfg)


def grid(experiment: str, method: str, extra: list[str]) -> list[list[str]]:
    """The method's preset grid as lists of overrides (the cartesian product of its sweeper params)."""
    cfg = compose_cfg([f"experiment={experiment}", f"method={method}", *extra], hydra_node=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    axes = [[f"{k}={v.strip()}" for v in str(values).split(",")] for k, values in params.items()]
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def pipeline_stages(cfg: DictConfig) -> list[str]:
    """The seed's pipeline stages: those of cfg.pipeline before the method's own (r_phi is a job of its own)."""
    return [s for s in cfg.pipeline if s not in METHOD_STAGES and s != "reward_model"]


def reads_rphi(method: str) -> bool:
    from pipelines.run import METHODS
    return "reward_model" in METHODS[method].inputs


def final_stages(cfg: DictConfig) -> list[tuple[str, Path]]:
    """(stage, folder) of the stages whose done-markers make a job finished: evaluate and, when in the pipeline,
    winrate."""
    from pipelines.run import STAGES
    names = [n for n in ("evaluate", "winrate") if n in cfg.pipeline]
    return [(n, Path(STAGES[n].out_dir(cfg))) for n in names]


def job_done(cfg: DictConfig) -> bool:
    from pipelines.run import STAGES
    memo: dict = {}
    return all(is_done(cfg, STAGES, name, memo) for name, _ in final_stages(cfg))


def rphi_done(cfg: DictConfig) -> bool:
    """r_phi trained with the current config and its weights there (a marker restored from the ledger is not)."""
    from pipelines.run import STAGES
    return is_done(cfg, STAGES, "reward_model", restored_ok=False)


# --------------------------------------------------------------------------------------------------- launch
def launcher(accelerate: str | None) -> list[str]:
    """The command that runs pipelines.run: this Python, or `accelerate launch` with conf/accelerate/<name>.yaml."""
    if not accelerate:
        return [sys.executable, "-m", "pipelines.run"]
    config = CONF / "accelerate" / f"{accelerate}.yaml"
    if not config.is_file():
        names = ", ".join(sorted(p.stem for p in (CONF / "accelerate").glob("*.yaml")))
        raise UserError(f"--accelerate {accelerate}: no conf/accelerate/{accelerate}.yaml (there are: {names})")
    script = Path(sys.executable).with_name("accelerate")
    return [str(script) if script.exists() else "accelerate", "launch", "--config_file", str(config),
            "-m", "pipelines.run"]


def command(prefix: list[str], overrides: list[str], threads: int) -> list[str]:
    return [*prefix, *overrides, f"threads={threads}"]


# ------------------------------------------------------------------------------------------------- progress
def minutes(seconds: float) -> str:
    """45 -> '0.8 min', 1500 -> '25 min', 3900 -> '1 h 05 min'."""
    m = seconds / 60
    if m < 10:
        return f"{m:.1f} min"
    if m < 60:
        return f"{m:.0f} min"
    h, rest = divmod(round(m), 60)
    return f"{h} h {rest:02d} min"


def progress(done: int, total: int, mean_seconds: float, jobs: int) -> str:
    """'K of M jobs done' and, while some are left, the ETA: the jobs left at the mean job time, `jobs` at a time."""
    text = f"{done} of {total} jobs done"
    left = total - done
    if left > 0 and done > 0:
        text += f", ETA ~{minutes(mean_seconds * left / max(1, min(jobs, left)))}"
    return text


class Progress:
    def __init__(self, total: int, jobs: int):
        self.total, self.jobs, self.times = total, jobs, []
        self.lock = threading.Lock()

    def add(self, seconds: float) -> str:
        with self.lock:
            self.times.append(seconds)
            return progress(len(self.times), self.total, sum(self.times) / len(self.times), self.jobs)


# ------------------------------------------------------------------------------------------------------ runs
def _run(cmd: list[str], log_path: Path, label: str, echo: bool = False) -> float:
    """Run one command, its output into log_path (and the terminal when echo). Returns its seconds; raises with the
    end of its log when it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    print(f"[{label}] started (log: {log_path})", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        if echo:
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                  bufsize=1) as proc:
                for line in proc.stdout:
                    log.write(line)
                    sys.stdout.write(line)
                returncode = proc.wait()
            sys.stdout.flush()
        else:
            returncode = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    took = time.time() - start
    if returncode != 0:
        tail = log_path.read_text().splitlines()[-30:]
        raise UserError(f"[{label}] FAILED after {minutes(took)}; the end of {log_path}:\n" + "\n".join(tail))
    return took


def run_tasks(tasks: list[Task], workers: int, prog: Progress, echo: bool = False) -> None:
    """Run the tasks `workers` at a time, each in list order once the tasks it waits for are done. After a failure
    nothing new starts; the running ones finish; then the first failure is raised."""
    labels = {t.label for t in tasks}
    assert all(set(t.after) <= labels for t in tasks), "a task waits for one that is not in the list"
    pending, finished, errors = list(tasks), set(), []
    cond = threading.Condition()

    def take() -> Task | None:
        with cond:
            while pending and not errors:
                ready = next((t for t in pending if set(t.after) <= finished), None)
                if ready is not None:
                    pending.remove(ready)
                    return ready
                cond.wait()
            return None

    def worker() -> None:
        while (task := take()) is not None:
            try:
                took = _run(task.cmd, task.log, task.label, echo)
                if task.then is not None:
                    task.then()
            except BaseException as err:  # noqa: BLE001 -- handed to the main thread
                with cond:
                    errors.append(err)
                    cond.notify_all()
                return
            note = f"; {prog.add(took)}" if task.counted else ""
            print(f"[{task.label}] done in {minutes(took)}{note}", flush=True)
            with cond:
                finished.add(task.label)
                cond.notify_all()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(workers, len(tasks))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# ------------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", required=True, help="conf/experiment/<name>.yaml")
    ap.add_argument("--seeds", default=None, help="full-pipeline seeds, e.g. 0-9, 0,1,2 or '0 1 2' (default 0)")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="methods to sweep, each over its preset grid (default: the experiment's sweep.methods)")
    ap.add_argument("--groups", action="store_true",
                    help="run the experiment's sweep.groups one after the other (each its methods at its seeds)")
    ap.add_argument("--group", action="append", default=[], metavar="NAME.KEY=VALUE",
                    help="change one group's methods or seeds, e.g. headline.seeds=0-4, other.methods= (none)")
    ap.add_argument("--jobs", type=int, default=None,
                    help=f"method jobs side by side (default: the experiment's sweep.jobs, else {DEFAULT_JOBS})")
    ap.add_argument("--threads", type=int, default=_cores(),
                    help="threads of the seed's pipeline stages; each job gets threads / jobs (default: the cores)")
    ap.add_argument("--accelerate", default=None, metavar="NAME",
                    help="launch every command with accelerate launch --config_file conf/accelerate/NAME.yaml")
    ap.add_argument("--no-ledger", action="store_true",
                    help="neither restore finished jobs from the committed ledger nor write to it")
    ap.add_argument("--list", action="store_true", help="list the jobs and whether each is done; train nothing")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job (after --)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        sweep(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)


def groups_of(spec, changes: list[str]) -> dict[str, dict]:
    """The experiment's sweep.groups with --group NAME.KEY=VALUE changes applied (NAME_KEY works too). A group with
    `trials` ({method: {key: "v1,v2"}}) runs those settings instead of the methods' preset grids, in run folders of
    their own under `folder` (tuning runs never enter a frontier)."""
    groups = {name: {"methods": split_names(g.get("methods")), "seeds": str(g.get("seeds", "0")),
                     "trials": g.get("trials") or None, "folder": g.get("folder")}
              for name, g in (spec.get("groups") or {}).items()}
    for name, g in groups.items():
        if g["trials"] and (not g["folder"] or set(g["trials"]) != set(g["methods"])):
            raise UserError(f"sweep.groups.{name}: trials need a folder and one entry per method of the group")
    if not groups:
        raise UserError("--groups: the experiment has no sweep.groups")
    for change in changes:
        m = re.fullmatch(r"(\w+?)[._](methods|seeds)=(.*)", change.strip(), re.IGNORECASE | re.DOTALL)
        if not m or m.group(1).lower() not in groups:
            raise UserError(f"--group {change}: expected NAME.methods=... or NAME.seeds=... with NAME one of "
                            f"{list(groups)}")
        name, key, value = m.group(1).lower(), m.group(2).lower(), m.group(3)
        groups[name][key] = split_names([value]) if key == "methods" else value
    return groups


def sweep(args) -> None:
    prefix = launcher(args.accelerate)  # a bad --accelerate stops here, before anything is composed or run
    methods = split_names(args.methods)
    if args.groups and (methods or args.seeds):
        raise UserError("--groups runs the experiment's groups at their own seeds: no --methods or --seeds with it "
                        "(change a group with --group NAME.methods=... / NAME.seeds=...)")
    exp = compose_cfg([f"experiment={args.experiment}", *args.overrides])
    spec = OmegaConf.to_container(OmegaConf.select(exp, "sweep") or OmegaConf.create({}))
    jobs = args.jobs or spec.get("jobs") or DEFAULT_JOBS
    if args.groups:
        plans = [(name, g["methods"], parse_seeds(g["seeds"]), g) for name, g in groups_of(spec, args.group).items()
                 if g["methods"]]
    else:
        methods = methods or split_names(spec.get("methods"))
        if not methods:
            raise UserError(f"--methods: experiment {args.experiment} names no sweep.methods; name them")
        plans = [(None, methods, parse_seeds(args.seeds if args.seeds is not None else "0"), {})]
    from pipelines.run import METHODS
    unknown = sorted({m for _, ms, _, _ in plans for m in ms if m not in METHODS})
    if unknown:
        raise UserError(f"--methods: unknown method(s) {unknown}; methods are {sorted(METHODS)}")
    for name, group_methods, seeds, group in plans:
        if name is not None:
            print(f"{args.experiment}, group {name}: {' '.join(group_methods)} at seeds {seeds_text(seeds)}",
                  flush=True)
        run_sweep(args, exp, group_methods, seeds, jobs, prefix, trials=group.get("trials"),
                  folder=group.get("folder"))


def trial_grid(experiment: str, method: str, axes: dict, folder: str, extra: list[str]) -> list[list[str]]:
    """A tuning group's settings of one method: the cartesian product of its axes ({key: "v1,v2"}), each run in
    <run_root>/<folder>/seed<k>/<the method's tag>_<leaf of each key with several values><value>, e.g.
    tuning/seed0/dpo_beta0.2_learning_rate3e-05."""
    parsed = {k: [v.strip() for v in str(vals).split(",")] for k, vals in axes.items()}
    out = []
    for combo in itertools.product(*parsed.values()):
        setting = [f"{k}={v}" for k, v in zip(parsed, combo)]
        cfg = compose_cfg([f"experiment={experiment}", f"method={method}", *extra, *setting])
        suffix = "".join(f"_{k.rsplit('.', 1)[-1]}{OmegaConf.select(cfg, k)}" for k, vals in parsed.items()
                         if len(vals) > 1)
        out.append([*setting, f"method.tag={cfg.method.tag}{suffix}",
                    f"paths.method=${{paths.run_root}}/{folder}/seed${{seed}}/${{method.tag}}"])
    return out


def run_sweep(args, exp: DictConfig, methods: list[str], seeds: list[int], n_jobs: int, prefix: list[str],
              trials: dict | None = None, folder: str | None = None) -> None:
    from pipelines.run import METHODS, check

    base = [f"experiment={args.experiment}", *args.overrides]
    # Every job composed and validated before anything trains.
    jobs: list[Job] = []
    for seed in seeds:
        for method in methods:
            settings = (trial_grid(args.experiment, method, trials[method], folder, args.overrides) if trials
                        else grid(args.experiment, method, args.overrides))
            for setting in settings:
                overrides = [*base, f"method={method}", f"seed={seed}", *setting]
                cfg = compose_cfg(overrides)
                check(cfg)
                jobs.append(Job(seed, method, overrides, cfg))
    first = jobs[0].cfg
    ledger = not args.no_ledger
    if ledger:
        restored = restore(first)
        if restored:
            print(f"ledger: {restored} file(s) of earlier runs written back into {first.paths.run_root}", flush=True)
    todo = [j for j in jobs if not job_done(j.cfg)]
    print(f"{args.experiment}: {len(jobs)} job(s) over seeds {seeds_text(seeds)}, {len(jobs) - len(todo)} done, "
          f"{len(todo)} to run", flush=True)
    if args.list:
        left = {id(j) for j in todo}
        for j in jobs:
            print(f"  {'todo' if id(j) in left else 'done'}  seed {j.seed}  {j.cfg.method.tag}")
        return
    if not todo:
        return
    logs = Path(first.paths.run_root) / "logs" / "sweep"
    stages = pipeline_stages(exp)
    job_threads = max(1, args.threads // n_jobs)
    echo = n_jobs == 1
    prog = Progress(len(todo), n_jobs)
    start = time.time()
    print(f"{args.experiment}: {len(todo)} job(s), {n_jobs} at a time x {job_threads} thread(s); each seed's "
          f"pipeline [{','.join(stages)}] first on {args.threads} thread(s)", flush=True)
    for seed in seeds:
        seed_jobs = [j for j in todo if j.seed == seed]
        if not seed_jobs:
            continue
        cfg = seed_jobs[0].cfg
        seed_base = [*base, f"seed={seed}"]
        took = _run(command(prefix, [*seed_base, f"pipeline=[{','.join(stages)}]"], args.threads),
                    logs / f"seed{seed}_pipeline.log", f"seed {seed} pipeline", echo)
        print(f"[seed {seed} pipeline] done in {minutes(took)}", flush=True)
        pipeline_dir = Path(cfg.paths.pipeline)
        if ledger:
            record(cfg, seed, [pipeline_dir / s for s in PIPELINE_STAGES if s != "reward_model"]
                   + [Path(cfg.paths.shared) / s for s in FIXED_STAGES])
        tasks: list[Task] = []
        rphi = f"seed {seed} r_phi"
        if any(reads_rphi(j.method) for j in seed_jobs) and not rphi_done(cfg):
            tasks.append(Task(rphi, command(prefix, [*seed_base, "pipeline=[reward_model]"], job_threads),
                              logs / f"seed{seed}_reward_model.log", counted=False,
                              then=(lambda c=cfg, s=seed: record(c, s, [Path(c.paths.reward_model)])) if ledger
                              else None))
        # Longest first: the on-policy methods (PPO, RLOO, Best-of-N) take longest per setting; among equals the
        # order of the method list.
        for job in sorted(seed_jobs, key=lambda j: not METHODS[j.method].on_policy):
            waits = (rphi,) if tasks and tasks[0].label == rphi and reads_rphi(job.method) else ()
            tasks.append(Task(f"seed {job.seed} {job.cfg.method.tag}", command(prefix, job.overrides, job_threads),
                              logs / f"seed{job.seed}_{job.cfg.method.tag}.log", after=waits,
                              then=(lambda j=job: record(j.cfg, j.seed, [Path(j.cfg.paths.method)])) if ledger
                              else None))
        run_tasks(tasks, n_jobs, prog, echo)
        print(f"seed {seed}: {len(seed_jobs)} job(s) done; {minutes(time.time() - start)} since the sweep started",
              flush=True)
    print(f"{args.experiment}: {len(todo)} job(s) over seeds {seeds_text(seeds)} done in "
          f"{minutes(time.time() - start)} with {n_jobs} job(s) x {job_threads} thread(s)", flush=True)


if __name__ == "__main__":
    main()
