"""Skip/resume bookkeeping shared by every stage.

A stage owns one folder. It is *done* when `done.json` in that folder carries the hash of the config it depends
on (its own config subtrees plus the hashes of its upstream stages): then it is skipped. A folder without
`done.json` is an interrupted stage and is resumed by the stage itself (Trainer checkpoints, finished chunks).
A done stage whose hash differs is never overwritten silently: the run stops unless `force=true`.
The marker also records where the stage ran (`environment`: CPU and its SIMD features, torch build and threads,
GPUs, library versions), since the same command can give other numbers on another CPU; that record is provenance
only and never enters the hash, so a finished stage is skipped on any machine.
Under a multi-process launch (pipelines/infra/distributed.py) the main process keeps these books alone; the others
follow its decisions and run only the stages marked `distributed` (the Trainer stages).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from pipelines.infra import cost_meter, distributed, hub
from pipelines.infra.io import UserError, atomic_write_json
from pipelines.infra.provenance import environment, git_sha, versions

log = logging.getLogger(__name__)
DONE = "done.json"


@dataclass(frozen=True)
class Stage:
    name: str
    # run(cfg, out_dir) -> metrics dict (JSON-serialisable)
    run: Callable[[DictConfig, Path], dict]
    # Dotted config keys whose values the stage's output depends on (or a function of the config giving them).
    keys: tuple[str, ...] | Callable[[DictConfig], tuple[str, ...]]
    # Upstream stage names (or a function of the config giving them); their hashes enter this stage's hash.
    deps: tuple[str, ...] | Callable[[DictConfig], tuple[str, ...]]
    # Output folder, derived from the config.
    out_dir: Callable[[DictConfig], Path]
    # Extra inputs that are not config values (e.g. checksums of local data files).
    fingerprint: Callable[[DictConfig], dict] | None = None
    # Runs in every process of a multi-process launch (a Trainer stage), or in the main process only.
    distributed: bool | Callable[[DictConfig], bool] = False


def _select(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) or OmegaConf.is_list(value) \
        else value


# Presentation keys (how the analysis names and draws a method): never part of what a stage computes.
NOT_HASHED = ("method.display",)


def _hashed(cfg: DictConfig, key: str):
    value = _select(cfg, key)
    for dotted in NOT_HASHED:
        if dotted.startswith(key + ".") and isinstance(value, dict):
            node = value
            *parents, leaf = dotted[len(key) + 1:].split(".")
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(leaf, None)
    return value


def config_hash(cfg: DictConfig, stage: Stage, upstream_hashes: dict[str, str]) -> tuple[str, dict]:
    """Hash of what the stage depends on. Returns (hash, the hashed payload)."""
    keys = stage.keys(cfg) if callable(stage.keys) else stage.keys
    payload = {"stage": stage.name, "config": {k: _hashed(cfg, k) for k in keys},
               "upstream": dict(sorted(upstream_hashes.items()))}
    if stage.fingerprint is not None:
        payload["inputs"] = stage.fingerprint(cfg)
    pins = hub.pins_in(payload["config"], hub.used_ids(cfg))  # pinned revisions of the Hub ids it loads
    if pins:
        payload["hub_revisions"] = pins
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16], payload


def read_done(out_dir: Path) -> dict | None:
    path = Path(out_dir) / DONE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a torn marker counts as not done


def _started_hash(out_dir: Path) -> str | None:
    try:
        return json.loads((Path(out_dir) / "stage_config.json").read_text()).get("hash")
    except (OSError, json.JSONDecodeError):
        return None


def _device_name(cfg: DictConfig) -> str:
    import torch

    from pipelines.infra.device import pick_device

    device = pick_device(cfg.get("device", "auto"))
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def run_stage(cfg: DictConfig, stages: dict[str, Stage], name: str, _hashes: dict[str, str] | None = None) -> str:
    """Run `name` (its upstream stages first) unless already done. Returns the stage's config hash."""
    hashes = {} if _hashes is None else _hashes
    if name in hashes:
        return hashes[name]
    stage = stages[name]
    deps = stage.deps(cfg) if callable(stage.deps) else stage.deps
    upstream = {dep: run_stage(cfg, stages, dep, hashes) for dep in deps}
    digest, payload = config_hash(cfg, stage, upstream)
    out_dir = Path(stage.out_dir(cfg))
    group = distributed.group()
    main = group is None or distributed.is_main()
    if main:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Parallel sweep jobs that share an unfinished upstream stage wait here for the one running it.
    with FileLock(str(out_dir) + ".lock") if main else nullcontext():
        done = read_done(out_dir) if main else None
        if done is not None and done.get("restored"):
            # Written back from the results ledger (pipelines/sweep.py): its numbers are kept, its weights are not
            # here, so a run that reaches it redoes it.
            done = None
        refusal = None
        if main and done is not None and done.get("hash") != digest and not cfg.force:
            refusal = (f"stage '{name}' in {out_dir} was finished with a different config (hash {done.get('hash')}, "
                       f"now {digest}). Nothing was changed. Use another preset name for the new setting, delete the "
                       "folder, or pass force=true to redo it (and the stages after it).")
        decision = None if not main else distributed.REFUSE if refusal else \
            distributed.SKIP if done is not None and done.get("hash") == digest else distributed.RUN
        if group is not None:
            decision = group.decide(decision)
        if decision == distributed.SKIP:
            log.info("stage %-9s done, skipped (%s)", name, out_dir)
            hashes[name] = digest
            return digest
        if decision == distributed.REFUSE:
            raise UserError(refusal or f"stage '{name}': the main process refused to run it (see its message)")
        backup, resumed = (_prepare(cfg, name, out_dir, digest, payload, done) if main else (None, False))
        in_all = stage.distributed(cfg) if callable(stage.distributed) else stage.distributed
        if group is not None:
            group.barrier()  # the folder is ready before any process starts the stage
        start = time.time()
        metrics, stage_cost = {}, None
        if main or in_all:
            try:
                with cost_meter.track() as meter:
                    metrics = stage.run(cfg, out_dir) or {}
                stage_cost = {**meter.summary(), "device": _device_name(cfg), "threads": cfg.get("threads"),
                              "processes": distributed.world_size() if in_all else 1}
            except BaseException:
                if backup is not None:
                    shutil.rmtree(out_dir, ignore_errors=True)
                    backup.rename(out_dir)
                raise
        if group is not None:
            group.barrier()  # every process is done with the stage before its marker says so
        if main:
            if backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
            atomic_write_json(out_dir / DONE, {
                "stage": name, "hash": digest, "wall_time_s": round(time.time() - start, 2), "resumed": resumed,
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_sha": git_sha(),
                "versions": versions(), "environment": environment(), "metrics": metrics, "cost": stage_cost})
    hashes[name] = digest
    return digest


