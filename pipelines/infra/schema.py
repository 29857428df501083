"""The typed top of the run config: a Hydra structured config (registered with the ConfigStore as `run_schema`, the
first entry of conf/config.yaml's defaults list), so Hydra itself refuses `seed=abc` or `threads=two` while it
composes, naming the key, the value and the type, before anything runs.

The groups below it (task, model, method, reward_model, judge, paths) are yaml files whose keys differ between
presets and tasks; a dataclass per group would have to be a union of all of them. Their settings are typed by what
the yaml files declare instead (`declared_types`, used by pipelines.run.check): an override of a key whose files all
give it a number must be a number, and so on, with one line naming the key, the value and what the files allow.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"


@dataclass
class WandbSchema:
    # offline (logs under each stage's wandb/ folder), online, or disabled: pipelines.validate checks the value
    mode: str = "offline"
    project: str = "rlhf-vs-dpo"
    entity: str | None = None


@dataclass
class RunSchema:
    """The keys of conf/config.yaml (their comments there) with their types; the groups stay as their yaml has them."""
    task: Any = MISSING
    model: Any = MISSING
    method: Any = MISSING
    reward_model: Any = MISSING
    judge: Any = MISSING
    paths: Any = MISSING
    preset: str = MISSING
    seed: int = 0
    shared_seed: int = 0
    data_seed: int = 0
    pipeline: list[str] = field(default_factory=list)
    threads: int = 2
    force: bool = False
    judge_dry_run: bool = False
    device: str = "auto"
    vllm_gpu_memory_utilization: float = 0.3
    snapshots: str = "keep"
    wandb: WandbSchema = field(default_factory=WandbSchema)
    # The experiment's sweep block (pipelines/sweep.py); never part of a stage hash.
    sweep: Any = None


def register() -> None:
    ConfigStore.instance().store(name="run_schema", node=RunSchema)


# ---------------------------------------------------------------------------------------- the groups' settings
GROUPS = ("task", "model", "method", "reward_model", "judge", "paths")
KINDS = {bool: "true or false", float: "a number", str: "text", list: "a list", dict: "a mapping"}


def _kind(value) -> type | None:
    """The kind of a yaml value: bool, int/float (one kind, a number), str, list, dict; None for null and for an
    interpolation (whatever it resolves to)."""
    if value is None or (isinstance(value, str) and "${" in value):
        return None
    if isinstance(value, bool):
        return bool
    if isinstance(value, (int, float)):
        return float
    for kind in (str, list, dict):
        if isinstance(value, kind):
            return kind
    return None


def _leaves(node, prefix: str):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("defaults", "hydra", "display"):
                continue
            yield from _leaves(value, f"{prefix}{key}.")
            if not isinstance(value, dict):
                yield f"{prefix}{key}", value
    # lists are leaves (their items are not typed here)


@lru_cache(maxsize=1)
def declared_types() -> dict[str, tuple[set, str]]:
    """{dotted key: (kinds its yaml values have, 'file: value' of one of them)} over every yaml file of the groups
    (conf/<group>/*.yaml at the group's package) and of the experiments and method presets (global package)."""
    out: dict[str, tuple[set, str]] = {}

    def add(path: Path, root: str) -> None:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for key, value in _leaves(raw, root):
            kinds, example = out.setdefault(key, (set(), f"{path.relative_to(CONF.parent)}: {value!r}"))
            kinds.add(_kind(value))

    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            add(path, f"{group}.")
    for path in sorted(CONF.glob("experiment/*.yaml")) + sorted(CONF.glob("method_preset/*/*.yaml")):
        add(path, "")
    return out


def wrong_types(cfg: DictConfig) -> list[str]:
    """One line per group setting of `cfg` whose value is of a kind no yaml file gives that key (text where every
    file has a number, a list where they have a number, ...). Keys no file declares, and keys some file leaves null,
    are not judged here (pipelines.validate checks the values it knows)."""
    lines = []
    declared = declared_types()
    for group in GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        for key, value in _leaves(OmegaConf.to_container(node, resolve=True), f"{group}."):
            kinds, example = declared.get(key, (set(), ""))
            kind = _kind(value)
            if not kinds or None in kinds or kind is None or kind in kinds:
                continue
            allowed = " or ".join(sorted({KINDS[k] for k in kinds}))
            shown = repr(value) if isinstance(value, (list, dict)) else value
            lines.append(f"{key}={shown} must be {allowed} (e.g. {example})")
    return lines


def field_error(err: BaseException) -> str:
    """Hydra's composition error for a typed key (with its cause), in one line: "Error merging override seed=abc:
    Value 'abc' of type 'str' could not be converted to Integer (key seed)"."""
    parts = [str(err)] + ([str(err.__cause__)] if err.__cause__ is not None else [])
    text = ": ".join(" ".join(p.split()) for p in parts)
    m = re.search(r"full_key: (\S+)", text)
    text = re.sub(r"\s*full_key: \S+.*?(?=: |$)", "", text)
    text = re.sub(r"\s*object_type=\S+", "", text)
    return f"{text} (key {m.group(1)})" if m else text
