"""The one entry point: `python -m pipelines.run [overrides]`, `-m` for a sweep.

Runs cfg.pipeline in order; each stage is skipped when its done-marker carries the same config hash, so a
beta sweep trains the shared stages (data, tokenizer, SFT, r*, pairs) once.

  python -m pipelines.run                                  # one DPO run of the embedded default
  python -m pipelines.run -m                               # the preset's DPO beta sweep
  python -m pipelines.run -m method=ppo                    # the preset's PPO sweep (KL targets)
  python -m pipelines.run -m method.beta=0.05,0.1,1,5      # your own sweep
  python -m pipelines.run experiment=sentiment_paper       # paper scale (GPUs, Hub)
The reward model of PPO is trained on the first PPO run (it is an upstream stage of method=ppo's train stage).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # weight-loading bars; training and sampling keep theirs

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from baselines import best_of_n, ppo, preferred_ft, rloo, unlikelihood  # noqa: E402
from pipelines import dpo  # noqa: E402
from pipelines.infra import distributed, schema  # noqa: E402
from pipelines.infra.bookkeeping import Stage, is_done, run_stage  # noqa: E402
from pipelines.infra.device import configure_inference  # noqa: E402
from pipelines.infra.io import UserError  # noqa: E402
from pipelines.lm import vllm_engine  # noqa: E402
from pipelines.lm.models import set_attn_implementation  # noqa: E402
from pipelines.stages import data, evaluate, gold_reward, pairs, reward_model, sft, tokenizer, winrate  # noqa: E402
from pipelines.tasks.registry import task_of  # noqa: E402
from pipelines.validate import validate  # noqa: E402

log = logging.getLogger("pipelines")
CONF = Path(__file__).resolve().parents[1] / "conf"
# The experiment conf/config.yaml composes when the command line names none.
DEFAULT_EXPERIMENT = "sentiment_embedded"

OFFLINE_INPUTS = ("sft", "pairs")


def _sft_baseline(cfg: DictConfig, out_dir: Path) -> dict:
    """method=sft: the SFT policy itself as a baseline of the win-rate tables (nothing is trained)."""
    return {"policy": str(Path(cfg.paths.sft) / "policy")}


def _base_baseline(cfg: DictConfig, out_dir: Path) -> dict:
    """method=base: the pretrained model as is, prompted with method.shots examples (nothing is trained)."""
    return {"policy": str(cfg.model.pretrained), "shots": int(cfg.method.shots)}


@dataclass(frozen=True)
class Method:
    """Every per-method fact the pipeline needs. Its display name, colour and frontier parameter are in
    conf/method/<name>.yaml (display:), where the analysis reads them."""
    # The training stage: (cfg, out_dir) -> done-marker fields
    train: Callable[[DictConfig, Path], dict]
    # Upstream stages it reads besides its config (their hashes enter its train stage's hash)
    inputs: tuple[str, ...]
    # Samples prompts and completions itself: the prompt and generation settings are part of its stage hash
    on_policy: bool = False
    # Its training is a Trainer that a multi-process launch spreads over every process (else the main process
    # alone): True, False, or a function of nothing (the launch) deciding it
    distributed: bool | Callable[[], bool] = False
    # Its own config check, (cfg, need) -> None, run with every other check before anything trains
    check: Callable | None = None
    # The task formats it runs on (task.format): prefix (sentiment), prompt_response (summarization, dialogue)
    formats: tuple[str, ...] = ("prefix", "prompt_response")
    # method.batch_size is the global batch of one optimiser step (split over the processes of a launch)
    global_batch: bool = False
    # Its evaluation stage (sentiment), when it is not evaluate.run over its policy snapshots
    evaluate: Callable[[DictConfig, Path], dict] | None = None

    def in_all_processes(self) -> bool:
        return self.distributed() if callable(self.distributed) else self.distributed


def _base_check(cfg: DictConfig, need) -> None:
    need(bool(cfg.model.pretrained), "method=base prompts the pretrained base model (paper: zero-shot GPT-J, 2-shot "
                                     "Pythia-2.8B); this preset trains its model from scratch (model.pretrained is "
                                     "null), so it has none")
    need(cfg.method.shots >= 0, f"method.shots must be >= 0, got {cfg.method.get('shots')}")


LEARNED = ("data", "sft", "reward_model")  # the online methods of RLHF: r_phi, trained on the pairs
GOLD = ("data", "sft", "reward")  # their -GT variants: the ground-truth reward r*
OFFLINE = dict(inputs=OFFLINE_INPUTS, distributed=True, global_batch=True)
METHODS = {
    "dpo": Method(dpo.run, check=dpo.check, **OFFLINE),
    "ipo": Method(dpo.run, check=dpo.check, **OFFLINE),
    "cdpo": Method(dpo.run, check=dpo.check, **OFFLINE),
    "preferred_ft": Method(preferred_ft.run_preferred_ft, check=preferred_ft.check, **OFFLINE),
    "unlikelihood": Method(unlikelihood.run_unlikelihood, check=unlikelihood.check, **OFFLINE),
    "bon": Method(best_of_n.run, LEARNED, on_policy=True, check=best_of_n.check, evaluate=best_of_n.evaluate),
    # Our own PPO loop trains in every process of a launch: replicated (torch DDP) where the launch keeps whole
    # weights in each, sharded (torch FSDP2) under an FSDP or DeepSpeed launch (pipelines/infra/data_parallel.py).
    "ppo": Method(ppo.run, LEARNED, on_policy=True, distributed=True, check=ppo.check),
    "ppo_gt": Method(ppo.run, GOLD, on_policy=True, distributed=True, check=ppo.check,
                     formats=("prefix",)),
    "rloo": Method(rloo.run, LEARNED, on_policy=True, distributed=True, check=rloo.check, global_batch=True),
    "rloo_gt": Method(rloo.run, GOLD, on_policy=True, distributed=True, check=rloo.check, global_batch=True,
                      formats=("prefix",)),
    # The SFT policy as a baseline (prompt-response tasks; in dialogue it is the Preferred-FT reference).
    "sft": Method(_sft_baseline, ("sft",), formats=("prompt_response",)),
    # The pretrained base model, zero- or few-shot prompted (prompt-response tasks with model.pretrained).
    "base": Method(_base_baseline, ("data", "tokenizer"), check=_base_check, formats=("prompt_response",)),
}
OFFLINE_KEYS = ("method", "seed")
WINRATE_KEYS = ("judge.backend", "judge.name", "judge.model", "judge.template", "task.winrate", "task.generation",
                "seed")
ON_POLICY_KEYS = ("method", "seed", "task.prompt", "task.generation")


def _local_file_checksums(cfg: DictConfig) -> dict:
    """Local data files enter the data stage's hash by content, so an edited file is never silently reused."""
    import hashlib

    d = cfg.task.data
    files: list = []
    if d.source == "local":
        # sentiment: task.data.local_files; prompt-response tasks: one entry (a path or a list) per role
        entries = [d.local_files] if "local_files" in d else list((d.get("local") or {}).values())
        for entry in entries:
            files += [entry] if isinstance(entry, str) else list(entry or [])
    return {str(f): hashlib.sha256(Path(f).read_bytes()).hexdigest() if Path(f).is_file() else "missing"
            for f in files}


