"""Revisions of the Hub models and datasets (conf/hub_revisions.yaml) and the commits a process actually loaded.

Every loader of a Hub id asks `revision_of(id)` (None for a local path, an id the file does not list, or one not
pinned yet: the Hub's main branch) and reports what it loaded with `loaded(id, commit)`; a stage's done.json keeps
those commits (pipelines/infra/provenance.py environment, key "hub"; for datasets, the revision asked for). A pinned
revision enters the hash of every stage whose config names an id the run loads (`pins_in` over `used_ids`), so moving
a pin re-runs exactly the stages that read it; an id a preset names but does not load (the embedded default's
task.data.hf_id with source=embedded) adds nothing, so the embedded default's hashes never move.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger(__name__)
REVISIONS = Path(__file__).resolve().parents[2] / "conf" / "hub_revisions.yaml"
_LOADED: dict[str, str | None] = {}
_WARNED: set[str] = set()


@lru_cache(maxsize=None)
def _lock(path: Path = REVISIONS) -> dict[str, str | None]:
    """id -> revision (models and datasets together; an id names one or the other)."""
    if not path.is_file():
        return {}
    raw = OmegaConf.to_container(OmegaConf.load(path))
    return {k: v for kind in ("models", "datasets") for k, v in (raw.get(kind) or {}).items()}


def is_hub_id(name: str) -> bool:
    """A Hub id ("org/name" or "name"), not a path to a local folder or file (one that exists, or is absolute,
    relative to . or ~, or deeper than org/name)."""
    return (bool(name) and name.count("/") <= 1 and not name.startswith(("/", ".", "~"))
            and not Path(name).expanduser().exists())


def revision_of(name: str) -> str | None:
    """The pinned revision of Hub id `name` (None: a local path, or not pinned: the Hub's main branch, with a
    warning once per process)."""
    if not is_hub_id(str(name)):
        return None
    revision = _lock().get(str(name))
    if revision is None and name not in _WARNED:
        _WARNED.add(name)
        log.warning("hub: '%s' has no pinned revision in %s: loading the Hub's current main (its commit is recorded "
                    "in done.json; `make pin-hub` pins it)", name, REVISIONS.name)
    return revision


def loaded(name: str, commit: str | None) -> None:
    """Record the commit of Hub id `name` this process loaded (None where the loader does not say)."""
    if is_hub_id(str(name)):
        _LOADED[str(name)] = commit


def loaded_commits() -> dict[str, str | None]:
    return dict(sorted(_LOADED.items()))


def used_ids(cfg) -> set[str]:
    """The Hub ids a run of `cfg` loads: the pretrained model, the task's datasets when task.data.source=hf, r* when
    it is a Hub classifier (keys a config lacks count as absent)."""
    def get(key: str):
        return OmegaConf.select(cfg, key, default=None)

    ids = {get("model.pretrained")}
    if get("task.data.source") == "hf":
        ids |= {get("task.data.hf_id")} | set((get("task.data.hf") or {}).values())
    if get("task.reward.kind") == "hf_classifier":
        ids.add(get("task.reward.hf_id"))
    return {str(i) for i in ids if isinstance(i, str) and is_hub_id(i)}


def pins_in(value, used: set[str]) -> dict[str, str]:
    """The pinned revisions of the ids of `used` named anywhere in `value` (a config payload: dicts, lists,
    strings)."""
    lock = {k: v for k, v in _lock().items() if k in used}
    found: dict[str, str] = {}

    def walk(v) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, str) and lock.get(v):
            found[v] = lock[v]
    walk(value)
    return dict(sorted(found.items()))