def _prepare(cfg: DictConfig, name: str, out_dir: Path, digest: str, payload: dict, done: dict | None
             ) -> tuple[Path | None, bool]:
    """Ready the stage's folder for a run (main process). Returns (the backup of a forced redo, resumed?)."""
    if done is not None:
        log.warning("force=true: redoing stage %s in %s", name, out_dir)
    # A forced redo keeps the finished output aside until the new one succeeds: a failure restores it.
    backup = out_dir.with_name(out_dir.name + ".previous") if done is not None else None
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
        out_dir.rename(backup)
    if done is None and out_dir.exists() and _started_hash(out_dir) not in (None, digest):
        # An unfinished stage begun with another config: its partial output cannot be resumed; nothing in it
        # was ever finished, so it is discarded.
        log.warning("stage %s in %s was interrupted under another config; starting it afresh", name, out_dir)
        shutil.rmtree(out_dir)
    resumed = out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "stage_config.json", {**payload, "hash": digest})
    log.info("stage %-9s %s (%s)", name, "resuming" if resumed else "running", out_dir)
    return backup, resumed


def plan_hash(cfg: DictConfig, stages: dict[str, Stage], name: str, _memo: dict | None = None) -> str:
    """The config hash `name` would get in a run of `cfg`, computed without running anything (as run_stage does)."""
    memo = {} if _memo is None else _memo
    if name not in memo:
        stage = stages[name]
        deps = stage.deps(cfg) if callable(stage.deps) else stage.deps
        memo[name] = config_hash(cfg, stage, {d: plan_hash(cfg, stages, d, memo) for d in deps})[0]
    return memo[name]


def is_done(cfg: DictConfig, stages: dict[str, Stage], name: str, memo: dict | None = None,
            restored_ok: bool = True) -> bool:
    """Whether `name`'s done-marker carries the hash the current config gives it (plan_hash), without running
    anything. restored_ok=False: a marker written back from the ledger (no weights behind it) does not count."""
    done = read_done(stages[name].out_dir(cfg))
    return (done is not None and (restored_ok or not done.get("restored"))
            and done.get("hash") == plan_hash(cfg, stages, name, memo))