def _train(cfg: DictConfig, out_dir: Path) -> dict:
    return METHODS[cfg.method.name].train(cfg, out_dir)


def _evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    hook = METHODS[cfg.method.name].evaluate  # Best-of-N: no policy to sample from; its selections are the points
    return (hook or evaluate.run)(cfg, out_dir)


STAGES = {s.name: s for s in [
    Stage("data", data.run, ("task.data", "data_seed"), (), lambda c: Path(c.paths.data),
          fingerprint=_local_file_checksums),
    Stage("tokenizer", tokenizer.run, ("model.pretrained", "model.tokenizer"), ("data",),
          lambda c: Path(c.paths.tokenizer)),
    # What a row adds per task format (extra hash keys, upstream stages) is the format's Task (tasks/registry.py).
    Stage("sft", sft.run, lambda c: ("model", "shared_seed") + task_of(c).sft_keys,
          ("data", "tokenizer"), lambda c: Path(c.paths.sft), distributed=True),
    Stage("reward", gold_reward.run, ("task.reward", "data_seed"), ("data",), lambda c: Path(c.paths.reward)),
    Stage("evaluate_sft", evaluate.run_sft, ("task.eval", "task.prompt", "task.generation", "data_seed",
                                             "shared_seed"),
          ("data", "sft", "reward"), lambda c: Path(c.paths.sft) / "eval"),
    Stage("pairs", pairs.run, ("task.pairs", "task.prompt", "task.generation", "data_seed", "shared_seed"),
          lambda c: task_of(c).pairs_deps, lambda c: Path(c.paths.pairs)),
    Stage("reward_model", reward_model.run, ("reward_model", "shared_seed"), ("sft", "pairs"),
          lambda c: Path(c.paths.reward_model), distributed=True),
    # Best-of-N's prompts and temperatures are the task's (Task.bon_keys).
    Stage("train", _train, lambda c: (ON_POLICY_KEYS + (task_of(c).bon_keys if c.method.name == "bon" else ()))
          if METHODS[c.method.name].on_policy else OFFLINE_KEYS,
          lambda c: METHODS[c.method.name].inputs, lambda c: Path(c.paths.method),
          distributed=lambda c: METHODS[c.method.name].in_all_processes()),
    Stage("evaluate", _evaluate, ("task.eval", "task.prompt", "task.generation", "seed", "data_seed"),
          ("train", "evaluate_sft"), lambda c: Path(c.paths.method) / "eval"),
    # Keyed by the judge's identity (not its concurrency or retry settings), so a rerun with other limits resumes.
    # Prompt-response tasks judge against the data's answers (no evaluation stage); their prompt cap picks the prompts.
    Stage("winrate", winrate.run, lambda c: WINRATE_KEYS + task_of(c).winrate_keys,
          lambda c: task_of(c).winrate_deps(c), lambda c: Path(c.paths.method) / "winrate" / c.judge.name),
]}


def check(cfg: DictConfig) -> None:
    """Every config check (pipelines/validate.py and the method's own), before anything runs: one UserError listing
    every problem."""
    if cfg.method.name not in METHODS:
        raise UserError(f"method '{cfg.method.name}' has no trainer (available: {sorted(METHODS)})")
    unknown = [s for s in cfg.pipeline if s not in STAGES]
    if unknown:
        raise UserError(f"pipeline: unknown stage(s) {unknown}; stages are {list(STAGES)}")
    wrong = schema.wrong_types(cfg)
    if wrong:
        raise UserError("bad config (nothing was run): " + "; ".join(wrong))
    try:
        validate(cfg, METHODS[cfg.method.name])
    except (TypeError, ValueError) as err:  # a value of the wrong type that wrong_types does not know of
        raise UserError(f"bad config (nothing was run): a setting has the wrong type ({err}); check the values of "
                        "your overrides") from None


def _method_defaults(name: str) -> dict:
    """conf/method/<name>.yaml as written, with the file it extends (its defaults list) underneath."""
    path = CONF / "method" / f"{name}.yaml"
    if not path.is_file():
        return {}
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    base: dict = {}
    for parent in raw.pop("defaults", []) or []:
        if isinstance(parent, str) and parent != "_self_":
            base.update(_method_defaults(parent))
    return {**base, **raw}


def _numeric_settings(method: DictConfig):
    """(node, key, default, value, dotted name) of every method setting that conf/method/<name>.yaml declares as a
    number (not a bool), with its value in `method`."""
    def walk(defaults: dict, node, prefix: str):
        if not isinstance(node, DictConfig):
            return
        for key, default in defaults.items():
            if isinstance(default, dict):
                yield from walk(default, node.get(key), f"{prefix}{key}.")
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                yield node, key, default, node.get(key), f"{prefix}{key}"
    yield from walk(_method_defaults(str(method.name)), method, "method.")


def canonical_numbers(cfg: DictConfig) -> DictConfig:
    """Give every method setting the number type conf/method/<name>.yaml declares it with, where that loses nothing:
    `method.beta=1` becomes 1.0 (as β's default 0.1 is a float) and `method.kl.target=8.0` becomes 8, so that `1` and
    `1.0` are one run, with one tag, one folder and one stage hash. In place; returns cfg."""
    for node, key, default, value, _ in list(_numeric_settings(cfg.method)):
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(default, float) and isinstance(value, int):
            node[key] = float(value)
        elif isinstance(default, int) and isinstance(value, float) and value.is_integer():
            node[key] = int(value)
    return cfg


def judge_dry_run(cfg: DictConfig) -> str:
    """judge_dry_run=true: count the judge calls (and their cost) the win-rate stage would make, for a run whose
    earlier stages are done; train, judge and write nothing. A run not trained yet says so. Returns the line."""
    if "winrate" not in STAGES or "winrate" not in cfg.pipeline:
        return f"judge dry run: there is no winrate stage in this pipeline ({list(cfg.pipeline)})"
    stage, memo = STAGES["winrate"], {}
    deps = stage.deps(cfg) if callable(stage.deps) else stage.deps
    missing = [d for d in deps if not is_done(cfg, STAGES, d, memo)]
    if missing:
        return (f"judge dry run for {cfg.method.tag} seed {cfg.seed}: not counted, its stage(s) {missing} are not "
                "done yet (a dry run trains nothing; run it without judge_dry_run first, or after training)")
    return stage.run(cfg, stage.out_dir(cfg))["text"]


def run_pipeline(cfg: DictConfig) -> dict[str, str]:
    """Check, then run every stage of cfg.pipeline. Returns the stage hashes."""
    canonical_numbers(cfg)
    check(cfg)
    if cfg.get("judge_dry_run", False):
        line = judge_dry_run(cfg)
        log.info("%s", line)
        print(line, flush=True)
        return {}
    torch.set_num_threads(cfg.threads)
    set_attn_implementation(cfg.model.get("attn_implementation"))
    configure_inference(cfg.model.precision, cfg.device)  # bf16 inference and TF32 on GPUs; CPU numbers unchanged
    vllm_engine.configure(cfg)  # resolves task.generation.backend=auto before any stage hash is taken
    distributed.group()  # under a multi-process launch: open the process group before any Trainer does
    hashes: dict[str, str] = {}
    for name in cfg.pipeline:
        run_stage(cfg, STAGES, name, hashes)
    return hashes


def _preset_grid(experiment: str, method: str) -> dict:
    """The sweep grid conf/method_preset/<experiment>/<method>.yaml sets (hydra.sweeper.params), {} without one."""
    path = CONF / "method_preset" / experiment / f"{method}.yaml"
    if not path.is_file():
        return {}
    grid = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params")
    return dict(grid) if grid else {}


def several_methods(argv: list[str]) -> str | None:
    """The `method=a,b` override of a multirun command line, if it names several methods of which at least one has
    a preset grid: each grid sets its own keys (DPO's beta, PPO's KL target), which one Hydra sweep cannot combine
    (it fails on the second method with "Could not override 'method.beta'", or runs IPO on DPO's grid). Several
    methods without preset grids (the text tasks' smoke presets) sweep fine together."""
    if not {"-m", "--multirun"} & set(argv):
        return None
    experiment = next((a.partition("=")[2] for a in argv if a.partition("=")[0].lstrip("+~") == "experiment"),
                      DEFAULT_EXPERIMENT)
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") != "method":
            continue
        names = [v.strip() for v in value.removeprefix("choice(").removesuffix(")").split(",")]
        if len(names) > 1 and any(_preset_grid(experiment, m) for m in names):
            return arg
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_pipeline(cfg)
    except UserError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def refuse_several_methods(argv: list[str]) -> None:
    """Before Hydra composes a multirun (it would fail on the second method with "Could not override
    'method.beta'", and on `-m --cfg job` with a traceback): one line saying what does it, exit code 2."""
    if {"-m", "--multirun"} & set(argv) and {"-c", "--cfg"} & set(argv):
        print("error: Hydra takes --cfg without -m; to list a sweep's jobs (and which are done) without training: "
              "`python -m pipelines.sweep --experiment <experiment> --methods <method ...> --list`; `--cfg job` "
              "without -m prints one job's config", file=sys.stderr)
        sys.exit(2)
    arg = several_methods(argv)
    if arg:
        print(f"error: {arg}: one multirun sweeps one method's grid (each method's preset sets its own keys); sweep "
              "several methods with `python -m pipelines.sweep --experiment <experiment> --methods a b` (or `make "
              "sweep EXPERIMENT=<experiment> METHODS=\"a b\"`)", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    """`python -m pipelines.run` and the console script `rvd-run` (pyproject.toml): a name of its own lets Hydra's
    tab completion be installed, `eval "$(rvd-run -sc install=bash)"`."""
    refuse_several_methods(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
